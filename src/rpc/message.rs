//! The messages servers exchange.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::raft::{NodeId, ServerInfo, TypeConfig};
use crate::state::{Command, NodeEntries, Outcome};

/// A request on the server port.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write that reached a follower, forwarded to the leader.
    Write(Command),
    /// A follower asks the leader for a read index: the leader confirms with a quorum that it
    /// still leads and answers with its commit index; the follower serves the read once it has
    /// applied that far.
    ReadIndex,
    /// What a server knows about the cluster (used to bootstrap safely).
    Status,
    /// An HTTP API request a client agent forwards to a server (clients hold no state).
    Http(ForwardedHttp),
    /// An operator's `DELETE /v1/operator/raft/peer` that reached a follower, forwarded to the
    /// leader, which alone can change the Raft configuration.
    RemovePeer(PeerRef),
    /// A client agent's catalog write (anti-entropy). Unlike `Write`, any server takes it and
    /// forwards it to the leader itself.
    AgentWrite(Command),
    /// What the catalog holds for a node, read at default consistency (anti-entropy's full sync).
    NodeEntries(String),
}

impl Request {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "AppendEntries",
            Request::Vote(_) => "Vote",
            Request::InstallSnapshot(_) => "InstallSnapshot",
            Request::Write(_) => "Write",
            Request::ReadIndex => "ReadIndex",
            Request::Status => "Status",
            Request::Http(_) => "Http",
            Request::RemovePeer(_) => "RemovePeer",
            Request::AgentWrite(_) => "AgentWrite",
            Request::NodeEntries(_) => "NodeEntries",
        }
    }
}

/// The answer to a [`Request`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<WriteReply, LeaderError>),
    ReadIndex(Result<u64, LeaderError>),
    Status(ServerStatus),
    Http(ForwardedHttp),
    RemovePeer(Result<(), MembershipError>),
    AgentWrite(Result<WriteReply, RemoteError>),
    NodeEntries(Result<NodeEntries, RemoteError>),
}

/// Why a server could not serve a client agent's request: `ServerError` as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// No leader was known for the server's whole hold timeout. Nothing was written.
    #[error("No cluster leader")]
    NoLeader,
    /// A write may or may not have been applied.
    #[error("the write may or may not have been applied: {0}")]
    Indeterminate(String),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// How an operator names a server of the Raft configuration: by node ID or by RPC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRef {
    Id(String),
    Address(String),
}

impl std::fmt::Display for PeerRef {
    /// Consul's wording: `id "..."` or `address "..."`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerRef::Id(id) => write!(f, "id {id:?}"),
            PeerRef::Address(address) => write!(f, "address {address:?}"),
        }
    }
}

/// Why a leader did not change the Raft configuration. In every case but `Leader(Timeout)`,
/// nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Leader(LeaderError),
    /// Another configuration change is still committing (openraft takes one at a time). Worth
    /// retrying shortly.
    #[error("another Raft configuration change is in progress")]
    InProgress,
    /// openraft refused the change for good: no voter would be left, or the server to promote is
    /// not a learner.
    #[error("raft refused the membership change: {0}")]
    Refused(String),
    /// The server to remove is not in the configuration.
    #[error("{0} was not found in the Raft configuration")]
    NotFound(PeerRef),
}

/// An HTTP request or response carried over the server RPC port. Only what the API needs:
/// method or status, path and query, the headers that matter, the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedHttp {
    /// The method of a request (`GET`, ...) or the status code of a response (`200`, ...).
    pub head: String,
    /// Path and query of a request; empty in a response.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A committed write: what it did and the log index it was applied at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    pub outcome: Outcome,
    pub index: u64,
}

/// Why a server that was asked to act as leader did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    /// Not the leader; the leader it knows of, if any.
    #[error("not the leader")]
    NotLeader { leader: Option<ServerInfo> },
    /// It was the leader but could not finish in time (lost quorum?). A write may or may not have
    /// been applied.
    #[error("timed out waiting for the cluster")]
    Timeout,
    /// Raft stopped on this server (shutting down, or a storage failure).
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// A server's view, for bootstrapping: has it a Raft configuration, and who leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server: ServerInfo,
    pub initialized: bool,
    pub leader: Option<ServerInfo>,
}
