//! openraft glue: type configuration, timings, and the adapters openraft needs.
//!
//! - [`log_store`]: the Raft log and vote, segmented and checksummed, over a [`crate::storage::Disk`].
//! - [`state_machine`]: applies committed entries to [`crate::state::State`] and keeps snapshots on
//!   the same disk.
//! - [`network`]: openraft's `RaftNetwork` over [`crate::rpc`].

pub mod log_store;
pub mod network;
pub mod snapshot_store;
pub mod state_machine;

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::RaftSettings;
use crate::state::{Command, Outcome};

/// Raft's name for a server. Derived from the server's persistent node ID (a UUID), see
/// [`raft_id_from_node_id`].
pub type NodeId = u64;

/// What Raft's membership records about each server: enough to reach it and to name it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The agent's node name (`-node`).
    pub name: String,
    /// The agent's node ID, a UUID.
    pub node_id: String,
    /// Where its server RPC listens (`<advertise>:<server port>`).
    pub rpc_addr: String,
    /// Where its LAN join/gossip listener is (`<advertise>:<serf_lan port>`).
    pub lan_addr: String,
}

impl ServerInfo {
    /// The RPC address, if it parses (it always does for entries this code wrote).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.rpc_addr.parse().ok()
    }

    /// The LAN address, if it parses.
    pub fn lan_socket_addr(&self) -> Option<SocketAddr> {
        self.lan_addr.parse().ok()
    }
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// cairn's openraft types: each log entry carries a batch of typed commands (usually one,
    /// more under load, see `server::batcher`) and yields one outcome per command.
    pub TypeConfig:
        D = Vec<Command>,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = ServerInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::io::RaftRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, ServerInfo>;
pub use openraft::ServerState;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;

/// The Raft ID of a server: the first 8 bytes of its node ID's hex digits, as a number.
/// Node IDs are random UUIDs, so two servers share a Raft ID with probability 2^-64.
pub fn raft_id_from_node_id(node_id: &str) -> NodeId {
    let hex: String = node_id.chars().filter(|c| c.is_ascii_hexdigit()).take(16).collect();
    // A malformed ID (rejected by config validation) still maps to a stable number.
    u64::from_str_radix(&hex, 16).unwrap_or_else(|_| fnv1a64(node_id.as_bytes()))
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for identities and digests.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_continue(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a continued from an earlier hash, to digest a sequence piece by piece.
pub fn fnv1a64_continue(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// openraft's configuration from our typed settings.
pub fn openraft_config(settings: &RaftSettings) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: settings.heartbeat_interval.as_millis() as u64,
        election_timeout_min: settings.election_timeout_min.as_millis() as u64,
        election_timeout_max: settings.election_timeout_max.as_millis() as u64,
        // Snapshot chunks and entry batches are bounded so a frame stays well under the RPC limit.
        snapshot_max_chunk_size: 1024 * 1024,
        max_payload_entries: 256,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_threshold),
        max_in_snapshot_log_to_keep: settings.trailing_logs,
        install_snapshot_timeout: 5_000,
        // Elections are started by our own timer (`server::election`): openraft's draws one
        // timeout per node and checks it only every 75 ms, which lets servers tie forever.
        enable_elect: false,
        ..Default::default()
    };
    // Our settings are validated when the agent config is built; an invalid combination here is a
    // programming error.
    Arc::new(config.validate().expect("raft settings were validated with the agent config"))
}
