//! A cluster of cairn servers (and client agents) inside madsim, each on its own simulated host
//! with its own simulated disk, and the means to crash, restart, cut off and replace them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::agent::Agent;
use cairn::config::{
    AgentConfig, AutopilotSettings, CheckDefinition, CheckKind, GossipSettings, JoinAddress, LogLevel, Origin, Ports,
    RaftSettings, ServiceDefinition,
};
use cairn::health::{ProbeResult, ScriptedProber};
use cairn::raft::{Metrics, ServerState};
use cairn::server::Server;
use cairn::storage::MemDisk;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};

use crate::check::catalog::AgentEvent;
use crate::scenario::{AgentCheck, Direction, Scenario};
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

/// A host a fault can hit: a server or a client agent, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Host {
    Server(usize),
    Agent(usize),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Server(i) => write!(f, "s{i}"),
            Host::Agent(i) => write!(f, "a{i}"),
        }
    }
}

/// What runs on a host that is up: the agent, and on servers the server role.
#[derive(Clone)]
pub struct Running {
    pub agent: Arc<Agent>,
    pub server: Option<Arc<Server>>,
}

/// One simulated host.
struct SimHost {
    node: NodeHandle,
    disk: MemDisk,
    /// The running agent, set by the host's init task; `None` while the host is down or starting.
    live: Arc<Mutex<Option<Running>>>,
    /// Answers the host's script, HTTP and TCP checks as the scenario scripts.
    prober: Arc<ScriptedProber>,
    up: bool,
    /// Replaced for good: never restarted, not counted among the cluster's servers.
    retired: bool,
}

/// The servers the workload may send requests to (those not retired), shared with its clients.
#[derive(Debug, Clone, Default)]
pub struct Targets(Arc<Mutex<Vec<usize>>>);

impl Targets {
    /// The HTTP address of a random target server.
    pub fn pick(&self) -> SocketAddr {
        let targets = self.0.lock().expect("targets lock");
        http_addr(targets[thread_rng().gen_range(0..targets.len())])
    }

    fn set(&self, servers: Vec<usize>) {
        *self.0.lock().expect("targets lock") = servers;
    }
}

/// The hosts of a run and the network between them.
pub struct Cluster {
    handle: Handle,
    net: Arc<NetSim>,
    scenario: Scenario,
    servers: Vec<SimHost>,
    agents: Vec<SimHost>,
    targets: Targets,
    leaders: LeaderLog,
    base_latency: std::ops::Range<Duration>,
    trace: Trace,
    start: tokio::time::Instant,
    /// Links this cluster clogged for a split, so healing undoes exactly those.
    clogged_links: BTreeSet<(usize, usize)>,
    isolated: BTreeSet<(Host, u8)>,
    /// When agents went down and came back, for the catalog checker.
    agent_events: Vec<AgentEvent>,
}

pub fn server_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1))
}

pub fn agent_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 4, index as u8 + 1))
}

pub fn http_addr(index: usize) -> SocketAddr {
    SocketAddr::new(server_ip(index), Ports::default().http)
}

/// The configuration of server `index`, joining through `join_through` (server indexes).
fn server_config(scenario: &Scenario, index: usize, join_through: &[usize]) -> AgentConfig {
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
    let mut autopilot = AutopilotSettings::default();
    if let Some(s) = scenario.autopilot.server_stabilization_time_s {
        autopilot.server_stabilization_time = Duration::from_secs_f64(s);
    }
    if let Some(s) = scenario.autopilot.dead_server_cleanup_after_s {
        autopilot.dead_server_cleanup_after = Duration::from_secs_f64(s);
    }
    AgentConfig {
        node_name: format!("s{index}"),
        bootstrap_expect: Some(n as u32),
        raft,
        autopilot,
        ..base_config(
            server_ip(index),
            true,
            join_through.iter().filter(|&&other| other != index).map(|&i| server_ip(i)),
        )
    }
}

/// Port every simulated service instance listens on.
pub const SERVICE_PORT: u16 = 8080;

/// The configuration of client agent `index`, joining through the first servers. It defines one
/// instance of each of the scenario's services (with the scripted check, if the scenario has
/// one), which the agent's anti-entropy registers, exactly as from a config file.
fn agent_config(scenario: &Scenario, index: usize) -> AgentConfig {
    let join_through = (0..scenario.servers as usize).map(server_ip);
    let mut config =
        AgentConfig { node_name: format!("a{index}"), ..base_config(agent_ip(index), false, join_through) };
    let Some(agents) = &scenario.agents else { return config };
    let origin = || Origin { path: "scenario".into(), field: "agents.services".into() };
    config.local.services = agents
        .services
        .iter()
        .map(|name| ServiceDefinition {
            id: name.clone(),
            name: name.clone(),
            tags: Vec::new(),
            address: None,
            port: Some(SERVICE_PORT),
            meta: Default::default(),
            enable_tag_override: false,
            weights: Default::default(),
            checks: agents.check.iter().map(|check| scripted_check(name, check, origin())).collect(),
            origin: origin(),
        })
        .collect();
    config
}

/// The scripted HTTP check of service `name`: its ID is Consul's default, `service:<name>`.
fn scripted_check(name: &str, check: &AgentCheck, origin: Origin) -> CheckDefinition {
    let interval = Duration::from_secs_f64(check.interval_s);
    CheckDefinition {
        id: format!("service:{name}"),
        name: format!("Service '{name}' check"),
        notes: None,
        service_id: Some(name.to_string()),
        initial_status: Default::default(),
        kind: CheckKind::Http {
            url: format!("http://127.0.0.1:{SERVICE_PORT}/health"),
            method: "GET".into(),
            header: Default::default(),
            body: None,
            tls_skip_verify: false,
            follow_redirects: false,
            interval,
            timeout: interval.min(Duration::from_secs(10)),
        },
        success_before_passing: check.success_before_passing,
        failures_before_critical: check.failures_before_critical,
        deregister_critical_service_after: None,
        origin,
    }
}

fn base_config(ip: IpAddr, server: bool, join_through: impl Iterator<Item = IpAddr>) -> AgentConfig {
    AgentConfig {
        node_name: String::new(),
        node_id: None,
        datacenter: "dc1".into(),
        server,
        dev: false,
        bootstrap_expect: None,
        bootstrap: false,
        data_dir: Some("/simulated".into()),
        bind_addr: ip,
        advertise_addr: None,
        client_addr: ip,
        retry_join: join_through
            .map(|ip| JoinAddress { host: ip.to_string(), port: Ports::default().serf_lan })
            .collect(),
        retry_interval: Duration::from_secs(1),
        retry_max: 0,
        ports: Ports::default(),
        log_level: LogLevel::Info,
        raft: RaftSettings::default(),
        gossip: GossipSettings::defaults_for(server),
        autopilot: AutopilotSettings::default(),
        local: Default::default(),
        dns: Default::default(),
        ignored_keys: vec![],
    }
}

impl Cluster {
    /// Create and boot every server and agent host.
    pub fn start(scenario: &Scenario, trace: Trace, leaders: LeaderLog) -> Cluster {
        let handle = Handle::current();
        let net = NetSim::current();
        let [lo, hi] = scenario.network.latency_ms;
        let base_latency = Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1));
        let latency = base_latency.clone();
        net.update_config(|c| c.send_latency = latency);
        let mut cluster = Cluster {
            handle,
            net,
            scenario: scenario.clone(),
            servers: Vec::new(),
            agents: Vec::new(),
            targets: Targets::default(),
            leaders,
            base_latency,
            trace,
            start: tokio::time::Instant::now(),
            clogged_links: BTreeSet::new(),
            isolated: BTreeSet::new(),
            agent_events: Vec::new(),
        };
        let first: Vec<usize> = (0..scenario.servers as usize).collect();
        for index in first.clone() {
            let config = server_config(scenario, index, &first);
            let host = cluster.build_host(config, Host::Server(index), server_ip(index));
            cluster.servers.push(host);
        }
        for index in 0..scenario.agents.as_ref().map_or(0, |a| a.count as usize) {
            let host = cluster.build_host(agent_config(scenario, index), Host::Agent(index), agent_ip(index));
            cluster.agents.push(host);
        }
        cluster.targets.set(first);
        cluster
    }

    /// Every server ever started, retired ones included (indexes are never reused).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers that are part of the cluster: all but the retired ones.
    pub fn active(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| !self.servers[i].retired).collect()
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The scripted prober of each client agent, by index.
    pub fn agent_probers(&self) -> Vec<Arc<ScriptedProber>> {
        self.agents.iter().map(|host| host.prober.clone()).collect()
    }

    /// The servers the workload sends requests to.
    pub fn targets(&self) -> Targets {
        self.targets.clone()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Note an agent going down or coming back; servers are not tracked here.
    fn note(&mut self, host: Host, up: bool) {
        if let Host::Agent(agent) = host {
            self.agent_events.push(AgentEvent { at_ms: self.now_ms(), agent, up });
        }
    }

    /// When agents went down (crash, isolation) and came back (restart, heal), in order.
    pub fn agent_events(&self) -> Vec<AgentEvent> {
        self.agent_events.clone()
    }

    fn host(&self, host: Host) -> &SimHost {
        match host {
            Host::Server(i) => &self.servers[i],
            Host::Agent(i) => &self.agents[i],
        }
    }

    fn host_mut(&mut self, host: Host) -> &mut SimHost {
        match host {
            Host::Server(i) => &mut self.servers[i],
            Host::Agent(i) => &mut self.agents[i],
        }
    }

    pub fn is_up(&self, host: Host) -> bool {
        self.host(host).up
    }

    /// What runs on `host`, if it is up and started.
    pub fn running(&self, host: Host) -> Option<Running> {
        self.host(host).live.lock().expect("live lock").clone()
    }

    /// The running server on server host `index`, if it is up and started.
    pub fn live(&self, index: usize) -> Option<Arc<Server>> {
        self.running(Host::Server(index)).and_then(|running| running.server)
    }

    /// The leader a majority of its own voters agrees on, at the same term. A deposed leader that
    /// has not noticed yet still reports itself leader; this view does not count it.
    pub fn leader(&self) -> Option<usize> {
        let metrics: Vec<(usize, Metrics)> =
            (0..self.len()).filter_map(|i| self.live(i).map(|s| (i, s.raft().metrics().borrow().clone()))).collect();
        metrics.iter().find_map(|(index, m)| {
            let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
            let leads = m.state == ServerState::Leader;
            let agree = metrics
                .iter()
                .filter(|(_, o)| voters.contains(&o.id))
                .filter(|(_, o)| o.current_leader == Some(m.id) && o.current_term == m.current_term)
                .count();
            (leads && agree > voters.len() / 2).then_some(*index)
        })
    }

    /// The names of the voters and of the learners in the leader's Raft configuration.
    pub fn raft_configuration(&self) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
        let server = self.live(self.leader()?)?;
        let configuration = server.raft_configuration();
        let names = |voter: bool| -> BTreeSet<String> {
            configuration.servers.iter().filter(|p| p.voter == voter).map(|p| p.info.name.clone()).collect()
        };
        Some((names(true), names(false)))
    }

    /// The names of the servers that should be voters: the active ones.
    pub fn active_names(&self) -> BTreeSet<String> {
        self.active().into_iter().map(|i| format!("s{i}")).collect()
    }

    /// Kill `host`. With `lose_unsynced`, its disk keeps only what was synced (plus a random
    /// prefix of the rest, possibly torn), as after a power loss.
    pub fn crash(&mut self, host: Host, lose_unsynced: bool) {
        if !self.host(host).up {
            return;
        }
        self.handle.kill(self.host(host).node.id());
        let target = self.host_mut(host);
        *target.live.lock().expect("live lock") = None;
        target.up = false;
        if lose_unsynced {
            target.disk.crash(madsim::rand::random());
        }
        self.note(host, false);
        self.trace.record(self.now_ms(), format!("crash {host} lose_unsynced={lose_unsynced}"));
    }

    /// Boot `host` again from its disk, unless it was retired.
    pub fn restart(&mut self, host: Host) {
        if self.host(host).up || self.host(host).retired {
            return;
        }
        self.handle.restart(self.host(host).node.id());
        self.host_mut(host).up = true;
        self.note(host, true);
        self.trace.record(self.now_ms(), format!("restart {host}"));
    }

    /// Take server `index` out of the cluster for good: the workload stops using it, it is never
    /// restarted, and the checkers expect it gone from the Raft configuration. The caller makes
    /// it leave or kills it.
    pub fn retire(&mut self, index: usize) {
        self.servers[index].retired = true;
        self.targets.set(self.active());
        self.trace.record(self.now_ms(), format!("retire s{index}"));
    }

    /// Start a new server host with a fresh disk and identity, joining through the active
    /// servers. Returns its index.
    pub fn add_server(&mut self) -> usize {
        let index = self.servers.len();
        let config = server_config(&self.scenario, index, &self.active());
        let host = self.build_host(config, Host::Server(index), server_ip(index));
        self.servers.push(host);
        self.targets.set(self.active());
        self.trace.record(self.now_ms(), format!("add s{index}"));
        index
    }

    pub fn isolate(&mut self, host: Host, direction: Direction) {
        let id = self.host(host).node.id();
        match direction {
            Direction::Both => self.net.clog_node(id),
            Direction::Inbound => self.net.clog_node_in(id),
            Direction::Outbound => self.net.clog_node_out(id),
        }
        self.isolated.insert((host, direction as u8));
        self.note(host, false);
        self.trace.record(self.now_ms(), format!("isolate {host} {direction:?}"));
    }

    pub fn heal_isolation(&mut self, host: Host, direction: Direction) {
        let id = self.host(host).node.id();
        match direction {
            Direction::Both => self.net.unclog_node(id),
            Direction::Inbound => self.net.unclog_node_in(id),
            Direction::Outbound => self.net.unclog_node_out(id),
        }
        self.isolated.remove(&(host, direction as u8));
        self.note(host, true);
        self.trace.record(self.now_ms(), format!("heal isolation {host} {direction:?}"));
    }

    /// Cut every link between `minority` and the other active servers, both ways.
    pub fn split(&mut self, minority: &BTreeSet<usize>) {
        for a in minority {
            for b in self.active().into_iter().filter(|b| !minority.contains(b)) {
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

    /// End every fault: reconnect everything, restore the network, restart every host that is
    /// down and not retired.
    pub fn heal_all(&mut self) {
        for (host, direction) in std::mem::take(&mut self.isolated) {
            let id = self.host(host).node.id();
            match direction {
                0 => self.net.unclog_node(id),
                1 => self.net.unclog_node_in(id),
                _ => self.net.unclog_node_out(id),
            }
            self.note(host, true);
        }
        self.heal_links();
        self.set_packet_loss(0.0);
        self.set_latency(None);
        for index in 0..self.len() {
            self.restart(Host::Server(index));
        }
        for index in 0..self.agents.len() {
            self.restart(Host::Agent(index));
        }
    }

    /// One line per server with its Raft view, for failure reports.
    pub fn describe(&self) -> String {
        (0..self.len())
            .map(|i| match self.live(i) {
                None if self.servers[i].retired => format!("s{i}: retired"),
                None => format!("s{i}: down"),
                Some(server) => {
                    let m = server.raft().metrics().borrow().clone();
                    format!(
                        "s{i}: {:?} term={} vote={:?} leader={:?} last_log={:?} applied={:?} voters={:?} learners={:?}",
                        m.state,
                        m.current_term,
                        m.vote,
                        m.current_leader,
                        m.last_log_index,
                        m.last_applied.map(|l| l.index),
                        m.membership_config.membership().voter_ids().collect::<Vec<_>>(),
                        m.membership_config.membership().learner_ids().collect::<Vec<_>>(),
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("\n    ")
    }

    /// The state digests and applied indexes of every live active server.
    pub fn replica_states(&self) -> Vec<(usize, u64, u64)> {
        self.active()
            .into_iter()
            .filter_map(|i| {
                self.live(i).map(|server| {
                    let state = server.state().read();
                    (i, state.last_index(), state.digest())
                })
            })
            .collect()
    }

    /// Create the simulated host for `host`. Its init task (run again on every restart) starts
    /// the agent from the host's disk and, on servers, watches its Raft role.
    fn build_host(&self, config: AgentConfig, host: Host, ip: IpAddr) -> SimHost {
        let disk = MemDisk::default();
        // Checks answer passing until the scenario scripts otherwise; the prober outlives restarts.
        let prober = Arc::new(ScriptedProber::new(ProbeResult::new(
            cairn::config::CheckStatus::Passing,
            "HTTP GET http://127.0.0.1:8080/health: 200 OK Output: ok",
        )));
        let init_prober = prober.clone();
        let live: Arc<Mutex<Option<Running>>> = Arc::default();
        let (leaders, start) = (self.leaders.clone(), self.start);
        let (init_disk, init_live) = (disk.clone(), live.clone());
        let node = self
            .handle
            .create_node()
            .name(host.to_string())
            .ip(ip)
            .init(move || {
                let (config, disk, live, leaders) =
                    (config.clone(), init_disk.clone(), init_live.clone(), leaders.clone());
                let environment = cairn::node::Environment { prober: init_prober.clone(), reload: None };
                async move {
                    let node = match cairn::node::start_with(&config, Arc::new(disk), environment).await {
                        Ok(node) => node,
                        Err(e) => panic!("{host} failed to start: {e}"),
                    };
                    let running = Running { agent: node.agent.clone(), server: node.server.clone() };
                    *live.lock().expect("live lock") = Some(running);
                    if let (Host::Server(index), Some(server)) = (host, node.server.clone()) {
                        watch_leadership(server, index, leaders, start).await;
                    }
                    std::future::pending::<()>().await;
                }
            })
            .build();
        SimHost { node, disk, live, prober, up: true, retired: false }
    }
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
