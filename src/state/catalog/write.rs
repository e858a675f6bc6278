//! Register and deregister, following Consul's `ensureRegistrationTxn` and the delete functions
//! of `agent/consul/state/catalog.go`.
//!
//! A registration is validated in full before anything is written ([`Catalog::plan`]), so a
//! rejected one leaves the catalog exactly as it was, as Consul's transaction abort does.

use thiserror::Error;

use super::super::command::{
    CatalogCommand, CheckDefinition, CheckStatus, Deregistration, Outcome, Registration, ServiceDefinition,
};
use super::{Catalog, HealthCheck, Node, ServiceInstance, SERF_HEALTH_CHECK_ID};

/// Why a catalog command was rejected. In every case the catalog is unchanged. The texts are
/// Consul's where Consul has one, since clients show them to users.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    #[error("Must provide node")]
    MissingNode,
    #[error("Must provide address if SkipNodeUpdate is not set")]
    MissingAddress,
    #[error("Must provide address to register new node '{node}'")]
    MissingAddressForNewNode { node: String },
    #[error("Must provide service name")]
    MissingServiceName,
    #[error("Must provide check ID or name")]
    MissingCheckId,
    #[error("Unknown service ID '{service_id}' for check ID '{check_id}'")]
    UnknownServiceId { service_id: String, check_id: String },
    /// A live node holds the name under another node ID (two agents configured with one name).
    #[error("Node name {node} is reserved by node {holder_id} with name {node} ({holder_address})")]
    NodeNameReserved { node: String, holder_id: String, holder_address: String },
}

/// A validated registration: the rows to write, without their indexes yet.
#[derive(Debug)]
struct Plan {
    /// A node that carried this registration's node ID under another name. Consul treats that
    /// as a rename and removes the old node with its services and checks first.
    renamed_from: Option<String>,
    /// `None` when `skip_node_update` leaves an existing node alone.
    node: Option<Node>,
    service: Option<ServiceInstance>,
    checks: Vec<HealthCheck>,
}

/// Rows whose create/modify indexes the write path sets.
trait Row: PartialEq {
    fn indexes(&self) -> (u64, u64);
    fn set_indexes(&mut self, create_index: u64, modify_index: u64);
}

macro_rules! impl_row {
    ($($row:ty),*) => {$(
        impl Row for $row {
            fn indexes(&self) -> (u64, u64) {
                (self.create_index, self.modify_index)
            }
            fn set_indexes(&mut self, create_index: u64, modify_index: u64) {
                self.create_index = create_index;
                self.modify_index = modify_index;
            }
        }
    )*};
}
impl_row!(Node, ServiceInstance, HealthCheck);

/// Give `row` its indexes as the successor of `old` written at `index`. Returns false, and the
/// caller must not write, when it equals `old` (Consul's `IsSame` checks).
fn stamp<R: Row>(row: &mut R, old: Option<&R>, index: u64) -> bool {
    let Some(old) = old else {
        row.set_indexes(index, index);
        return true;
    };
    let (create_index, modify_index) = old.indexes();
    row.set_indexes(create_index, modify_index);
    if row == old {
        return false;
    }
    row.set_indexes(create_index, index);
    true
}

fn key(node: &str, id: &str) -> (String, String) {
    (node.to_owned(), id.to_owned())
}

impl Catalog {
    /// Apply one catalog command at `index`: `Done`, or `Rejected` with nothing changed.
    pub(crate) fn apply(&mut self, index: u64, command: &CatalogCommand) -> Outcome {
        let result = match command {
            CatalogCommand::Register(registration) => self.register(index, registration),
            CatalogCommand::Deregister(deregistration) => self.deregister(index, deregistration),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Rejected(error.to_string()),
        }
    }

    fn register(&mut self, index: u64, registration: &Registration) -> Result<(), CatalogError> {
        let plan = self.plan(registration)?;
        if let Some(old_name) = &plan.renamed_from {
            self.delete_node(index, old_name);
        }
        if let Some(node) = plan.node {
            self.upsert_node(index, node);
        }
        if let Some(service) = plan.service {
            self.upsert_service(index, service);
        }
        for check in plan.checks {
            self.upsert_check(index, check);
        }
        Ok(())
    }

    /// Consul's order: a service id wins over a check id; neither means the whole node.
    /// Removing something absent succeeds and changes nothing.
    fn deregister(&mut self, index: u64, deregistration: &Deregistration) -> Result<(), CatalogError> {
        let node = deregistration.node.as_str();
        if node.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        let given = |id: &Option<String>| id.clone().filter(|id| !id.is_empty());
        match (given(&deregistration.service_id), given(&deregistration.check_id)) {
            (Some(service_id), _) => self.delete_service(index, node, &service_id),
            (None, Some(check_id)) => self.delete_check(index, node, &check_id),
            (None, None) => self.delete_node(index, node),
        };
        Ok(())
    }

    /// Validate `registration` against the current catalog and normalise it into rows.
    fn plan(&self, registration: &Registration) -> Result<Plan, CatalogError> {
        let name = registration.node.as_str();
        if name.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        let existing = self.nodes.get(name);
        let node_untouched = registration.skip_node_update && existing.is_some();
        if registration.address.is_empty() && !node_untouched {
            return Err(if registration.skip_node_update {
                CatalogError::MissingAddressForNewNode { node: name.to_owned() }
            } else {
                CatalogError::MissingAddress
            });
        }
        let (node, renamed_from) = if node_untouched {
            (None, None)
        } else {
            let (node, renamed_from) = self.plan_node(registration, existing)?;
            (Some(node), renamed_from)
        };
        let service = registration.service.as_ref().map(|def| plan_service(name, def)).transpose()?;
        let checks = registration
            .checks
            .iter()
            .map(|def| self.plan_check(name, def, service.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan { renamed_from, node, service, checks })
    }

    /// The node row a registration asks for, and the node it renames, if any (`ensureNodeTxn`).
    fn plan_node(
        &self,
        registration: &Registration,
        existing: Option<&Node>,
    ) -> Result<(Node, Option<String>), CatalogError> {
        let name = registration.node.as_str();
        let id = registration.node_id.as_str();
        let mut renamed_from = None;
        if !id.is_empty() {
            let holder = self.nodes.values().find(|node| node.id == id && node.node != name);
            self.check_name_free(name, id, holder.is_none())?;
            renamed_from = holder.map(|node| node.node.clone());
        }
        // Consul would clear a node's ID when a registration omits it; a curl registration of an
        // external service then silently strips the agent's identity, so keep it instead.
        let id = match (id, existing) {
            ("", Some(existing)) => existing.id.clone(),
            _ => id.to_owned(),
        };
        let node = Node {
            id,
            node: name.to_owned(),
            address: registration.address.clone(),
            tagged_addresses: registration.tagged_addresses.clone(),
            meta: registration.node_meta.clone(),
            create_index: 0,
            modify_index: 0,
        };
        Ok((node, renamed_from))
    }

    /// Consul's `ensureNoNodeWithSimilarNameTxn`: a node registering with ID `id` may not take
    /// `name` from a node with another ID whose `serfHealth` says it is alive. A holder without
    /// an ID yields when `allow_clash_without_id` (an old agent gaining an ID).
    fn check_name_free(&self, name: &str, id: &str, allow_clash_without_id: bool) -> Result<(), CatalogError> {
        let Some(holder) = self.nodes.get(name) else { return Ok(()) };
        if holder.id == id || (holder.id.is_empty() && allow_clash_without_id) {
            return Ok(());
        }
        let alive = self.check(name, SERF_HEALTH_CHECK_ID).is_some_and(|check| check.status != CheckStatus::Critical);
        if !alive {
            return Ok(());
        }
        Err(CatalogError::NodeNameReserved {
            node: name.to_owned(),
            holder_id: holder.id.clone(),
            holder_address: holder.address.clone(),
        })
    }

    /// A check row; its service must be on the node already or in the same registration.
    fn plan_check(
        &self,
        node: &str,
        def: &CheckDefinition,
        registering: Option<&ServiceInstance>,
    ) -> Result<HealthCheck, CatalogError> {
        let check_id = if def.check_id.is_empty() { def.name.clone() } else { def.check_id.clone() };
        if check_id.is_empty() {
            return Err(CatalogError::MissingCheckId);
        }
        let (service_name, service_tags) = match def.service_id.as_str() {
            "" => (String::new(), Vec::new()),
            service_id => {
                let owner = registering.filter(|service| service.id == service_id);
                let owner = owner.or_else(|| self.service(node, service_id)).ok_or_else(|| {
                    CatalogError::UnknownServiceId { service_id: service_id.to_owned(), check_id: check_id.clone() }
                })?;
                (owner.service.clone(), owner.tags.clone())
            }
        };
        Ok(HealthCheck {
            node: node.to_owned(),
            check_id,
            name: def.name.clone(),
            status: def.status,
            notes: def.notes.clone(),
            output: def.output.clone(),
            service_id: def.service_id.clone(),
            service_name,
            service_tags,
            kind: def.kind.clone(),
            interval: def.interval.clone(),
            timeout: def.timeout.clone(),
            create_index: 0,
            modify_index: 0,
        })
    }

    fn upsert_node(&mut self, index: u64, mut node: Node) {
        let name = node.node.clone();
        if !stamp(&mut node, self.nodes.get(&name), index) {
            return;
        }
        self.nodes.insert(name.clone(), node);
        self.nodes_index = index;
        // Health answers show the node's address, so its services' watchers must see the change.
        self.touch_services_of_node(index, &name);
    }

    fn upsert_service(&mut self, index: u64, mut service: ServiceInstance) {
        let key = key(&service.node, &service.id);
        let old = self.services.get(&key);
        let old_labels = old.map(|old| (old.service.clone(), old.tags.clone()));
        if !stamp(&mut service, old, index) {
            return;
        }
        let relabelled =
            old_labels.as_ref().is_some_and(|(name, tags)| *name != service.service || *tags != service.tags);
        if let Some((old_name, _)) = old_labels.filter(|(old_name, _)| *old_name != service.service) {
            self.remove_instance(index, &old_name, &key);
        }
        self.add_instance(index, &service.service, key.clone());
        self.services.insert(key.clone(), service);
        self.services_index = index;
        if relabelled {
            self.relabel_checks(index, &key);
        }
    }

    /// Checks carry a copy of their service's name and tags (Consul copies them in when the check
    /// is registered, and lets them go stale); keep the copies true when the service changes.
    fn relabel_checks(&mut self, index: u64, service_key: &(String, String)) {
        let service = &self.services[service_key];
        let (name, tags) = (service.service.clone(), service.tags.clone());
        let (node, service_id) = service_key;
        let mut relabelled = false;
        let range = self.checks.range_mut(key(node, "")..).take_while(|((owner, _), _)| owner == node);
        for (_, check) in range.filter(|(_, check)| check.service_id == *service_id) {
            check.service_name = name.clone();
            check.service_tags = tags.clone();
            check.modify_index = index;
            relabelled = true;
        }
        if relabelled {
            self.checks_index = index;
        }
    }

    fn upsert_check(&mut self, index: u64, mut check: HealthCheck) {
        let key = key(&check.node, &check.check_id);
        let old = self.checks.get(&key);
        let old_service_id = old.map(|old| old.service_id.clone());
        if !stamp(&mut check, old, index) {
            return;
        }
        if let Some(old_service_id) = old_service_id.filter(|id| *id != check.service_id) {
            self.touch_for_check(index, &check.node, &old_service_id);
        }
        self.touch_for_check(index, &check.node, &check.service_id);
        self.checks.insert(key, check);
        self.checks_index = index;
    }

    fn delete_check(&mut self, index: u64, node: &str, check_id: &str) -> bool {
        let Some(check) = self.checks.remove(&key(node, check_id)) else { return false };
        self.checks_index = index;
        self.touch_for_check(index, node, &check.service_id);
        true
    }

    /// Remove a service instance and the checks bound to it.
    fn delete_service(&mut self, index: u64, node: &str, service_id: &str) -> bool {
        let key = key(node, service_id);
        if !self.services.contains_key(&key) {
            return false;
        }
        let check_ids: Vec<String> = self.checks_of_service(node, service_id).map(|c| c.check_id.clone()).collect();
        for check_id in check_ids {
            self.delete_check(index, node, &check_id);
        }
        if let Some(service) = self.services.remove(&key) {
            self.services_index = index;
            self.remove_instance(index, &service.service, &key);
        }
        true
    }

    /// Remove a node with all its services and checks.
    fn delete_node(&mut self, index: u64, name: &str) -> bool {
        if !self.nodes.contains_key(name) {
            return false;
        }
        let service_ids: Vec<String> = self.services_of_node(name).map(|s| s.id.clone()).collect();
        for service_id in service_ids {
            self.delete_service(index, name, &service_id);
        }
        let check_ids: Vec<String> = self.checks_of_node(name).map(|c| c.check_id.clone()).collect();
        for check_id in check_ids {
            self.delete_check(index, name, &check_id);
        }
        self.nodes.remove(name);
        self.nodes_index = index;
        true
    }

    /// A service check changes the health of its service; a node-level check that of every
    /// service on the node.
    fn touch_for_check(&mut self, index: u64, node: &str, service_id: &str) {
        if service_id.is_empty() {
            return self.touch_services_of_node(index, node);
        }
        if let Some(name) = self.service(node, service_id).map(|service| service.service.clone()) {
            self.touch_service_name(index, &name);
        }
    }

    fn touch_services_of_node(&mut self, index: u64, node: &str) {
        let names: Vec<String> = self.services_of_node(node).map(|service| service.service.clone()).collect();
        for name in names {
            self.touch_service_name(index, &name);
        }
    }

    fn touch_service_name(&mut self, index: u64, name: &str) {
        if let Some(entry) = self.service_names.get_mut(name) {
            entry.index = index;
        }
    }

    fn add_instance(&mut self, index: u64, name: &str, key: (String, String)) {
        let entry = self.service_names.entry(name.to_owned()).or_default();
        entry.instances.insert(key);
        entry.index = index;
    }

    fn remove_instance(&mut self, index: u64, name: &str, key: &(String, String)) {
        let Some(entry) = self.service_names.get_mut(name) else { return };
        entry.instances.remove(key);
        entry.index = index;
        if entry.instances.is_empty() {
            self.service_names.remove(name);
            self.service_extinction_index = index;
        }
    }
}

/// The service row a registration asks for; its id defaults to its name, as in Consul.
fn plan_service(node: &str, def: &ServiceDefinition) -> Result<ServiceInstance, CatalogError> {
    if def.service.is_empty() {
        return Err(CatalogError::MissingServiceName);
    }
    Ok(ServiceInstance {
        node: node.to_owned(),
        id: if def.id.is_empty() { def.service.clone() } else { def.id.clone() },
        service: def.service.clone(),
        tags: def.tags.clone(),
        address: def.address.clone(),
        port: def.port,
        meta: def.meta.clone(),
        enable_tag_override: def.enable_tag_override,
        weights: def.weights,
        create_index: 0,
        modify_index: 0,
    })
}
