//! The composition root: builds one agent from its configuration and a disk, and starts it.
//!
//! Production (`main.rs`) and the simulator (`sim/`) both start agents here, so the simulator runs
//! exactly the wiring that ships. This module only connects parts; behaviour lives in them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::agent::{Agent, Backend};
use crate::config::AgentConfig;
use crate::gossip::Membership;
use crate::raft::log_store::LogStore;
use crate::raft::network::{ElectionFeedback, Network};
use crate::raft::snapshot_store::SnapshotStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::{openraft_config, raft_id_from_node_id, Raft, ServerInfo};
use crate::rpc::{Preamble, RpcClient};
use crate::server::bootstrap::{self, JoinHandler, JoinPlan};
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
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("cannot choose an address to advertise: {0}")]
    Advertise(String),
}

/// A running agent.
#[derive(Debug)]
pub struct NodeHandle {
    pub server: Arc<Server>,
    pub agent: Arc<Agent>,
    pub http_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    _membership: tokio::sync::watch::Sender<Membership>,
}

impl NodeHandle {
    /// Stop Raft and every listener.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.server.raft().shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// Start an agent with `config`, keeping its durable state on `disk`.
pub async fn start(config: &AgentConfig, disk: Arc<dyn Disk>) -> Result<NodeHandle, StartError> {
    if !config.server {
        return Err(StartError::Unsupported(
            "client agents (without -server) need the gossip layer, which is not built yet; run with -server or -dev",
        ));
    }
    let node_id = load_or_create_node_id(&*disk, config.node_id.as_deref())?;
    let rpc_listener = bind(config.bind_addr, config.ports.server, "server RPC").await?;
    let join_listener = bind(config.bind_addr, config.ports.serf_lan, "LAN join").await?;
    let http_listener = bind(config.client_addr, config.ports.http, "HTTP").await?;
    let rpc_port = local_port(&rpc_listener);
    let advertise = advertise_addr(config)?;
    let info = ServerInfo {
        name: config.node_name.clone(),
        node_id: node_id.clone(),
        rpc_addr: SocketAddr::new(advertise, rpc_port).to_string(),
        lan_addr: SocketAddr::new(advertise, local_port(&join_listener)).to_string(),
    };

    let log_store = LogStore::open(disk.clone())?;
    let state_machine = StateMachine::open(SnapshotStore::new(disk.clone()))?;
    let state = state_machine.handle();
    let rpc = RpcClient::new(Preamble::SERVER);
    let raft_id = raft_id_from_node_id(&node_id);
    let feedback = Arc::new(ElectionFeedback::default());
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

    let http_addr = local_addr(&http_listener);
    let plan = JoinPlan {
        retry_join: config.retry_join.clone(),
        retry_interval: config.retry_interval,
        retry_max: config.retry_max,
        bootstrap_expect: config.bootstrap_expect,
    };
    // Until the gossip layer is wired in, the membership view holds no members.
    let (membership_tx, membership) = tokio::sync::watch::channel(Membership::default());
    let agent = Arc::new(Agent::new(
        config.node_name.clone(),
        node_id,
        config.datacenter.clone(),
        Backend::Server(server.clone()),
        membership,
    ));
    let api = crate::http::router(agent.clone());
    let rpc_service = Arc::new(ServerRpc { server: server.clone(), api: api.clone() });
    let tasks = vec![
        tokio::spawn(crate::rpc::serve(rpc_listener, Preamble::SERVER, rpc_service)),
        tokio::spawn(crate::rpc::serve(join_listener, Preamble::JOIN, Arc::new(JoinHandler(server.clone())))),
        tokio::spawn(crate::http::serve(http_listener, api)),
        tokio::spawn(bootstrap::run(server.clone(), plan)),
        tokio::spawn(crate::server::election::run(server.clone(), config.raft.clone(), feedback)),
    ];
    Ok(NodeHandle {
        server,
        agent,
        http_addr,
        rpc_addr: SocketAddr::new(advertise, rpc_port),
        tasks,
        _membership: membership_tx,
    })
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
