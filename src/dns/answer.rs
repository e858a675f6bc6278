//! DNS answering over a catalog snapshot: the pure core of the DNS interface.
//!
//! [`classify`] turns a packet into what has to happen (answer from the catalog, ask a recursor,
//! reply at once, or nothing); [`answer`] builds the response from a [`Catalog`], the settings and
//! a [`Shuffle`] for answer order. No I/O, no clock: the shell (`dns::server`) decides which
//! catalog is fresh enough and does the sending. Which instances are healthy is the catalog's
//! rule ([`Catalog::clears`], read in [`super::instances`]), the same one `?passing` uses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::instances::{Address, Endpoint, Instance, InstanceMemo, ServiceAnswer};
use super::name::{ip_hex, Lookup, Parsed, Zone};
use super::reply::{Data, Refused, ReplyWriter, Soa, WireName};
use super::wire::{self, Rejection, Request, Transport, UDP_BYTES_CLASSIC};
use crate::config::DnsSettings;
use crate::state::{Catalog, HealthBar};

/// The service every server registers; its instances are the zone's name servers.
const SERVER_SERVICE: &str = "consul";

/// A small seeded generator (splitmix64) for shuffling answers: seeded by the shell from
/// `io::random_seed`, so the simulator's answers follow its seed.
#[derive(Debug, Clone)]
pub struct Shuffle(u64);

impl Shuffle {
    pub fn new(seed: u64) -> Self {
        Shuffle(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One step of a Fisher-Yates shuffle: swap a random item of `items[at..]` to `at` and
    /// return it. Drawing `at = 0, 1, 2, ...` yields a uniform random order, paid for only as far
    /// as it is read.
    pub fn draw<T: Copy>(&mut self, items: &mut [T], at: usize) -> T {
        let remaining = (items.len() - at) as u64;
        let pick = at + (self.next() % remaining) as usize;
        items.swap(at, pick);
        items[at]
    }
}

/// What to do with one packet.
#[derive(Debug)]
pub enum Step {
    /// A name in our domains: answer it from a catalog with [`answer`].
    Answer(Request, Parsed),
    /// A name outside our domains and recursors configured: forward the packet as it came.
    Recurse(Request),
    /// Send these bytes now (an error, or REFUSED for a foreign name without recursors).
    Reply(Vec<u8>),
    /// Send nothing.
    Drop,
}

/// Decode a packet and decide what it needs.
pub fn classify(bytes: &[u8], transport: Transport, zone: &Zone, settings: &DnsSettings) -> Step {
    let request = match wire::decode(bytes, transport) {
        Ok(request) => request,
        Err(rejection @ Rejection::Error { .. }) => {
            return wire::rejection_bytes(&rejection).map_or(Step::Drop, Step::Reply);
        }
        Err(Rejection::Drop) => return Step::Drop,
    };
    let parsed = zone.parse(request.query.name().iter());
    match parsed.domain {
        Some(_) => Step::Answer(request, parsed),
        None if !settings.recursors.is_empty() => Step::Recurse(request),
        None => Step::Reply(error_reply(&request, ResponseCode::Refused, settings)),
    }
}

/// An empty reply with `code` (SERVFAIL when no fresh catalog could be had, REFUSED, ...).
pub fn error_reply(request: &Request, code: ResponseCode, settings: &DnsSettings) -> Vec<u8> {
    let mut reply = ReplyWriter::new(request);
    reply.set_code(code);
    reply.set_recursion_available(!settings.recursors.is_empty());
    reply.finish()
}

/// Everything [`answer`] reads besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub settings: &'a DnsSettings,
    pub zone: &'a Zone,
    /// Service answers remembered across questions; only for a catalog whose indexes only move
    /// forward (a server's). Without it each question works its answer out anew.
    pub memo: Option<&'a InstanceMemo>,
}

/// The response to an in-zone request, encoded to fit its transport.
pub fn answer(request: &Request, parsed: &Parsed, context: Context<'_>, shuffle: &mut Shuffle) -> Vec<u8> {
    let settings = context.settings;
    let mut reply = ReplyWriter::new(request);
    reply.set_recursion_available(!settings.recursors.is_empty());
    reply.set_truncate_on_cut(request.transport == Transport::Udp && settings.enable_truncate);
    if request.transport == Transport::Udp && request.max_bytes == UDP_BYTES_CLASSIC {
        // Consul's `udp_answer_limit`: a plain-DNS UDP client gets a random few. This is a
        // deliberate subset, not a cut for size, so it does not set TC.
        reply.limit_answers(settings.udp_answer_limit);
    }
    let domain = parsed.domain.as_deref().unwrap_or(settings.domain.as_str());
    let mut builder = Builder { qtype: request.query.query_type(), context, domain, reply };
    let found = match &parsed.lookup {
        Lookup::Apex => builder.apex(),
        Lookup::Service { service, tag } => builder.service(service, tag.as_deref(), shuffle),
        Lookup::Node { node } => builder.node(node),
        Lookup::Addr { ip } => builder.addr(*ip),
        Lookup::Unknown => false,
    };
    let mut reply = builder.reply;
    if !found {
        reply.set_code(ResponseCode::NXDomain);
    }
    if reply.answer_count() == 0 && !reply.was_cut() {
        // Negative answers (NXDOMAIN, and NOERROR with no data) carry the SOA, whose minimum is
        // how long resolvers may cache them (RFC 2308).
        if let Some(soa) = soa(context, domain) {
            reply.authority_soa(&soa, settings.soa.min_ttl);
        }
    }
    reply.finish()
}

/// The zone's SOA; the serial is the catalog's last change, so it moves when the zone's data
/// does.
fn soa(context: Context<'_>, domain: &str) -> Option<Soa> {
    let s = context.settings.soa;
    let catalog = context.catalog;
    let serial = catalog.nodes_index().max(catalog.services_index()).max(catalog.checks_index()) as u32;
    Some(Soa {
        apex: WireName::join(&[domain])?,
        mname: WireName::join(&["ns", domain])?,
        rname: WireName::join(&["hostmaster", domain])?,
        serial,
        refresh: s.refresh,
        retry: s.retry,
        expire: s.expire,
        minimum: s.min_ttl,
    })
}

/// Builds the answers of one response into its writer.
struct Builder<'a> {
    qtype: RecordType,
    context: Context<'a>,
    /// The domain the question was asked in (`consul.` or the alt domain), for names we make.
    domain: &'a str,
    reply: ReplyWriter,
}

impl Builder<'_> {
    fn wants(&self, rtype: RecordType) -> bool {
        self.qtype == rtype || self.qtype == RecordType::ANY
    }

    /// SOA and NS for the domain itself; the name servers are the servers' nodes.
    fn apex(&mut self) -> bool {
        if self.wants(RecordType::SOA) {
            if let Some(soa) = soa(self.context, self.domain) {
                let _ = self.reply.answer_soa(&soa, self.context.settings.soa.min_ttl);
            }
        }
        if self.wants(RecordType::NS) {
            let ttl = self.context.settings.node_ttl.as_secs() as u32;
            for (node, _) in self.context.catalog.passing_instances(SERVER_SERVICE) {
                let Some(target) = self.node_name(&node.node) else { continue };
                let glue = node.address.parse::<IpAddr>().ok();
                if self.reply.answer(ttl, Data::Ns(&target), glue) == Err(Refused::Full) {
                    break;
                }
            }
        }
        true
    }

    /// `<node>.node.<dc>.<domain>.`
    fn node_name(&self, node: &str) -> Option<WireName> {
        WireName::join(&[node, "node", self.context.zone.datacenter(), self.domain])
    }

    /// Healthy instances of a service. Unknown service (or tag): NXDOMAIN; known but none
    /// healthy: NOERROR with no answers.
    fn service(&mut self, service: &str, tag: Option<&str>, shuffle: &mut Shuffle) -> bool {
        let (catalog, settings) = (self.context.catalog, self.context.settings);
        let bar = if settings.only_passing { HealthBar::Passing } else { HealthBar::NotCritical };
        let answer = match self.context.memo {
            Some(memo) => memo.answer(catalog, service, tag, bar),
            None => Arc::new(ServiceAnswer::build(catalog, service, tag, bar)),
        };
        if !answer.known {
            return false;
        }
        // Shuffled as consumed: an answer cut at the ~600 SRV records that fit in 64 KiB draws
        // ~600 times, not once per instance.
        let mut order: Vec<&Instance> = answer.healthy.iter().collect();
        let ttl = settings.service_ttl.ttl_for(service).unwrap_or_default().as_secs() as u32;
        if self.qtype == RecordType::SRV {
            for at in 0..order.len() {
                if self.push_srv(shuffle.draw(&mut order, at), ttl) == Err(Refused::Full) {
                    break;
                }
            }
            return true;
        }
        if self.wants(RecordType::A) || self.wants(RecordType::AAAA) {
            let mut seen = BTreeSet::new();
            let limit = settings.a_record_limit.unwrap_or(usize::MAX);
            for at in 0..order.len() {
                let instance = shuffle.draw(&mut order, at);
                if self.reply.answer_count() >= limit {
                    break;
                }
                let address = instance.endpoint.address();
                if !seen.insert(address) {
                    continue;
                }
                let pushed = match address {
                    Address::Ip(ip) => self.push_ip(ip, ttl),
                    Address::Host(host) => self.push_host(host, ttl),
                };
                if pushed == Err(Refused::Full) {
                    break;
                }
            }
        }
        true
    }

    /// `1 1 <port> <node>.node.<dc>.<domain>.` with the node's address as glue; an instance with
    /// an address of its own points at `<hex>.addr.<dc>.<domain>.` instead (Consul's rule), and
    /// one at a host name points at it (resolving it is the client's business).
    fn push_srv(&mut self, instance: &Instance, ttl: u32) -> Result<(), Refused> {
        let dc = self.context.zone.datacenter();
        let (target, glue) = match &instance.endpoint {
            Endpoint::Node { node, ip } => (self.node_name(node), Some(*ip)),
            Endpoint::Addr(ip) => (WireName::join(&[&ip_hex(*ip), "addr", dc, self.domain]), Some(*ip)),
            Endpoint::Host(host) => (WireName::join(&[host]), None),
        };
        let Some(target) = target else { return Ok(()) };
        self.reply.answer(ttl, Data::Srv { port: instance.port, target: &target }, glue)
    }

    /// An A or AAAA record for `ip`, if that is the family asked.
    fn push_ip(&mut self, ip: IpAddr, ttl: u32) -> Result<(), Refused> {
        let asked = match ip {
            IpAddr::V4(_) => self.wants(RecordType::A),
            IpAddr::V6(_) => self.wants(RecordType::AAAA),
        };
        if !asked {
            return Ok(());
        }
        self.reply.answer(ttl, Data::Address(ip), None)
    }

    /// A CNAME to a host name.
    fn push_host(&mut self, host: &str, ttl: u32) -> Result<(), Refused> {
        match WireName::join(&[host]) {
            Some(target) => self.reply.answer(ttl, Data::Cname(&target), None),
            None => Ok(()),
        }
    }

    /// A node's or an address's answer: A or AAAA as asked for an IP, a CNAME for a host name.
    fn push_address(&mut self, address: &str, ttl: u32) -> Result<(), Refused> {
        match address.parse::<IpAddr>() {
            Ok(ip) => self.push_ip(ip, ttl),
            Err(_) => self.push_host(address, ttl),
        }
    }

    /// A node's address (A/AAAA) and metadata (TXT, one record per `key=value`). Nodes are
    /// answered whatever their health, as Consul does.
    fn node(&mut self, name: &str) -> bool {
        let catalog = self.context.catalog;
        let Some(node) = catalog.node(name).or_else(|| catalog.nodes().find(|n| n.node.eq_ignore_ascii_case(name)))
        else {
            return false;
        };
        let ttl = self.context.settings.node_ttl.as_secs() as u32;
        if self.push_address(&node.address, ttl) == Err(Refused::Full) {
            return true;
        }
        if self.wants(RecordType::TXT) {
            for (key, value) in &node.meta {
                let text = format!("{key}={value}");
                if self.reply.answer(ttl, Data::Txt(&text), None).is_err() {
                    break;
                }
            }
        }
        true
    }

    /// `<hex>.addr`: the address itself, for the family asked.
    fn addr(&mut self, ip: IpAddr) -> bool {
        let ttl = self.context.settings.node_ttl.as_secs() as u32;
        let _ = self.push_ip(ip, ttl);
        true
    }
}

/// The whole core in one call, for the fuzzer and tests: bytes in, bytes out (or nothing). A
/// name outside the domains gets REFUSED here, since forwarding is the shell's.
pub fn respond(bytes: &[u8], transport: Transport, context: Context<'_>, shuffle: &mut Shuffle) -> Option<Vec<u8>> {
    match classify(bytes, transport, context.zone, context.settings) {
        Step::Answer(request, parsed) => Some(answer(&request, &parsed, context, shuffle)),
        Step::Recurse(request) => Some(error_reply(&request, ResponseCode::Refused, context.settings)),
        Step::Reply(bytes) => Some(bytes),
        Step::Drop => None,
    }
}
