//! The fault schedule of a scenario's safety phase, carried out against a [`Cluster`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Cluster, Host};
use crate::scenario::{Direction, Fault, FaultKind, Target};

pub type SharedCluster = Arc<Mutex<Cluster>>;

/// Times (simulated ms since the start) at which a leader was crashed, to measure failover.
#[derive(Debug, Clone, Default)]
pub struct LeaderCrashes(Arc<Mutex<Vec<u64>>>);

impl LeaderCrashes {
    pub fn times_ms(&self) -> Vec<u64> {
        self.0.lock().expect("crash log lock").clone()
    }
}

/// Carry out `faults` from `start` on. Faults with a duration schedule their own healing; the
/// runner heals whatever is left when the safety phase ends.
pub async fn run(cluster: SharedCluster, mut faults: Vec<Fault>, start: Instant, crashes: LeaderCrashes) {
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut heals: Vec<JoinHandle<()>> = Vec::new();
    for fault in faults {
        tokio::time::sleep_until(start + secs(fault.at_s)).await;
        match fault.kind {
            FaultKind::Chaos { until_s, every_s } => chaos(&cluster, start, until_s, every_s, &crashes).await,
            kind => {
                if let Some(heal) = inject(&cluster, &kind, start, &crashes) {
                    heals.push(heal);
                }
            }
        }
    }
    for heal in heals {
        let _ = heal.await;
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Inject one fault now; returns the task that heals it later (or completes it), if any.
fn inject(
    cluster: &SharedCluster,
    kind: &FaultKind,
    start: Instant,
    crashes: &LeaderCrashes,
) -> Option<JoinHandle<()>> {
    let mut c = cluster.lock().expect("cluster lock");
    match *kind {
        FaultKind::Crash { target, restart_after_s, lose_unsynced } => {
            let host = resolve(&c, target)?;
            if target == Target::Leader {
                crashes.0.lock().expect("crash log lock").push(start.elapsed().as_millis() as u64);
            }
            c.crash(host, lose_unsynced);
            restart_after_s.map(|after| later(cluster, secs(after), move |c| c.restart(host)))
        }
        FaultKind::Isolate { target, direction, heal_after_s } => {
            let host = resolve(&c, target)?;
            c.isolate(host, direction);
            Some(later(cluster, secs(heal_after_s), move |c| c.heal_isolation(host, direction)))
        }
        FaultKind::Split { minority, with_leader, heal_after_s } => {
            let group = minority_group(&c, minority as usize, with_leader);
            c.split(&group);
            Some(later(cluster, secs(heal_after_s), |c| c.heal_links()))
        }
        FaultKind::PacketLoss { rate, duration_s } => {
            c.set_packet_loss(rate);
            Some(later(cluster, secs(duration_s), |c| c.set_packet_loss(0.0)))
        }
        FaultKind::Delay { latency_ms: [lo, hi], duration_s } => {
            c.set_latency(Some(Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1))));
            Some(later(cluster, secs(duration_s), |c| c.set_latency(None)))
        }
        FaultKind::Replace { target, leave } => {
            let Host::Server(old) = resolve(&c, target)? else { unreachable!("validated: only servers are replaced") };
            c.retire(old);
            c.add_server();
            if !leave {
                c.crash(Host::Server(old), false);
                return None;
            }
            drop(c);
            Some(tokio::spawn(leave_then_stop(cluster.clone(), old)))
        }
        FaultKind::Chaos { .. } => unreachable!("chaos is expanded by the caller"),
    }
}

/// A graceful leave of server `index` (gossip tells everyone it left, so the leader removes it
/// from Raft at once), then its host stops.
async fn leave_then_stop(cluster: SharedCluster, index: usize) {
    let running = cluster.lock().expect("cluster lock").running(Host::Server(index));
    if let Some(running) = running {
        if let Err(e) = running.agent.leave().await {
            tracing::warn!(server = index, error = %e, "leave failed; stopping anyway");
        }
    }
    cluster.lock().expect("cluster lock").crash(Host::Server(index), false);
}

/// Run `action` on the cluster after `delay`.
fn later(
    cluster: &SharedCluster,
    delay: Duration,
    action: impl FnOnce(&mut Cluster) + Send + 'static,
) -> JoinHandle<()> {
    let cluster = cluster.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        action(&mut cluster.lock().expect("cluster lock"));
    })
}

/// Which host a target names right now; `None` when there is none (no leader, all down).
/// Retired servers are never chosen.
fn resolve(cluster: &Cluster, target: Target) -> Option<Host> {
    let up: Vec<usize> = cluster.active().into_iter().filter(|&i| cluster.is_up(Host::Server(i))).collect();
    let leader = cluster.leader();
    let pick = |candidates: Vec<usize>| -> Option<usize> {
        (!candidates.is_empty()).then(|| candidates[thread_rng().gen_range(0..candidates.len())])
    };
    let server = match target {
        Target::Leader => leader,
        Target::Follower => pick(up.into_iter().filter(|&i| Some(i) != leader).collect()),
        Target::Random => pick(up),
        Target::Server(n) => cluster.active().contains(&(n as usize)).then_some(n as usize),
        Target::Agent(n) => return ((n as usize) < cluster.agent_count()).then_some(Host::Agent(n as usize)),
    };
    server.map(Host::Server)
}

/// A random group of `size` active servers, holding the current leader if `with_leader`.
fn minority_group(cluster: &Cluster, size: usize, with_leader: bool) -> BTreeSet<usize> {
    let active = cluster.active();
    let mut group = BTreeSet::new();
    if with_leader {
        if let Some(leader) = cluster.leader() {
            group.insert(leader);
        }
    }
    while group.len() < size.min(active.len()) {
        group.insert(active[thread_rng().gen_range(0..active.len())]);
    }
    group
}

/// Random faults, one at a time, each healed before the next, until `until_s`.
async fn chaos(cluster: &SharedCluster, start: Instant, until_s: f64, every_s: [f64; 2], crashes: &LeaderCrashes) {
    let servers = cluster.lock().expect("cluster lock").active().len() as u32;
    while start.elapsed() < secs(until_s) {
        let duration = thread_rng().gen_range(1.0..5.0);
        let kind = match thread_rng().gen_range(0..6) {
            0 => FaultKind::Crash { target: Target::Leader, restart_after_s: Some(duration), lose_unsynced: true },
            1 => FaultKind::Crash { target: Target::Random, restart_after_s: Some(duration), lose_unsynced: true },
            2 => FaultKind::Isolate { target: Target::Leader, direction: Direction::Both, heal_after_s: duration },
            3 => FaultKind::Isolate { target: Target::Random, direction: random_direction(), heal_after_s: duration },
            4 if servers >= 3 => FaultKind::Split {
                minority: (servers - 1) / 2,
                with_leader: thread_rng().gen_bool(0.5),
                heal_after_s: duration,
            },
            _ => FaultKind::PacketLoss { rate: thread_rng().gen_range(0.02..0.2), duration_s: duration },
        };
        if let Some(heal) = inject(cluster, &kind, start, crashes) {
            let _ = heal.await;
        }
        tokio::time::sleep(secs(thread_rng().gen_range(every_s[0]..=every_s[1]))).await;
    }
}

fn random_direction() -> Direction {
    match thread_rng().gen_range(0..3) {
        0 => Direction::Both,
        1 => Direction::Inbound,
        _ => Direction::Outbound,
    }
}
