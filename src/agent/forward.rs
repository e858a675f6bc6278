//! How a client agent reaches a server: it picks an alive server of its datacenter from the gossip
//! view, sticks to it while it answers, and moves on to another when it does not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gossip::{MemberStatus, Membership};
use crate::rpc::message::{ForwardedHttp, Request, Response};
use crate::rpc::{RpcClient, RpcError};

/// Why a forwarded request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Gossip knows no alive server in this datacenter. Nothing was sent.
    #[error("No known Consul servers")]
    NoServers,
    /// Every known server refused the connection. Nothing was delivered.
    #[error("no server of the {tried} known could be reached: {last}")]
    Unreachable { tried: usize, last: RpcError },
    /// The request reached a server but no answer came back; a write may or may not have happened.
    #[error("rpc error: {0}; the request may or may not have been applied")]
    Lost(#[source] RpcError),
}

/// Forwards requests to the servers gossip knows of.
#[derive(Debug, Clone)]
pub struct ServerForwarder {
    datacenter: String,
    membership: watch::Receiver<Membership>,
    rpc: RpcClient,
    /// Index (into the sorted alive servers) of the server that answered last; requests stick to it.
    preferred: Arc<AtomicUsize>,
}

impl ServerForwarder {
    pub fn new(datacenter: String, membership: watch::Receiver<Membership>, rpc: RpcClient) -> Self {
        ServerForwarder { datacenter, membership, rpc, preferred: Arc::default() }
    }

    /// The alive servers of our datacenter, by name.
    fn servers(&self) -> Vec<SocketAddr> {
        let membership = self.membership.borrow();
        membership
            .servers(&self.datacenter)
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter_map(|m| m.server_rpc_addr())
            .collect()
    }

    /// Run `request` on a server. Servers that refuse the connection are skipped. One that accepted
    /// it and then failed ends the attempt, since the request may have taken effect, unless it is
    /// `idempotent` (a read), which is then simply tried on the next server.
    pub async fn forward(
        &self,
        request: ForwardedHttp,
        idempotent: bool,
        limit: Duration,
    ) -> Result<ForwardedHttp, ForwardError> {
        match self.call(Request::Http(request), idempotent, limit).await? {
            Response::Http(response) => Ok(response),
            _ => Err(ForwardError::Lost(RpcError::UnexpectedResponse { request: "Http" })),
        }
    }

    /// Send `request` to a server, with [`ServerForwarder::forward`]'s rules for moving on to the
    /// next one.
    pub async fn call(&self, request: Request, idempotent: bool, limit: Duration) -> Result<Response, ForwardError> {
        let servers = self.servers();
        if servers.is_empty() {
            return Err(ForwardError::NoServers);
        }
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for offset in 0..servers.len() {
            let index = (start + offset) % servers.len();
            match self.rpc.call::<_, Response>(servers[index], &request, limit).await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) if e.not_delivered() || idempotent => last = Some(e),
                Err(e) => return Err(ForwardError::Lost(e)),
            }
        }
        Err(ForwardError::Unreachable { tried: servers.len(), last: last.expect("at least one server was tried") })
    }
}
