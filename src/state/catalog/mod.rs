//! The catalog: nodes, the service instances on them, and health checks, with Consul's indexes.
//!
//! Every row has a create and a modify index, and every table an index (the last write that
//! changed it), from which the `X-Consul-Index` of `/v1/catalog/*` and `/v1/health/*` reads comes.
//! A write that would store an identical row is skipped, so that anti-entropy re-syncing an
//! unchanged agent does not wake every blocking query.
//!
//! Each live service name also has its own index, moved by anything a health answer for that
//! name shows (its instances, their nodes, their checks and their nodes' checks), so a watcher of
//! one service is not woken by changes to another (Consul's `service.<name>` index entries).
//! When a name's last instance goes, its index goes with it and the extinction index records when.

mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use write::CatalogError;

use super::command::{CheckStatus, Weights};
use super::consistency::{Inconsistency, Table};

/// The check ID of the gossip layer's node health check. A node whose `serfHealth` is not
/// critical keeps its name against a registration with another node ID (Consul's rule).
pub const SERF_HEALTH_CHECK_ID: &str = "serfHealth";

/// How healthy an instance must be to be answered. One rule for HTTP `?passing` and DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthBar {
    /// Every check passing (`?passing`, DNS with `only_passing`).
    Passing,
    /// No check critical or in maintenance; warnings still answer (DNS's default, Consul's).
    NotCritical,
}

impl HealthBar {
    pub fn admits(self, status: CheckStatus) -> bool {
        match self {
            HealthBar::Passing => status == CheckStatus::Passing,
            HealthBar::NotCritical => matches!(status, CheckStatus::Passing | CheckStatus::Warning),
        }
    }
}

/// A node row (Consul's `Node`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's UUID; empty when no registration gave one.
    pub id: String,
    pub node: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service instance row, keyed by (node, id) (Consul's `ServiceNode` without node fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub node: String,
    pub id: String,
    /// The service name.
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub weights: Weights,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A health check row, keyed by (node, check_id) (Consul's `HealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    /// Empty for a node-level check, which counts against every service on the node.
    pub service_id: String,
    /// Copied from the service, and kept in step when the service changes.
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A live service name: its instances, and the last index at which anything a health answer for
/// it shows changed. Derived from the other tables except for that index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceName {
    index: u64,
    /// (node, service id) of each instance, so lookups by name need not scan every service.
    instances: BTreeSet<(String, String)>,
}

/// Everything the catalog holds for one node: what an agent's anti-entropy compares its local
/// state with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntries {
    pub node: Option<Node>,
    pub services: Vec<ServiceInstance>,
    pub checks: Vec<HealthCheck>,
}

/// The catalog tables and their indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<(String, String), ServiceInstance>,
    checks: BTreeMap<(String, String), HealthCheck>,
    service_names: BTreeMap<String, ServiceName>,
    nodes_index: u64,
    services_index: u64,
    checks_index: u64,
    /// The last index at which a service name lost its last instance.
    service_extinction_index: u64,
}

/// Rows of a (node, x)-keyed table that belong to `node`, in x order.
fn rows_of_node<'a, R>(table: &'a BTreeMap<(String, String), R>, node: &'a str) -> impl Iterator<Item = &'a R> + 'a {
    table.range((node.to_owned(), String::new())..).take_while(move |((owner, _), _)| owner == node).map(|(_, row)| row)
}

impl Catalog {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The node `name` with its services and checks.
    pub fn node_entries(&self, name: &str) -> NodeEntries {
        NodeEntries {
            node: self.nodes.get(name).cloned(),
            services: self.services_of_node(name).cloned().collect(),
            checks: self.checks_of_node(name).cloned().collect(),
        }
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn service(&self, node: &str, service_id: &str) -> Option<&ServiceInstance> {
        self.services.get(&(node.to_owned(), service_id.to_owned()))
    }

    /// The services registered on `node`, by service id.
    pub fn services_of_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a ServiceInstance> + 'a {
        rows_of_node(&self.services, node)
    }

    /// Every instance of the service named `name` with its node, sorted by node, then id. Names
    /// are compared without ASCII case, as Consul's service index does: the exact spelling is
    /// looked up first, and only when no service has it are the names scanned for others (a pass
    /// over the names; DNS questions arrive lower-cased, so this is what `Web` costs there).
    pub fn service_instances(&self, name: &str) -> Vec<(&Node, &ServiceInstance)> {
        if self.has_service(name) {
            return self.instances_named_exactly(name);
        }
        let spellings = self.service_names.keys().filter(|known| known.eq_ignore_ascii_case(name));
        let mut instances: Vec<_> = spellings.flat_map(|known| self.instances_named_exactly(known)).collect();
        instances.sort_by(|a, b| (&a.0.node, &a.1.id).cmp(&(&b.0.node, &b.1.id)));
        instances
    }

    fn instances_named_exactly(&self, name: &str) -> Vec<(&Node, &ServiceInstance)> {
        let Some(entry) = self.service_names.get(name) else { return Vec::new() };
        // Indexing cannot fail: instances only name existing services, and services existing nodes.
        entry.instances.iter().map(|key| (&self.nodes[&key.0], &self.services[key])).collect()
    }

    /// Is there a service named exactly `name`?
    pub fn has_service(&self, name: &str) -> bool {
        self.service_names.contains_key(name)
    }

    /// Every service name with the union of its instances' tags (`/v1/catalog/services`).
    pub fn service_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let tags_of = |entry: &ServiceName| -> BTreeSet<String> {
            entry.instances.iter().flat_map(|key| self.services[key].tags.iter().cloned()).collect()
        };
        self.service_names.iter().map(|(name, entry)| (name.clone(), tags_of(entry))).collect()
    }

    pub fn check(&self, node: &str, check_id: &str) -> Option<&HealthCheck> {
        self.checks.get(&(node.to_owned(), check_id.to_owned()))
    }

    /// All checks, by node, then check id.
    pub fn checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.values()
    }

    /// Every check on `node`, node-level and service checks alike, by check id.
    pub fn checks_of_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        rows_of_node(&self.checks, node)
    }

    /// The checks bound to one service instance (not the node-level checks that also count
    /// against it), by check id.
    pub fn checks_of_service<'a>(
        &'a self,
        node: &'a str,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        self.checks_of_node(node).filter(move |check| check.service_id == service_id)
    }

    /// The checks that count against one service instance: its node's node-level checks and the
    /// instance's own, by check id (what `/v1/health/service/<name>` shows with each instance).
    pub fn checks_of_instance<'a>(
        &'a self,
        node: &'a str,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        self.checks_of_node(node).filter(move |check| check.service_id.is_empty() || check.service_id == service_id)
    }

    /// The instances of `name` whose every check, node-level and their own, is passing:
    /// Consul's `?passing` answer. Sorted by node, then id.
    pub fn passing_instances(&self, name: &str) -> Vec<(&Node, &ServiceInstance)> {
        self.healthy_instances(name, HealthBar::Passing)
    }

    /// The instances of `name` whose every check, node-level and their own, clears `bar`: all
    /// passing, or (DNS's default) none critical or in maintenance. Sorted by node, then id.
    pub fn healthy_instances(&self, name: &str, bar: HealthBar) -> Vec<(&Node, &ServiceInstance)> {
        let mut instances = self.service_instances(name);
        instances.retain(|(node, instance)| self.clears(node, instance, bar));
        instances
    }

    /// Does every check of `instance`, node-level and its own, clear `bar`?
    pub fn clears(&self, node: &Node, instance: &ServiceInstance, bar: HealthBar) -> bool {
        self.checks_of_instance(&node.node, &instance.id).all(|check| bar.admits(check.status))
    }

    /// Index of the last write that changed the nodes table (0 before any).
    pub fn nodes_index(&self) -> u64 {
        self.nodes_index
    }

    /// Index of the last write that changed the services table (0 before any).
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// Index of the last write that changed the checks table (0 before any).
    pub fn checks_index(&self) -> u64 {
        self.checks_index
    }

    /// `X-Consul-Index` for reads of one service name (`/v1/catalog/service/<name>`,
    /// `/v1/health/service/<name>`), spelled in any case as [`Catalog::service_instances`]
    /// reads it. For a name without instances, Consul's rule: the last extinction of any name,
    /// or before any the highest table index. At least 1.
    pub fn index_for_service(&self, name: &str) -> u64 {
        let other_spellings = || {
            let matching = self.service_names.iter().filter(|(known, _)| known.eq_ignore_ascii_case(name));
            matching.map(|(_, entry)| entry.index).max()
        };
        let index = match self.service_names.get(name).map(|entry| entry.index).or_else(other_spellings) {
            Some(index) => index,
            None if self.service_extinction_index > 0 => self.service_extinction_index,
            None => self.nodes_index.max(self.services_index).max(self.checks_index),
        };
        index.max(1)
    }

    /// Structural rules every reachable catalog obeys; checked on snapshots from outside.
    pub(crate) fn check_consistency(&self, last_index: u64) -> Result<(), Inconsistency> {
        let table_indexes = [
            (Table::Nodes, self.nodes_index),
            (Table::Services, self.services_index),
            (Table::Checks, self.checks_index),
            (Table::ServiceNames, self.service_extinction_index),
        ];
        if let Some((table, _)) = table_indexes.into_iter().find(|(_, index)| *index > last_index) {
            return Err(Inconsistency::TableIndexAhead { table });
        }
        self.check_nodes()?;
        self.check_services()?;
        self.check_checks()?;
        self.check_service_names(last_index)
    }

    fn check_nodes(&self) -> Result<(), Inconsistency> {
        for (name, node) in &self.nodes {
            let key = || name.clone();
            if node.node != *name {
                return Err(Inconsistency::KeyMismatch { table: Table::Nodes, key: key() });
            }
            if !indexes_in_order(node.create_index, node.modify_index, self.nodes_index) {
                return Err(Inconsistency::RowIndexes { table: Table::Nodes, key: key() });
            }
        }
        Ok(())
    }

    fn check_services(&self) -> Result<(), Inconsistency> {
        for ((node, id), service) in &self.services {
            let key = || format!("{node}/{id}");
            if service.node != *node || service.id != *id {
                return Err(Inconsistency::KeyMismatch { table: Table::Services, key: key() });
            }
            if !indexes_in_order(service.create_index, service.modify_index, self.services_index) {
                return Err(Inconsistency::RowIndexes { table: Table::Services, key: key() });
            }
            if !self.nodes.contains_key(node) {
                return Err(Inconsistency::Orphan { table: Table::Services, key: key() });
            }
        }
        Ok(())
    }

    fn check_checks(&self) -> Result<(), Inconsistency> {
        for ((node, id), check) in &self.checks {
            let key = || format!("{node}/{id}");
            if check.node != *node || check.check_id != *id {
                return Err(Inconsistency::KeyMismatch { table: Table::Checks, key: key() });
            }
            if !indexes_in_order(check.create_index, check.modify_index, self.checks_index) {
                return Err(Inconsistency::RowIndexes { table: Table::Checks, key: key() });
            }
            if !self.nodes.contains_key(node) {
                return Err(Inconsistency::Orphan { table: Table::Checks, key: key() });
            }
            let labels_true = match check.service_id.as_str() {
                "" => check.service_name.is_empty() && check.service_tags.is_empty(),
                service_id => match self.service(node, service_id) {
                    None => return Err(Inconsistency::Orphan { table: Table::Checks, key: key() }),
                    Some(service) => check.service_name == service.service && check.service_tags == service.tags,
                },
            };
            if !labels_true {
                return Err(Inconsistency::StaleDerived { table: Table::Checks, key: key() });
            }
        }
        Ok(())
    }

    fn check_service_names(&self, last_index: u64) -> Result<(), Inconsistency> {
        let mut expected: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
        for (key, service) in &self.services {
            expected.entry(service.service.as_str()).or_default().insert(key.clone());
        }
        let names: BTreeSet<&str> =
            expected.keys().copied().chain(self.service_names.keys().map(String::as_str)).collect();
        for name in names {
            let stored = self.service_names.get(name);
            let key = || name.to_owned();
            if stored.map(|entry| &entry.instances) != expected.get(name) {
                return Err(Inconsistency::StaleDerived { table: Table::ServiceNames, key: key() });
            }
            if stored.is_some_and(|entry| entry.index == 0 || entry.index > last_index) {
                return Err(Inconsistency::RowIndexes { table: Table::ServiceNames, key: key() });
            }
        }
        Ok(())
    }
}

/// A row's indexes are sane: created at a real index, modified no earlier, and no later than the
/// last write to its table.
fn indexes_in_order(create_index: u64, modify_index: u64, table_index: u64) -> bool {
    create_index > 0 && create_index <= modify_index && modify_index <= table_index
}
