//! openraft's network over our RPC client.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{NodeId, ServerInfo, TypeConfig};
use crate::rpc::{Request, Response, RpcClient, RpcError};

/// What peers' answers taught this server: longer logs seen in vote answers (for the election
/// timer, `server::election`) and when each peer last answered a replication request (for
/// autopilot's `last_contact_threshold`, `server::membership`; openraft 0.9 reports no
/// per-follower contact time itself).
#[derive(Debug, Default)]
pub struct PeerFeedback {
    greater_log_seen: AtomicBool,
    last_answer: Mutex<BTreeMap<NodeId, Instant>>,
}

impl PeerFeedback {
    /// A voter refused us because its log is longer than ours.
    fn note_greater_log(&self) {
        self.greater_log_seen.store(true, Ordering::Relaxed);
    }

    /// Whether a longer log was seen since the last call.
    pub fn take_greater_log_seen(&self) -> bool {
        self.greater_log_seen.swap(false, Ordering::Relaxed)
    }

    /// `peer` answered an AppendEntries or InstallSnapshot request.
    fn note_answer(&self, peer: NodeId) {
        self.last_answer.lock().expect("peer feedback lock").insert(peer, Instant::now());
    }

    /// How long ago each peer last answered a replication request, as of `now`.
    pub fn last_contact(&self, now: Instant) -> BTreeMap<NodeId, Duration> {
        let answers = self.last_answer.lock().expect("peer feedback lock");
        answers.iter().map(|(peer, at)| (*peer, now.saturating_duration_since(*at))).collect()
    }
}

/// Builds one [`PeerNetwork`] per replication stream or vote; they share the connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    rpc: RpcClient,
    feedback: Arc<PeerFeedback>,
}

impl Network {
    pub fn new(rpc: RpcClient, feedback: Arc<PeerFeedback>) -> Self {
        Network { rpc, feedback }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &ServerInfo) -> PeerNetwork {
        PeerNetwork { target, node: node.clone(), rpc: self.rpc.clone(), feedback: self.feedback.clone() }
    }
}

/// The network towards one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    target: NodeId,
    node: ServerInfo,
    rpc: RpcClient,
    feedback: Arc<PeerFeedback>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, ServerInfo, E>>;

impl PeerNetwork {
    async fn call<E: std::error::Error>(&self, request: Request, option: &RPCOption) -> RpcResult<Response, E> {
        let name = request.name();
        let Some(addr) = self.node.socket_addr() else {
            let e = std::io::Error::other(format!("bad rpc address {:?}", self.node.rpc_addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        match self.rpc.call(addr, &request, option.hard_ttl()).await {
            Ok(response) => Ok(response),
            Err(RpcError::FrameTooLarge { .. }) if matches!(request, Request::AppendEntries(_)) => {
                // Ask openraft to retry with fewer entries per request.
                let entries = match &request {
                    Request::AppendEntries(r) => r.entries.len() as u64,
                    _ => 1,
                };
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1))))
            }
            Err(e @ RpcError::Connect(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => {
                tracing::trace!(target = self.target, request = name, error = %e, "raft rpc failed");
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }

    fn unexpected<E: std::error::Error>(request: &'static str) -> RPCError<NodeId, ServerInfo, E> {
        RPCError::Network(NetworkError::new(&RpcError::UnexpectedResponse { request }))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, ServerInfo, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        match self.call(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(result) => {
                self.feedback.note_answer(self.target);
                result.map_err(|e| self.remote(e))
            }
            _ => Err(Self::unexpected("AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(result) => {
                self.feedback.note_answer(self.target);
                result.map_err(|e| self.remote(e))
            }
            _ => Err(Self::unexpected("InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let ours = rpc.last_log_id;
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(Ok(answer)) => {
                if !answer.vote_granted && answer.last_log_id > ours {
                    self.feedback.note_greater_log();
                }
                Ok(answer)
            }
            Response::Vote(result) => result.map_err(|e| self.remote(e)),
            _ => Err(Self::unexpected("Vote")),
        }
    }
}
