//! The driver: the one task that owns `Foca` and turns its outputs into I/O.
//!
//! Inputs reach it four ways, all handled one at a time in one `select!` loop: datagrams from the
//! receive task (through a bounded channel), member lists from push-pull exchanges (`sync`, through
//! another bounded channel), its own timer queue (foca's `Timer`s, kept sorted by deadline: no task
//! per timer), and commands from [`Gossip`] handles. After each input the
//! driver drains foca's runtime in a fixed order: notifications, then timers to schedule, then
//! news from custom broadcasts, then the membership view is reconciled and published, and last
//! the datagrams are sealed and sent.
//!
//! What the driver adds to foca:
//! - joining by address: the seed's name is unknown, so the announce goes to a placeholder
//!   identity and the seed's driver readdresses it to itself; at the same time a push-pull with
//!   the seed exchanges both whole member lists, and either answer counts as joined;
//! - push-pull every `push_pull_interval` (scaled with the cluster size as memberlist's
//!   `pushPullScale`) with one random live member; it replaces foca's periodic announce, which
//!   carried only as many members as fit in one datagram;
//! - timers stretched by local health (see `health`): probe period, probe timeout and
//!   suspect-to-down are multiplied by `1 + score`;
//! - foca's configuration rescaled with the cluster size `n` (memberlist's formulas:
//!   suspect-to-down `suspicion_mult * max(1, log10 n) * probe_interval`, retransmissions
//!   `retransmit_mult * ceil(log10(n + 1))`) when either changes by more than a tenth;
//! - once leaving, nothing received is fed to foca: hearing of its own `Down` would otherwise make
//!   foca renew its identity and rejoin.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Config, Foca, Message, OwnedNotification, PeriodicParams, State, Timer};
use rand010::rngs::SmallRng;
use rand010::{RngExt, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::broadcast::{Handler, Inbox};
use super::health::LocalHealth;
use super::identity::NodeIdentity;
use super::keyring::{GossipKey, Keyring, PacketCrypto};
use super::sync::{self, Members, SyncContext, SyncEvent, MAX_OUTBOUND_SYNCS};
use super::view::View;
use super::wire::{
    check_len, decode_packet, encode_broadcast, encode_packet, put_envelope, Broadcast, KeyringQuery, KeyringResponse,
    Kind, Packet, Reply, SwimPacket, WireCodec, ENVELOPE_BYTES, MAX_BUILD_BYTES, MAX_DATACENTER_BYTES, MAX_ERROR_BYTES,
    MAX_NAME_BYTES, MAX_NODE_ID_BYTES, MAX_PACKET_BYTES, MAX_SWIM_BODY_BYTES, MAX_SYNC_MEMBERS,
};
use super::{
    Gossip, GossipConfig, GossipError, GossipStats, GossipTiming, Handle, KeyInfo, KeyringOp, KeyringReport,
    MemberStatus, Membership,
};
use crate::io::udp::UdpSocket;
use crate::storage::{Disk, DiskError};
use tokio::net::TcpListener;

/// Commands waiting for the driver.
const COMMAND_QUEUE: usize = 64;
/// Datagrams waiting for the driver; more are dropped (and counted) rather than buffered.
const INBOUND_QUEUE: usize = 256;
/// Our identity's generation, so a restarted agent comes back newer than the one the cluster
/// remembers.
const GENERATION_FILE: &str = "gossip.generation";
/// Keyring queries this agent waits on at once.
const MAX_PENDING_QUERIES: usize = 16;
/// Member lists from push-pulls waiting for the driver; an inbound one beyond this is refused.
const SYNC_QUEUE: usize = 16;
/// memberlist's `pushPullScaleThreshold`: push-pull intervals stretch above this many members.
const PUSH_PULL_SCALE_THRESHOLD: usize = 32;
/// Gossip intervals between two reads of foca's whole member list (5 s on LAN timing). Every
/// change the driver can see coming is read at once, by name (see `Driver::flush`); this pass only
/// catches what that misses, so it can be rare: at 1,000 agents, reading every list every
/// interval was most of the simulator's time.
const FULL_RECONCILE_ROUNDS: u32 = 25;

type Swim = Foca<NodeIdentity, WireCodec, SmallRng, Handler>;

/// What [`Gossip`] handles ask of the driver.
pub(crate) enum Command {
    Join { addrs: Vec<SocketAddr>, answered: mpsc::Sender<SocketAddr> },
    Leave { propagate: Duration, done: oneshot::Sender<()> },
    ForceLeave { name: String },
    Keyring { op: KeyringOp, done: oneshot::Sender<Result<Vec<KeyInfo>, GossipError>> },
    KeyringQuery { op: KeyringOp, timeout: Duration, done: oneshot::Sender<Result<KeyringReport, GossipError>> },
    Shutdown,
}

/// Counters shared with the handles, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(super) packets_in: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) packets_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) dropped_decrypt: AtomicU64,
    pub(super) dropped_decode: AtomicU64,
    pub(super) dropped_oversize: AtomicU64,
    pub(super) dropped_overload: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) syncs_in: AtomicU64,
    pub(super) syncs_out: AtomicU64,
    pub(super) sync_errors: AtomicU64,
    pub(super) sync_bytes_in: AtomicU64,
    pub(super) sync_bytes_out: AtomicU64,
    local_health: AtomicU8,
}

pub(super) fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> GossipStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GossipStats {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_out: get(&self.packets_out),
            bytes_out: get(&self.bytes_out),
            dropped_decrypt: get(&self.dropped_decrypt),
            dropped_decode: get(&self.dropped_decode),
            dropped_oversize: get(&self.dropped_oversize),
            dropped_overload: get(&self.dropped_overload),
            send_errors: get(&self.send_errors),
            syncs_in: get(&self.syncs_in),
            syncs_out: get(&self.syncs_out),
            sync_errors: get(&self.sync_errors),
            sync_bytes_in: get(&self.sync_bytes_in),
            sync_bytes_out: get(&self.sync_bytes_out),
            local_health: self.local_health.load(Ordering::Relaxed),
            ..GossipStats::default()
        }
    }
}

pub(crate) async fn start(config: GossipConfig) -> Result<Gossip, GossipError> {
    config.timing.validate()?;
    validate_identity(&config)?;
    let keyring = load_keyring(&config)?;
    let generation = next_generation(config.disk.as_deref())?;
    let socket =
        UdpSocket::bind(config.bind).await.map_err(|source| GossipError::Bind { addr: config.bind, source })?;
    let local = socket.local_addr().map_err(|source| GossipError::Bind { addr: config.bind, source })?;
    let advertise = resolve_advertise(config.advertise, local)?;
    let socket = Arc::new(socket);
    // Push-pull listens on the same port over TCP, as memberlist's stream transport.
    let listener = TcpListener::bind(local).await.map_err(|source| GossipError::Bind { addr: local, source })?;

    let now = Instant::now();
    let me = NodeIdentity::new(config.node_name.as_str(), advertise, config.meta.clone(), generation);
    let remember_down = config.reconnect_timeout.max(config.timing.tombstone_timeout);
    let foca_config = foca_config(&config.timing, 1, remember_down);
    let inbox = Inbox::default();
    let rng = SmallRng::seed_from_u64(crate::io::random_seed());
    let foca =
        Foca::with_custom_broadcast(me.clone(), foca_config.clone(), rng, WireCodec, Handler::new(inbox.clone()));
    let view = View::new(me, now);

    let counters = Arc::new(Counters::default());
    let (membership_tx, membership_rx) = watch::channel(view.membership());
    let (keyring_tx, keyring_rx) = watch::channel(keyring.clone());
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE);
    let sync_context = SyncContext {
        keyring: keyring_rx.clone(),
        verify_incoming: config.verify_incoming,
        verify_outgoing: config.verify_outgoing,
        timeout: config.timing.sync_timeout,
        counters: counters.clone(),
    };

    // memberlist staggers the first push-pull over one interval, so agents started together do
    // not all sync at once.
    let mut rng = SmallRng::seed_from_u64(crate::io::random_seed());
    let interval_ns = u64::try_from(config.timing.push_pull_interval.as_nanos()).unwrap_or(u64::MAX);
    let first_push_pull = now + Duration::from_nanos(rng.random_range(0..interval_ns.max(1)));

    let receiver = tokio::spawn(receive_loop(socket.clone(), inbound_tx, counters.clone()));
    let sync_server = tokio::spawn(sync::serve(listener, sync_context.clone(), sync_tx.clone()));
    let driver = Driver {
        foca,
        runtime: AccumulatingRuntime::new(),
        inbox,
        socket,
        crypto: PacketCrypto::new(keyring, config.verify_incoming, config.verify_outgoing, crate::io::random_seed()),
        view,
        health: LocalHealth::default(),
        last_refuted: None,
        timers: BTreeMap::new(),
        suspected: BTreeMap::new(),
        timer_seq: 0,
        next_tick: now + config.timing.gossip_interval,
        dirty: BTreeSet::new(),
        full_reconcile_at: now,
        timing: config.timing.clone(),
        reconnect_timeout: config.reconnect_timeout,
        remember_down,
        config: foca_config,
        scaled_for: 1,
        disk: config.disk.clone(),
        keyring_file: config.keyring_file,
        sync_context,
        sync_tx,
        syncing: BTreeSet::new(),
        next_push_pull: first_push_pull,
        rng,
        joins: Vec::new(),
        queries: Vec::new(),
        replies: Vec::new(),
        leaving: None,
        left: false,
        membership_tx,
        keyring_tx,
        counters: counters.clone(),
    };
    let task = tokio::spawn(async move {
        driver.run(command_rx, inbound_rx, sync_rx).await;
        receiver.abort();
        sync_server.abort();
    });
    Ok(Gossip {
        inner: Arc::new(Handle {
            advertise,
            timing: config.timing,
            commands: command_tx,
            membership: membership_rx,
            keyring: keyring_rx,
            counters,
            task: std::sync::Mutex::new(Some(task)),
        }),
    })
}

/// Names and metadata must fit the wire format's bounds, or no packet about us could be sent.
fn validate_identity(config: &GossipConfig) -> Result<(), GossipError> {
    if config.node_name.is_empty() {
        return Err(GossipError::InvalidConfig("node name is empty".into()));
    }
    let meta = &config.meta;
    check_len("node name", &config.node_name, MAX_NAME_BYTES)
        .and_then(|()| check_len("datacenter", &meta.datacenter, MAX_DATACENTER_BYTES))
        .and_then(|()| check_len("node id", &meta.node_id, MAX_NODE_ID_BYTES))
        .and_then(|()| check_len("build", &meta.build, MAX_BUILD_BYTES))
        .map_err(|e| GossipError::InvalidConfig(e.to_string()))
}

/// `local.keyring` wins over the configured keyring: it holds the rotations made since `-encrypt`
/// was first given. A configured keyring with no file yet is saved as the file.
fn load_keyring(config: &GossipConfig) -> Result<Option<Keyring>, GossipError> {
    let Some(disk) = config.disk.as_ref().filter(|_| config.keyring_file) else { return Ok(config.keyring.clone()) };
    if let Some(saved) = Keyring::load(disk.as_ref())? {
        if config.keyring.as_ref().is_some_and(|configured| configured != &saved) {
            tracing::info!("using the keyring in local.keyring; the configured key is ignored");
        }
        return Ok(Some(saved));
    }
    if let Some(ring) = &config.keyring {
        ring.persist(disk.as_ref())?;
    }
    Ok(config.keyring.clone())
}

/// One more than the generation of our last run, saved before use. Without a disk every run is
/// generation 1, and a restart that finds an older self in the cluster renews past it (foca's
/// rejoin), one round trip per generation.
fn next_generation(disk: Option<&dyn Disk>) -> Result<u64, GossipError> {
    let Some(disk) = disk else { return Ok(1) };
    let previous = match disk.read(GENERATION_FILE) {
        Ok(bytes) => std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
            DiskError::Corrupt { name: GENERATION_FILE.into(), offset: 0, reason: "not a number".into() }
        })?,
        Err(DiskError::NotFound { .. }) => 0,
        Err(e) => return Err(e.into()),
    };
    let next = previous.saturating_add(1);
    disk.write_atomic(GENERATION_FILE, next.to_string().as_bytes())?;
    Ok(next)
}

fn resolve_advertise(advertise: SocketAddr, local: SocketAddr) -> Result<SocketAddr, GossipError> {
    let ip = if advertise.ip().is_unspecified() { local.ip() } else { advertise.ip() };
    if ip.is_unspecified() {
        return Err(GossipError::InvalidConfig(format!(
            "bound to {local}: an advertise address with a specific IP is required"
        )));
    }
    let port = if advertise.port() == 0 { local.port() } else { advertise.port() };
    Ok(SocketAddr::new(ip, port))
}

/// foca's configuration for a cluster of `cluster_size` members (memberlist's formulas).
pub(crate) fn foca_config(timing: &GossipTiming, cluster_size: usize, remember_down: Duration) -> Config {
    let n = cluster_size.max(1) as f64;
    let suspicion = timing.probe_interval.mul_f64(f64::from(timing.suspicion_mult) * n.log10().max(1.0));
    let max_tx = (f64::from(timing.retransmit_mult) * (n + 1.0).log10().ceil()).clamp(1.0, 255.0) as u8;
    let at_least_one = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
    Config {
        probe_period: timing.probe_interval,
        probe_rtt: timing.probe_timeout,
        num_indirect_probes: at_least_one(timing.indirect_checks),
        max_transmissions: NonZeroU8::new(max_tx).unwrap_or(NonZeroU8::MIN),
        suspect_to_down_after: suspicion,
        remove_down_after: Some(remember_down),
        max_packet_size: at_least_one(MAX_SWIM_BODY_BYTES),
        notify_down_members: true,
        // Push-pull (the driver's) does this job with the whole member list.
        periodic_announce: None,
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: timing.dead_announce_interval,
            num_members: at_least_one(2),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: timing.gossip_interval,
            num_members: at_least_one(timing.gossip_nodes),
        }),
    }
}

/// memberlist's `pushPullScale`: the push-pull interval for a cluster of `cluster_size`, so that
/// the cluster as a whole does about as many full-state syncs per interval however large it is.
fn push_pull_interval(interval: Duration, cluster_size: usize) -> Duration {
    if cluster_size <= PUSH_PULL_SCALE_THRESHOLD {
        return interval;
    }
    let excess = (cluster_size as f64).log2() - (PUSH_PULL_SCALE_THRESHOLD as f64).log2();
    interval * (excess.ceil() as u32 + 1)
}

/// Whether `desired` differs enough from `current` to reconfigure foca.
fn notably_different(current: &Config, desired: &Config) -> bool {
    let (a, b) = (current.suspect_to_down_after.as_secs_f64(), desired.suspect_to_down_after.as_secs_f64());
    current.max_transmissions != desired.max_transmissions || (a - b).abs() > a / 10.0
}

/// Receive datagrams and hand them to the driver. Counted here, judged there.
async fn receive_loop(socket: Arc<UdpSocket>, inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>, counters: Arc<Counters>) {
    // One byte more than the limit, so an oversize datagram is seen as such, not truncated to fit.
    let mut buf = vec![0u8; MAX_PACKET_BYTES + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive failed");
                // A socket in a persistent error state must not spin the CPU.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        bump(&counters.packets_in, 1);
        bump(&counters.bytes_in, len);
        if len > MAX_PACKET_BYTES {
            bump(&counters.dropped_oversize, 1);
            continue;
        }
        match inbound.try_send((from, buf[..len].to_vec())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.dropped_overload, 1),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

struct PendingJoin {
    remaining: BTreeSet<SocketAddr>,
    answered: mpsc::Sender<SocketAddr>,
    next_retry: Instant,
}

struct Leaving {
    deadline: Instant,
    done: oneshot::Sender<()>,
}

/// A keyring query we started, gathering answers.
struct PendingQuery {
    id: u64,
    /// Members alive or suspect when it started, us included.
    expected: BTreeSet<String>,
    responses: BTreeMap<String, Result<Vec<KeyInfo>, String>>,
    deadline: Instant,
    done: oneshot::Sender<Result<KeyringReport, GossipError>>,
}

impl PendingQuery {
    fn complete(&self, now: Instant) -> bool {
        now >= self.deadline || self.expected.iter().all(|name| self.responses.contains_key(name))
    }
}

struct Driver {
    foca: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    inbox: Inbox,
    socket: Arc<UdpSocket>,
    crypto: PacketCrypto,
    view: View,
    health: LocalHealth,
    /// The incarnation of the last suspicion about us counted against our health.
    last_refuted: Option<u16>,
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    /// Members foca holds as suspect, since when this driver first saw them so, and at which
    /// incarnation (see [`Driver::expire_suspicions`]).
    suspected: BTreeMap<NodeIdentity, (Instant, u16)>,
    /// Housekeeping: reaping, join retries, leave progress.
    next_tick: Instant,
    /// Names whose state in foca may differ from the view: read at the next flush.
    dirty: BTreeSet<String>,
    /// When the view next reads foca's whole member list (see [`FULL_RECONCILE_ROUNDS`]); a
    /// push-pull brings it forward to now.
    full_reconcile_at: Instant,
    timing: GossipTiming,
    reconnect_timeout: Duration,
    remember_down: Duration,
    config: Config,
    scaled_for: usize,
    disk: Option<Arc<dyn Disk>>,
    /// Whether keyring changes are saved to `local.keyring` on `disk`.
    keyring_file: bool,
    sync_context: SyncContext,
    /// Handed to push-pull tasks, which send their outcome back on it.
    sync_tx: mpsc::Sender<SyncEvent>,
    /// Addresses we are running a push-pull with now (at most [`MAX_OUTBOUND_SYNCS`]).
    syncing: BTreeSet<SocketAddr>,
    next_push_pull: Instant,
    /// Picks the periodic push-pull partner.
    rng: SmallRng,
    joins: Vec<PendingJoin>,
    queries: Vec<PendingQuery>,
    /// Answers to others' queries, sent with the next flush.
    replies: Vec<(SocketAddr, Reply)>,
    leaving: Option<Leaving>,
    left: bool,
    membership_tx: watch::Sender<Membership>,
    keyring_tx: watch::Sender<Option<Keyring>>,
    counters: Arc<Counters>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut syncs: mpsc::Receiver<SyncEvent>,
    ) {
        loop {
            let wake = self.timers.keys().next().map_or(self.next_tick, |(at, _)| (*at).min(self.next_tick));
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(wake) => {}
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                datagram = inbound.recv() => match datagram {
                    None => break,
                    Some((from, bytes)) => self.on_datagram(from, &bytes),
                },
                // Never closed: the driver holds a sender for its own push-pull tasks.
                Some(event) = syncs.recv() => self.on_sync(event),
            }
            let now = Instant::now();
            self.fire_due_timers(now);
            if now >= self.next_tick {
                self.housekeeping(now);
                self.next_tick = now + self.timing.gossip_interval;
            }
            self.flush().await;
        }
        if let Some(leaving) = self.leaving.take() {
            let _ = leaving.done.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Join { addrs, answered } => {
                let remaining: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                self.announce(&remaining);
                for addr in &remaining {
                    self.start_push_pull(*addr);
                }
                self.joins.push(PendingJoin { remaining, answered, next_retry: now + self.timing.probe_interval });
            }
            Command::Leave { propagate, done } => self.leave(propagate, done, now),
            Command::ForceLeave { name } => self.force_leave(&name),
            Command::Keyring { op, done } => {
                let _ = done.send(self.keyring_local(op));
            }
            Command::KeyringQuery { op, timeout, done } => self.start_keyring_query(op, timeout, done, now),
            Command::Shutdown => {}
        }
    }

    fn announce(&mut self, addrs: &BTreeSet<SocketAddr>) {
        for addr in addrs {
            if let Err(e) = self.foca.announce(NodeIdentity::placeholder(*addr), &mut self.runtime) {
                tracing::debug!(%addr, error = %e, "gossip announce failed");
            }
        }
    }

    fn leave(&mut self, propagate: Duration, done: oneshot::Sender<()>, now: Instant) {
        if self.left {
            let _ = done.send(());
            return;
        }
        let me = self.view.me();
        self.add_broadcast(&Broadcast::LeaveIntent { name: me.name().to_owned(), generation: me.generation() });
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::warn!(error = %e, "gossip leave failed");
        }
        self.view.mark_self_left(now);
        self.left = true;
        self.leaving = Some(Leaving { deadline: now + propagate, done });
    }

    /// Only a failed member can be force-left: the handle checked its own snapshot, this checks
    /// the current view.
    fn force_leave(&mut self, name: &str) {
        match self.view.other(name) {
            Some((id, super::MemberStatus::Failed)) => {
                let intent = Broadcast::LeaveIntent { name: name.to_owned(), generation: id.generation() };
                self.add_broadcast(&intent);
            }
            other => tracing::debug!(name, status = ?other.map(|(_, s)| s), "force-leave ignored: not failed"),
        }
    }

    fn add_broadcast(&mut self, broadcast: &Broadcast) {
        let added = encode_broadcast(broadcast)
            .map_err(|e| e.to_string())
            .and_then(|bytes| self.foca.add_broadcast(&bytes).map_err(|e| e.to_string()));
        if let Err(error) = added {
            tracing::warn!(%error, ?broadcast, "gossip broadcast not queued");
        }
    }

    fn keyring_local(&mut self, op: KeyringOp) -> Result<Vec<KeyInfo>, GossipError> {
        let ring = self.crypto.keyring_mut().ok_or(GossipError::EncryptionDisabled)?;
        let before = ring.clone();
        match op {
            KeyringOp::List => {}
            KeyringOp::Install(key) => ring.install(key)?,
            KeyringOp::Use(key) => ring.use_key(&key)?,
            KeyringOp::Remove(key) => ring.remove(&key)?,
        }
        let after = ring.clone();
        if after != before {
            if let Some(disk) = self.disk.as_ref().filter(|_| self.keyring_file) {
                if let Err(e) = after.persist(disk.as_ref()) {
                    // Memory and disk must not disagree about which keys we accept.
                    *ring = before;
                    return Err(e.into());
                }
            }
            self.keyring_tx.send_replace(Some(after.clone()));
        }
        Ok(KeyInfo::list(&after))
    }

    /// Apply `op` here, then ask every member through a broadcast. Our own answer is the first.
    fn start_keyring_query(
        &mut self,
        op: KeyringOp,
        timeout: Duration,
        done: oneshot::Sender<Result<KeyringReport, GossipError>>,
        now: Instant,
    ) {
        let refused = if self.crypto.keyring().is_none() {
            Some(GossipError::EncryptionDisabled)
        } else if self.left {
            Some(GossipError::ShutDown)
        } else if self.queries.len() >= MAX_PENDING_QUERIES {
            Some(GossipError::Busy)
        } else {
            None
        };
        if let Some(error) = refused {
            let _ = done.send(Err(error));
            return;
        }
        let me = self.view.me().clone();
        let local = self.keyring_local(op.clone()).map_err(|e| e.to_string());
        let expected = self
            .view
            .membership()
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| m.name.clone())
            .collect();
        let id = crate::io::random_seed();
        let query = KeyringQuery { id, origin: me.name().to_owned(), reply_to: me.addr(), op };
        self.add_broadcast(&Broadcast::KeyringQuery(query));
        // Out now rather than at the next gossip round.
        if let Err(e) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!(error = %e, "keyring query broadcast");
        }
        let responses = BTreeMap::from([(me.name().to_owned(), local)]);
        self.queries.push(PendingQuery { id, expected, responses, deadline: now + timeout, done });
    }

    /// Someone's keyring query reached us: apply it and queue the answer.
    fn answer_keyring_query(&mut self, query: KeyringQuery) {
        if self.left || query.origin == self.view.me().name() {
            // Our own query was applied when it was asked.
            return;
        }
        let result = match self.keyring_local(query.op) {
            Ok(_) => Ok(self.crypto.keyring().map(|ring| ring.keys().to_vec()).unwrap_or_default()),
            Err(e) => Err(truncate(e.to_string(), MAX_ERROR_BYTES)),
        };
        let response = KeyringResponse { id: query.id, node: self.view.me().name().to_owned(), result };
        self.replies.push((query.reply_to, Reply::Keyring(response)));
    }

    /// An answer to one of our queries, from a member we know.
    fn on_keyring_response(&mut self, response: KeyringResponse) {
        let known = response.node == self.view.me().name() || self.view.other(&response.node).is_some();
        let Some(query) = self.queries.iter_mut().find(|q| q.id == response.id) else { return };
        if known {
            let keys = |keys: Vec<GossipKey>| {
                keys.iter().enumerate().map(|(i, k)| KeyInfo { key: k.to_base64(), primary: i == 0 }).collect()
            };
            query.responses.insert(response.node, response.result.map(keys));
        }
    }

    fn finish_queries(&mut self, now: Instant) {
        let (finished, waiting) = std::mem::take(&mut self.queries).into_iter().partition(|q| q.complete(now));
        self.queries = waiting;
        for query in finished {
            let report = KeyringReport::new(query.expected.len(), query.responses);
            let _ = query.done.send(Ok(report));
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        if self.left {
            return;
        }
        let plain = match self.crypto.incoming(datagram) {
            Ok(plain) => plain,
            Err(e) => {
                bump(&self.counters.dropped_decrypt, 1);
                tracing::trace!(%from, error = %e, "gossip packet dropped");
                return;
            }
        };
        let packet = match decode_packet(&plain) {
            Ok(Packet::Swim(packet)) if names_present(&packet) => packet,
            Ok(Packet::Reply(Reply::Keyring(response))) => {
                self.on_keyring_response(response);
                return;
            }
            Ok(Packet::Swim(_)) => {
                bump(&self.counters.dropped_decode, 1);
                return;
            }
            Err(e) => {
                bump(&self.counters.dropped_decode, 1);
                tracing::trace!(%from, error = %e, "gossip packet undecodable");
                return;
            }
        };
        let body = &plain[ENVELOPE_BYTES..];
        if body.len() > MAX_SWIM_BODY_BYTES {
            bump(&self.counters.dropped_oversize, 1);
            return;
        }
        self.observe(from, &packet);
        self.note_updates(&packet);
        let result = if packet.header.message == Message::Announce && packet.header.dst.is_placeholder() {
            // Joining by address: the joiner could not name us, so address it to us now.
            let mut addressed = packet;
            addressed.header.dst = self.foca.identity().clone();
            match encode_packet(&Packet::Swim(addressed)) {
                Ok(bytes) => self.foca.handle_data(&bytes[ENVELOPE_BYTES..], &mut self.runtime),
                Err(e) => {
                    tracing::debug!(error = %e, "could not readdress an announce");
                    return;
                }
            }
        } else {
            self.foca.handle_data(body, &mut self.runtime)
        };
        if let Err(e) = result {
            tracing::trace!(%from, error = %e, "gossip packet refused by foca");
        }
    }

    /// The members a packet may change in foca (its sender, which foca marks alive, and its
    /// updates) and the view does not already show as the packet says: the view reads them back at
    /// the next flush.
    fn note_updates(&mut self, packet: &SwimPacket) {
        let me = self.foca.identity();
        let sender = (&packet.header.src, State::Alive);
        let updates = packet.updates.iter().map(|m| (m.id(), m.state()));
        for (id, state) in std::iter::once(sender).chain(updates) {
            if id != me && !self.view.shows(id, state) && !self.dirty.contains(id.name()) {
                self.dirty.insert(id.name().to_owned());
            }
        }
    }

    /// What the driver learns from a packet before foca sees it: join answers, probe acks, and
    /// suspicions about us.
    fn observe(&mut self, from: SocketAddr, packet: &SwimPacket) {
        match &packet.header.message {
            Message::Feed => self.join_answered(from, packet.header.src.addr()),
            Message::Ack(_) => self.health.acked_by(&packet.header.src),
            Message::ForwardedAck { origin, .. } => self.health.acked_by(origin),
            _ => {}
        }
        let me = self.foca.identity();
        let suspected = packet.updates.iter().filter(|m| m.id() == me && m.state() == State::Suspect);
        if let Some(incarnation) = suspected.map(|m| m.incarnation()).max() {
            if self.last_refuted.is_none_or(|last| incarnation > last) {
                self.last_refuted = Some(incarnation);
                self.health.refuted();
            }
        }
    }

    /// A push-pull's member list arrived: answer (if they asked) with ours, then apply theirs.
    fn on_sync(&mut self, event: SyncEvent) {
        match event {
            SyncEvent::Pushed { from, members, reply } => {
                if self.left {
                    // Dropping `reply` closes the connection: a leaving agent teaches nobody.
                    return;
                }
                let _ = reply.send(self.local_state());
                tracing::trace!(%from, members = members.len(), "push-pull answered");
                self.apply_state(members);
            }
            SyncEvent::Pulled { addr, result } => {
                self.syncing.remove(&addr);
                match result {
                    Ok(members) if !self.left => {
                        self.apply_state(members);
                        self.join_answered(addr, addr);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%addr, error = %e, "gossip push-pull failed"),
                }
            }
        }
    }

    /// Our whole member list for a push-pull: ourselves, then every member foca knows, in any
    /// state (a `Down` member teaches the other side about a failure too, as memberlist's dead
    /// nodes do).
    fn local_state(&self) -> Members {
        let me = self.foca.identity().clone();
        // foca does not expose our incarnation; a refutation raises it past the suspicion refuted,
        // so this is at most ours. Lower is harmless: the other side keeps what it knows if newer.
        let incarnation = self.last_refuted.map_or(0, |i| i.saturating_add(1));
        let mut members = Vec::with_capacity(self.foca.iter_membership_state().len() + 1);
        members.push(foca::Member::new(me, incarnation, State::Alive));
        members.extend(self.foca.iter_membership_state().take(MAX_SYNC_MEMBERS - 1).cloned());
        members
    }

    /// Feed a received member list to foca, one member at a time so that one it refuses does not
    /// stop the rest. New knowledge is gossiped on, as memberlist's merge does.
    fn apply_state(&mut self, members: Members) {
        // A whole member list: cheaper to read foca's back in one pass than name by name.
        self.full_reconcile_at = Instant::now();
        let me = self.foca.identity().clone();
        let suspected = members.iter().filter(|m| m.id() == &me && m.state() == State::Suspect);
        if let Some(incarnation) = suspected.map(|m| m.incarnation()).max() {
            if self.last_refuted.is_none_or(|last| incarnation > last) {
                self.last_refuted = Some(incarnation);
                self.health.refuted();
            }
        }
        for member in members.into_iter().filter(|m| !m.id().is_placeholder()) {
            if let Err(e) = self.foca.apply_many(std::iter::once(member), true, &mut self.runtime) {
                tracing::trace!(error = %e, "push-pull member refused by foca");
            }
        }
    }

    /// Start a push-pull with `addr` unless one is already under way with it or too many are.
    fn start_push_pull(&mut self, addr: SocketAddr) {
        if self.left || self.syncing.contains(&addr) || self.syncing.len() >= MAX_OUTBOUND_SYNCS {
            return;
        }
        self.syncing.insert(addr);
        sync::spawn_push_pull(addr, self.local_state(), self.sync_context.clone(), self.sync_tx.clone());
    }

    /// memberlist's periodic push-pull: one live member, chosen at random.
    fn periodic_push_pull(&mut self) {
        let me = self.foca.identity().clone();
        let live: Vec<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Alive && m.id() != &me)
            .map(|m| m.id().addr())
            .collect();
        if live.is_empty() {
            return;
        }
        let pick = live[self.rng.random_range(0..live.len())];
        self.start_push_pull(pick);
    }

    fn join_answered(&mut self, from: SocketAddr, claimed: SocketAddr) {
        for join in &mut self.joins {
            if join.remaining.remove(&from) || join.remaining.remove(&claimed) {
                let _ = join.answered.try_send(from);
            }
        }
        self.joins.retain(|j| !j.remaining.is_empty() && !j.answered.is_closed());
    }

    fn fire_due_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), timer) = entry.remove_entry();
            due.push((at, timer));
        }
        if let Some(lateness) = due.iter().map(|(at, _)| now.saturating_duration_since(*at)).max() {
            // One stall makes many timers late at once; it counts once.
            self.health.timer_fired_late(lateness, self.timing.probe_timeout);
        }
        // foca's order for timers due together: an indirect probe before the next probe.
        due.sort_by(|a, b| a.1.cmp(&b.1));
        for (_, timer) in due {
            if let Timer::ChangeSuspectToDown { member_id: id, .. } | Timer::RemoveDown(id) = &timer {
                self.dirty.insert(id.name().to_owned());
            }
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer");
            }
        }
    }

    /// foca starts the suspect-to-down timer only for members its own probe suspected; a
    /// suspicion learned from another member's gossip waits for this member's own probe of the
    /// suspect, up to a whole probe round away, and if the `down` broadcasts are lost meanwhile
    /// (packet loss), the member stays suspect here far past the suspicion timeout (the
    /// gossip-failure-detection scenario found a survivor holding a dead member suspect for 30 s).
    /// memberlist starts the timer however it learned of the suspicion; so does this: a member
    /// suspect at one incarnation for the suspicion timeout (stretched by local health, plus one
    /// probe interval for the prober's own timer to win) is declared down, as foca's timer would.
    fn expire_suspicions(&mut self, now: Instant) {
        // The view counts suspects as they change (it may lag foca by one full read, at most
        // 25 gossip intervals); with none, skip the pass over foca's whole list each tick.
        if self.suspected.is_empty() && self.view.membership().count(MemberStatus::Suspect) == 0 {
            return;
        }
        let limit = self.config.suspect_to_down_after * self.health.multiplier() + self.timing.probe_interval;
        let mut still = BTreeMap::new();
        let mut overdue = Vec::new();
        for member in self.foca.iter_membership_state().filter(|m| m.state() == State::Suspect) {
            let (id, incarnation) = (member.id().clone(), member.incarnation());
            let since = match self.suspected.get(&id) {
                Some((since, seen)) if *seen == incarnation => *since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= limit {
                overdue.push(foca::Member::new(id, incarnation, State::Down));
            } else {
                still.insert(id, (since, incarnation));
            }
        }
        self.suspected = still;
        for down in overdue {
            self.dirty.insert(down.id().name().to_owned());
            tracing::debug!(member = %down.id().name(), "suspicion timed out without our own probe; declaring down");
            if let Err(e) = self.foca.apply_many(std::iter::once(down), false, &mut self.runtime) {
                tracing::debug!(error = %e, "declaring a suspect down");
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.expire_suspicions(now);
        self.view.reap(now, self.reconnect_timeout, self.timing.tombstone_timeout);
        self.joins.retain(|j| !j.answered.is_closed());
        let mut retry = BTreeSet::new();
        for join in self.joins.iter_mut().filter(|j| j.next_retry <= now) {
            retry.extend(join.remaining.iter().copied());
            join.next_retry = now + self.timing.probe_interval;
        }
        self.announce(&retry);
        for addr in retry {
            self.start_push_pull(addr);
        }
        if now >= self.next_push_pull {
            self.periodic_push_pull();
            let n = self.view.active_count();
            self.next_push_pull = now + push_pull_interval(self.timing.push_pull_interval, n);
        }
        if self.leaving.is_some() && !self.leave_propagated(now) {
            if let Err(e) = self.foca.gossip(&mut self.runtime) {
                tracing::debug!(error = %e, "gossip while leaving");
            }
        }
    }

    /// Whether our leave is out: nothing left to gossip, nobody to gossip to, or out of time.
    fn leave_propagated(&self, now: Instant) -> bool {
        let drained = self.foca.updates_backlog() == 0 && self.foca.custom_broadcast_backlog() == 0;
        drained || self.foca.num_members() == 0 || self.leaving.as_ref().is_some_and(|l| now >= l.deadline)
    }

    /// Act on everything foca produced, in its documented order, then send.
    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some(notification) = self.runtime.to_notify() {
            self.on_notification(notification);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.schedule(timer, after, now);
        }
        for broadcast in self.inbox.drain() {
            match broadcast {
                Broadcast::LeaveIntent { name, generation } => {
                    self.view.record_leave_intent(&name, generation);
                    self.dirty.insert(name);
                }
                Broadcast::KeyringQuery(query) => self.answer_keyring_query(query),
                Broadcast::Unknown { .. } => {}
            }
        }
        self.view.set_me(self.foca.identity().clone(), now);
        // Only the members that may have changed are read back from foca (one pass over its list,
        // comparing names); the whole list is read on a push-pull and every
        // `FULL_RECONCILE_ROUNDS` gossip intervals, for anything the names missed.
        if now >= self.full_reconcile_at {
            self.view.reconcile(self.foca.iter_membership_state(), None, now);
            self.full_reconcile_at = now + self.timing.gossip_interval * FULL_RECONCILE_ROUNDS;
            self.dirty.clear();
        } else if !self.dirty.is_empty() {
            self.view.reconcile(self.foca.iter_membership_state(), Some(&self.dirty), now);
            self.dirty.clear();
        }
        if self.view.take_changed() {
            // O(1): the view shares its storage with the snapshot.
            self.membership_tx.send_replace(self.view.membership());
            self.rescale();
        }
        self.counters.local_health.store(self.health.score(), Ordering::Relaxed);
        while let Some((to, body)) = self.runtime.to_send() {
            let mut plain = Vec::with_capacity(ENVELOPE_BYTES + body.len());
            put_envelope(&mut plain, Kind::Swim);
            plain.extend_from_slice(&body);
            self.send(to.addr(), &plain).await;
        }
        for (to, reply) in std::mem::take(&mut self.replies) {
            match encode_packet(&Packet::Reply(reply)) {
                Ok(plain) => self.send(to, &plain).await,
                Err(e) => tracing::warn!(error = %e, "keyring answer not sent"),
            }
        }
        self.finish_queries(Instant::now());
        // Answered only once what it changed is published and sent.
        if self.leaving.is_some() && self.leave_propagated(Instant::now()) {
            if let Some(leaving) = self.leaving.take() {
                let _ = leaving.done.send(());
            }
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeIdentity>) {
        match notification {
            OwnedNotification::MemberUp(id) | OwnedNotification::MemberDown(id) => {
                self.dirty.insert(id.name().to_owned());
            }
            OwnedNotification::Rename(old, new) => {
                self.dirty.insert(old.name().to_owned());
                self.dirty.insert(new.name().to_owned());
            }
            OwnedNotification::Rejoin(id) => {
                tracing::info!(
                    generation = id.generation(),
                    "declared down by the cluster; rejoined as a new generation"
                );
                if let Some(disk) = &self.disk {
                    if let Err(e) = disk.write_atomic(GENERATION_FILE, id.generation().to_string().as_bytes()) {
                        tracing::warn!(error = %e, "could not save the gossip generation");
                    }
                }
            }
            OwnedNotification::Defunct if !self.left => {
                tracing::warn!("declared down by the cluster and cannot rejoin");
            }
            other => tracing::debug!(notification = ?other, "gossip"),
        }
    }

    /// Queue a foca timer, stretching the failure-detection ones by local health.
    fn schedule(&mut self, timer: Timer<NodeIdentity>, after: Duration, now: Instant) {
        let after = match &timer {
            Timer::SendIndirectProbe { probed_id, .. } => {
                self.health.probe_started(probed_id.clone());
                after * self.health.multiplier()
            }
            Timer::ChangeSuspectToDown { member_id, .. } => {
                // foca has just suspected it (our probe failed, or an update said so).
                self.dirty.insert(member_id.name().to_owned());
                after * self.health.multiplier()
            }
            Timer::ProbeRandomMember(_) => after * self.health.multiplier(),
            _ => after,
        };
        self.timer_seq += 1;
        self.timers.insert((now + after, self.timer_seq), timer);
    }

    /// Rescale foca's dissemination and suspicion to the cluster size.
    fn rescale(&mut self) {
        let n = self.view.active_count();
        if n == self.scaled_for {
            return;
        }
        self.scaled_for = n;
        let desired = foca_config(&self.timing, n, self.remember_down);
        if notably_different(&self.config, &desired) {
            match self.foca.set_config(desired.clone()) {
                Ok(()) => self.config = desired,
                Err(e) => tracing::warn!(error = %e, "gossip reconfiguration refused"),
            }
        }
    }

    /// Seal (if configured) and send one plaintext datagram, envelope included.
    async fn send(&mut self, to: SocketAddr, plain: &[u8]) {
        let datagram = self.crypto.outgoing(plain);
        match self.socket.send_to(&datagram, to).await {
            Ok(len) => {
                bump(&self.counters.packets_out, 1);
                bump(&self.counters.bytes_out, len);
            }
            Err(e) => {
                bump(&self.counters.send_errors, 1);
                tracing::debug!(%to, error = %e, "gossip send failed");
            }
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Every identity in a packet must have a name, except the placeholder an announce is sent to.
fn names_present(packet: &SwimPacket) -> bool {
    let header = &packet.header;
    let named = |id: &NodeIdentity| !id.is_placeholder();
    let dst_ok = named(&header.dst) || header.message == Message::Announce;
    let inner_ok = match &header.message {
        Message::PingReq { target, .. } | Message::IndirectAck { target, .. } => named(target),
        Message::IndirectPing { origin, .. } | Message::ForwardedAck { origin, .. } => named(origin),
        _ => true,
    };
    named(&header.src) && dst_ok && inner_ok && packet.updates.iter().all(|m| named(m.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration follows memberlist's formulas and only changes when it matters.
    #[test]
    fn config_scales_with_cluster_size() {
        let timing = GossipTiming::lan();
        let remember = Duration::from_secs(3600);
        let small = foca_config(&timing, 1, remember);
        assert_eq!(small.suspect_to_down_after, Duration::from_secs(4));
        assert_eq!(small.max_transmissions.get(), 4);
        let five = foca_config(&timing, 5, remember);
        assert!(!notably_different(&small, &five), "log10(5) < 1: same suspicion, same retransmits");
        let hundred = foca_config(&timing, 100, remember);
        assert_eq!(hundred.suspect_to_down_after, Duration::from_secs(8));
        assert_eq!(hundred.max_transmissions.get(), 12);
        assert!(notably_different(&five, &hundred));
        assert!(!notably_different(&hundred, &foca_config(&timing, 110, remember)));
        // foca refuses changes to the probe period or timeout at runtime; rescaling never makes them.
        assert_eq!(hundred.probe_period, small.probe_period);
        assert_eq!(hundred.probe_rtt, small.probe_rtt);
    }

    #[test]
    fn advertise_fills_in_from_bound_socket() {
        let local: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(resolve_advertise("0.0.0.0:0".parse().unwrap(), local).unwrap(), local);
        assert_eq!(
            resolve_advertise("10.0.0.1:0".parse().unwrap(), local).unwrap(),
            "10.0.0.1:4567".parse::<SocketAddr>().unwrap()
        );
        assert!(resolve_advertise("0.0.0.0:0".parse().unwrap(), "0.0.0.0:1".parse().unwrap()).is_err());
    }

    /// The push-pull interval stays put up to 32 members, then grows by one interval per doubling
    /// (memberlist's `pushPullScale`).
    #[test]
    fn push_pull_interval_scales_with_cluster_size() {
        let base = Duration::from_secs(30);
        assert_eq!(push_pull_interval(base, 1), base);
        assert_eq!(push_pull_interval(base, 32), base);
        assert_eq!(push_pull_interval(base, 33), base * 2);
        assert_eq!(push_pull_interval(base, 64), base * 2);
        assert_eq!(push_pull_interval(base, 101), base * 3);
        assert_eq!(push_pull_interval(base, 1000), base * 6);
        assert_eq!(push_pull_interval(base, 5000), base * 9);
    }

    /// Each start is a newer generation than the last, and the count survives on disk.
    #[test]
    fn generations_grow_across_starts() {
        let disk = crate::storage::MemDisk::new();
        assert_eq!(next_generation(Some(&disk)).unwrap(), 1);
        assert_eq!(next_generation(Some(&disk)).unwrap(), 2);
        disk.write_atomic(GENERATION_FILE, b"41").unwrap();
        assert_eq!(next_generation(Some(&disk)).unwrap(), 42);
        disk.write_atomic(GENERATION_FILE, b"x").unwrap();
        assert!(next_generation(Some(&disk)).is_err());
        assert_eq!(next_generation(None).unwrap(), 1);
    }
}
