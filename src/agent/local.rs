//! The agent's local state: the services and checks this agent is authoritative for, and what of
//! them the catalog has yet to learn. A pure value: no I/O, no clock (time comes in as an
//! argument), so anti-entropy's decisions are unit-tested here and the shell
//! ([`super::anti_entropy`]) only carries them out.
//!
//! Consul's model (`agent/local/state.go`): every service and check carries an in-sync flag. A local
//! change clears it; a successful catalog write sets it again, unless the entry changed meanwhile
//! (each change bumps a version, and a write only marks the version it carried). A full sync reads
//! what the catalog holds for this node, marks matching entries in sync, and schedules the
//! deregistration of what the catalog has and the agent does not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{self, CheckKind};
use crate::state::catalog::{HealthCheck, NodeEntries, ServiceInstance, SERF_HEALTH_CHECK_ID};
use crate::state::{
    CatalogCommand, CheckDefinition as CheckRow, CheckStatus, Command, Deregistration, Registration,
    ServiceDefinition as ServiceRow,
};

/// The service every server registers through reconciliation (Consul's `consul` service). The
/// leader owns it, so anti-entropy never removes it.
pub const CONSUL_SERVICE_ID: &str = "consul";
/// The check ID of a service in maintenance mode is this prefix and the service ID.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The check ID of a node in maintenance mode.
pub const NODE_MAINTENANCE_CHECK_ID: &str = "_node_maintenance";
/// Consul's `check_update_interval`: a check whose output changed but whose status did not is
/// written to the catalog at most this often, so chatty checks do not flood Raft.
pub const CHECK_OUTPUT_SYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Who defined an entry. Config entries come and go with the config files (reload); API entries
/// are persisted by the agent and survive restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Api,
}

/// This agent's node, as anti-entropy registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub address: String,
}

/// Where an entry stands with the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    InSync,
    /// Changed locally (or never written): to be registered.
    Pending,
    /// Removed locally: to be deregistered, then forgotten.
    Deleted,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    source: Source,
    version: u64,
    sync: SyncState,
}

/// A service of this agent.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    /// The definition; its `checks` are empty (the checks live in [`LocalState`]'s check table).
    pub definition: config::ServiceDefinition,
}

/// A check of this agent and its current result.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalCheck {
    pub id: String,
    pub name: String,
    pub notes: String,
    pub service_id: Option<String>,
    /// What runs it; `None` for a maintenance-mode check, which only the API changes.
    pub definition: Option<config::CheckDefinition>,
    pub status: CheckStatus,
    pub output: String,
    /// Since when the status has been critical, for `deregister_critical_service_after`.
    pub critical_since: Option<Instant>,
    /// The output changed while the status did not, at this time; it is written to the catalog
    /// [`CHECK_OUTPUT_SYNC_INTERVAL`] later (or sooner, with the next status change).
    output_changed_at: Option<Instant>,
}

impl LocalCheck {
    /// A check as its definition starts it: with its initial status and no output yet.
    pub fn new(definition: config::CheckDefinition, now: Instant) -> Self {
        let status = status_of(definition.initial_status);
        LocalCheck {
            id: definition.id.clone(),
            name: definition.name.clone(),
            notes: definition.notes.clone().unwrap_or_default(),
            service_id: definition.service_id.clone(),
            status,
            output: String::new(),
            critical_since: (status == CheckStatus::Critical).then_some(now),
            output_changed_at: None,
            definition: Some(definition),
        }
    }

    /// A maintenance-mode check: critical, with the operator's reason as its notes.
    fn maintenance(id: String, name: &str, service_id: Option<String>, notes: String) -> Self {
        LocalCheck {
            id,
            name: name.to_string(),
            notes,
            service_id,
            definition: None,
            status: CheckStatus::Critical,
            output: String::new(),
            critical_since: None,
            output_changed_at: None,
        }
    }

    /// Consul's name for the check's type, as the catalog shows it.
    pub fn kind_name(&self) -> &'static str {
        match self.definition.as_ref().map(|d| &d.kind) {
            None => "",
            Some(CheckKind::Script { .. }) => "script",
            Some(CheckKind::Http { .. }) => "http",
            Some(CheckKind::Tcp { .. }) => "tcp",
            Some(CheckKind::Ttl { .. }) => "ttl",
            Some(CheckKind::Alias { .. }) => "alias",
        }
    }

    /// The check's interval and timeout as Consul displays them (`"10s"`), empty when it has none.
    fn interval_and_timeout(&self) -> (String, String) {
        let show = config::format_duration;
        match self.definition.as_ref().map(|d| &d.kind) {
            Some(
                CheckKind::Script { interval, timeout, .. }
                | CheckKind::Http { interval, timeout, .. }
                | CheckKind::Tcp { interval, timeout, .. },
            ) => (show(*interval), show(*timeout)),
            _ => (String::new(), String::new()),
        }
    }

    /// The catalog row this check is written as.
    pub fn row(&self) -> CheckRow {
        let (interval, timeout) = self.interval_and_timeout();
        CheckRow {
            check_id: self.id.clone(),
            name: self.name.clone(),
            status: self.status,
            notes: self.notes.clone(),
            output: self.output.clone(),
            service_id: self.service_id.clone().unwrap_or_default(),
            kind: self.kind_name().to_string(),
            interval,
            timeout,
        }
    }
}

/// The catalog's status for a configured one.
pub fn status_of(status: config::CheckStatus) -> CheckStatus {
    match status {
        config::CheckStatus::Passing => CheckStatus::Passing,
        config::CheckStatus::Warning => CheckStatus::Warning,
        config::CheckStatus::Critical => CheckStatus::Critical,
    }
}

/// Why the local state refused a change. Worded for API error bodies, as Consul words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    #[error("Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name.")]
    UnknownService(String),
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    #[error("ServiceID {0:?} does not exist")]
    CheckOfUnknownService(String),
    #[error("ID {0:?} is reserved for the agent")]
    Reserved(String),
    #[error("this agent already holds {max} {what}")]
    TooMany { what: &'static str, max: usize },
}

/// One write anti-entropy owes the catalog, with the versions it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOp {
    /// Register a service with all its checks (together, so the catalog never shows the service
    /// without the checks that may keep it out of `?passing` answers).
    RegisterService {
        id: String,
    },
    DeregisterService {
        id: String,
    },
    /// Register a check (of the node, or of a service already in step).
    RegisterCheck {
        id: String,
    },
    DeregisterCheck {
        id: String,
    },
}

/// The services and checks this agent is authoritative for.
#[derive(Debug, Clone)]
pub struct LocalState {
    node: NodeInfo,
    services: BTreeMap<String, Entry<LocalService>>,
    checks: BTreeMap<String, Entry<LocalCheck>>,
    next_version: u64,
}

impl LocalState {
    pub fn new(node: NodeInfo) -> Self {
        LocalState { node, services: BTreeMap::new(), checks: BTreeMap::new(), next_version: 1 }
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Live services, by ID.
    pub fn services(&self) -> impl Iterator<Item = (&LocalService, Source)> {
        self.services.values().filter(|e| e.sync != SyncState::Deleted).map(|e| (&e.value, e.source))
    }

    pub fn service(&self, id: &str) -> Option<&LocalService> {
        self.services.get(id).filter(|e| e.sync != SyncState::Deleted).map(|e| &e.value)
    }

    /// Live checks, by ID.
    pub fn checks(&self) -> impl Iterator<Item = (&LocalCheck, Source)> {
        self.checks.values().filter(|e| e.sync != SyncState::Deleted).map(|e| (&e.value, e.source))
    }

    pub fn check(&self, id: &str) -> Option<&LocalCheck> {
        self.checks.get(id).filter(|e| e.sync != SyncState::Deleted).map(|e| &e.value)
    }

    /// The live checks of service `id`, and the node's own checks.
    pub fn checks_of_service<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a LocalCheck> + 'a {
        self.checks().map(|(c, _)| c).filter(move |c| c.service_id.as_deref().is_none_or(|s| s == id))
    }

    /// Add or replace a service and its checks. Checks of an earlier definition of the service
    /// that the new one no longer has are removed, as in Consul. Returns the IDs of the checks
    /// removed, for the check runner.
    pub fn add_service(
        &mut self,
        mut definition: config::ServiceDefinition,
        source: Source,
        now: Instant,
    ) -> Result<Vec<String>, LocalError> {
        if !self.services.contains_key(&definition.id) && self.live_services() >= config::SERVICES_MAX {
            return Err(LocalError::TooMany { what: "services", max: config::SERVICES_MAX });
        }
        let checks = std::mem::take(&mut definition.checks);
        let new_checks = checks.iter().filter(|c| self.check(&c.id).is_none()).count();
        if self.live_checks() + new_checks > config::CHECKS_MAX {
            return Err(LocalError::TooMany { what: "checks", max: config::CHECKS_MAX });
        }
        let id = definition.id.clone();
        let kept: BTreeSet<&str> = checks.iter().map(|c| c.id.as_str()).collect();
        let dropped: Vec<String> = self
            .checks()
            .filter(|(c, _)| c.service_id.as_deref() == Some(id.as_str()) && c.definition.is_some())
            .map(|(c, _)| c.id.clone())
            .filter(|check_id| !kept.contains(check_id.as_str()))
            .collect();
        for check_id in &dropped {
            self.mark_check_deleted(check_id);
        }
        // An unchanged definition stays in sync: re-reading config files must not rewrite the catalog.
        let unchanged = self.service(&id).is_some_and(|s| s.definition.same_as(&definition));
        if !unchanged {
            let version = self.version();
            self.services.insert(
                id.clone(),
                Entry { value: LocalService { definition }, source, version, sync: SyncState::Pending },
            );
        } else if let Some(entry) = self.services.get_mut(&id) {
            entry.source = source;
        }
        for check in checks {
            self.put_check(check, source, now);
        }
        Ok(dropped)
    }

    /// Entries held, counting removals not yet written (a bound, so O(1)).
    fn live_services(&self) -> usize {
        self.services.len()
    }

    fn live_checks(&self) -> usize {
        self.checks.len()
    }

    /// Remove a service and its checks. Returns the IDs of the checks removed.
    pub fn remove_service(&mut self, id: &str) -> Result<Vec<String>, LocalError> {
        if self.service(id).is_none() {
            return Err(LocalError::UnknownService(id.to_string()));
        }
        let version = self.version();
        if let Some(entry) = self.services.get_mut(id) {
            entry.sync = SyncState::Deleted;
            entry.version = version;
        }
        let checks: Vec<String> =
            self.checks().filter(|(c, _)| c.service_id.as_deref() == Some(id)).map(|(c, _)| c.id.clone()).collect();
        for check_id in &checks {
            self.mark_check_deleted(check_id);
        }
        Ok(checks)
    }

    /// Add or replace a check. A service check must name a service this agent has.
    pub fn add_check(
        &mut self,
        definition: config::CheckDefinition,
        source: Source,
        now: Instant,
    ) -> Result<(), LocalError> {
        if definition.id == NODE_MAINTENANCE_CHECK_ID || definition.id.starts_with(SERVICE_MAINTENANCE_PREFIX) {
            return Err(LocalError::Reserved(definition.id));
        }
        if let Some(service_id) = &definition.service_id {
            if self.service(service_id).is_none() {
                return Err(LocalError::CheckOfUnknownService(service_id.clone()));
            }
        }
        if self.check(&definition.id).is_none() && self.live_checks() >= config::CHECKS_MAX {
            return Err(LocalError::TooMany { what: "checks", max: config::CHECKS_MAX });
        }
        self.put_check(definition, source, now);
        Ok(())
    }

    /// Insert a check; an unchanged definition keeps its current result and sync state.
    fn put_check(&mut self, definition: config::CheckDefinition, source: Source, now: Instant) {
        if let Some(entry) = self.checks.get_mut(&definition.id) {
            if entry.sync != SyncState::Deleted
                && entry.value.definition.as_ref().is_some_and(|d| d.same_as(&definition))
            {
                entry.source = source;
                return;
            }
        }
        let version = self.version();
        let check = LocalCheck::new(definition, now);
        self.checks.insert(check.id.clone(), Entry { value: check, source, version, sync: SyncState::Pending });
    }

    /// Remove a check.
    pub fn remove_check(&mut self, id: &str) -> Result<(), LocalError> {
        if self.check(id).is_none() {
            return Err(LocalError::UnknownCheck(id.to_string()));
        }
        self.mark_check_deleted(id);
        Ok(())
    }

    fn mark_check_deleted(&mut self, id: &str) {
        let version = self.version();
        if let Some(entry) = self.checks.get_mut(id) {
            entry.sync = SyncState::Deleted;
            entry.version = version;
        }
    }

    /// A check's new result. A new status is written to the catalog at once; new output alone
    /// waits for [`CHECK_OUTPUT_SYNC_INTERVAL`]. Returns whether anything changed.
    pub fn update_check(
        &mut self,
        id: &str,
        status: CheckStatus,
        output: String,
        now: Instant,
    ) -> Result<bool, LocalError> {
        let version = self.version();
        let entry = match self.checks.get_mut(id) {
            Some(entry) if entry.sync != SyncState::Deleted => entry,
            _ => return Err(LocalError::UnknownCheck(id.to_string())),
        };
        let check = &mut entry.value;
        if check.status == status && check.output == output {
            return Ok(false);
        }
        if check.status != status {
            check.critical_since = (status == CheckStatus::Critical).then(|| check.critical_since.unwrap_or(now));
            check.status = status;
            check.output_changed_at = None;
            entry.sync = SyncState::Pending;
        } else if check.output_changed_at.is_none() {
            check.output_changed_at = Some(now);
        }
        check.output = output;
        entry.version = version;
        Ok(true)
    }

    /// Put service `id` (or the node, for `None`) in maintenance mode with `reason`, or take it
    /// out. Maintenance is a critical check, so the instance leaves `?passing` and DNS answers.
    pub fn set_maintenance(&mut self, service_id: Option<&str>, enable: bool, reason: &str) -> Result<(), LocalError> {
        if let Some(id) = service_id {
            if self.service(id).is_none() {
                return Err(LocalError::UnknownService(id.to_string()));
            }
        }
        let (check_id, name, default_reason) = match service_id {
            Some(id) => (
                format!("{SERVICE_MAINTENANCE_PREFIX}{id}"),
                "Service Maintenance Mode",
                "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.",
            ),
            None => (
                NODE_MAINTENANCE_CHECK_ID.to_string(),
                "Node Maintenance Mode",
                "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.",
            ),
        };
        if !enable {
            if self.check(&check_id).is_some() {
                self.mark_check_deleted(&check_id);
            }
            return Ok(());
        }
        let notes = if reason.is_empty() { default_reason.to_string() } else { reason.to_string() };
        if self.check(&check_id).is_some_and(|c| c.notes == notes) {
            return Ok(());
        }
        let version = self.version();
        let check = LocalCheck::maintenance(check_id.clone(), name, service_id.map(str::to_string), notes);
        self.checks.insert(check_id, Entry { value: check, source: Source::Api, version, sync: SyncState::Pending });
        Ok(())
    }

    /// Services whose check has been critical longer than its `deregister_critical_service_after`.
    pub fn critical_too_long(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks()
            .filter_map(|(check, _)| {
                let after = check.definition.as_ref()?.deregister_critical_service_after?;
                let since = check.critical_since?;
                (now.saturating_duration_since(since) >= after).then(|| check.service_id.clone()).flatten()
            })
            .collect();
        out.dedup();
        out
    }

    /// IDs of the live entries that came from `source`.
    pub fn ids_from(&self, source: Source) -> (Vec<String>, Vec<String>) {
        let services = self.services().filter(|(_, s)| *s == source).map(|(s, _)| s.definition.id.clone()).collect();
        let checks =
            self.checks().filter(|(c, s)| *s == source && c.definition.is_some()).map(|(c, _)| c.id.clone()).collect();
        (services, checks)
    }

    /// Compare with what the catalog holds for this node (a full sync): entries that match are
    /// in sync, entries that differ or are missing are pending, and what the catalog has that
    /// this agent does not is to be deregistered. The leader's own entries (`serfHealth`, the
    /// `consul` service) are left alone.
    pub fn compare_with(&mut self, remote: &NodeEntries) {
        let remote_services: BTreeMap<&str, &ServiceInstance> =
            remote.services.iter().map(|s| (s.id.as_str(), s)).collect();
        let remote_checks: BTreeMap<&str, &HealthCheck> =
            remote.checks.iter().map(|c| (c.check_id.as_str(), c)).collect();

        // Deleted entries the catalog no longer has are done with.
        self.services.retain(|id, e| e.sync != SyncState::Deleted || remote_services.contains_key(id.as_str()));
        self.checks.retain(|id, e| e.sync != SyncState::Deleted || remote_checks.contains_key(id.as_str()));
        for (id, entry) in &mut self.services {
            match (entry.sync, remote_services.get(id.as_str())) {
                (SyncState::Deleted, _) => {}
                (_, Some(row)) => {
                    // `enable_tag_override`: tags changed in the catalog (by an operator) win.
                    let definition = &mut entry.value.definition;
                    if definition.enable_tag_override {
                        definition.tags = row.tags.clone();
                    }
                    entry.sync =
                        if service_row(definition).matches(row) { SyncState::InSync } else { SyncState::Pending };
                }
                (_, None) => entry.sync = SyncState::Pending,
            }
        }
        for (id, entry) in &mut self.checks {
            match (entry.sync, remote_checks.get(id.as_str())) {
                (SyncState::Deleted, _) => {}
                (_, Some(row)) => {
                    let same = check_matches(&entry.value.row(), row);
                    // Output alone that differs waits for its deferred write.
                    entry.sync = match same {
                        Match::Same => SyncState::InSync,
                        Match::OutputOnly if entry.value.output_changed_at.is_some() => SyncState::InSync,
                        _ => SyncState::Pending,
                    };
                }
                (_, None) => entry.sync = SyncState::Pending,
            }
        }
        for row in &remote.services {
            if row.id != CONSUL_SERVICE_ID && !self.services.contains_key(&row.id) {
                self.services.insert(row.id.clone(), deleted_service(row));
            }
        }
        for row in &remote.checks {
            if row.check_id != SERF_HEALTH_CHECK_ID && !self.checks.contains_key(&row.check_id) {
                self.checks.insert(row.check_id.clone(), deleted_check(row));
            }
        }
    }

    /// The catalog writes owed now, services before checks (a check's service must exist first).
    pub fn pending(&self, now: Instant) -> Vec<SyncOp> {
        let mut ops = Vec::new();
        for (id, entry) in &self.services {
            match entry.sync {
                SyncState::Pending => ops.push(SyncOp::RegisterService { id: id.clone() }),
                SyncState::Deleted => ops.push(SyncOp::DeregisterService { id: id.clone() }),
                SyncState::InSync => {}
            }
        }
        for (id, entry) in &self.checks {
            // A pending service's registration carries its checks.
            let with_service = entry.value.service_id.as_ref().and_then(|s| self.services.get(s));
            let carried = with_service.is_some_and(|s| s.sync == SyncState::Pending);
            let service_gone = with_service.is_some_and(|s| s.sync == SyncState::Deleted);
            match entry.sync {
                SyncState::Pending if !carried => ops.push(SyncOp::RegisterCheck { id: id.clone() }),
                // Deregistering a service removes its checks too.
                SyncState::Deleted if !service_gone => ops.push(SyncOp::DeregisterCheck { id: id.clone() }),
                SyncState::InSync if output_due(&entry.value, now) && !carried => {
                    ops.push(SyncOp::RegisterCheck { id: id.clone() })
                }
                _ => {}
            }
        }
        ops
    }

    /// When a deferred output write falls due, if one is waiting.
    pub fn next_output_due(&self) -> Option<Instant> {
        self.checks
            .values()
            .filter(|e| e.sync == SyncState::InSync)
            .filter_map(|e| e.value.output_changed_at)
            .min()
            .map(|at| at + CHECK_OUTPUT_SYNC_INTERVAL)
    }

    /// Whether every entry is in step with the catalog.
    pub fn in_sync(&self, now: Instant) -> bool {
        self.pending(now).is_empty()
    }

    /// The write that carries out `op`, with the versions it covers, or `None` if `op` is no
    /// longer owed (the entry changed or went meanwhile).
    pub fn command(&self, op: &SyncOp) -> Option<(Command, Covered)> {
        let node = &self.node;
        let registration = |service: Option<ServiceRow>, checks: Vec<CheckRow>| Registration {
            node: node.name.clone(),
            node_id: node.id.clone(),
            address: node.address.clone(),
            service,
            checks,
            // The leader's reconciliation owns the node row (address from gossip, meta kept);
            // this creates it if reconciliation has not yet.
            skip_node_update: true,
            ..Registration::default()
        };
        match op {
            SyncOp::RegisterService { id } => {
                let entry = self.services.get(id).filter(|e| e.sync == SyncState::Pending)?;
                let mut covers = vec![(EntryKind::Service, id.clone(), entry.version)];
                let mut checks = Vec::new();
                for (check_id, check) in &self.checks {
                    if check.sync != SyncState::Deleted && check.value.service_id.as_deref() == Some(id) {
                        checks.push(check.value.row());
                        covers.push((EntryKind::Check, check_id.clone(), check.version));
                    }
                }
                let command = registration(Some(service_row(&entry.value.definition)), checks);
                Some((Command::Catalog(CatalogCommand::Register(command)), covers))
            }
            SyncOp::RegisterCheck { id } => {
                let entry = self.checks.get(id).filter(|e| e.sync != SyncState::Deleted)?;
                let command = registration(None, vec![entry.value.row()]);
                Some((
                    Command::Catalog(CatalogCommand::Register(command)),
                    vec![(EntryKind::Check, id.clone(), entry.version)],
                ))
            }
            SyncOp::DeregisterService { id } => {
                let entry = self.services.get(id).filter(|e| e.sync == SyncState::Deleted)?;
                let mut covers = vec![(EntryKind::Service, id.clone(), entry.version)];
                for (check_id, check) in &self.checks {
                    if check.sync == SyncState::Deleted && check.value.service_id.as_deref() == Some(id) {
                        covers.push((EntryKind::Check, check_id.clone(), check.version));
                    }
                }
                let command = Deregistration { node: node.name.clone(), service_id: Some(id.clone()), check_id: None };
                Some((Command::Catalog(CatalogCommand::Deregister(command)), covers))
            }
            SyncOp::DeregisterCheck { id } => {
                let entry = self.checks.get(id).filter(|e| e.sync == SyncState::Deleted)?;
                let command = Deregistration { node: node.name.clone(), service_id: None, check_id: Some(id.clone()) };
                Some((
                    Command::Catalog(CatalogCommand::Deregister(command)),
                    vec![(EntryKind::Check, id.clone(), entry.version)],
                ))
            }
        }
    }

    /// A write covering these versions succeeded: mark what it covered in sync (or forget it, if it
    /// was a deregistration), unless the entry changed after the write was built.
    pub fn synced(&mut self, covers: &[(EntryKind, String, u64)]) {
        for (kind, id, version) in covers {
            match kind {
                EntryKind::Service => settle(&mut self.services, id, *version),
                EntryKind::Check => {
                    if let Some(entry) = self.checks.get_mut(id) {
                        if entry.version == *version {
                            entry.value.output_changed_at = None;
                        }
                    }
                    settle(&mut self.checks, id, *version)
                }
            }
        }
    }
}

/// The entries (and their versions) one sync write covers.
pub type Covered = Vec<(EntryKind, String, u64)>;

/// Which table a synced version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Service,
    Check,
}

fn settle<T>(table: &mut BTreeMap<String, Entry<T>>, id: &str, version: u64) {
    let Some(entry) = table.get_mut(id) else { return };
    if entry.version != version {
        return;
    }
    match entry.sync {
        SyncState::Deleted => {
            table.remove(id);
        }
        _ => entry.sync = SyncState::InSync,
    }
}

fn output_due(check: &LocalCheck, now: Instant) -> bool {
    check.output_changed_at.is_some_and(|at| now >= at + CHECK_OUTPUT_SYNC_INTERVAL)
}

/// A catalog service row that this agent no longer has, to be deregistered.
fn deleted_service(row: &ServiceInstance) -> Entry<LocalService> {
    let definition = config::ServiceDefinition {
        id: row.id.clone(),
        name: row.service.clone(),
        tags: Vec::new(),
        address: None,
        port: None,
        meta: BTreeMap::new(),
        enable_tag_override: false,
        weights: row.weights,
        checks: Vec::new(),
        origin: config::Origin { path: "catalog".into(), field: String::new() },
    };
    Entry { value: LocalService { definition }, source: Source::Api, version: 0, sync: SyncState::Deleted }
}

/// A catalog check row that this agent no longer has, to be deregistered.
fn deleted_check(row: &HealthCheck) -> Entry<LocalCheck> {
    let service_id = (!row.service_id.is_empty()).then(|| row.service_id.clone());
    let check = LocalCheck::maintenance(row.check_id.clone(), &row.name, service_id, String::new());
    Entry { value: check, source: Source::Api, version: 0, sync: SyncState::Deleted }
}

/// The catalog's shape of a service definition.
pub fn service_row(definition: &config::ServiceDefinition) -> ServiceRow {
    ServiceRow {
        id: definition.id.clone(),
        service: definition.name.clone(),
        tags: definition.tags.clone(),
        address: definition.address.clone().unwrap_or_default(),
        port: definition.port.unwrap_or(0),
        meta: definition.meta.clone(),
        enable_tag_override: definition.enable_tag_override,
        weights: definition.weights,
    }
}

impl ServiceRow {
    /// Whether the catalog's row already says what this definition says.
    fn matches(&self, row: &ServiceInstance) -> bool {
        self.id == row.id
            && self.service == row.service
            && self.tags == row.tags
            && self.address == row.address
            && self.port == row.port
            && self.meta == row.meta
            && self.enable_tag_override == row.enable_tag_override
            && self.weights == row.weights
    }
}

enum Match {
    Same,
    OutputOnly,
    Different,
}

fn check_matches(local: &CheckRow, row: &HealthCheck) -> Match {
    let same_but_output = local.check_id == row.check_id
        && local.name == row.name
        && local.status == row.status
        && local.notes == row.notes
        && local.service_id == row.service_id
        && local.kind == row.kind
        && local.interval == row.interval
        && local.timeout == row.timeout;
    match (same_but_output, local.output == row.output) {
        (true, true) => Match::Same,
        (true, false) => Match::OutputOnly,
        _ => Match::Different,
    }
}

impl config::ServiceDefinition {
    /// The same service, whatever file or request it came from.
    fn same_as(&self, other: &config::ServiceDefinition) -> bool {
        let strip = |d: &config::ServiceDefinition| {
            let mut d = d.clone();
            d.origin = config::Origin { path: Default::default(), field: String::new() };
            d.checks.clear();
            d
        };
        strip(self) == strip(other)
    }
}

impl config::CheckDefinition {
    /// The same check, whatever file or request it came from.
    fn same_as(&self, other: &config::CheckDefinition) -> bool {
        let strip = |d: &config::CheckDefinition| {
            let mut d = d.clone();
            d.origin = config::Origin { path: Default::default(), field: String::new() };
            d
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests;
