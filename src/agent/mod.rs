//! The local agent: what every cairn process is, server or client.
//!
//! An agent has a name, a datacenter, a place in the LAN gossip pool, and a backend that answers
//! the state-backed API: a server answers from its own replicated state, a client forwards to a
//! server ([`forward::ServerForwarder`]). The HTTP layer serves `/v1/agent/*` from the agent itself
//! and everything else through the backend.

pub mod forward;

use std::sync::Arc;

use tokio::sync::watch;

use crate::gossip::{Membership, Role};
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
    membership: watch::Receiver<Membership>,
}

impl Agent {
    pub fn new(
        node_name: String,
        node_id: String,
        datacenter: String,
        backend: Backend,
        membership: watch::Receiver<Membership>,
    ) -> Self {
        Agent { node_name, node_id, datacenter, backend, membership }
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
}
