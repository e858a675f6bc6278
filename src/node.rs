//! The composition root: builds one agent from its configuration and a disk, and starts it.
//!
//! Production (`main.rs`) and the simulator (`sim/`) both start agents here, so the simulator runs
//! exactly the wiring that ships. This module only connects parts; behaviour lives in them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::agent::join::{self, JoinPlan};
use crate::agent::local::NodeInfo;
use crate::agent::{anti_entropy, registry, Agent, AgentParts, Backend, ConfigLoader, Registry, ServerForwarder};
use crate::config::AgentConfig;
use crate::gossip::keyring::Keyring;
use crate::gossip::{self, Gossip, GossipConfig, GossipTiming, MemberMeta, Role};
use crate::health::{CheckRunner, Prober, RealProber, RunnerConfig};
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerFeedback};
use crate::raft::snapshot_store::SnapshotStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::{openraft_config, raft_id_from_node_id, Raft, ServerInfo};
use crate::rpc::{Preamble, RpcClient};
use crate::server::{bootstrap, membership};
use crate::server::{Server, ServerLimits, ServerRpc};
use crate::storage::{Disk, DiskError};

/// The file in the data directory that keeps the node's ID across restarts.
const NODE_ID_FILE: &str = "node-id";

/// Why an agent could not start. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory: {0}")]
    Disk(#[from] DiskError),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("raft did not start: {0}")]
    Raft(String),
    #[error("gossip: {0}")]
    Gossip(#[from] crate::gossip::GossipError),
    #[error("cannot choose an address to advertise: {0}")]
    Advertise(String),
}

/// A running agent.
#[derive(Debug)]
pub struct NodeHandle {
    /// The server role, on servers.
    pub server: Option<Arc<Server>>,
    pub agent: Arc<Agent>,
    pub gossip: Gossip,
    pub http_addr: SocketAddr,
    /// Where the DNS interface listens (UDP and TCP, one port).
    pub dns_addr: SocketAddr,
    /// The server RPC address, on servers.
    pub rpc_addr: Option<SocketAddr>,
    /// The LAN gossip address other agents join through.
    pub lan_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stop without leaving: the pool sees this agent fail (and, for a server, it stays in Raft).
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.gossip.clone().shutdown().await;
        if let Some(server) = &self.server {
            if let Err(e) = server.raft().shutdown().await {
                tracing::warn!(error = %e, "raft did not shut down cleanly");
            }
        }
    }

    /// Leave the pool gracefully (members see `left`, the leader removes a server from Raft), then
    /// stop.
    pub async fn leave_and_shutdown(self) {
        if let Err(e) = self.agent.leave().await {
            tracing::warn!(error = %e, "leaving the pool failed; stopping anyway");
        }
        self.shutdown().await;
    }
}

/// What an agent takes from its surroundings besides its config and its disk.
pub struct Environment {
    /// Runs script, HTTP and TCP checks: [`RealProber`] in production, a scripted one in the
    /// simulator.
    pub prober: Arc<dyn Prober>,
    /// Reads the config files again for `cairn reload`; `None` where there are none.
    pub reload: Option<ConfigLoader>,
}

impl Default for Environment {
    fn default() -> Self {
        Environment { prober: Arc::new(RealProber), reload: None }
    }
}

/// Start an agent with `config`, keeping its durable state on `disk`, with real probes and no
/// reload.
pub async fn start(config: &AgentConfig, disk: Arc<dyn Disk>) -> Result<NodeHandle, StartError> {
    start_with(config, disk, Environment::default()).await
}

/// Start an agent with `config`, keeping its durable state on `disk`, in `environment`.
pub async fn start_with(
    config: &AgentConfig,
    disk: Arc<dyn Disk>,
    environment: Environment,
) -> Result<NodeHandle, StartError> {
    let node_id = load_or_create_node_id(&*disk, config.node_id.as_deref())?;
    let advertise = advertise_addr(config)?;
    let http_listener = bind(config.client_addr, config.ports.http, "HTTP").await?;
    let http_addr = local_addr(&http_listener);
    let dns_listeners = crate::dns::bind(config.client_addr, config.ports.dns).await.map_err(|source| {
        StartError::Bind { what: "DNS", addr: SocketAddr::new(config.client_addr, config.ports.dns), source }
    })?;
    let dns_addr = dns_listeners.addr;
    let server = match config.server {
        true => Some(start_server(config, &disk, &node_id, advertise).await?),
        false => None,
    };

    let meta = MemberMeta {
        role: if config.server { Role::Server } else { Role::Client },
        datacenter: config.datacenter.clone(),
        node_id: node_id.clone(),
        server_port: server.as_ref().map(|s| s.rpc_addr.port()),
        build: env!("CARGO_PKG_VERSION").to_string(),
        protocol: gossip::PROTOCOL_VERSION,
    };
    // `-encrypt` seeds the keyring; the driver prefers `local.keyring` when there is one.
    let keyring = config.gossip.encrypt_key.clone().map(|key| Keyring::new(key, []));
    let gossip = gossip::start(GossipConfig {
        node_name: config.node_name.clone(),
        bind: SocketAddr::new(config.bind_addr, config.ports.serf_lan),
        advertise: SocketAddr::new(advertise, config.ports.serf_lan),
        meta,
        keyring,
        verify_incoming: config.gossip.verify_incoming,
        verify_outgoing: config.gossip.verify_outgoing,
        reconnect_timeout: config.gossip.reconnect_timeout,
        timing: GossipTiming::default(),
        disk: Some(disk.clone()),
        keyring_file: !config.gossip.disable_keyring_file,
    })
    .await?;
    let membership_view = gossip.membership();

    let backend = match &server {
        Some(parts) => Backend::Server(parts.server.clone()),
        None => Backend::Client(ServerForwarder::new(
            config.datacenter.clone(),
            membership_view.clone(),
            RpcClient::new(Preamble::SERVER),
        )),
    };
    let registry = start_registry(config, &disk, &node_id, advertise, environment.prober);
    let agent = Arc::new(Agent::new(AgentParts {
        node_name: config.node_name.clone(),
        node_id,
        datacenter: config.datacenter.clone(),
        backend: backend.clone(),
        registry: registry.registry.clone(),
        reload: environment.reload,
        gossip: gossip.clone(),
    }));
    let api = crate::http::router(agent.clone());
    let mut tasks = vec![
        tokio::spawn(crate::http::serve(http_listener, api.clone())),
        tokio::spawn(registry::record_results(registry.registry.clone(), registry.updates)),
        tokio::spawn(registry::reap_critical(registry.registry.clone())),
        tokio::spawn(anti_entropy::run(registry.registry, backend, membership_view.clone())),
    ];
    let join_plan = JoinPlan {
        addresses: config.retry_join.clone(),
        retry_interval: config.retry_interval,
        retry_max: config.retry_max,
    };
    if !join_plan.addresses.is_empty() {
        let gossip = gossip.clone();
        tasks.push(tokio::spawn(async move {
            let joined = join::retry_join(&join_plan, |addrs| {
                let gossip = gossip.clone();
                async move { gossip.join(&addrs).await }
            })
            .await;
            if let Err(e) = joined {
                tracing::error!(error = %e, "giving up joining the LAN pool");
            }
        }));
    }
    let rpc_addr = server.as_ref().map(|parts| parts.rpc_addr);
    let dns_source = match (&server, &agent.backend) {
        (Some(parts), _) => crate::dns::server::Source::Server(parts.server.clone()),
        (None, Backend::Client(forwarder)) => crate::dns::server::Source::Client(crate::dns::client::ClientView::new(
            forwarder.clone(),
            config.dns.max_stale,
        )),
        (None, Backend::Server(server)) => crate::dns::server::Source::Server(server.clone()),
    };
    tasks.push(tokio::spawn(crate::dns::server::serve(
        dns_listeners,
        dns_source,
        config.dns.clone(),
        config.datacenter.clone(),
    )));
    let server = match server {
        Some(parts) => {
            let server = parts.server;
            let rpc_service = Arc::new(ServerRpc { server: server.clone(), api });
            tasks.extend([
                tokio::spawn(crate::rpc::serve(parts.rpc_listener, Preamble::SERVER, rpc_service)),
                tokio::spawn(bootstrap::run(server.clone(), membership_view.clone(), config.bootstrap_expect)),
                tokio::spawn(crate::server::election::run(server.clone(), config.raft.clone(), parts.feedback.clone())),
                // The two leader duties that follow gossip; idle on followers.
                tokio::spawn(membership::run(
                    server.clone(),
                    membership_view.clone(),
                    (&config.autopilot).into(),
                    parts.feedback.clone(),
                )),
                tokio::spawn(crate::reconcile::run(server.clone(), membership_view.clone())),
            ]);
            Some(server)
        }
        None => None,
    };
    tracing::info!(node = %config.node_name, server = config.server, lan = %gossip.advertise_addr(), "agent started");
    Ok(NodeHandle { server, agent, lan_addr: gossip.advertise_addr(), gossip, http_addr, dns_addr, rpc_addr, tasks })
}

/// The agent's own services and checks, loaded from config and from what the API registered
/// before a restart, with the check results still to be fed into it.
struct RegistryParts {
    registry: Arc<Registry>,
    updates: tokio::sync::mpsc::UnboundedReceiver<crate::health::CheckUpdate>,
}

fn start_registry(
    config: &AgentConfig,
    disk: &Arc<dyn Disk>,
    node_id: &str,
    advertise: IpAddr,
    prober: Arc<dyn Prober>,
) -> RegistryParts {
    let script_checks = config.local.script_checks;
    let (runner, updates) = CheckRunner::start(prober, RunnerConfig { script_checks, ..RunnerConfig::default() });
    let node = NodeInfo { name: config.node_name.clone(), id: node_id.to_string(), address: advertise.to_string() };
    let registry = Arc::new(Registry::new(node, runner, script_checks, Some(disk.clone())));
    for warning in &config.local.warnings {
        tracing::warn!("{warning}");
    }
    for (id, e) in registry.apply_config(&config.local) {
        tracing::error!(id = %id, error = %e, "a service or check from the config files was not registered");
    }
    match registry.restore() {
        Ok(problems) => {
            for (id, e) in problems {
                tracing::error!(id = %id, error = %e, "a service or check registered before the restart was not restored");
            }
        }
        Err(e) => tracing::error!(error = %e, "services and checks registered through the API were not restored"),
    }
    RegistryParts { registry, updates }
}

/// The server role's parts before their tasks start.
struct ServerParts {
    server: Arc<Server>,
    rpc_listener: TcpListener,
    rpc_addr: SocketAddr,
    feedback: Arc<PeerFeedback>,
}

async fn start_server(
    config: &AgentConfig,
    disk: &Arc<dyn Disk>,
    node_id: &str,
    advertise: IpAddr,
) -> Result<ServerParts, StartError> {
    let rpc_listener = bind(config.bind_addr, config.ports.server, "server RPC").await?;
    let rpc_addr = SocketAddr::new(advertise, local_port(&rpc_listener));
    let info = ServerInfo {
        name: config.node_name.clone(),
        node_id: node_id.to_string(),
        rpc_addr: rpc_addr.to_string(),
        lan_addr: SocketAddr::new(advertise, config.ports.serf_lan).to_string(),
    };
    let log_store = LogStore::open(disk.clone())?;
    let state_machine = StateMachine::open(SnapshotStore::new(disk.clone()))?;
    let state = state_machine.handle();
    let rpc = RpcClient::new(Preamble::SERVER);
    let raft_id = raft_id_from_node_id(node_id);
    let feedback = Arc::new(PeerFeedback::default());
    let network = Network::new(rpc.clone(), feedback.clone());
    let raft = Raft::new(raft_id, openraft_config(&config.raft), network, log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let server = Arc::new(Server::new(
        raft_id,
        info.clone(),
        config.datacenter.clone(),
        raft,
        state,
        rpc,
        ServerLimits::default(),
    ));
    tracing::info!(node = %config.node_name, node_id = %info.node_id, rpc = %info.rpc_addr, "server starting");
    Ok(ServerParts { server, rpc_listener, rpc_addr, feedback })
}

async fn bind(ip: IpAddr, port: u16, what: &'static str) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("a bound listener has a local address")
}

fn local_port(listener: &TcpListener) -> u16 {
    local_addr(listener).port()
}

/// The address peers reach this agent at: `-advertise`, else `-bind` if it is a specific address,
/// else this host's first private IPv4 address (Consul's rule).
fn advertise_addr(config: &AgentConfig) -> Result<IpAddr, StartError> {
    if let Some(addr) = config.advertise_addr {
        return Ok(addr);
    }
    if !config.bind_addr.is_unspecified() {
        return Ok(config.bind_addr);
    }
    crate::io::first_private_ipv4()
        .map(IpAddr::V4)
        .ok_or_else(|| StartError::Advertise("no private IPv4 address on this host; pass -advertise".into()))
}

/// The node ID from the config, else the one kept on disk, else a new random one (kept on disk).
fn load_or_create_node_id(disk: &dyn Disk, configured: Option<&str>) -> Result<String, DiskError> {
    if let Some(id) = configured {
        disk.write_atomic(NODE_ID_FILE, id.as_bytes())?;
        return Ok(id.to_string());
    }
    match disk.read(NODE_ID_FILE) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => Err(DiskError::Corrupt {
                name: NODE_ID_FILE.into(),
                offset: 0,
                reason: "not a UTF-8 node ID; remove the file to generate a new ID".into(),
            }),
        },
        Err(DiskError::NotFound { .. }) => {
            let id = random_uuid();
            disk.write_atomic(NODE_ID_FILE, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// A version-4 UUID from the seeded randomness source.
fn random_uuid() -> String {
    let (a, b) = (crate::io::random_seed(), crate::io::random_seed());
    let bytes: Vec<u8> = a.to_be_bytes().into_iter().chain(b.to_be_bytes()).collect();
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
