//! The agent's registry of its own services and checks: the shell around [`LocalState`]. Every
//! way an entry changes comes through here (config files at start and on reload, the
//! `/v1/agent/*` API, check results from the [`CheckRunner`]), and each change is applied to the
//! local state, handed to the check runner, persisted when it came from the API, and announced
//! to anti-entropy, which writes it to the catalog.
//!
//! Alias checks are run here rather than by the check runner: they mirror the health of another
//! service on this agent, so they are recomputed whenever a local check changes.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::local::{self, LocalCheck, LocalError, LocalService, LocalState, NodeInfo, Source, SyncOp};
use super::persist::{PersistError, Registrations};
use crate::config::{self, CheckKind, ConfigError, ConfigWarning, LocalServices, ScriptChecks};
use crate::health::{CheckRunner, CheckSource, CheckUpdate, TtlError, UpsertError};
use crate::state::{CheckStatus, Command, NodeEntries};
use crate::storage::{Disk, DiskError};

/// Why a registry change was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The definition does not parse or validate; the error names the field.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error(transparent)]
    Runner(#[from] UpsertError),
    #[error(transparent)]
    Ttl(#[from] TtlError),
    /// A setting cairn does not run yet; refused rather than left silently unchecked.
    #[error("{0}")]
    Unsupported(String),
    /// The change was applied but could not be written to the data directory, so it will not
    /// survive a restart: the caller should fix the disk and register again.
    #[error(
        "applied, but not persisted (it will not survive a restart; check the data directory and register again): {0}"
    )]
    Persist(#[from] DiskError),
}

impl RegistryError {
    /// Whether the request named something that does not exist (Consul answers 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::Local(LocalError::UnknownService(_) | LocalError::UnknownCheck(_))
                | RegistryError::Ttl(TtlError::Unknown { .. })
        )
    }

    /// Whether the agent, not the request, is at fault (Consul answers 500).
    pub fn is_internal(&self) -> bool {
        matches!(self, RegistryError::Persist(_) | RegistryError::Runner(UpsertError::Stopped))
    }
}

/// Where anti-entropy stands, for `/v1/agent/self`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// When the last write or full sync succeeded.
    pub last_success: Option<Instant>,
    /// When the last full sync (read the catalog, repair drift) succeeded.
    pub last_full_sync: Option<Instant>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u32,
}

/// The agent's services and checks, and the parts that act on them.
#[derive(Debug)]
pub struct Registry {
    local: Mutex<LocalState>,
    /// What the API registered, as sent; saved to `disk` after each API change.
    registrations: Mutex<Registrations>,
    disk: Option<Arc<dyn Disk>>,
    runner: CheckRunner,
    script_checks: ScriptChecks,
    /// Wakes anti-entropy after a change.
    changed: Notify,
    status: Mutex<SyncStatus>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new(node: NodeInfo, runner: CheckRunner, script_checks: ScriptChecks, disk: Option<Arc<dyn Disk>>) -> Self {
        Registry {
            local: Mutex::new(LocalState::new(node)),
            registrations: Mutex::default(),
            disk,
            runner,
            script_checks,
            changed: Notify::new(),
            status: Mutex::default(),
        }
    }

    pub fn node(&self) -> NodeInfo {
        lock(&self.local).node().clone()
    }

    /// Take the services and checks of the config files: new and changed ones are added, and
    /// config entries the files no longer hold are removed (at start, and on reload). API
    /// entries are left alone. Returns the IDs that could not be applied, with why.
    pub fn apply_config(&self, config: &LocalServices) -> Vec<(String, RegistryError)> {
        let now = Instant::now();
        let mut problems = Vec::new();
        let (old_services, old_checks) = lock(&self.local).ids_from(Source::Config);
        let keep_services: Vec<&str> = config.services.iter().map(|s| s.id.as_str()).collect();
        let keep_checks: Vec<&str> = config.all_checks().map(|c| c.id.as_str()).collect();
        for id in old_services.iter().filter(|id| !keep_services.contains(&id.as_str())) {
            if let Err(e) = self.remove_service(id) {
                problems.push((id.clone(), e));
            }
        }
        for id in old_checks.iter().filter(|id| !keep_checks.contains(&id.as_str())) {
            if let Err(e) = self.remove_check_entry(id) {
                problems.push((id.clone(), e));
            }
        }
        for service in &config.services {
            if let Err(e) = self.put_service(service.clone(), Source::Config, now) {
                problems.push((service.id.clone(), e));
            }
        }
        for check in &config.checks {
            if let Err(e) = self.put_check(check.clone(), Source::Config, now) {
                problems.push((check.id.clone(), e));
            }
        }
        self.changed.notify_one();
        problems
    }

    /// Re-register what the API registered before a restart. Entries that no longer validate
    /// (or clash with a config entry) are skipped and reported.
    pub fn restore(&self) -> Result<Vec<(String, RegistryError)>, PersistError> {
        let Some(disk) = &self.disk else { return Ok(Vec::new()) };
        let saved = Registrations::load(&**disk)?;
        let now = Instant::now();
        let mut problems = Vec::new();
        // Applied directly, not through the API methods: those rewrite the file once per entry.
        for (id, body) in &saved.services {
            let applied = config::service_from_api(body)
                .map_err(RegistryError::from)
                .and_then(|(service, _)| self.put_service(service, Source::Api, now));
            if let Err(e) = applied {
                problems.push((id.clone(), e));
            }
        }
        for (id, body) in &saved.checks {
            let applied = config::check_from_api(body)
                .map_err(RegistryError::from)
                .and_then(|(check, _)| self.put_check(check, Source::Api, now));
            if let Err(e) = applied {
                problems.push((id.clone(), e));
            }
        }
        let maintenance = saved.node_maintenance.iter().map(|reason| (None, reason));
        let maintenance = maintenance.chain(saved.service_maintenance.iter().map(|(id, r)| (Some(id.as_str()), r)));
        for (service_id, reason) in maintenance {
            if let Err(e) = lock(&self.local).set_maintenance(service_id, true, reason) {
                problems.push((service_id.unwrap_or("node maintenance").to_string(), e.into()));
            }
        }
        // Entries that no longer apply stay in the file, reported, rather than being dropped.
        *lock(&self.registrations) = saved;
        self.refresh_aliases(now);
        self.changed.notify_one();
        Ok(problems)
    }

    /// `PUT /v1/agent/service/register`: add or replace a service and its checks.
    pub fn register_service(&self, body: &Value) -> Result<Vec<ConfigWarning>, RegistryError> {
        let (service, warnings) = config::service_from_api(body)?;
        let id = service.id.clone();
        self.put_service(service, Source::Api, Instant::now())?;
        self.persist(|saved| {
            saved.services.insert(id.clone(), body.clone());
        })?;
        self.changed.notify_one();
        Ok(warnings)
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub fn deregister_service(&self, id: &str) -> Result<(), RegistryError> {
        self.remove_service(id)?;
        self.persist(|saved| {
            saved.services.remove(id);
            saved.service_maintenance.remove(id);
            saved.checks.retain(|_, body| service_id_of(body).as_deref() != Some(id));
        })?;
        self.changed.notify_one();
        Ok(())
    }

    /// `PUT /v1/agent/check/register`.
    pub fn register_check(&self, body: &Value) -> Result<Vec<ConfigWarning>, RegistryError> {
        let (check, warnings) = config::check_from_api(body)?;
        let id = check.id.clone();
        self.put_check(check, Source::Api, Instant::now())?;
        self.persist(|saved| {
            saved.checks.insert(id.clone(), body.clone());
        })?;
        self.changed.notify_one();
        Ok(warnings)
    }

    /// `PUT /v1/agent/check/deregister/<id>`.
    pub fn deregister_check(&self, id: &str) -> Result<(), RegistryError> {
        self.remove_check_entry(id)?;
        self.persist(|saved| {
            saved.checks.remove(id);
        })?;
        self.changed.notify_one();
        Ok(())
    }

    /// `PUT /v1/agent/check/pass|warn|fail|update/<id>`: a TTL check's new result.
    pub fn ttl_update(&self, id: &str, status: config::CheckStatus, output: String) -> Result<(), RegistryError> {
        let output = truncate_output(output);
        self.runner.ttl_update(id, status, output.clone())?;
        self.record(CheckUpdate { check_id: id.to_string(), status, output });
        Ok(())
    }

    /// `PUT /v1/agent/service/maintenance/<id>` and `PUT /v1/agent/maintenance`.
    pub fn set_maintenance(&self, service_id: Option<&str>, enable: bool, reason: &str) -> Result<(), RegistryError> {
        lock(&self.local).set_maintenance(service_id, enable, reason)?;
        self.persist(|saved| match (service_id, enable) {
            (None, true) => saved.node_maintenance = Some(reason.to_string()),
            (None, false) => saved.node_maintenance = None,
            (Some(id), true) => {
                saved.service_maintenance.insert(id.to_string(), reason.to_string());
            }
            (Some(id), false) => {
                saved.service_maintenance.remove(id);
            }
        })?;
        self.refresh_aliases(Instant::now());
        self.changed.notify_one();
        Ok(())
    }

    /// A check result from the runner.
    pub fn record(&self, update: CheckUpdate) {
        let now = Instant::now();
        let changed =
            lock(&self.local).update_check(&update.check_id, local::status_of(update.status), update.output, now);
        match changed {
            Ok(true) => {
                self.refresh_aliases(now);
                self.changed.notify_one();
            }
            Ok(false) => {}
            // A result that arrives after its check was removed.
            Err(e) => tracing::debug!(check = %update.check_id, error = %e, "check result for a removed check"),
        }
    }

    /// Deregister services whose check has been critical longer than the check's
    /// `deregister_critical_service_after`. Returns the services removed.
    pub fn reap_critical(&self) -> Vec<String> {
        let doomed = lock(&self.local).critical_too_long(Instant::now());
        for id in &doomed {
            tracing::info!(service = %id, "deregistering a service whose check stayed critical past deregister_critical_service_after");
            if let Err(e) = self.deregister_service(id) {
                tracing::warn!(service = %id, error = %e, "could not deregister a service critical for too long");
            }
        }
        doomed
    }

    fn put_service(
        &self,
        service: config::ServiceDefinition,
        source: Source,
        now: Instant,
    ) -> Result<(), RegistryError> {
        for check in &service.checks {
            self.admit(check, source)?;
        }
        let checks = service.checks.clone();
        let dropped = lock(&self.local).add_service(service, source, now)?;
        for id in dropped {
            self.runner.remove(&id);
        }
        for check in &checks {
            self.start_check(check, source)?;
        }
        self.refresh_aliases(now);
        Ok(())
    }

    fn put_check(&self, check: config::CheckDefinition, source: Source, now: Instant) -> Result<(), RegistryError> {
        self.admit(&check, source)?;
        lock(&self.local).add_check(check.clone(), source, now)?;
        self.start_check(&check, source)?;
        self.refresh_aliases(now);
        Ok(())
    }

    /// Refuse a script check the agent's settings do not allow, before anything changes.
    fn admit(&self, check: &config::CheckDefinition, source: Source) -> Result<(), RegistryError> {
        let allowed =
            matches!((source, self.script_checks), (_, ScriptChecks::All) | (Source::Config, ScriptChecks::LocalOnly));
        if matches!(check.kind, CheckKind::Script { .. }) && !allowed {
            return Err(UpsertError::ScriptChecksDisabled { from: runner_source(source) }.into());
        }
        if let CheckKind::Alias { node: Some(node), .. } = &check.kind {
            if *node != lock(&self.local).node().name {
                return Err(RegistryError::Unsupported(format!(
                    "{}: alias_node {node:?}: alias checks of other nodes are not supported yet (only of this \
                     agent's own services)",
                    check.id
                )));
            }
        }
        Ok(())
    }

    fn start_check(&self, check: &config::CheckDefinition, source: Source) -> Result<(), RegistryError> {
        if matches!(check.kind, CheckKind::Alias { .. }) {
            return Ok(());
        }
        Ok(self.runner.upsert(check, runner_source(source))?)
    }

    fn remove_service(&self, id: &str) -> Result<(), RegistryError> {
        let checks = lock(&self.local).remove_service(id)?;
        for check in checks {
            self.runner.remove(&check);
        }
        self.refresh_aliases(Instant::now());
        Ok(())
    }

    fn remove_check_entry(&self, id: &str) -> Result<(), RegistryError> {
        lock(&self.local).remove_check(id)?;
        self.runner.remove(id);
        self.refresh_aliases(Instant::now());
        Ok(())
    }

    /// Change the saved API registrations and write them out. Without a disk (`-dev`) nothing is
    /// kept, as Consul keeps nothing in dev mode.
    fn persist(&self, change: impl FnOnce(&mut Registrations)) -> Result<(), DiskError> {
        let mut saved = lock(&self.registrations);
        change(&mut saved);
        match &self.disk {
            Some(disk) => saved.save(&**disk),
            None => Ok(()),
        }
    }

    /// Recompute alias checks of local services: an alias is as healthy as the worst check of the
    /// service it mirrors (and of this node), passing if that service has no checks, critical if
    /// the service does not exist.
    fn refresh_aliases(&self, now: Instant) {
        let mut local = lock(&self.local);
        let node = local.node().name.clone();
        let aliases: Vec<(String, Option<String>)> = local
            .checks()
            .filter_map(|(check, _)| match check.definition.as_ref().map(|d| &d.kind) {
                Some(CheckKind::Alias { service, node: alias_node })
                    if alias_node.as_deref().is_none_or(|n| n == node) =>
                {
                    Some((check.id.clone(), service.clone()))
                }
                _ => None,
            })
            .collect();
        for (alias_id, target) in aliases {
            let (status, output) = alias_result(&local, &alias_id, target.as_deref());
            let _ = local.update_check(&alias_id, status, output, now);
        }
    }

    /// Live services, with where each came from.
    pub fn services(&self) -> Vec<(LocalService, Source)> {
        lock(&self.local).services().map(|(s, source)| (s.clone(), source)).collect()
    }

    pub fn service(&self, id: &str) -> Option<LocalService> {
        lock(&self.local).service(id).cloned()
    }

    /// Live checks, with where each came from.
    pub fn checks(&self) -> Vec<(LocalCheck, Source)> {
        lock(&self.local).checks().map(|(c, source)| (c.clone(), source)).collect()
    }

    /// The checks that bear on service `id`: its own and the node's.
    pub fn checks_of_service(&self, id: &str) -> Vec<LocalCheck> {
        lock(&self.local).checks_of_service(id).cloned().collect()
    }

    // What anti-entropy uses.

    /// Resolves after the next change (or at once, if one came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn compare_with(&self, remote: &NodeEntries) {
        lock(&self.local).compare_with(remote)
    }

    pub fn pending(&self, now: Instant) -> Vec<SyncOp> {
        lock(&self.local).pending(now)
    }

    pub fn command(&self, op: &SyncOp) -> Option<(Command, local::Covered)> {
        lock(&self.local).command(op)
    }

    pub fn synced(&self, covers: &[(local::EntryKind, String, u64)]) {
        lock(&self.local).synced(covers)
    }

    pub fn next_output_due(&self) -> Option<Instant> {
        lock(&self.local).next_output_due()
    }

    pub fn sync_status(&self) -> SyncStatus {
        lock(&self.status).clone()
    }

    /// Whether every entry is in step with the catalog (as far as the agent knows).
    pub fn in_sync(&self) -> bool {
        lock(&self.local).in_sync(Instant::now())
    }

    pub(super) fn update_status(&self, change: impl FnOnce(&mut SyncStatus)) {
        change(&mut lock(&self.status))
    }
}

fn runner_source(source: Source) -> CheckSource {
    match source {
        Source::Config => CheckSource::Config,
        Source::Api => CheckSource::Api,
    }
}

/// The `ServiceID` of a check's API body, however it is spelled.
fn service_id_of(body: &Value) -> Option<String> {
    let object = body.as_object()?;
    object
        .iter()
        .find(|(key, _)| key.replace('_', "").eq_ignore_ascii_case("serviceid"))
        .and_then(|(_, value)| value.as_str().map(str::to_string))
}

/// An alias check's status: the worst of the target's checks and this node's (the alias itself
/// and other aliases excluded, so aliases cannot feed each other).
fn alias_result(local: &LocalState, alias_id: &str, target: Option<&str>) -> (CheckStatus, String) {
    let relevant = |check: &&LocalCheck| {
        check.id != alias_id && !matches!(check.definition.as_ref().map(|d| &d.kind), Some(CheckKind::Alias { .. }))
    };
    let checks: Vec<&LocalCheck> = match target {
        Some(service) => {
            if local.service(service).is_none() {
                return (CheckStatus::Critical, format!("Service {service:?} does not exist on this node"));
            }
            local.checks_of_service(service).filter(relevant).collect()
        }
        None => local.checks().map(|(c, _)| c).filter(|c| c.service_id.is_none()).filter(relevant).collect(),
    };
    match checks.iter().max_by_key(|c| c.status) {
        None => (CheckStatus::Passing, "No checks found.".to_string()),
        Some(worst) if worst.status == CheckStatus::Passing => {
            (CheckStatus::Passing, "All checks passing.".to_string())
        }
        Some(worst) => (worst.status, format!("Aliased check {:?} is {}", worst.id, worst.status.as_str())),
    }
}

/// TTL updates carry output from the API: keep at most Consul's 4 KiB.
fn truncate_output(mut output: String) -> String {
    let max = crate::health::OUTPUT_LEN_MAX;
    if output.len() > max {
        let mut cut = max;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
    }
    output
}

/// Start the loop that feeds check results into `registry`, and the reaper of services critical
/// for too long. Returns when the runner stops.
pub async fn record_results(registry: Arc<Registry>, mut updates: tokio::sync::mpsc::UnboundedReceiver<CheckUpdate>) {
    while let Some(update) = updates.recv().await {
        registry.record(update);
    }
}

/// How often services critical for too long are looked for (Consul's `check_reap_interval`).
pub const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Deregister services critical past `deregister_critical_service_after`, every [`REAP_INTERVAL`].
pub async fn reap_critical(registry: Arc<Registry>) {
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        registry.reap_critical();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::health::{ProbeResult, RunnerConfig, ScriptedProber};

    fn registry() -> Registry {
        let prober = Arc::new(ScriptedProber::new(ProbeResult::new(config::CheckStatus::Passing, "ok")));
        let (runner, _updates) = CheckRunner::start(prober, RunnerConfig::default());
        let node = NodeInfo { name: "n1".into(), id: String::new(), address: "10.0.0.1".into() };
        Registry::new(node, runner, ScriptChecks::Disabled, None)
    }

    fn status(registry: &Registry, id: &str) -> CheckStatus {
        registry.checks().into_iter().find(|(c, _)| c.id == id).expect("the check exists").0.status
    }

    #[tokio::test]
    async fn an_alias_follows_the_worst_check_of_its_service() {
        let registry = registry();
        registry.register_service(&json!({"Name": "db", "Check": {"TTL": "1m", "Status": "passing"}})).unwrap();
        registry.register_service(&json!({"Name": "web", "Check": {"AliasService": "db"}})).unwrap();
        assert_eq!(status(&registry, "service:web"), CheckStatus::Passing);
        registry.ttl_update("service:db", config::CheckStatus::Warning, "slow".into()).unwrap();
        assert_eq!(status(&registry, "service:web"), CheckStatus::Warning);
        registry.set_maintenance(Some("db"), true, "").unwrap();
        assert_eq!(status(&registry, "service:web"), CheckStatus::Critical);
        registry.deregister_service("db").unwrap();
        let (check, _) = registry.checks().into_iter().find(|(c, _)| c.id == "service:web").unwrap();
        assert_eq!((check.status, check.output.contains("does not exist")), (CheckStatus::Critical, true));
    }

    #[tokio::test]
    async fn an_alias_of_another_node_and_an_api_script_check_are_refused() {
        let registry = registry();
        let remote = json!({"Name": "web", "Check": {"AliasService": "db", "AliasNode": "elsewhere"}});
        assert!(matches!(registry.register_service(&remote), Err(RegistryError::Unsupported(_))));
        let script = json!({"Name": "web", "Check": {"Args": ["true"], "Interval": "10s"}});
        assert!(matches!(registry.register_service(&script), Err(RegistryError::Runner(_))));
        assert!(registry.services().is_empty(), "a refused registration changes nothing");
    }
}
