//! The server role: one Raft member serving writes and reads for the HTTP API and its peers.
//!
//! - Writes ([`Server::write`]) go to the leader: submitted locally when this server leads,
//!   forwarded over RPC otherwise, retried while no leader is known (up to the hold timeout, as
//!   Consul's `rpc_hold_timeout`), and never retried once they may have been delivered.
//! - Reads ([`Server::read_barrier`]) are served from the local state after a barrier chosen by the
//!   consistency mode: `default` and `consistent` wait for a read index confirmed by a quorum (so
//!   they are linearizable, also on followers, which then serve from their own state); `stale`
//!   reads whatever is applied locally and reports the time since the leader was last heard.
//! - [`bootstrap`] starts Raft once gossip shows `bootstrap_expect` servers; [`election`] decides
//!   when to call an election.
//! - [`membership`] (autopilot) has the leader add, promote and remove servers so the Raft
//!   configuration follows the gossip pool; operators list and remove peers through it too.

mod batcher;
pub mod bootstrap;
mod coalesce;
pub mod election;
pub(crate) mod leading;
pub mod membership;
mod rpc_handler;
pub use rpc_handler::ServerRpc;

use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::time::Instant;

use crate::raft::state_machine::StateHandle;
use crate::raft::{NodeId, Raft, ServerInfo};
use crate::rpc::message::{LeaderError, Request, Response, WriteReply};
use crate::rpc::{RpcClient, RpcError};
use crate::state::Command;

/// How a read wants to be served (`?consistent`, `?stale`, or neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Default,
    Consistent,
    Stale,
}

/// What a read learned about the cluster, for Consul's `X-Consul-KnownLeader` and
/// `X-Consul-LastContact` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMeta {
    pub known_leader: bool,
    /// Milliseconds since this server last heard from the leader; 0 on the leader and after a
    /// read barrier.
    pub last_contact_ms: u64,
}

/// Why a write or read could not be served. Each variant says whether a write may have happened.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No leader was known for the whole hold timeout. Nothing was written.
    #[error("No cluster leader")]
    NoLeader,
    /// The request reached the leader (or may have) but no answer came in time. A write may or
    /// may not have been applied.
    #[error("timed out waiting for the cluster; the write may or may not have been applied")]
    Indeterminate,
    /// Forwarding failed after the request may have been delivered. As `Indeterminate`.
    #[error("rpc error forwarding to the leader: {0}; the write may or may not have been applied")]
    Forward(#[source] RpcError),
    /// Raft stopped on this server (shutting down, or a fatal storage error).
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// Timing limits of the server role.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// How long a request waits for a leader to appear before failing with `NoLeader`.
    pub hold_timeout: Duration,
    /// How long a leader waits for a write to commit before answering `Indeterminate`.
    pub commit_timeout: Duration,
    /// Timeout of one forwarded RPC.
    pub rpc_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            hold_timeout: Duration::from_secs(7),
            commit_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(5),
        }
    }
}

/// One server: its Raft instance, its applied state, and a client towards its peers.
pub struct Server {
    id: NodeId,
    info: ServerInfo,
    datacenter: String,
    raft: Raft,
    batcher: batcher::Batcher,
    state: StateHandle,
    rpc: RpcClient,
    limits: ServerLimits,
    /// When this server last accepted entries from a leader (or started).
    last_leader_contact: Mutex<Instant>,
    /// Concurrent reads share read-index rounds (each started after the reads it serves).
    read_rounds: coalesce::Coalescer<Result<u64, LeaderError>>,
    /// Held while a Raft configuration change is submitted and committed: autopilot, the
    /// operator and a leaving leader change it one at a time, each seeing the last one's result.
    membership_changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("id", &self.id).field("info", &self.info).finish_non_exhaustive()
    }
}

/// Where a request for the leader should go right now.
enum LeaderTarget {
    Me,
    Peer(ServerInfo),
    Unknown,
}

impl Server {
    pub fn new(
        id: NodeId,
        info: ServerInfo,
        datacenter: String,
        raft: Raft,
        state: StateHandle,
        rpc: RpcClient,
        limits: ServerLimits,
    ) -> Self {
        Server {
            id,
            info,
            datacenter,
            batcher: batcher::Batcher::start(raft.clone(), limits.commit_timeout),
            raft,
            state,
            rpc,
            limits,
            last_leader_contact: Mutex::new(Instant::now()),
            read_rounds: coalesce::Coalescer::default(),
            membership_changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn datacenter(&self) -> &str {
        &self.datacenter
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The applied state, for reads after a [`Server::read_barrier`].
    pub fn state(&self) -> &StateHandle {
        &self.state
    }

    /// The leader as this server currently believes it to be.
    pub fn leader(&self) -> Option<ServerInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        metrics.membership_config.membership().get_node(&leader).cloned()
    }

    /// The voting servers of the current Raft configuration.
    pub fn voters(&self) -> Vec<ServerInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.voter_ids().filter_map(|id| membership.get_node(&id).cloned()).collect()
    }

    fn leader_target(&self) -> LeaderTarget {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.id => LeaderTarget::Me,
            Some(leader) => match metrics.membership_config.membership().get_node(&leader) {
                Some(info) => LeaderTarget::Peer(info.clone()),
                None => LeaderTarget::Unknown,
            },
            None => LeaderTarget::Unknown,
        }
    }

    /// Wait a little for the Raft view to change (a leader to appear), never past `deadline`.
    async fn wait_for_leader_change(&self, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        // A cloned receiver may not have seen the current value yet, and would report a change at
        // once: mark it seen, or this becomes a busy loop that never lets time pass.
        metrics.borrow_and_update();
        let pause = Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now()));
        let _ = crate::io::timeout(pause, metrics.changed()).await;
    }

    /// Apply `command` through the leader and return what it did.
    pub async fn write(&self, command: Command) -> Result<WriteReply, ServerError> {
        let deadline = Instant::now() + self.limits.hold_timeout;
        loop {
            let attempt = match self.leader_target() {
                LeaderTarget::Me => self.write_as_leader(command.clone()).await,
                LeaderTarget::Peer(leader) => self.forward_write(&leader, &command).await,
                LeaderTarget::Unknown => Err(LeaderError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(reply) => return Ok(reply),
                Err(LeaderError::NotLeader { .. }) if Instant::now() < deadline => {
                    self.wait_for_leader_change(deadline).await
                }
                Err(LeaderError::NotLeader { .. }) => return Err(ServerError::NoLeader),
                Err(LeaderError::Timeout) => return Err(ServerError::Indeterminate),
                Err(LeaderError::Stopped(why)) => return Err(ServerError::Stopped(why)),
            }
        }
    }

    /// Submit `command` to the local Raft, which must lead. Used for local writes and for writes
    /// forwarded by peers (which are never forwarded again, so a confused cluster cannot loop).
    pub async fn write_as_leader(&self, command: Command) -> Result<WriteReply, LeaderError> {
        self.batcher.submit(command).await
    }

    /// Submit `commands` to the local Raft, which must lead, and wait for every outcome, in order.
    /// They are queued together so they share log entries: a leader reconciling many nodes
    /// appends a few entries, not one per node. Commands in different entries may commit in
    /// either order; a caller whose commands depend on each other submits them in separate calls.
    pub async fn write_all_as_leader(&self, commands: Vec<Command>) -> Vec<Result<WriteReply, LeaderError>> {
        self.batcher.submit_all(commands).await
    }

    async fn forward_write(&self, leader: &ServerInfo, command: &Command) -> Result<WriteReply, LeaderError> {
        let Some(addr) = leader.socket_addr() else { return Err(LeaderError::NotLeader { leader: None }) };
        let request = Request::Write(command.clone());
        match self.rpc.call::<_, Response>(addr, &request, self.limits.rpc_timeout).await {
            Ok(Response::Write(result)) => result,
            Ok(_) => Err(LeaderError::Stopped("leader sent an unexpected response".into())),
            Err(e) if e.not_delivered() => {
                tracing::debug!(leader = %leader, error = %e, "leader unreachable; will retry");
                Err(LeaderError::NotLeader { leader: None })
            }
            Err(e) => {
                tracing::debug!(leader = %leader, error = %e, "forwarded write lost");
                Err(LeaderError::Timeout)
            }
        }
    }

    /// Wait until a read at `consistency` may be served from [`Server::state`].
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<ReadMeta, ServerError> {
        if consistency == Consistency::Stale {
            let known_leader = self.raft.metrics().borrow().current_leader.is_some();
            return Ok(ReadMeta { known_leader, last_contact_ms: self.last_contact_ms() });
        }
        let deadline = Instant::now() + self.limits.hold_timeout;
        loop {
            let attempt = self.read_rounds.run(|| self.read_index_round()).await;
            match attempt {
                Ok(index) => {
                    self.wait_applied(index, deadline).await?;
                    return Ok(ReadMeta { known_leader: true, last_contact_ms: 0 });
                }
                Err(LeaderError::NotLeader { .. } | LeaderError::Timeout) if Instant::now() < deadline => {
                    self.wait_for_leader_change(deadline).await
                }
                Err(LeaderError::NotLeader { .. } | LeaderError::Timeout) => return Err(ServerError::NoLeader),
                Err(LeaderError::Stopped(why)) => return Err(ServerError::Stopped(why)),
            }
        }
    }

    /// One round for a read index: confirmed by this server's quorum if it leads, asked of the
    /// leader otherwise.
    async fn read_index_round(&self) -> Result<u64, LeaderError> {
        match self.leader_target() {
            LeaderTarget::Me => self.read_index_as_leader().await,
            LeaderTarget::Peer(leader) => self.forward_read_index(&leader).await,
            LeaderTarget::Unknown => Err(LeaderError::NotLeader { leader: None }),
        }
    }

    /// A read index for a follower's reads, sharing rounds with this leader's own reads.
    pub async fn read_index_for_peer(&self) -> Result<u64, LeaderError> {
        self.read_rounds.run(|| self.read_index_as_leader()).await
    }

    /// Confirm leadership with a quorum and return the index reads must wait for.
    async fn read_index_as_leader(&self) -> Result<u64, LeaderError> {
        match crate::io::timeout(self.limits.commit_timeout, self.raft.get_read_log_id()).await {
            Err(_) => Err(LeaderError::Timeout),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |id| id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(LeaderError::NotLeader { leader: f.leader_node })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(LeaderError::Timeout),
            Ok(Err(RaftError::Fatal(fatal))) => Err(LeaderError::Stopped(fatal.to_string())),
        }
    }

    async fn forward_read_index(&self, leader: &ServerInfo) -> Result<u64, LeaderError> {
        let Some(addr) = leader.socket_addr() else { return Err(LeaderError::NotLeader { leader: None }) };
        match self.rpc.call::<_, Response>(addr, &Request::ReadIndex, self.limits.rpc_timeout).await {
            Ok(Response::ReadIndex(result)) => result,
            Ok(_) => Err(LeaderError::Stopped("leader sent an unexpected response".into())),
            // A read has no effect, so any failure can simply be retried.
            Err(_) => Err(LeaderError::Timeout),
        }
    }

    /// Wait until the local state has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ServerError> {
        let mut applied = self.state.subscribe();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let reached = crate::io::timeout(remaining, applied.wait_for(|applied| *applied >= index))
            .await
            .map(|waited| waited.map(|_| ()));
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServerError::Stopped("state machine stopped".into())),
            Err(_) => Err(ServerError::NoLeader),
        }
    }

    fn last_contact_ms(&self) -> u64 {
        if self.raft.metrics().borrow().current_leader == Some(self.id) {
            return 0;
        }
        let since = self.last_leader_contact.lock().expect("contact lock").elapsed();
        since.as_millis().min(u128::from(u64::MAX)) as u64
    }

    /// When this server last accepted entries from a leader (or started).
    pub fn leader_contact_at(&self) -> Instant {
        *self.last_leader_contact.lock().expect("contact lock")
    }

    /// Record that a leader's entries were just accepted.
    fn note_leader_contact(&self) {
        *self.last_leader_contact.lock().expect("contact lock") = Instant::now();
    }
}
