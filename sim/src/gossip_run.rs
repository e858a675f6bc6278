//! One run of a gossip scenario: a pool of client agents on simulated hosts, started over a
//! window, some killed later, every agent's membership view watched from outside.
//!
//! What is checked, from the views alone: every agent sees every agent alive within the bound
//! after the last one started; every survivor sees each killed agent failed within the bound after
//! the kill; no survivor sees a live agent failed for longer than the bound (each such stretch is a
//! false positive and is counted). What is measured: the time for a late joiner and for a failure
//! to reach 99.99 % of the views (the figure Serf's convergence model predicts), and gossip bytes
//! per agent per second (UDP datagrams and TCP push-pull frames sent).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::config::{AgentConfig, AutopilotSettings, GossipSettings, JoinAddress, LogLevel, Ports, RaftSettings};
use cairn::gossip::{Gossip, MemberStatus};
use cairn::storage::MemDisk;
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
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

    let poll = if n <= 200 { Duration::from_millis(100) } else { Duration::from_millis(500) };
    let end = start + Duration::from_secs_f64(spec.duration_s);
    let mut obs = Observations::default();
    let mut bytes_at_convergence: Option<(u64, Instant)> = None;
    let mut bytes_at_end = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(poll).await;
        let now = Instant::now();
        if let Some(at) = kill_at {
            if now >= at && !dead[killed.first().copied().unwrap_or(0)] && !killed.is_empty() {
                for &victim in &killed {
                    handle.kill(hosts[victim].id());
                    *slots[victim].lock().expect("slot lock") = None;
                    dead[victim] = true;
                    trace.record(ms(now), format_args!("kill a{victim}"));
                }
            }
        }
        let views: Vec<(usize, Gossip)> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.lock().expect("slot lock").clone().map(|g| (i, g)))
            .collect();
        observe(&mut obs, &views, n, &dead, &killed, late_joiner, ms(now), &trace);
        // The pool that started in the window (the late joiner is timed on its own).
        let pool: Vec<(usize, Gossip)> = views.iter().filter(|(i, _)| Some(*i) != late_joiner).cloned().collect();
        let pool_size = n - usize::from(late_joiner.is_some());
        let everyone_started = pool.len() + killed.iter().filter(|k| dead[**k]).count() == pool_size;
        if obs.converged_ms.is_none() && everyone_started && all_see_all_alive(&pool, pool_size, &dead) {
            obs.converged_ms = Some(ms(now));
            trace.record(ms(now), "converged");
        }
        // Datagrams and push-pull frames alike: both are gossip traffic.
        let bytes: u64 = views.iter().map(|(_, g)| g.stats()).map(|s| s.bytes_out + s.sync_bytes_out).sum();
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
                    failure = failure.or(Some(fail(
                        "failure-detection",
                        format!("killed agent a{victim} was not seen failed by every survivor by the end"),
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

fn all_see_all_alive(views: &[(usize, Gossip)], n: usize, dead: &[bool]) -> bool {
    views.iter().all(|(_, gossip)| {
        let view = gossip.membership();
        let view = view.borrow();
        let alive = view.iter().filter(|m| m.status == MemberStatus::Alive).count();
        alive >= n - dead.iter().filter(|d| **d).count()
    })
}

/// Index of an agent from its node name (`a<index>`).
fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('a')?.parse().ok()
}

#[allow(clippy::too_many_arguments)]
fn observe(
    obs: &mut Observations,
    views: &[(usize, Gossip)],
    n: usize,
    dead: &[bool],
    killed: &[usize],
    late_joiner: Option<usize>,
    now_ms: u64,
    trace: &Trace,
) {
    let survivors = views.len().max(1);
    let mut failed_count: BTreeMap<usize, usize> = BTreeMap::new();
    let mut joiner_seen = 0usize;
    for (observer, gossip) in views {
        let view = gossip.membership();
        let view = view.borrow();
        for member in view.iter() {
            let Some(m) = index_of(&member.name).filter(|m| *m < n) else { continue };
            let failed = member.status == MemberStatus::Failed;
            if dead[m] {
                if failed {
                    *failed_count.entry(m).or_default() += 1;
                }
                continue;
            }
            if Some(m) == late_joiner && member.status == MemberStatus::Alive && m != *observer {
                joiner_seen += 1;
            }
            let key = (*observer, m);
            match (failed, obs.false_failure_since.get(&key).copied()) {
                (true, None) => {
                    obs.false_failure_since.insert(key, now_ms);
                    obs.false_failures += 1;
                    trace.record(now_ms, format_args!("a{observer} sees live a{m} failed"));
                }
                (false, Some(since)) => {
                    obs.false_failure_since.remove(&key);
                    obs.longest_false_failure_ms = obs.longest_false_failure_ms.max(now_ms - since);
                    trace.record(now_ms, format_args!("a{observer} sees a{m} alive again"));
                }
                _ => {}
            }
        }
    }
    if let Some(joiner) = late_joiner {
        let others = views.iter().filter(|(o, _)| *o != joiner).count().max(1);
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
