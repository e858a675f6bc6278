//! LAN gossip: SWIM membership and failure detection among every agent, server or client.
//!
//! The protocol core is `foca` (sans-io SWIM); this module drives it over UDP on the LAN port
//! (`-serf-lan-port`, 8301), adds memberlist's push-pull full-state sync over TCP on the same port,
//! seals packets and push-pull frames with the keyring when `-encrypt` is set, and keeps the
//! [`Membership`] view that the rest of the agent reads: servers find each other in it, the Raft
//! leader reconciles it into the catalog and into the Raft configuration, and `/v1/agent/members`
//! shows it.
//!
//! Parts, from the wire up:
//! - [`wire`]: the hand-written, bounded, versioned datagram and state-sync formats and foca's
//!   `Codec` ([`wire::decode_packet`] / [`wire::encode_packet`] and [`wire::decode_sync`] /
//!   [`wire::encode_sync`] are what `fuzz/` drives);
//! - [`identity`]: foca's `Identity`: name, address, metadata and a generation that grows on every
//!   start (persisted) and on every false `Down` verdict, so the newer identity wins and rejoins;
//! - [`keyring`]: AES-GCM sealing in memberlist's layout, the keyring and its `local.keyring`
//!   file, Consul's `encrypt_verify_incoming/outgoing` rollout flags;
//! - `broadcast`: our messages inside foca's custom broadcasts: leave intents and keyring queries;
//! - `view`: the pure membership view. foca `Alive`/`Suspect`/`Down` become
//!   [`MemberStatus::Alive`]/`Suspect`/`Failed`; a `Down` member with a leave intent for its
//!   generation is `Left`; `Failed` members are reaped after `reconnect_timeout` (72 h), `Left` ones
//!   after the tombstone timeout (24 h);
//! - `health`: Lifeguard-style local health, a score 0..=8 raised by our own unanswered probes,
//!   refuted suspicions and late timers, lowered by answered probes;
//! - `sync`: push-pull over TCP: both sides exchange their whole member list (every identity foca
//!   knows, in any state, and themselves), in length-prefixed sealed frames (at most 16 MiB and
//!   64 Ki members), one deadline per exchange, at most 8 served at once. It only moves bytes: the
//!   lists go to the driver over a bounded channel;
//! - `driver`: the one task that owns `Foca`, fed by a UDP receive task, the push-pull tasks, its
//!   own timer queue and the commands of the [`Gossip`] handle. It stretches probe and suspicion
//!   timers by `1 + health score`, rescales foca's suspicion timeout and retransmissions with
//!   `log(n)` as the cluster grows, joins by address (a UDP announce and a push-pull with each
//!   address, either answer counting), runs a push-pull with a random live member every
//!   `push_pull_interval` (memberlist's `pushPullScale` stretches it above 32 members; the first
//!   is staggered over one interval), and answers keyring queries.
//!
//! Convergence: a newcomer learns the whole pool from its join push-pull, and the pool learns the
//! newcomer by gossip (99.99% of the views within a second at 100 agents in the simulator, README
//! "Figures"; Serf's model says about 2 s); the few views gossip misses are repaired by push-pull.
//! `scenarios/gossip-*.toml` check both, and failure detection under packet loss.
//!
//! Everything the rest of the agent uses is in this file; the rest is private or pure.

mod broadcast;
mod driver;
mod health;
pub mod identity;
pub mod keyring;
mod sync;
mod view;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use keyring::{GossipKey, KeyError, Keyring, KeyringError};

/// What an agent is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Server,
    Client,
}

/// What every member tells the others about itself, typed (Serf carries these as string tags).
/// Fixed for one incarnation of an agent: a change means a new identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    pub role: Role,
    pub datacenter: String,
    /// The agent's node ID (a UUID); servers' Raft IDs derive from it.
    pub node_id: String,
    /// Servers only: the port of their server RPC listener (on the member's address).
    pub server_port: Option<u16>,
    /// `cairn` version, e.g. "0.1.0".
    pub build: String,
    /// Gossip protocol version this member speaks.
    pub protocol: u8,
}

/// A member's state as this agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Someone failed to probe it; it has a while to refute before it is declared failed.
    Suspect,
    /// Declared down by the cluster (not heard from, did not refute). Reaped after
    /// `reconnect_timeout` (72 h by default).
    Failed,
    /// Left gracefully (`cairn leave`, or a signal), or was force-left.
    Left,
}

impl MemberStatus {
    /// Consul's word for it (`cairn members`, `/v1/agent/members` use Serf's numbers).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Failed => "failed",
            MemberStatus::Left => "left",
        }
    }
}

/// One member of the LAN pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name (unique in the datacenter).
    pub name: String,
    /// Its gossip address (the LAN port).
    pub addr: SocketAddr,
    pub meta: MemberMeta,
    pub status: MemberStatus,
    /// Grows each time the agent restarts or renews its identity after a false failure verdict.
    pub generation: u64,
    /// When this agent saw the member enter its current status.
    pub status_since: tokio::time::Instant,
}

impl Member {
    /// The member's server RPC address, if it is a server.
    pub fn server_rpc_addr(&self) -> Option<SocketAddr> {
        let port = self.meta.server_port.filter(|_| self.meta.role == Role::Server)?;
        Some(SocketAddr::new(self.addr.ip(), port))
    }
}

/// The whole LAN pool as this agent sees it, by node name. Published on every change through a
/// `tokio::sync::watch` channel; readers take a snapshot and never hold it across an await.
///
/// Members are kept sorted by name in chunks of at most [`CHUNK_MAX`], each behind an `Arc`, so
/// that a snapshot costs O(1) to take (one `Arc` clone) and a change copies one chunk and the
/// chunk list, not the whole pool: the gossip driver publishes on every change, and at 1,000
/// agents a full copy per change made starting the pool quadratic per agent. Counts by status
/// are kept as members change, so sizes are O(1) too.
#[derive(Clone, Default)]
pub struct Membership {
    chunks: Arc<Vec<Arc<Vec<Member>>>>,
    len: usize,
    /// Members by [`MemberStatus`], indexed by `status_index`.
    by_status: [usize; 4],
}

/// A chunk that grows past this is split in two.
const CHUNK_MAX: usize = 64;

fn status_index(status: MemberStatus) -> usize {
    match status {
        MemberStatus::Alive => 0,
        MemberStatus::Suspect => 1,
        MemberStatus::Failed => 2,
        MemberStatus::Left => 3,
    }
}

impl Membership {
    /// A view holding exactly `members` (the gossip driver builds it; tests build their own). Of
    /// two members with one name, the later wins.
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Self {
        let mut view = Membership::default();
        for member in members {
            view.upsert(member);
        }
        view
    }

    pub fn get(&self, name: &str) -> Option<&Member> {
        let chunk = self.chunks.get(self.chunk_for(name))?;
        chunk.binary_search_by(|m| m.name.as_str().cmp(name)).ok().map(|i| &chunk[i])
    }

    /// Every member, this agent included, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many members are in `status`, this agent included. O(1).
    pub fn count(&self, status: MemberStatus) -> usize {
        self.by_status[status_index(status)]
    }

    /// The servers of `datacenter`, in any status.
    pub fn servers<'a>(&'a self, datacenter: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.iter().filter(move |m| m.meta.role == Role::Server && m.meta.datacenter == datacenter)
    }

    /// Insert `member`, or replace the one with its name. Copies at most one chunk (and the list
    /// of chunks) if a snapshot still shares them.
    pub(crate) fn upsert(&mut self, member: Member) {
        self.by_status[status_index(member.status)] += 1;
        let chunks = Arc::make_mut(&mut self.chunks);
        if chunks.is_empty() {
            chunks.push(Arc::new(vec![member]));
            self.len += 1;
            return;
        }
        // The first chunk whose last name is not below ours, else the last chunk.
        let index = chunks.partition_point(|c| c.last().is_some_and(|m| m.name < member.name)).min(chunks.len() - 1);
        let chunk = Arc::make_mut(&mut chunks[index]);
        match chunk.binary_search_by(|m| m.name.cmp(&member.name)) {
            Ok(at) => {
                let old = std::mem::replace(&mut chunk[at], member);
                self.by_status[status_index(old.status)] -= 1;
            }
            Err(at) => {
                chunk.insert(at, member);
                self.len += 1;
                if chunk.len() > CHUNK_MAX {
                    let upper = chunk.split_off(chunk.len() / 2);
                    chunks.insert(index + 1, Arc::new(upper));
                }
            }
        }
    }

    /// Remove the member called `name`, if listed.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Member> {
        let index = self.chunk_for(name);
        let at = self.chunks.get(index)?.binary_search_by(|m| m.name.as_str().cmp(name)).ok()?;
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = Arc::make_mut(&mut chunks[index]);
        let removed = chunk.remove(at);
        if chunk.is_empty() {
            chunks.remove(index);
        }
        self.len -= 1;
        self.by_status[status_index(removed.status)] -= 1;
        Some(removed)
    }

    /// The chunk that holds `name` if any does (an index past the end if none can).
    fn chunk_for(&self, name: &str) -> usize {
        self.chunks.partition_point(|c| c.last().is_some_and(|m| m.name.as_str() < name))
    }
}

impl PartialEq for Membership {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Membership {}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().map(|m| (&m.name, m))).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Running the gossip layer

/// Protocol timing. [`GossipTiming::lan`] is memberlist's LAN profile (Consul's default);
/// [`GossipTiming::fast`] is for tests on one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipTiming {
    /// How often a random member is probed.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly.
    pub indirect_checks: usize,
    /// Suspect-to-failed timeout = `suspicion_mult * max(1, log10(n)) * probe_interval`.
    pub suspicion_mult: u32,
    /// Each update is sent `retransmit_mult * ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// How often pending updates are gossiped, and to how many members.
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    /// How often a full-state push-pull runs with one random live member (memberlist's
    /// `PushPullInterval`), stretched as the cluster grows past 32 members as memberlist's
    /// `pushPullScale` does: `x (ceil(log2 n - log2 32) + 1)`.
    pub push_pull_interval: Duration,
    /// How long one push-pull may take, connect to last byte (memberlist's `TCPTimeout`).
    pub sync_timeout: Duration,
    /// How often two failed members are announced to, so partitions heal by themselves.
    pub dead_announce_interval: Duration,
    /// How long [`Gossip::join`] waits for answers.
    pub join_timeout: Duration,
    /// How long a member that left stays listed (Serf's tombstone timeout).
    pub tombstone_timeout: Duration,
}

impl GossipTiming {
    /// memberlist's `DefaultLANConfig`, as Consul uses it.
    pub fn lan() -> Self {
        GossipTiming {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            push_pull_interval: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(10),
            dead_announce_interval: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            tombstone_timeout: Duration::from_secs(24 * 3600),
        }
    }

    /// Ten times faster than [`GossipTiming::lan`]: for agents on one machine in tests.
    pub fn fast() -> Self {
        GossipTiming {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            indirect_checks: 3,
            suspicion_mult: 4,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(20),
            gossip_nodes: 3,
            push_pull_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(1),
            dead_announce_interval: Duration::from_secs(1),
            join_timeout: Duration::from_secs(5),
            tombstone_timeout: Duration::from_secs(24 * 3600),
        }
    }

    fn validate(&self) -> Result<(), GossipError> {
        let invalid = |reason: &str| Err(GossipError::InvalidConfig(reason.to_owned()));
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return invalid("probe_timeout must be above zero and below probe_interval");
        }
        if self.gossip_interval.is_zero() || self.push_pull_interval.is_zero() || self.dead_announce_interval.is_zero()
        {
            return invalid("gossip, push-pull and dead-announce intervals must be above zero");
        }
        if self.sync_timeout.is_zero() {
            return invalid("sync_timeout must be above zero");
        }
        if self.indirect_checks == 0 || self.gossip_nodes == 0 || self.suspicion_mult == 0 || self.retransmit_mult == 0
        {
            return invalid("indirect_checks, gossip_nodes, suspicion_mult and retransmit_mult must be at least 1");
        }
        Ok(())
    }
}

impl Default for GossipTiming {
    fn default() -> Self {
        GossipTiming::lan()
    }
}

/// Everything the gossip layer needs to start.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub node_name: String,
    /// Where the UDP socket binds (port 0: any free port).
    pub bind: SocketAddr,
    /// The address other members reach us at. A zero port means the bound port; an unspecified
    /// IP means the bound IP (which must then be specific).
    pub advertise: SocketAddr,
    pub meta: MemberMeta,
    /// `None`: gossip in plaintext. A keyring in `local.keyring` on `disk` takes precedence
    /// (as Consul's: the file carries rotations made since `-encrypt` was first given) unless
    /// `keyring_file` is off.
    pub keyring: Option<Keyring>,
    /// Whether the keyring is loaded from and saved to `local.keyring` on `disk` (Consul's
    /// `disable_keyring_file` turns this off). The generation persists either way.
    pub keyring_file: bool,
    /// Consul's `encrypt_verify_incoming`: refuse plaintext packets.
    pub verify_incoming: bool,
    /// Consul's `encrypt_verify_outgoing`: seal what we send.
    pub verify_outgoing: bool,
    /// How long a failed member stays listed before it is reaped (Consul: 72 h).
    pub reconnect_timeout: Duration,
    pub timing: GossipTiming,
    /// Where our identity's generation (`gossip.generation`) and, with `keyring_file`,
    /// `local.keyring` persist; `None` keeps both in memory only.
    pub disk: Option<Arc<dyn crate::storage::Disk>>,
}

/// The protocol version members advertise (`cairn members` shows it, as Consul shows Serf's). It
/// names the meaning of the exchange; the byte encoding has its own version ([`wire::WIRE_VERSION`]).
pub const PROTOCOL_VERSION: u8 = 2;

/// Serf's `QueryTimeoutMult`: gossip intervals a query waits per `log10` of the cluster size.
pub const QUERY_TIMEOUT_MULT: u32 = 16;

/// Consul's default `reconnect_timeout`.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(72 * 3600);

/// Why a gossip operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot bind the gossip socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring: {0}")]
    Keyring(#[from] KeyringError),
    #[error("gossip state on disk: {0}")]
    Disk(#[from] crate::storage::DiskError),
    #[error("no member answered the join at any of {tried} addresses")]
    JoinFailed { tried: usize },
    #[error("no member named {0}")]
    UnknownMember(String),
    #[error("member {name} is {status}, only a failed member can be force-left")]
    NotFailed { name: String, status: &'static str },
    #[error("gossip encryption is not enabled")]
    EncryptionDisabled,
    #[error("the gossip layer is overloaded; try again")]
    Busy,
    #[error("the gossip layer has shut down")]
    ShutDown,
}

/// A change to the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringOp {
    List,
    Install(GossipKey),
    Use(GossipKey),
    Remove(GossipKey),
}

/// One installed key as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyInfo {
    /// base64, as given to `-encrypt`.
    pub key: String,
    pub primary: bool,
}

impl KeyInfo {
    fn list(ring: &Keyring) -> Vec<KeyInfo> {
        ring.keys().iter().map(|k| KeyInfo { key: k.to_base64(), primary: k == ring.primary() }).collect()
    }
}

/// The cluster's answer to a keyring operation (`cairn keyring`, `/v1/operator/keyring`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyringReport {
    /// Members alive or suspect when the operation started, this agent included: the answers
    /// expected.
    pub num_nodes: usize,
    /// Every member that answered in time: its keys afterwards, or why the operation failed there.
    pub responses: BTreeMap<String, Result<Vec<KeyInfo>, String>>,
    /// Each key (base64): how many answering members have it installed.
    pub keys: BTreeMap<String, usize>,
    /// Each key (base64): how many answering members use it as their primary.
    pub primary_keys: BTreeMap<String, usize>,
}

impl KeyringReport {
    /// The report of `responses` when `num_nodes` answers were expected.
    pub fn new(num_nodes: usize, responses: BTreeMap<String, Result<Vec<KeyInfo>, String>>) -> Self {
        let mut keys = BTreeMap::new();
        let mut primary_keys = BTreeMap::new();
        for info in responses.values().filter_map(|r| r.as_ref().ok()).flatten() {
            *keys.entry(info.key.clone()).or_insert(0) += 1;
            if info.primary {
                *primary_keys.entry(info.key.clone()).or_insert(0) += 1;
            }
        }
        KeyringReport { num_nodes, responses, keys, primary_keys }
    }

    /// Expected members that did not answer in time.
    pub fn num_missing(&self) -> usize {
        self.num_nodes.saturating_sub(self.responses.len())
    }

    /// Members where the operation failed.
    pub fn num_errors(&self) -> usize {
        self.responses.values().filter(|r| r.is_err()).count()
    }
}

/// Counters since start, and the membership by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Received, but no installed key opened it (or plaintext refused, or sealed with no keyring).
    pub dropped_decrypt: u64,
    /// Opened (or plaintext) but not a valid packet.
    pub dropped_decode: u64,
    /// Larger than a datagram may be.
    pub dropped_oversize: u64,
    /// Arrived faster than the driver could take them.
    pub dropped_overload: u64,
    pub send_errors: u64,
    /// Push-pull exchanges completed: ones others started with us, ones we started.
    pub syncs_in: u64,
    pub syncs_out: u64,
    /// Push-pulls that failed either way (refused frames are also counted as dropped above).
    pub sync_errors: u64,
    /// Push-pull frame bytes over TCP, length prefixes included.
    pub sync_bytes_in: u64,
    pub sync_bytes_out: u64,
    pub members_alive: usize,
    pub members_suspect: usize,
    pub members_failed: usize,
    pub members_left: usize,
    /// Local health score, 0 (healthy) to 8; timeouts are stretched by `1 + score`.
    pub local_health: u8,
}

/// Start gossiping: bind the socket, load the keyring, spawn the driver. Join a cluster with
/// [`Gossip::join`].
pub async fn start(config: GossipConfig) -> Result<Gossip, GossipError> {
    driver::start(config).await
}

/// A handle on the running gossip layer; clones share it. The layer stops when
/// [`Gossip::shutdown`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Gossip {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip").field("advertise", &self.inner.advertise).finish_non_exhaustive()
    }
}

struct Handle {
    advertise: SocketAddr,
    timing: GossipTiming,
    commands: mpsc::Sender<driver::Command>,
    membership: watch::Receiver<Membership>,
    keyring: watch::Receiver<Option<Keyring>>,
    counters: Arc<driver::Counters>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Gossip {
    /// The pool as this agent sees it, itself included; a new value on every change.
    pub fn membership(&self) -> watch::Receiver<Membership> {
        self.inner.membership.clone()
    }

    /// The address other members reach this agent at.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// Join through every address in `addrs`: announce over UDP and push-pull over TCP to each
    /// (retrying while unanswered), and return how many answered either way within the join
    /// timeout; an error if none did.
    pub async fn join(&self, addrs: &[SocketAddr]) -> Result<usize, GossipError> {
        let (answered_tx, mut answered) = mpsc::channel(addrs.len().max(1));
        self.command(driver::Command::Join { addrs: addrs.to_vec(), answered: answered_tx }).await?;
        let mut count = 0;
        let deadline = tokio::time::Instant::now() + self.inner.timing.join_timeout;
        while count < addrs.len() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match crate::io::timeout(left, answered.recv()).await {
                Ok(Some(_)) => count += 1,
                Ok(None) | Err(_) => break,
            }
        }
        if count == 0 {
            return Err(GossipError::JoinFailed { tried: addrs.len() });
        }
        Ok(count)
    }

    /// Leave gracefully: tell the cluster we are leaving (so it shows us `left`, not `failed`),
    /// declare ourselves down, and keep gossiping until that news is out or `propagate` elapses.
    pub async fn leave(&self, propagate: Duration) -> Result<(), GossipError> {
        let (done, finished) = oneshot::channel();
        self.command(driver::Command::Leave { propagate, done }).await?;
        finished.await.map_err(|_| GossipError::ShutDown)
    }

    /// Mark a failed member as left, everywhere (Consul's `force-leave`). Refused for members in
    /// any other state.
    pub fn force_leave(&self, node: &str) -> Result<(), GossipError> {
        let status = self.inner.membership.borrow().get(node).map(|m| m.status);
        match status {
            None => Err(GossipError::UnknownMember(node.to_owned())),
            Some(MemberStatus::Failed) => self.try_command(driver::Command::ForceLeave { name: node.to_owned() }),
            Some(other) => Err(GossipError::NotFailed { name: node.to_owned(), status: other.as_str() }),
        }
    }

    pub fn stats(&self) -> GossipStats {
        let view = self.inner.membership.borrow();
        GossipStats {
            members_alive: view.count(MemberStatus::Alive),
            members_suspect: view.count(MemberStatus::Suspect),
            members_failed: view.count(MemberStatus::Failed),
            members_left: view.count(MemberStatus::Left),
            ..self.inner.counters.snapshot()
        }
    }

    /// This agent's keyring, if gossip is encrypted.
    pub fn keyring(&self) -> Option<Keyring> {
        self.inner.keyring.borrow().clone()
    }

    /// Apply `op` to this agent's keyring only (persisted to `local.keyring`) and return the
    /// keys installed afterwards.
    pub async fn keyring_local(&self, op: KeyringOp) -> Result<Vec<KeyInfo>, GossipError> {
        let (done, result) = oneshot::channel();
        self.command(driver::Command::Keyring { op, done }).await?;
        result.await.map_err(|_| GossipError::ShutDown)?
    }

    /// How long a cluster-wide keyring operation waits for answers: Serf's default query timeout,
    /// `gossip_interval * 16 * ceil(log10(n + 1))` for `n` live members (3.2 s for up to nine
    /// members on LAN timing). The query spreads by gossip, so the wait grows with the rounds it
    /// needs to reach everyone.
    pub fn query_timeout(&self) -> Duration {
        let view = self.inner.membership.borrow();
        let live = view.count(MemberStatus::Alive) + view.count(MemberStatus::Suspect);
        let rounds = ((live + 1) as f64).log10().ceil().max(1.0) as u32;
        self.inner.timing.gossip_interval * QUERY_TIMEOUT_MULT * rounds
    }

    /// Apply `op` here and on every member (Serf-query style: a broadcast carries it, each member
    /// applies it and answers us directly), gathering answers until every member alive at the
    /// start has answered or `timeout` elapses. Refused when gossip is not encrypted, as Consul.
    /// Missing answers and per-member failures are in the report, not errors.
    pub async fn keyring_op(&self, op: KeyringOp, timeout: Duration) -> Result<KeyringReport, GossipError> {
        let (done, result) = oneshot::channel();
        self.command(driver::Command::KeyringQuery { op, timeout, done }).await?;
        result.await.map_err(|_| GossipError::ShutDown)?
    }

    /// Stop: the socket is closed when this returns. Without a prior [`Gossip::leave`] the
    /// cluster will see this agent fail.
    pub async fn shutdown(self) {
        let _ = self.inner.commands.send(driver::Command::Shutdown).await;
        let task = self.inner.task.lock().expect("gossip task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn command(&self, command: driver::Command) -> Result<(), GossipError> {
        self.inner.commands.send(command).await.map_err(|_| GossipError::ShutDown)
    }

    fn try_command(&self, command: driver::Command) -> Result<(), GossipError> {
        self.inner.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GossipError::Busy,
            mpsc::error::TrySendError::Closed(_) => GossipError::ShutDown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(index: u16, status: MemberStatus) -> Member {
        Member {
            name: format!("m{index}"),
            addr: SocketAddr::from(([10, 0, 0, 1], index)),
            meta: MemberMeta {
                role: Role::Client,
                datacenter: "dc1".into(),
                node_id: format!("id-{index}"),
                server_port: None,
                build: "0.1.0".into(),
                protocol: PROTOCOL_VERSION,
            },
            status,
            generation: 1,
            status_since: tokio::time::Instant::now(),
        }
    }

    fn status() -> impl Strategy<Value = MemberStatus> {
        prop_oneof![
            Just(MemberStatus::Alive),
            Just(MemberStatus::Suspect),
            Just(MemberStatus::Failed),
            Just(MemberStatus::Left)
        ]
    }

    proptest! {
        /// The chunked view behaves as a sorted map by name, with counts by status, however
        /// members are added, replaced and removed, and a snapshot taken before a change does not
        /// see it.
        #[test]
        fn membership_is_a_sorted_map(ops in proptest::collection::vec((0u16..400, proptest::option::of(status())), 0..600)) {
            let mut view = Membership::default();
            let mut model: BTreeMap<String, Member> = BTreeMap::new();
            let mut snapshots = Vec::new();
            for (i, (index, status)) in ops.into_iter().enumerate() {
                match status {
                    Some(status) => {
                        let m = member(index, status);
                        model.insert(m.name.clone(), m.clone());
                        view.upsert(m);
                    }
                    None => {
                        let name = format!("m{index}");
                        prop_assert_eq!(view.remove(&name), model.remove(&name));
                    }
                }
                if i % 50 == 0 {
                    snapshots.push((view.clone(), model.clone()));
                }
            }
            prop_assert!(view.iter().eq(model.values()));
            prop_assert_eq!(view.len(), model.len());
            for status in [MemberStatus::Alive, MemberStatus::Suspect, MemberStatus::Failed, MemberStatus::Left] {
                prop_assert_eq!(view.count(status), model.values().filter(|m| m.status == status).count());
            }
            for index in 0..400 {
                let name = format!("m{index}");
                prop_assert_eq!(view.get(&name), model.get(&name));
            }
            for (snapshot, then) in snapshots {
                prop_assert!(snapshot.iter().eq(then.values()));
            }
        }
    }
}
