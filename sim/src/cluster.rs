//! A cluster of cairn servers inside madsim, each on its own simulated host with its own
//! simulated disk, and the means to crash, restart and cut them off.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::config::{AgentConfig, AutopilotSettings, GossipSettings, JoinAddress, LogLevel, Ports, RaftSettings};
use cairn::raft::{Metrics, ServerState};
use cairn::server::Server;
use cairn::storage::MemDisk;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};

use crate::scenario::{Direction, Scenario};
use crate::trace::Trace;

/// Every leadership a server claimed: (term, server index) and when it was first seen. A checker
/// reads this afterwards.
#[derive(Debug, Clone, Default)]
pub struct LeaderLog {
    claims: Arc<Mutex<BTreeMap<(u64, usize), u64>>>,
}

impl LeaderLog {
    fn record(&self, term: u64, server: usize, sim_ms: u64) {
        self.claims.lock().expect("leader log lock").entry((term, server)).or_insert(sim_ms);
    }

    /// (term, server) pairs, ordered by term.
    pub fn claims(&self) -> Vec<(u64, usize)> {
        self.claims.lock().expect("leader log lock").keys().copied().collect()
    }

    /// (simulated ms, term, server), ordered by time.
    pub fn timeline(&self) -> Vec<(u64, u64, usize)> {
        let mut timeline: Vec<(u64, u64, usize)> = self
            .claims
            .lock()
            .expect("leader log lock")
            .iter()
            .map(|(&(term, server), &ms)| (ms, term, server))
            .collect();
        timeline.sort_unstable();
        timeline
    }
}

/// One simulated server host.
struct SimServer {
    node: NodeHandle,
    disk: MemDisk,
    /// The running agent, set by the host's init task; `None` while the host is down or starting.
    live: Arc<Mutex<Option<Arc<Server>>>>,
    up: bool,
}

/// The servers of a run and the network between them.
pub struct Cluster {
    handle: Handle,
    net: Arc<NetSim>,
    servers: Vec<SimServer>,
    base_latency: std::ops::Range<Duration>,
    trace: Trace,
    start: tokio::time::Instant,
    /// Links this cluster clogged for a split, so healing undoes exactly those.
    clogged_links: BTreeSet<(usize, usize)>,
    isolated: BTreeSet<(usize, u8)>,
}

pub fn server_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1))
}

pub fn http_addr(index: usize) -> SocketAddr {
    SocketAddr::new(server_ip(index), Ports::default().http)
}

fn agent_config(scenario: &Scenario, index: usize) -> AgentConfig {
    let n = scenario.servers as usize;
    let mut raft = RaftSettings::default();
    if let Some(threshold) = scenario.raft.snapshot_threshold {
        raft.snapshot_threshold = threshold;
    }
    if let Some(trailing) = scenario.raft.trailing_logs {
        raft.trailing_logs = trailing;
    }
    if let Some(heartbeat) = scenario.raft.heartbeat_ms {
        raft.heartbeat_interval = Duration::from_millis(heartbeat);
    }
    if let Some([min, max]) = scenario.raft.election_timeout_ms {
        raft.election_timeout_min = Duration::from_millis(min);
        raft.election_timeout_max = Duration::from_millis(max);
    }
    AgentConfig {
        node_name: format!("s{index}"),
        node_id: None,
        datacenter: "dc1".into(),
        server: true,
        dev: false,
        bootstrap_expect: Some(n as u32),
        bootstrap: false,
        data_dir: Some("/simulated".into()),
        bind_addr: server_ip(index),
        advertise_addr: None,
        client_addr: server_ip(index),
        retry_join: (0..n)
            .filter(|&other| other != index)
            .map(|other| JoinAddress { host: server_ip(other).to_string(), port: Ports::default().serf_lan })
            .collect(),
        retry_interval: Duration::from_secs(1),
        retry_max: 0,
        ports: Ports::default(),
        log_level: LogLevel::Info,
        raft,
        gossip: GossipSettings::defaults_for(true),
        autopilot: AutopilotSettings::default(),
        ignored_keys: vec![],
    }
}

impl Cluster {
    /// Create and boot every server host.
    pub fn start(scenario: &Scenario, trace: Trace, leaders: LeaderLog) -> Cluster {
        let handle = Handle::current();
        let net = NetSim::current();
        let [lo, hi] = scenario.network.latency_ms;
        let base_latency = Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1));
        let latency = base_latency.clone();
        let start = tokio::time::Instant::now();
        net.update_config(|c| c.send_latency = latency);
        let servers = (0..scenario.servers as usize)
            .map(|index| {
                let disk = MemDisk::default();
                let live: Arc<Mutex<Option<Arc<Server>>>> = Arc::default();
                let node = build_host(&handle, agent_config(scenario, index), index, &disk, &live, &leaders, start);
                SimServer { node, disk, live, up: true }
            })
            .collect();
        Cluster {
            handle,
            net,
            servers,
            base_latency,
            trace,
            start,
            clogged_links: BTreeSet::new(),
            isolated: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn is_up(&self, index: usize) -> bool {
        self.servers[index].up
    }

    /// The running agent on host `index`, if it is up and started.
    pub fn live(&self, index: usize) -> Option<Arc<Server>> {
        self.servers[index].live.lock().expect("live lock").clone()
    }

    /// The leader a majority of all servers agrees on, at the same term. A deposed leader that
    /// has not noticed yet still reports itself leader; this view does not count it.
    pub fn leader(&self) -> Option<usize> {
        let metrics: Vec<(usize, Metrics)> =
            (0..self.len()).filter_map(|i| self.live(i).map(|s| (i, s.raft().metrics().borrow().clone()))).collect();
        let majority = self.len() / 2 + 1;
        metrics.iter().find_map(|(index, m)| {
            let leads = m.state == ServerState::Leader;
            let agree = metrics
                .iter()
                .filter(|(_, o)| o.current_leader == Some(m.id) && o.current_term == m.current_term)
                .count();
            (leads && agree >= majority).then_some(*index)
        })
    }

    /// Kill host `index`. With `lose_unsynced`, its disk keeps only what was synced (plus a random
    /// prefix of the rest, possibly torn), as after a power loss.
    pub fn crash(&mut self, index: usize, lose_unsynced: bool) {
        if !self.servers[index].up {
            return;
        }
        self.handle.kill(self.servers[index].node.id());
        *self.servers[index].live.lock().expect("live lock") = None;
        self.servers[index].up = false;
        if lose_unsynced {
            self.servers[index].disk.crash(madsim::rand::random());
        }
        self.trace.record(self.now_ms(), format!("crash s{index} lose_unsynced={lose_unsynced}"));
    }

    /// Boot host `index` again from its disk.
    pub fn restart(&mut self, index: usize) {
        if self.servers[index].up {
            return;
        }
        self.handle.restart(self.servers[index].node.id());
        self.servers[index].up = true;
        self.trace.record(self.now_ms(), format!("restart s{index}"));
    }

    pub fn isolate(&mut self, index: usize, direction: Direction) {
        let id = self.servers[index].node.id();
        match direction {
            Direction::Both => self.net.clog_node(id),
            Direction::Inbound => self.net.clog_node_in(id),
            Direction::Outbound => self.net.clog_node_out(id),
        }
        self.isolated.insert((index, direction as u8));
        self.trace.record(self.now_ms(), format!("isolate s{index} {direction:?}"));
    }

    pub fn heal_isolation(&mut self, index: usize, direction: Direction) {
        let id = self.servers[index].node.id();
        match direction {
            Direction::Both => self.net.unclog_node(id),
            Direction::Inbound => self.net.unclog_node_in(id),
            Direction::Outbound => self.net.unclog_node_out(id),
        }
        self.isolated.remove(&(index, direction as u8));
        self.trace.record(self.now_ms(), format!("heal isolation s{index} {direction:?}"));
    }

    /// Cut every link between `minority` and the other servers, both ways.
    pub fn split(&mut self, minority: &BTreeSet<usize>) {
        for a in minority {
            for b in (0..self.len()).filter(|b| !minority.contains(b)) {
                for (src, dst) in [(*a, b), (b, *a)] {
                    self.net.clog_link(self.servers[src].node.id(), self.servers[dst].node.id());
                    self.clogged_links.insert((src, dst));
                }
            }
        }
        self.trace.record(self.now_ms(), format!("split minority={minority:?}"));
    }

    pub fn heal_links(&mut self) {
        for (src, dst) in std::mem::take(&mut self.clogged_links) {
            self.net.unclog_link(self.servers[src].node.id(), self.servers[dst].node.id());
        }
        self.trace.record(self.now_ms(), "heal links");
    }

    pub fn set_packet_loss(&mut self, rate: f64) {
        self.net.update_config(|c| c.packet_loss_rate = rate);
        self.trace.record(self.now_ms(), format!("packet loss {rate}"));
    }

    pub fn set_latency(&mut self, latency: Option<std::ops::Range<Duration>>) {
        let latency = latency.unwrap_or_else(|| self.base_latency.clone());
        self.trace.record(self.now_ms(), format!("latency {latency:?}"));
        self.net.update_config(|c| c.send_latency = latency);
    }

    /// End every fault: reconnect everything, restore the network, restart every host that is down.
    pub fn heal_all(&mut self) {
        for (index, direction) in std::mem::take(&mut self.isolated) {
            let id = self.servers[index].node.id();
            match direction {
                0 => self.net.unclog_node(id),
                1 => self.net.unclog_node_in(id),
                _ => self.net.unclog_node_out(id),
            }
        }
        self.heal_links();
        self.set_packet_loss(0.0);
        self.set_latency(None);
        for index in 0..self.len() {
            self.restart(index);
        }
    }

    /// One line per server with its Raft view, for failure reports.
    pub fn describe(&self) -> String {
        (0..self.len())
            .map(|i| match self.live(i) {
                None => format!("s{i}: down"),
                Some(server) => {
                    let m = server.raft().metrics().borrow().clone();
                    format!(
                        "s{i}: {:?} term={} vote={:?} leader={:?} last_log={:?} applied={:?} members={:?}",
                        m.state,
                        m.current_term,
                        m.vote,
                        m.current_leader,
                        m.last_log_index,
                        m.last_applied.map(|l| l.index),
                        m.membership_config.membership().voter_ids().collect::<Vec<_>>(),
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("\n    ")
    }

    /// The state digests and applied indexes of every live server.
    pub fn replica_states(&self) -> Vec<(usize, u64, u64)> {
        (0..self.len())
            .filter_map(|i| {
                self.live(i).map(|server| {
                    let state = server.state().read();
                    (i, state.last_index(), state.digest())
                })
            })
            .collect()
    }
}

/// Create the simulated host for server `index`. Its init task (run again on every restart)
/// starts the agent from the host's disk and watches its Raft role.
fn build_host(
    handle: &Handle,
    config: AgentConfig,
    index: usize,
    disk: &MemDisk,
    live: &Arc<Mutex<Option<Arc<Server>>>>,
    leaders: &LeaderLog,
    start: tokio::time::Instant,
) -> NodeHandle {
    let (disk, live, leaders) = (disk.clone(), live.clone(), leaders.clone());
    handle
        .create_node()
        .name(format!("s{index}"))
        .ip(server_ip(index))
        .init(move || {
            let (config, disk, live, leaders) = (config.clone(), disk.clone(), live.clone(), leaders.clone());
            async move {
                let node = match cairn::node::start(&config, Arc::new(disk)).await {
                    Ok(node) => node,
                    Err(e) => panic!("server s{index} failed to start: {e}"),
                };
                let server = node.server.clone().expect("simulated servers run the server role");
                *live.lock().expect("live lock") = Some(server.clone());
                watch_leadership(server, index, leaders, start).await;
                std::future::pending::<()>().await;
            }
        })
        .build()
}

/// Record every (term, server) at which this server became leader.
async fn watch_leadership(server: Arc<Server>, index: usize, leaders: LeaderLog, start: tokio::time::Instant) {
    let mut metrics = server.raft().metrics();
    loop {
        let (state, term) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term)
        };
        if state == ServerState::Leader {
            leaders.record(term, index, start.elapsed().as_millis() as u64);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
