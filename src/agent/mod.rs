//! The local agent: what every cairn process is, server or client.
//!
//! An agent has a name, a datacenter, a place in the LAN gossip pool, and a backend that answers
//! the state-backed API: a server answers from its own replicated state, a client forwards to a
//! server ([`forward::ServerForwarder`]). The HTTP layer serves `/v1/agent/*` from the agent itself
//! and everything else through the backend.

pub mod forward;
pub mod local;
pub mod join;

use std::sync::Arc;

use tokio::sync::watch;

use crate::gossip::{Gossip, GossipError, Membership, Role};
use crate::server::Server;

pub use forward::{ForwardError, ServerForwarder};

/// What answers state-backed requests on this agent.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This agent is a server: requests run against its Raft state.
    Server(Arc<Server>),
    /// This agent is a client: requests are forwarded to a server.
    Client(ServerForwarder),
}

/// The local agent.
#[derive(Debug)]
pub struct Agent {
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub backend: Backend,
    gossip: Gossip,
    membership: watch::Receiver<Membership>,
    /// Set once the agent has left the pool (`PUT /v1/agent/leave`); the process then exits.
    left: watch::Sender<bool>,
}

/// How long a graceful leave waits for the news to spread before the agent stops (Consul's
/// `leave_propagate_delay` is of this order).
pub const LEAVE_PROPAGATE: std::time::Duration = std::time::Duration::from_secs(3);

impl Agent {
    pub fn new(node_name: String, node_id: String, datacenter: String, backend: Backend, gossip: Gossip) -> Self {
        let membership = gossip.membership();
        Agent { node_name, node_id, datacenter, backend, gossip, membership, left: watch::Sender::new(false) }
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
