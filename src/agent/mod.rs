//! The local agent: what every cairn process is, server or client.
//!
//! An agent has a name, a datacenter, a place in the LAN gossip pool, and a backend that answers
//! the state-backed API: a server answers from its own replicated state, a client forwards to a
//! server ([`forward::ServerForwarder`]). The HTTP layer serves `/v1/agent/*` from the agent itself
//! and everything else through the backend.

pub mod anti_entropy;
pub mod forward;
pub mod join;
pub mod local;
pub mod persist;
pub mod registry;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{AgentConfig, ConfigError};
use crate::gossip::{Gossip, GossipError, Membership, Role};
use crate::rpc::message::{RemoteError, Request, Response, WriteReply};
use crate::rpc::RpcError;
use crate::server::{Server, ServerError};
use crate::state::{Command, NodeEntries};

pub use forward::{ForwardError, ServerForwarder};
pub use registry::Registry;

/// What answers state-backed requests on this agent.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This agent is a server: requests run against its Raft state.
    Server(Arc<Server>),
    /// This agent is a client: requests are forwarded to a server.
    Client(ServerForwarder),
}

/// How long a client agent waits for a server to answer a catalog write or read: a server holds
/// a request up to its 7 s hold timeout while it looks for a leader, plus the commit.
const CATALOG_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Why a catalog write or read for the agent's own entries (anti-entropy) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CatalogCallError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl Backend {
    /// Apply a catalog write through the leader.
    pub async fn catalog_write(&self, command: Command) -> Result<WriteReply, CatalogCallError> {
        match self {
            Backend::Server(server) => Ok(server.write(command).await?),
            Backend::Client(forwarder) => {
                match forwarder.call(Request::AgentWrite(command), false, CATALOG_CALL_LIMIT).await? {
                    Response::AgentWrite(result) => Ok(result?),
                    _ => Err(unexpected("AgentWrite")),
                }
            }
        }
    }

    /// What the catalog holds for `node`, read at default consistency.
    pub async fn node_entries(&self, node: &str) -> Result<NodeEntries, CatalogCallError> {
        match self {
            Backend::Server(server) => Ok(server.node_entries(node).await?),
            Backend::Client(forwarder) => {
                let request = Request::NodeEntries(node.to_string());
                match forwarder.call(request, true, CATALOG_CALL_LIMIT).await? {
                    Response::NodeEntries(result) => Ok(result?),
                    _ => Err(unexpected("NodeEntries")),
                }
            }
        }
    }
}

fn unexpected(request: &'static str) -> CatalogCallError {
    CatalogCallError::Forward(ForwardError::Lost(RpcError::UnexpectedResponse { request }))
}

/// Reads the agent's configuration again (the files named at start), for `cairn reload`.
pub type ConfigLoader = Arc<dyn Fn() -> Result<AgentConfig, ConfigError> + Send + Sync>;

/// Why a reload changed nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this agent was started without config files to reload")]
    NotReloadable,
    /// The files do not load; the running configuration is kept.
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("reloaded, but {}", .0.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>().join("; "))]
    Partly(Vec<(String, registry::RegistryError)>),
}

/// The local agent.
pub struct Agent {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub backend: Backend,
    /// This agent's own services and checks.
    pub registry: Arc<Registry>,
    reload: Option<ConfigLoader>,
    gossip: Gossip,
    membership: watch::Receiver<Membership>,
    /// Set once the agent has left the pool (`PUT /v1/agent/leave`); the process then exits.
    left: watch::Sender<bool>,
}

/// How long a graceful leave waits for the news to spread before the agent stops (Consul's
/// `leave_propagate_delay` is of this order).
pub const LEAVE_PROPAGATE: std::time::Duration = std::time::Duration::from_secs(3);

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_name", &self.node_name)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// What an agent is made of, for [`Agent::new`].
pub struct AgentParts {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub backend: Backend,
    pub registry: Arc<Registry>,
    pub reload: Option<ConfigLoader>,
    pub gossip: Gossip,
}

impl Agent {
    pub fn new(parts: AgentParts) -> Self {
        let AgentParts { node_name, node_id, datacenter, backend, registry, reload, gossip } = parts;
        let membership = gossip.membership();
        Agent {
            node_name,
            node_id,
            datacenter,
            backend,
            registry,
            reload,
            gossip,
            membership,
            left: watch::Sender::new(false),
        }
    }

    /// Re-read the config files and apply the services and checks they define (`cairn reload`,
    /// SIGHUP). Files that do not load change nothing.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let load = self.reload.as_ref().ok_or(ReloadError::NotReloadable)?;
        let config = load()?;
        for warning in &config.local.warnings {
            tracing::warn!("{warning}");
        }
        let problems = self.registry.apply_config(&config.local);
        tracing::info!(
            services = config.local.services.len(),
            checks = config.local.all_checks().count(),
            problems = problems.len(),
            "reloaded service and check definitions"
        );
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ReloadError::Partly(problems)),
        }
    }

    pub fn role(&self) -> Role {
        match self.backend {
            Backend::Server(_) => Role::Server,
            Backend::Client(_) => Role::Client,
        }
    }

    /// The LAN pool as this agent sees it now.
    pub fn membership(&self) -> Membership {
        self.membership.borrow().clone()
    }

    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Join the pool through `addrs`; how many answered.
    pub async fn join(&self, addrs: &[std::net::SocketAddr]) -> Result<usize, GossipError> {
        self.gossip.join(addrs).await
    }

    /// Leave the pool gracefully and tell whoever waits on [`Agent::left`] to stop the process.
    /// A server that leads first takes itself out of the Raft configuration (see
    /// [`Server::leave_raft`]); a follower is removed by the leader once gossip shows it left.
    pub async fn leave(&self) -> Result<(), GossipError> {
        if let Backend::Server(server) = &self.backend {
            if let Err(e) = server.leave_raft().await {
                tracing::warn!(error = %e, "could not take this server out of the Raft configuration; leaving anyway");
            }
        }
        let result = self.gossip.leave(LEAVE_PROPAGATE).await;
        self.left.send_replace(true);
        result
    }

    /// Mark a failed member as left, everywhere.
    pub fn force_leave(&self, node: &str) -> Result<(), GossipError> {
        self.gossip.force_leave(node)
    }

    /// Resolves once the agent has left the pool.
    pub async fn left(&self) {
        let mut left = self.left.subscribe();
        let _ = left.wait_for(|left| *left).await;
    }
}
