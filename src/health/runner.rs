//! The check runner: the shell around [`Schedule`]. One task owns the schedule and feeds it the
//! handle's commands, finished probes and timer wake-ups, with the time read from `tokio::time`
//! (the simulator's clock under madsim); each probe runs on its own task through the
//! [`Prober`]. Status changes come out on a channel for the agent's local state.
//!
//! The handle checks what it can without the task (alias checks, script permissions, whether a
//! TTL update names a TTL check), so its methods answer at once, and keeps a copy of each
//! check's kind, updated under the same lock that orders its commands, so a TTL update never
//! races a removal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{CheckDefinition, CheckKind, CheckStatus, ScriptChecks};

use super::prober::{Probe, ProbeResult, Prober};
use super::schedule::{Action, CheckSpec, CheckUpdate, Input, RunId, Schedule};

/// Consul runs every probe at once; cairn runs at most this many by default, so a thousand
/// checks coming due together do not fork a thousand scripts.
pub const PROBES_RUNNING_MAX_DEFAULT: usize = 32;

/// A prober that overruns its probe's timeout by this much is given up on (critical), so a
/// stuck prober cannot hold a probe slot forever.
pub const PROBE_OVERRUN_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Probes running at once; further due checks wait (at least 1).
    pub probes_running_max: usize,
    /// Which script checks may run (`enable_script_checks`, `enable_local_script_checks`).
    pub script_checks: ScriptChecks,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { probes_running_max: PROBES_RUNNING_MAX_DEFAULT, script_checks: ScriptChecks::Disabled }
    }
}

/// Where a check definition came from, which decides whether a script check may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSource {
    /// A config file (`enable_local_script_checks` allows scripts).
    Config,
    /// The HTTP API (only `enable_script_checks` allows scripts).
    Api,
}

/// Why [`CheckRunner::upsert`] refused a check. The runner's check with that ID, if any, is left
/// as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpsertError {
    #[error("alias checks are run by the agent's local state, not the check runner")]
    Alias,
    #[error(
        "script checks from {} are disabled on this agent; set {} to run them",
        match from { CheckSource::Config => "config files", CheckSource::Api => "the HTTP API" },
        match from { CheckSource::Config => "enable_local_script_checks or enable_script_checks", CheckSource::Api => "enable_script_checks" },
    )]
    ScriptChecksDisabled { from: CheckSource },
    #[error("the check runner has stopped")]
    Stopped,
}

/// Why [`CheckRunner::ttl_update`] refused an update. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("unknown check ID {check_id:?}")]
    Unknown { check_id: String },
    #[error("check {check_id:?} is not a TTL check")]
    NotTtl { check_id: String },
    #[error("the check runner has stopped")]
    Stopped,
}

/// What the runner is doing, for `/v1/agent/self`-style reporting and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    pub checks: usize,
    pub running: usize,
    /// Due checks waiting for a free probe slot.
    pub waiting: usize,
}

/// The handle to the runner task. Clones share the task, which stops once every clone is dropped
/// (probes already running finish on their own, bounded by their timeouts).
#[derive(Debug, Clone)]
pub struct CheckRunner {
    shared: Arc<Mutex<Shared>>,
    stats: Arc<Mutex<RunnerStats>>,
    script_checks: ScriptChecks,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Input>,
    /// Each check's ID and whether it is a TTL check.
    ttl_by_check: BTreeMap<String, bool>,
}

impl CheckRunner {
    /// Starts the runner task on the current runtime. Updates arrive on the receiver in the
    /// order they happened; the runner never waits for the receiver (it holds at most one
    /// update per probe result or TTL event, and those are bounded by the probe cap and the
    /// API's rate), and carries on if it is dropped.
    pub fn start(prober: Arc<dyn Prober>, config: RunnerConfig) -> (CheckRunner, mpsc::UnboundedReceiver<CheckUpdate>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (update_tx, updates) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(RunnerStats::default()));
        let schedule = Schedule::new(config.probes_running_max, crate::io::random_seed());
        tokio::spawn(run(schedule, prober, command_rx, update_tx, stats.clone()));
        let shared = Arc::new(Mutex::new(Shared { commands, ttl_by_check: BTreeMap::new() }));
        (CheckRunner { shared, stats, script_checks: config.script_checks }, updates)
    }

    /// Adds a check, or replaces the one with the same ID (a reload, an interval change). A
    /// replaced check keeps its status and output; an identical one keeps its schedule too. A
    /// new check starts at its definition's initial status and no update is sent for that.
    pub fn upsert(&self, definition: &CheckDefinition, source: CheckSource) -> Result<(), UpsertError> {
        if let CheckKind::Script { .. } = definition.kind {
            let allowed = match source {
                CheckSource::Config => self.script_checks != ScriptChecks::Disabled,
                CheckSource::Api => self.script_checks == ScriptChecks::All,
            };
            if !allowed {
                return Err(UpsertError::ScriptChecksDisabled { from: source });
            }
        }
        let spec = CheckSpec::of_definition(definition).ok_or(UpsertError::Alias)?;
        let is_ttl = matches!(definition.kind, CheckKind::Ttl { .. });
        let mut shared = self.lock();
        let input = Input::Upsert { check_id: definition.id.clone(), spec };
        shared.commands.send(input).map_err(|_| UpsertError::Stopped)?;
        shared.ttl_by_check.insert(definition.id.clone(), is_ttl);
        Ok(())
    }

    /// Stops running a check; a probe of it already running finishes and is ignored. Unknown
    /// IDs are ignored.
    pub fn remove(&self, check_id: &str) {
        let mut shared = self.lock();
        if shared.ttl_by_check.remove(check_id).is_some() {
            let _ = shared.commands.send(Input::Remove { check_id: check_id.to_owned() });
        }
    }

    /// Sets a TTL check's status and output (`PUT /v1/agent/check/pass|warn|fail|update`) and
    /// restarts its timer. Output over 4 KiB is cut as Consul cuts it.
    pub fn ttl_update(&self, check_id: &str, status: CheckStatus, output: String) -> Result<(), TtlError> {
        let shared = self.lock();
        match shared.ttl_by_check.get(check_id) {
            None => Err(TtlError::Unknown { check_id: check_id.to_owned() }),
            Some(false) => Err(TtlError::NotTtl { check_id: check_id.to_owned() }),
            Some(true) => {
                let input = Input::TtlUpdate { check_id: check_id.to_owned(), status, output };
                shared.commands.send(input).map_err(|_| TtlError::Stopped)
            }
        }
    }

    /// Checks held, probes running and due checks waiting for a slot, as of the last step.
    pub fn stats(&self) -> RunnerStats {
        *self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding the lock; recover from poisoning anyway.
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The runner task: until every handle is gone, wait for a command, a finished probe or the
/// schedule's next deadline, step the schedule, and carry out its actions.
async fn run(
    mut schedule: Schedule,
    prober: Arc<dyn Prober>,
    mut commands: mpsc::UnboundedReceiver<Input>,
    updates: mpsc::UnboundedSender<CheckUpdate>,
    stats: Arc<Mutex<RunnerStats>>,
) {
    let start = Instant::now();
    // Unbounded, but it never holds more than the probes in flight, which the schedule caps.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(RunId, ProbeResult)>();
    loop {
        let deadline = schedule.next_deadline();
        let input = tokio::select! {
            biased;
            Some((run, result)) = done_rx.recv() => Input::ProbeDone { run, result },
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
            () = tokio::time::sleep_until(start + deadline.unwrap_or_default()), if deadline.is_some() => Input::Tick,
        };
        for action in schedule.step(input, start.elapsed()) {
            match action {
                Action::Update(update) => {
                    let _ = updates.send(update);
                }
                Action::StartProbe { run, probe } => spawn_probe(prober.clone(), run, probe, done_tx.clone()),
            }
        }
        let current = RunnerStats { checks: schedule.len(), running: schedule.running(), waiting: schedule.waiting() };
        *stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = current;
    }
}

fn spawn_probe(prober: Arc<dyn Prober>, run: RunId, probe: Probe, done: mpsc::UnboundedSender<(RunId, ProbeResult)>) {
    tokio::spawn(async move {
        let limit = probe.timeout() + PROBE_OVERRUN_MAX;
        let result = match crate::io::timeout(limit, prober.probe(&run.check_id, &probe)).await {
            Ok(result) => result,
            Err(_) => ProbeResult::critical(format!(
                "the probe did not finish within {} (its timeout plus {})",
                crate::config::format_duration(limit),
                crate::config::format_duration(PROBE_OVERRUN_MAX)
            )),
        };
        let _ = done.send((run, result));
    });
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Origin, ScriptCommand};
    use crate::health::ScriptedProber;

    fn definition(id: &str, kind: CheckKind) -> CheckDefinition {
        CheckDefinition {
            id: id.into(),
            name: id.into(),
            notes: None,
            service_id: None,
            initial_status: CheckStatus::Critical,
            kind,
            success_before_passing: 0,
            failures_before_critical: 0,
            deregister_critical_service_after: None,
            origin: Origin { path: PathBuf::from("test.json"), field: "check".into() },
        }
    }

    fn tcp(interval_ms: u64) -> CheckKind {
        let interval = Duration::from_millis(interval_ms);
        CheckKind::Tcp { address: "127.0.0.1:1".into(), interval, timeout: Duration::from_secs(1) }
    }

    async fn next(updates: &mut mpsc::UnboundedReceiver<CheckUpdate>) -> CheckUpdate {
        tokio::time::timeout(Duration::from_secs(10), updates.recv())
            .await
            .expect("an update within 10 s")
            .expect("the runner is running")
    }

    /// A probed check reports its scripted result, and a change of outcome is reported again.
    #[tokio::test]
    async fn probed_checks_report_changes() {
        let prober = ScriptedProber::new(ProbeResult::new(CheckStatus::Passing, "ok"));
        let (runner, mut updates) = CheckRunner::start(Arc::new(prober.clone()), RunnerConfig::default());
        runner.upsert(&definition("web", tcp(20)), CheckSource::Config).unwrap();
        let first = next(&mut updates).await;
        assert_eq!((first.check_id.as_str(), first.status, first.output.as_str()), ("web", CheckStatus::Passing, "ok"));
        prober.set("web", CheckStatus::Critical, "down");
        let second = next(&mut updates).await;
        assert_eq!((second.status, second.output.as_str()), (CheckStatus::Critical, "down"));
        runner.remove("web");
        assert_eq!(
            runner.ttl_update("web", CheckStatus::Passing, String::new()),
            Err(TtlError::Unknown { check_id: "web".into() })
        );
    }

    /// TTL checks take updates through the handle and expire to critical; updates for other
    /// kinds are refused with a typed error.
    #[tokio::test]
    async fn ttl_updates_and_expiry() {
        let prober = ScriptedProber::new(ProbeResult::new(CheckStatus::Passing, "ok"));
        let (runner, mut updates) = CheckRunner::start(Arc::new(prober), RunnerConfig::default());
        runner
            .upsert(&definition("app", CheckKind::Ttl { ttl: Duration::from_millis(300) }), CheckSource::Api)
            .unwrap();
        runner.upsert(&definition("web", tcp(60_000)), CheckSource::Api).unwrap();
        runner.ttl_update("app", CheckStatus::Passing, "alive".into()).unwrap();
        let alive = next(&mut updates).await;
        assert_eq!((alive.status, alive.output.as_str()), (CheckStatus::Passing, "alive"));
        let expired = next(&mut updates).await;
        assert_eq!(expired.status, CheckStatus::Critical);
        assert_eq!(expired.output, "TTL expired (last output before timeout follows): alive");
        assert_eq!(
            runner.ttl_update("web", CheckStatus::Passing, String::new()),
            Err(TtlError::NotTtl { check_id: "web".into() })
        );
    }

    /// A prober that never answers.
    #[derive(Debug)]
    struct Stuck;

    impl Prober for Stuck {
        fn probe<'a>(&'a self, _check_id: &'a str, _probe: &'a Probe) -> crate::health::ProbeFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    /// With one probe slot taken by a probe that hangs, the other due check waits, and the
    /// handle reports it waiting.
    #[tokio::test]
    async fn stats_report_waiting_checks() {
        let config = RunnerConfig { probes_running_max: 1, ..RunnerConfig::default() };
        let (runner, _updates) = CheckRunner::start(Arc::new(Stuck), config);
        runner.upsert(&definition("a", tcp(20)), CheckSource::Config).unwrap();
        runner.upsert(&definition("b", tcp(20)), CheckSource::Config).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while runner.stats() != (RunnerStats { checks: 2, running: 1, waiting: 1 }) {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", runner.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Script checks run only where config allows them; alias checks are not the runner's.
    #[tokio::test]
    async fn refusals() {
        let script = definition(
            "s",
            CheckKind::Script {
                command: ScriptCommand::Args(vec!["true".into()]),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
            },
        );
        let prober: Arc<dyn Prober> = Arc::new(ScriptedProber::new(ProbeResult::critical("")));
        let local = RunnerConfig { script_checks: ScriptChecks::LocalOnly, ..RunnerConfig::default() };
        let (runner, _updates) = CheckRunner::start(prober.clone(), local);
        assert_eq!(runner.upsert(&script, CheckSource::Config), Ok(()));
        assert_eq!(
            runner.upsert(&script, CheckSource::Api),
            Err(UpsertError::ScriptChecksDisabled { from: CheckSource::Api })
        );
        let (disabled, _updates) = CheckRunner::start(prober, RunnerConfig::default());
        let refused = disabled.upsert(&script, CheckSource::Config).unwrap_err();
        assert!(refused.to_string().contains("enable_local_script_checks"), "{refused}");
        let alias = definition("a", CheckKind::Alias { service: Some("db".into()), node: None });
        assert_eq!(disabled.upsert(&alias, CheckSource::Config), Err(UpsertError::Alias));
        assert_eq!(disabled.stats().checks, 0);
    }
}
