//! openraft's network over our RPC client.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::{NodeId, ServerInfo, TypeConfig};
use crate::rpc::{Request, Response, RpcClient, RpcError};

/// Builds one [`PeerNetwork`] per replication stream or vote; they share the connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    rpc: RpcClient,
}

impl Network {
    pub fn new(rpc: RpcClient) -> Self {
        Network { rpc }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &ServerInfo) -> PeerNetwork {
        PeerNetwork { target, node: node.clone(), rpc: self.rpc.clone() }
    }
}

/// The network towards one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    target: NodeId,
    node: ServerInfo,
    rpc: RpcClient,
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
            Response::AppendEntries(result) => result.map_err(|e| self.remote(e)),
            _ => Err(Self::unexpected("AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(result) => result.map_err(|e| self.remote(e)),
            _ => Err(Self::unexpected("InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(result) => result.map_err(|e| self.remote(e)),
            _ => Err(Self::unexpected("Vote")),
        }
    }
}
