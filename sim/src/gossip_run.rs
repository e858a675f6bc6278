//! One run of a gossip scenario: a pool of client agents on simulated hosts, started over a
//! window, some killed later, every agent's membership view watched from outside.
//!
//! What is checked, from the views alone: every agent sees every agent alive within the bound
//! after the last one started; every survivor sees each killed agent failed within the bound after
//! the kill; no survivor sees a live agent failed for longer than the bound (each such stretch is a
//! false positive and is counted). What is measured: the time for a late joiner and for a failure
//! to reach 99.99 % of the views (the figure Serf's convergence model predicts), and gossip bytes
//! per agent per second (UDP datagrams and TCP push-pull frames sent).
//!
//! The observer reads a view again only when it changed since the last poll (each agent's
//! membership is a `watch` channel) and keeps a small summary of it; what it checks is computed
//! from the summaries. Reading every view on every poll was quadratic in the pool's size per poll.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::config::{AgentConfig, AutopilotSettings, GossipSettings, JoinAddress, LogLevel, Ports, RaftSettings};
use cairn::gossip::{Gossip, MemberStatus, Membership};
use cairn::storage::MemDisk;
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::runner::{Failure, RunReport, RunStats};
use crate::scenario::GossipScenario;
use crate::trace::Trace;

/// The simulated address of agent `index`.
pub fn agent_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (index / 250) as u8, (index % 250) as u8 + 1))
}

/// Share of (observer, member) pairs that counts as "everyone knows" for dissemination figures.
const DISSEMINATED: f64 = 0.9999;

/// Run `scenario` with `seed` in a fresh simulated world.
pub fn run(scenario: &GossipScenario, seed: u64) -> RunReport {
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs_f64(scenario.gossip.duration_s + 120.0));
    let scenario = scenario.clone();
    let (digest, failure, stats, trace) = runtime.block_on(simulate(scenario));
    RunReport { seed, digest, failure, stats, trace_tail: trace.tail(40), trace: trace.lines() }
}

fn client_config(index: usize, join_through: usize) -> AgentConfig {
    AgentConfig {
        node_name: format!("a{index}"),
        node_id: None,
        datacenter: "dc1".into(),
        server: false,
        dev: false,
        bootstrap_expect: None,
        bootstrap: false,
        data_dir: Some("/simulated".into()),
        bind_addr: agent_ip(index),
        advertise_addr: None,
        client_addr: agent_ip(index),
        retry_join: (0..join_through)
            .filter(|&seed| seed != index)
            .map(|seed| JoinAddress { host: agent_ip(seed).to_string(), port: Ports::default().serf_lan })
            .collect(),
        retry_interval: Duration::from_secs(1),
        retry_max: 0,
        ports: Ports::default(),
        log_level: LogLevel::Info,
        raft: RaftSettings::default(),
        gossip: GossipSettings { disable_keyring_file: true, ..GossipSettings::defaults_for(false) },
        autopilot: AutopilotSettings::default(),
        local: Default::default(),
        dns: Default::default(),
        ignored_keys: vec![],
    }
}

/// What one agent's view showed when it last changed: all the checks need of it.
#[derive(Default)]
struct ViewSummary {
    /// Members seen alive.
    alive: usize,
    /// Agents (by index) seen failed.
    failed: BTreeSet<usize>,
    /// Whether the late joiner is seen alive (never for the late joiner's own view).
    sees_joiner: bool,
}

/// One watched agent: its membership channel and the summary of what it last showed.
struct Watched {
    index: usize,
    gossip: Gossip,
    membership: watch::Receiver<Membership>,
    summary: ViewSummary,
}

/// What the observer tracks per (observer, member) pair that matters.
#[derive(Default)]
struct Observations {
    /// When every agent first saw every agent alive.
    converged_ms: Option<u64>,
    /// For the late joiner: when 99.99 % of the other views first held it alive.
    join_disseminated_ms: Option<u64>,
    /// Per killed agent: when the first survivor saw it failed, when 99.99 % did, when all did.
    first_failed_ms: BTreeMap<usize, u64>,
    failure_disseminated_ms: BTreeMap<usize, u64>,
    all_failed_ms: BTreeMap<usize, u64>,
    /// (observer, member) pairs where a live member is currently seen failed, since when.
    false_failure_since: BTreeMap<(usize, usize), u64>,
    false_failures: usize,
    longest_false_failure_ms: u64,
}

async fn simulate(scenario: GossipScenario) -> (u64, Option<Failure>, RunStats, Trace) {
    let spec = scenario.gossip.clone();
    let trace = Trace::default();
    let handle = Handle::current();
    let net = NetSim::current();
    let latency =
        Duration::from_millis(scenario.network.latency_ms[0])..Duration::from_millis(scenario.network.latency_ms[1]);
    net.update_config(|c| {
        c.send_latency = latency;
        c.packet_loss_rate = spec.packet_loss;
    });
    let start = Instant::now();
    let n = spec.agents as usize;
    let seeds = spec.join_through as usize;
    let ms = |at: Instant| at.duration_since(start).as_millis() as u64;

    // Start times: the seeds at once, the others spread out; a late joiner (the last agent) when asked.
    let mut start_at: Vec<Duration> = (0..n)
        .map(|i| match i < seeds {
            true => Duration::ZERO,
            false => Duration::from_secs_f64(madsim::rand::random::<f64>() * spec.start_spread_s),
        })
        .collect();
    let late_joiner = spec.late_join_at_s.map(|at| {
        start_at[n - 1] = Duration::from_secs_f64(at);
        n - 1
    });
    let last_start = start_at.iter().enumerate().filter(|(i, _)| Some(*i) != late_joiner).map(|(_, d)| *d).max();
    let last_start = last_start.unwrap_or_default();

    let slots: Vec<Arc<Mutex<Option<Gossip>>>> = (0..n).map(|_| Arc::default()).collect();
    let mut hosts = Vec::with_capacity(n);
    for (index, slot) in slots.iter().enumerate() {
        let (slot, delay, config) = (slot.clone(), start_at[index], client_config(index, seeds));
        let host = handle
            .create_node()
            .name(format!("a{index}"))
            .ip(agent_ip(index))
            .init(move || {
                let (slot, config) = (slot.clone(), config.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    let node = match cairn::node::start(&config, Arc::new(MemDisk::default())).await {
                        Ok(node) => node,
                        Err(e) => panic!("agent a{index} failed to start: {e}"),
                    };
                    *slot.lock().expect("slot lock") = Some(node.gossip.clone());
                    let _keep_running = node;
                    std::future::pending::<()>().await;
                }
            })
            .build();
        hosts.push(host);
    }

    // Which agents die: after the seeds, chosen by the seed.
    let mut killed: Vec<usize> = Vec::new();
    if spec.kill > 0 {
        let mut candidates: Vec<usize> = (seeds..n).filter(|i| Some(*i) != late_joiner).collect();
        while killed.len() < spec.kill as usize && !candidates.is_empty() {
            let pick = (madsim::rand::random::<u64>() % candidates.len() as u64) as usize;
            killed.push(candidates.swap_remove(pick));
        }
        killed.sort_unstable();
    }
    let kill_at = spec.kill_at_s.map(|at| start + Duration::from_secs_f64(at));
    let mut dead = vec![false; n];

    // Cheap at any size: only views that changed are read (see `observe`).
    let poll = Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(spec.duration_s);
    let mut obs = Observations::default();
    let mut bytes_at_convergence: Option<(u64, Instant)> = None;
    let mut bytes_at_end = 0u64;
    // Agents being watched, by index; an agent is added once it has started and dropped when killed.
    let mut watched: BTreeMap<usize, Watched> = BTreeMap::new();
    while Instant::now() < end {
        tokio::time::sleep(poll).await;
        let now = Instant::now();
        if let Some(at) = kill_at {
            if now >= at && !dead[killed.first().copied().unwrap_or(0)] && !killed.is_empty() {
                for &victim in &killed {
                    handle.kill(hosts[victim].id());
                    *slots[victim].lock().expect("slot lock") = None;
                    watched.remove(&victim);
                    dead[victim] = true;
                    trace.record(ms(now), format_args!("kill a{victim}"));
                }
            }
        }
        for (index, slot) in slots.iter().enumerate() {
            if dead[index] || watched.contains_key(&index) {
                continue;
            }
            if let Some(gossip) = slot.lock().expect("slot lock").clone() {
                let mut membership = gossip.membership();
                membership.mark_changed();
                watched.insert(index, Watched { index, gossip, membership, summary: ViewSummary::default() });
            }
        }
        observe(&mut obs, &mut watched, n, &dead, &killed, late_joiner, ms(now), &trace);
        // The pool that started in the window (the late joiner is timed on its own).
        let pool = watched.values().filter(|w| Some(w.index) != late_joiner);
        let pool_size = n - usize::from(late_joiner.is_some());
        let everyone_started = pool.clone().count() + killed.iter().filter(|k| dead[**k]).count() == pool_size;
        if obs.converged_ms.is_none() && everyone_started && all_see_all_alive(pool, pool_size, &dead) {
            obs.converged_ms = Some(ms(now));
            trace.record(ms(now), "converged");
        }
        // Datagrams and push-pull frames alike: both are gossip traffic.
        let bytes: u64 = watched.values().map(|w| w.gossip.stats()).map(|s| s.bytes_out + s.sync_bytes_out).sum();
        if obs.converged_ms.is_some() && bytes_at_convergence.is_none() && kill_at.is_none_or(|k| now < k) {
            bytes_at_convergence = Some((bytes, now));
        }
        if kill_at.is_none_or(|k| now < k) {
            bytes_at_end = bytes;
        }
    }
    for since in std::mem::take(&mut obs.false_failure_since).into_values() {
        obs.longest_false_failure_ms = obs.longest_false_failure_ms.max(ms(end) - since);
    }

    let mut stats = RunStats { sim_ms: ms(Instant::now()), ..RunStats::default() };
    let mut notes = vec![format!("agents={n}")];
    let converge_bound_ms = ((last_start.as_secs_f64() + spec.converge_within_s) * 1000.0) as u64;
    let mut failure = None;
    match obs.converged_ms {
        Some(at) => {
            notes.push(format!("converged_after_last_start_ms={}", at.saturating_sub(last_start.as_millis() as u64)))
        }
        None => failure = Some(fail("convergence", "the agents never all saw each other alive".into())),
    }
    if let Some(at) = obs.converged_ms.filter(|at| *at > converge_bound_ms) {
        failure = failure.or(Some(fail(
            "convergence",
            format!("all agents saw all alive only at {at} ms; the bound was {converge_bound_ms} ms"),
        )));
    }
    if let (Some(joiner), Some(at)) = (late_joiner, spec.late_join_at_s) {
        match obs.join_disseminated_ms {
            Some(seen) => notes.push(format!("join_disseminated_ms={}", seen.saturating_sub((at * 1000.0) as u64))),
            None => {
                failure = failure
                    .or(Some(fail("convergence", format!("late joiner a{joiner} never reached 99.99% of views"))))
            }
        }
    }
    if let (Some(kill_s), Some(bound_s)) = (spec.kill_at_s, spec.detect_within_s) {
        let kill_ms = (kill_s * 1000.0) as u64;
        let mut detect = Vec::new();
        for &victim in &killed {
            match obs.all_failed_ms.get(&victim) {
                Some(at) => detect.push(at - kill_ms),
                None => {
                    let name = format!("a{victim}");
                    let missing: Vec<String> = watched
                        .values()
                        .filter(|w| !w.summary.failed.contains(&victim))
                        .map(|w| {
                            let status = w.gossip.membership().borrow().get(&name).map(|m| m.status);
                            format!("a{} ({status:?})", w.index)
                        })
                        .collect();
                    failure = failure.or(Some(fail(
                        "failure-detection",
                        format!(
                            "killed agent a{victim} was not seen failed by every survivor by the end; not by {}",
                            missing.join(", ")
                        ),
                    )))
                }
            }
        }
        if let Some(worst) = detect.iter().max() {
            notes.push(format!("detect_all_ms_max={worst}"));
            if *worst as f64 > bound_s * 1000.0 {
                failure = failure.or(Some(fail(
                    "failure-detection",
                    format!("a killed agent took {worst} ms to be seen failed by all; the bound is {bound_s} s"),
                )));
            }
        }
        let dissemination: Vec<u64> = killed
            .iter()
            .filter_map(|v| Some(obs.failure_disseminated_ms.get(v)? - obs.first_failed_ms.get(v)?))
            .collect();
        if let Some(worst) = dissemination.iter().max() {
            notes.push(format!("failure_disseminated_ms_max={worst}"));
        }
    }
    notes.push(format!("false_failures={}", obs.false_failures));
    notes.push(format!("longest_false_failure_ms={}", obs.longest_false_failure_ms));
    if let Some(bound_s) = spec.false_failure_max_s {
        if obs.longest_false_failure_ms as f64 > bound_s * 1000.0 {
            failure = failure.or(Some(fail(
                "false-failure",
                format!(
                    "a live agent was seen failed for {} ms in one stretch; the bound is {bound_s} s",
                    obs.longest_false_failure_ms
                ),
            )));
        }
    }
    if let Some((bytes0, at0)) = bytes_at_convergence {
        let live = (n - killed.len()).max(1) as f64;
        let seconds = kill_at.unwrap_or(end).duration_since(at0).as_secs_f64();
        if seconds > 1.0 {
            let rate = (bytes_at_end.saturating_sub(bytes0)) as f64 / live / seconds;
            notes.push(format!("gossip_bytes_per_agent_per_s={rate:.0}"));
        }
    }
    stats.notes = notes.join(" ");
    (trace.digest(), failure, stats, trace)
}

fn fail(invariant: &'static str, details: String) -> Failure {
    Failure { invariant, details }
}

fn all_see_all_alive<'a>(mut views: impl Iterator<Item = &'a Watched>, n: usize, dead: &[bool]) -> bool {
    let live = n - dead.iter().filter(|d| **d).count();
    views.all(|w| w.summary.alive >= live)
}

/// What `view` shows that the checks need, from the point of view of agent `observer`.
fn summarize(view: &Membership, observer: usize, n: usize, late_joiner: Option<usize>) -> ViewSummary {
    let failed = match view.count(MemberStatus::Failed) {
        0 => BTreeSet::new(),
        _ => view
            .iter()
            .filter(|m| m.status == MemberStatus::Failed)
            .filter_map(|m| index_of(&m.name).filter(|m| *m < n))
            .collect(),
    };
    let sees_joiner = late_joiner
        .filter(|j| *j != observer)
        .is_some_and(|joiner| view.get(&format!("a{joiner}")).is_some_and(|m| m.status == MemberStatus::Alive));
    ViewSummary { alive: view.count(MemberStatus::Alive), failed, sees_joiner }
}

/// Index of an agent from its node name (`a<index>`).
fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('a')?.parse().ok()
}

/// Read the views that changed since the last poll and update what is tracked. A live member's
/// false failure starts or ends only when the observer's view changes, so reading unchanged views
/// again could not change what is recorded.
#[allow(clippy::too_many_arguments)]
fn observe(
    obs: &mut Observations,
    watched: &mut BTreeMap<usize, Watched>,
    n: usize,
    dead: &[bool],
    killed: &[usize],
    late_joiner: Option<usize>,
    now_ms: u64,
    trace: &Trace,
) {
    let survivors = watched.len().max(1);
    for w in watched.values_mut() {
        if !w.membership.has_changed().unwrap_or(false) {
            continue;
        }
        let summary = summarize(&w.membership.borrow_and_update(), w.index, n, late_joiner);
        let observer = w.index;
        let live = |m: &usize| !dead[*m];
        for &m in summary.failed.iter().filter(|m| live(m)) {
            if let std::collections::btree_map::Entry::Vacant(slot) = obs.false_failure_since.entry((observer, m)) {
                slot.insert(now_ms);
                obs.false_failures += 1;
                trace.record(now_ms, format_args!("a{observer} sees live a{m} failed"));
            }
        }
        for &m in w.summary.failed.iter().filter(|m| live(m) && !summary.failed.contains(*m)) {
            if let Some(since) = obs.false_failure_since.remove(&(observer, m)) {
                obs.longest_false_failure_ms = obs.longest_false_failure_ms.max(now_ms - since);
                trace.record(now_ms, format_args!("a{observer} sees a{m} alive again"));
            }
        }
        w.summary = summary;
    }
    let joiner_seen = watched.values().filter(|w| w.summary.sees_joiner).count();
    let mut failed_count: BTreeMap<usize, usize> = BTreeMap::new();
    for &victim in killed.iter().filter(|v| dead[**v]) {
        failed_count.insert(victim, watched.values().filter(|w| w.summary.failed.contains(&victim)).count());
    }
    if let Some(joiner) = late_joiner {
        let others = watched.keys().filter(|o| **o != joiner).count().max(1);
        if obs.join_disseminated_ms.is_none() && joiner_seen as f64 >= (others as f64 * DISSEMINATED).ceil() {
            obs.join_disseminated_ms = Some(now_ms);
            trace.record(now_ms, format_args!("late joiner a{joiner} known to 99.99%"));
        }
    }
    for &victim in killed.iter().filter(|v| dead[**v]) {
        let count = failed_count.get(&victim).copied().unwrap_or(0);
        if count > 0 {
            obs.first_failed_ms.entry(victim).or_insert(now_ms);
        }
        if count as f64 >= (survivors as f64 * DISSEMINATED).ceil()
            && !obs.failure_disseminated_ms.contains_key(&victim)
        {
            obs.failure_disseminated_ms.insert(victim, now_ms);
        }
        if count >= survivors && !obs.all_failed_ms.contains_key(&victim) {
            obs.all_failed_ms.insert(victim, now_ms);
            trace.record(now_ms, format_args!("a{victim} seen failed by all {survivors} survivors"));
        }
    }
}
