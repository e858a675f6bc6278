//! One run of one scenario with one seed: build the cluster, run the workload through the safety
//! phase with its faults, heal everything, run the fault-free liveness phase, then check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, Runtime};
use tokio::time::Instant;

use crate::catalog_watch;
use crate::check::catalog::{check_catalog_follows_agents, reaction_times_ms};
use crate::check::durability::check_acknowledged_writes;
use crate::check::leadership::check_one_leader_per_term;
use crate::check::linearizability::{check_kv, Budget, Verdict};
use crate::check_flaps;
use crate::cluster::{Cluster, LeaderLog};
use crate::faults::{self, LeaderCrashes};
use crate::history::{History, KvOp, Outcome};
use crate::scenario::Scenario;
use crate::trace::Trace;
use crate::workload::{self, Anomalies, Recorder, CHECKER_CLIENT};

/// A broken invariant: its name and what showed it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub invariant: &'static str,
    pub details: String,
}

/// Figures of a run, for the report line and for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub sim_ms: u64,
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub indeterminate: usize,
    pub failed: usize,
    pub leader_terms: usize,
    /// For each crash of a leader: simulated ms until a write invoked after the crash was
    /// acknowledged.
    pub failover_ms: Vec<u64>,
    /// Simulated ms from healing to the first successful write.
    pub recovery_ms: Option<u64>,
    /// Figures of other kinds of runs (gossip), as `key=value` words.
    pub notes: String,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub digest: u64,
    pub failure: Option<Failure>,
    pub stats: RunStats,
    /// The last events before the end, for a failure report.
    pub trace_tail: Vec<String>,
    pub trace: Vec<String>,
}

/// Run `scenario` with `seed` in a fresh simulated world.
pub fn run(scenario: &Scenario, seed: u64) -> RunReport {
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let phases = &scenario.phases;
    // Generous: the phases, the recovery bound, and time for convergence and final reads. A run
    // that exceeds it has hung, which the runtime reports by panicking.
    let limit_s = phases.safety_s + phases.liveness_s + phases.recover_within_s + 180.0;
    runtime.set_time_limit(Duration::from_secs_f64(limit_s));
    let scenario = scenario.clone();
    let (digest, failure, stats, trace) = runtime.block_on(simulate(scenario));
    let trace_tail = trace.tail(40);
    RunReport { seed, digest, failure, stats, trace_tail, trace: trace.lines() }
}

async fn simulate(scenario: Scenario) -> (u64, Option<Failure>, RunStats, Trace) {
    let trace = Trace::default();
    let leaders = LeaderLog::default();
    let start = Instant::now();
    let mut stats = RunStats::default();
    let recorder = Recorder {
        history: Arc::new(Mutex::new(History::new())),
        trace: trace.clone(),
        anomalies: Anomalies::default(),
        start,
    };
    let result = phases(&scenario, &recorder, &leaders, &mut stats).await;
    stats.sim_ms = start.elapsed().as_millis() as u64;
    for (ms, term, server) in leaders.timeline() {
        trace.record(stats.sim_ms, format_args!("claim at={ms} term={term} leader=s{server}"));
    }
    let failure = result.err();
    (trace.digest(), failure, stats, trace)
}

fn fail(invariant: &'static str, details: impl Into<String>) -> Failure {
    Failure { invariant, details: details.into() }
}

async fn phases(
    scenario: &Scenario,
    recorder: &Recorder,
    leaders: &LeaderLog,
    stats: &mut RunStats,
) -> Result<(), Failure> {
    let handle = Handle::current();
    let start = recorder.start;
    let cluster = Arc::new(Mutex::new(Cluster::start(scenario, recorder.trace.clone(), leaders.clone())));
    let targets = cluster.lock().expect("cluster lock").targets();

    if !wait_until(Duration::from_secs(30), || cluster.lock().expect("cluster lock").leader().is_some()).await {
        return Err(fail("initial-election", "no leader agreed by a majority within 30 s of starting"));
    }
    recorder.trace.record(now_ms(start), "cluster up");
    let watch = match &scenario.agents {
        Some(agents) => {
            catalog_watch::wait_registered(&cluster, &agents.services, Duration::from_secs(30))
                .await
                .map_err(|e| fail("register-services", e))?;
            recorder.trace.record(now_ms(start), "services registered");
            let registered_ms = now_ms(start);
            Some((registered_ms, catalog_watch::start_sampling(cluster.clone(), agents.services.clone(), start)))
        }
        None => None,
    };

    // Safety phase: load and faults.
    let clients = workload::start(&handle, &scenario.workload, &targets, recorder);
    let crashes = LeaderCrashes::default();
    let fault_task = tokio::spawn(faults::run(cluster.clone(), scenario.faults.clone(), start, crashes.clone()));
    let flap_points = check_flaps::set_points(&scenario.check_flaps);
    let probers = cluster.lock().expect("cluster lock").agent_probers();
    let services = scenario.agents.as_ref().map(|a| a.services.clone()).unwrap_or_default();
    let flap_task = tokio::spawn(check_flaps::run(probers, services, flap_points.clone(), start));
    tokio::time::sleep_until(start + Duration::from_secs_f64(scenario.phases.safety_s)).await;
    fault_task.abort();
    flap_task.abort();

    // Liveness phase: everything healed, the cluster must recover within the bound and keep serving.
    cluster.lock().expect("cluster lock").heal_all();
    let healed = Instant::now();
    let bound = Duration::from_secs_f64(scenario.phases.recover_within_s);
    let recovery = workload::probe_write(&handle, &targets, bound).await;
    stats.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    if recovery.is_none() {
        clients.stop().await;
        let servers = cluster.lock().expect("cluster lock").describe();
        return Err(fail("recovery", format!("no write succeeded within {bound:?} after healing\n    {servers}")));
    }
    tokio::time::sleep_until(healed + Duration::from_secs_f64(scenario.phases.liveness_s)).await;
    clients.stop().await;
    if let (Some(agents), Some((registered_ms, (samples, sampler)))) = (&scenario.agents, watch) {
        sampler.abort();
        let crash_events = cluster.lock().expect("cluster lock").agent_events();
        let check_events = match &agents.check {
            Some(check) => check_flaps::expected_events(&flap_points, check, now_ms(start))
                .map_err(|e| fail("check-flap-schedule", e))?,
            None => Vec::new(),
        };
        let events = check_flaps::combine(&crash_events, &check_events);
        let bound_ms = (agents.catalog_within_s * 1000.0) as u64;
        let samples = samples.take();
        stats.notes = catalog_notes(&events, &samples);
        check_catalog_follows_agents(agents.count as usize, &events, &samples, registered_ms, now_ms(start), bound_ms)
            .map_err(|e| fail("catalog-follows-agents", e))?;
    }

    check_raft_configuration(&cluster).await?;
    check_replicas_converge(&cluster).await?;
    workload::final_reads(&handle, scenario.workload.keys, &targets, recorder)
        .await
        .map_err(|e| fail("final-reads", e))?;

    let history = recorder.history.lock().expect("history lock").clone();
    fill_stats(stats, &history, &crashes, leaders);
    check(&history, leaders, &recorder.anomalies)
}

/// How long the catalog took to show each agent going down and coming back, for the report.
fn catalog_notes(events: &[crate::check::catalog::AgentEvent], samples: &[crate::check::catalog::Sample]) -> String {
    let show = |up: bool| -> String {
        let times: Vec<String> = reaction_times_ms(events, samples)
            .into_iter()
            .filter(|(event, _)| event.up == up)
            .map(|(_, ms)| ms.map_or("never".to_string(), |ms| ms.to_string()))
            .collect();
        times.join(",")
    };
    format!("catalog_down_ms=[{}] catalog_up_ms=[{}]", show(false), show(true))
}

/// After healing, the leader's Raft configuration holds exactly the servers in service as voters
/// (servers that were replaced are gone, their replacements promoted), within 60 s: long enough
/// for autopilot to clean up a dead server and promote a new one at the scenario's settings.
async fn check_raft_configuration(cluster: &Arc<Mutex<Cluster>>) -> Result<(), Failure> {
    let settled = || {
        let c = cluster.lock().expect("cluster lock");
        c.raft_configuration().is_some_and(|(voters, learners)| voters == c.active_names() && learners.is_empty())
    };
    if wait_until(Duration::from_secs(60), settled).await {
        return Ok(());
    }
    let c = cluster.lock().expect("cluster lock");
    Err(fail(
        "raft-configuration",
        format!(
            "60 s after healing, the leader's configuration (voters, learners) is {:?}, expected voters {:?}\n    {}",
            c.raft_configuration(),
            c.active_names(),
            c.describe()
        ),
    ))
}

/// After healing, every server ends with the same state.
async fn check_replicas_converge(cluster: &Arc<Mutex<Cluster>>) -> Result<(), Failure> {
    let agree = || {
        let c = cluster.lock().expect("cluster lock");
        let states = c.replica_states();
        states.len() == c.active().len() && states.windows(2).all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2))
    };
    if wait_until(Duration::from_secs(30), agree).await {
        return Ok(());
    }
    let states = cluster.lock().expect("cluster lock").replica_states();
    let shown: Vec<String> =
        states.iter().map(|(i, index, digest)| format!("s{i}: index {index} digest {digest:016x}")).collect();
    Err(fail("replicas-converge", format!("30 s after the last write, replicas differ: {}", shown.join(", "))))
}

fn check(history: &History, leaders: &LeaderLog, anomalies: &Anomalies) -> Result<(), Failure> {
    check_one_leader_per_term(&leaders.claims()).map_err(|e| fail("one-leader-per-term", e))?;
    if let Some(first) = anomalies.list().first() {
        return Err(fail("valid-responses", first.clone()));
    }
    check_acknowledged_writes(history, CHECKER_CLIENT).map_err(|e| fail("no-acknowledged-write-lost", e))?;
    match check_kv(history, Budget::default()) {
        Verdict::Linearizable => Ok(()),
        Verdict::NotLinearizable { key, explanation } => {
            Err(fail("linearizable", format!("key {key:?} has no linearization. {explanation}")))
        }
        Verdict::Unknown { key, reason } => {
            Err(fail("linearizable", format!("could not decide key {key:?} within the search budget: {reason:?}")))
        }
    }
}

fn fill_stats(stats: &mut RunStats, history: &History, crashes: &LeaderCrashes, leaders: &LeaderLog) {
    let ops = history.ops();
    stats.operations = ops.len();
    let is_write = |op: &KvOp| !matches!(op, KvOp::Get { .. });
    stats.acknowledged_writes =
        ops.iter().filter(|o| is_write(&o.op) && matches!(o.outcome, Outcome::Ok { .. })).count();
    stats.indeterminate = ops.iter().filter(|o| o.outcome == Outcome::Indeterminate).count();
    stats.failed = ops.iter().filter(|o| o.outcome == Outcome::Failed).count();
    stats.leader_terms = leaders.claims().len();
    stats.failover_ms = crashes
        .times_ms()
        .into_iter()
        .filter_map(|crash| {
            ops.iter()
                .filter(|o| is_write(&o.op) && o.invoke_ms >= crash)
                .filter_map(|o| match o.outcome {
                    Outcome::Ok { complete_ms, .. } => Some(complete_ms - crash),
                    _ => None,
                })
                .min()
        })
        .collect();
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Poll `condition` every 10 simulated ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
