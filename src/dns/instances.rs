//! The instances a service question answers, as DNS needs them, and a memo of them.
//!
//! Working them out reads the catalog's tables for every instance (its node, its service row,
//! its node's checks): a few microseconds for three instances, milliseconds for thousands, and
//! most of what a DNS answer costs. The result only changes when the catalog's index for that
//! service name moves, so a server keeps it in an [`InstanceMemo`] keyed by the question and
//! checked against that index on every use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::state::{Catalog, HealthBar, Node, ServiceInstance};

/// Questions remembered at once; past it the memo starts over (a scan of many tags cannot grow
/// it without bound). Only names that exist are remembered.
pub const MEMO_ENTRIES_MAX: usize = 4096;

/// Where an instance is reached, which decides its SRV target and A/AAAA/CNAME answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// At its node's IP: the SRV target is `<node>.node.<dc>.<domain>`.
    Node { node: String, ip: IpAddr },
    /// At an IP of its own: the SRV target is `<hex>.addr.<dc>.<domain>`.
    Addr(IpAddr),
    /// At a host name: answered as a CNAME, or an SRV target of that name without glue.
    Host(String),
}

impl Endpoint {
    /// What an A or AAAA question answers for it.
    pub fn address(&self) -> Address<'_> {
        match self {
            Endpoint::Node { ip, .. } | Endpoint::Addr(ip) => Address::Ip(*ip),
            Endpoint::Host(host) => Address::Host(host),
        }
    }
}

/// An instance's address: an IP (A or AAAA), or a host name (a CNAME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address<'a> {
    Ip(IpAddr),
    Host(&'a str),
}

/// One healthy instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub endpoint: Endpoint,
    pub port: u16,
}

/// The answer to one service question, before shuffling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAnswer {
    /// Does the service (with the tag, if one was asked) have any instance at all? If not the
    /// name does not exist (NXDOMAIN); if so but none is healthy, NOERROR with no answers.
    pub known: bool,
    pub healthy: Vec<Instance>,
}

impl ServiceAnswer {
    /// Work the answer out from the catalog: instances of `service` (names compared without
    /// ASCII case), with `tag` if given, whose every check clears `bar`.
    pub fn build(catalog: &Catalog, service: &str, tag: Option<&str>, bar: HealthBar) -> ServiceAnswer {
        let tagged =
            |instance: &ServiceInstance| tag.is_none_or(|t| instance.tags.iter().any(|x| x.eq_ignore_ascii_case(t)));
        let mut instances = catalog.service_instances(service);
        instances.retain(|(_, instance)| tagged(instance));
        let known = !instances.is_empty();
        let healthy = instances
            .into_iter()
            .filter(|(node, instance)| catalog.clears(node, instance, bar))
            .map(|(node, instance)| Instance { endpoint: endpoint(node, instance), port: instance.port })
            .collect();
        ServiceAnswer { known, healthy }
    }
}

/// The instance's own address, else its node's, read as Consul's DNS reads it.
fn endpoint(node: &Node, instance: &ServiceInstance) -> Endpoint {
    let address = if instance.address.is_empty() { &node.address } else { &instance.address };
    match address.parse::<IpAddr>() {
        Ok(ip) if *address == node.address => Endpoint::Node { node: node.node.clone(), ip },
        Ok(ip) => Endpoint::Addr(ip),
        Err(_) => Endpoint::Host(address.clone()),
    }
}

/// What a memo entry is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Question {
    service: String,
    tag: Option<String>,
    only_passing: bool,
}

#[derive(Debug)]
struct Remembered {
    /// The catalog's index for the name when the answer was worked out.
    index: u64,
    answer: Arc<ServiceAnswer>,
}

/// Service answers of one catalog, each valid while the catalog's index for its name stands.
///
/// Only for a catalog whose indexes only move forward (a server's replicated state): the index
/// is the whole test of freshness.
#[derive(Debug, Default)]
pub struct InstanceMemo {
    entries: Mutex<HashMap<Question, Remembered>>,
}

impl InstanceMemo {
    /// The answer for `service`/`tag` at `bar` over `catalog`: remembered if the catalog has not
    /// changed it since, else worked out and remembered (when the name exists).
    pub fn answer(&self, catalog: &Catalog, service: &str, tag: Option<&str>, bar: HealthBar) -> Arc<ServiceAnswer> {
        let question = Question {
            service: service.to_owned(),
            tag: tag.map(str::to_owned),
            only_passing: bar == HealthBar::Passing,
        };
        // Moves with anything a health answer for the name shows, whatever its spelling.
        let index = catalog.index_for_service(service);
        if let Some(remembered) = self.lock().get(&question) {
            if remembered.index == index {
                return remembered.answer.clone();
            }
        }
        let answer = Arc::new(ServiceAnswer::build(catalog, service, tag, bar));
        if answer.known {
            let mut entries = self.lock();
            if entries.len() >= MEMO_ENTRIES_MAX && !entries.contains_key(&question) {
                entries.clear();
            }
            entries.insert(question, Remembered { index, answer: answer.clone() });
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Question, Remembered>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
