//! Autopilot: the Raft configuration follows the LAN gossip pool.
//!
//! Servers do not join Raft by themselves: the leader watches the gossip view and changes the
//! configuration for them, as Consul's leader does through its autopilot. The decision is a pure
//! function, [`plan`], from the current configuration (with replication progress), the gossip
//! view and the time to a list of [`MembershipAction`]s; [`run`] is the thin leader loop that
//! feeds it and applies what it returns through openraft, one change at a time.
//!
//! The rules, and why:
//! - A new alive server of our datacenter joins as a **learner** first. A learner receives the log
//!   but does not count for quorum, so a slow or empty newcomer cannot stall commits (Consul adds
//!   servers as non-voters and lets autopilot promote them).
//! - A learner is **promoted** to voter once it has been alive in gossip for
//!   `server_stabilization_time` and its replicated log is within `max_trailing_logs` of the
//!   leader's (Consul's autopilot health: stable, and not trailing). Learners not yet caught up stay
//!   learners.
//! - A server that **left** gracefully is removed at once (Consul's `handleLeftMember`).
//! - A **failed** server is removed only with `cleanup_dead_servers` and once it has been failed
//!   for `dead_server_cleanup_after`, so a restart does not churn the configuration.
//! - A configuration entry **superseded** by an alive server with the same name or RPC address but
//!   another node ID (the agent was rebuilt with a new identity) is removed: the old identity will
//!   never answer again (Consul/raft-autopilot's same-address, different-ID replacement).
//! - A voter is removed only if the voters left still hold a quorum of alive servers (alive or
//!   suspect in gossip), so gossip mistaking live servers for failed ones cannot shrink the
//!   configuration below what can commit; dead-server cleanup also stops at `min_quorum`. The
//!   leader never removes itself: when it leaves, it stops, a follower takes over and removes it
//!   (Consul: "deregistering self should be done by follower").
//! - Servers of other datacenters, clients, and configuration entries absent from gossip are left
//!   alone. An absent entry is either a server whose gossip has not converged yet (just after
//!   bootstrap) or one reaped long after it failed, which the failed rule removed before; removing
//!   on absence would turn a partial gossip view into lost voters. `operator raft remove-peer`
//!   removes such entries by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{LeaderTarget, Server, ServerError};
use crate::gossip::{Member, MemberStatus, Membership};
use crate::raft::network::PeerFeedback;
use crate::raft::{raft_id_from_node_id, Metrics, NodeId, ServerInfo, ServerState};
use crate::rpc::message::{LeaderError, MembershipError, PeerRef, Request, Response};

/// How the leader manages the Raft configuration. The integrator maps the agent's `autopilot`
/// config onto this; the defaults are Consul's where Consul has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutopilotSettings {
    /// Remove failed servers automatically (Consul's `cleanup_dead_servers`, on by default).
    pub cleanup_dead_servers: bool,
    /// How long a server must have been failed in gossip before it is removed. Consul removes at
    /// its next autopilot pass (every 10 s); a little longer lets a restarted server come back
    /// without leaving and re-joining the configuration.
    pub dead_server_cleanup_after: Duration,
    /// How long a new server must have been alive before it becomes a voter (Consul's
    /// `server_stabilization_time`, 10 s).
    pub server_stabilization_time: Duration,
    /// How far behind the leader's log a learner may be and still be promoted (Consul's
    /// `max_trailing_logs`, 250).
    pub max_trailing_logs: u64,
    /// A learner is promoted only if it answered the leader's replication within this long
    /// (Consul's `last_contact_threshold`, 200 ms): a server that is slow to answer would slow
    /// every commit once it votes.
    pub last_contact_threshold: Duration,
    /// Dead-server cleanup never leaves fewer voters than this (Consul's `min_quorum`, 0: no floor
    /// beyond quorum safety).
    pub min_quorum: usize,
    /// How often the leader re-plans without a gossip change: promotions and cleanup are driven by
    /// time and replication progress, which gossip does not announce.
    pub reconcile_interval: Duration,
}

/// How often the leader re-plans without a gossip change, unless a test says otherwise.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

impl Default for AutopilotSettings {
    fn default() -> Self {
        AutopilotSettings::from(&crate::config::AutopilotSettings::default())
    }
}

/// The operator's `autopilot { ... }` settings, as the planner uses them.
impl From<&crate::config::AutopilotSettings> for AutopilotSettings {
    fn from(config: &crate::config::AutopilotSettings) -> Self {
        AutopilotSettings {
            cleanup_dead_servers: config.cleanup_dead_servers,
            dead_server_cleanup_after: config.dead_server_cleanup_after,
            server_stabilization_time: config.server_stabilization_time,
            max_trailing_logs: config.max_trailing_logs,
            last_contact_threshold: config.last_contact_threshold,
            min_quorum: config.min_quorum as usize,
            reconcile_interval: RECONCILE_INTERVAL,
        }
    }
}

/// The leader's view of the Raft configuration and of replication to each member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftMembershipView {
    /// This server, the leader.
    pub leader: NodeId,
    pub voters: BTreeMap<NodeId, ServerInfo>,
    pub learners: BTreeMap<NodeId, ServerInfo>,
    /// Index of the leader's last log entry.
    pub last_log_index: u64,
    /// The highest log index known to be replicated to each follower and learner.
    pub matched: BTreeMap<NodeId, u64>,
    /// How long ago each follower and learner last answered the leader's replication.
    pub last_contact: BTreeMap<NodeId, Duration>,
    /// A change is under way (joint configuration, or the latest configuration is not yet
    /// applied): openraft accepts no other until it completes.
    pub changing: bool,
}

impl RaftMembershipView {
    /// The view from openraft's metrics and the peers' last answers, if this server leads.
    pub fn from_metrics(metrics: &Metrics, last_contact: BTreeMap<NodeId, Duration>) -> Option<Self> {
        if metrics.state != ServerState::Leader {
            return None;
        }
        let stored = &metrics.membership_config;
        let membership = stored.membership();
        let info = |id: NodeId| membership.get_node(&id).map(|info| (id, info.clone()));
        let applied = metrics.last_applied.map(|log_id| log_id.index);
        let config_index = stored.log_id().map(|log_id| log_id.index);
        let matched = metrics.replication.iter().flatten();
        Some(RaftMembershipView {
            leader: metrics.id,
            voters: membership.voter_ids().filter_map(info).collect(),
            learners: membership.learner_ids().filter_map(info).collect(),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            matched: matched.filter_map(|(id, log_id)| Some((*id, log_id.as_ref()?.index))).collect(),
            last_contact,
            changing: membership.get_joint_config().len() > 1 || config_index > applied,
        })
    }

    fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    fn info(&self, id: NodeId) -> Option<&ServerInfo> {
        self.voters.get(&id).or_else(|| self.learners.get(&id))
    }
}

/// Why a server is taken out of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemovalReason {
    /// It left the gossip pool gracefully.
    Left,
    /// An alive server with its name or address now carries another node ID.
    Superseded,
    /// It has been failed in gossip for `dead_server_cleanup_after`.
    Failed,
    /// An operator asked for it (`DELETE /v1/operator/raft/peer`).
    Operator,
}

/// One change to the Raft configuration, applied by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipAction {
    /// Start replicating to a new server, without a vote.
    AddLearner(ServerInfo),
    /// Give a caught-up learner a vote.
    Promote(NodeId),
    /// Take a server out of the configuration, voter or learner.
    Remove(NodeId, RemovalReason),
}

impl fmt::Display for MembershipAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipAction::AddLearner(info) => write!(f, "add {info} as a learner"),
            MembershipAction::Promote(id) => write!(f, "promote {id:016x} to voter"),
            MembershipAction::Remove(id, reason) => write!(f, "remove {id:016x} ({reason:?})"),
        }
    }
}

/// Alive or suspect: still answering as far as gossip can tell (suspicion may be refuted).
fn is_live(status: MemberStatus) -> bool {
    matches!(status, MemberStatus::Alive | MemberStatus::Suspect)
}

/// The gossip view's servers of one datacenter, by Raft ID.
struct GossipServers<'a>(BTreeMap<NodeId, &'a Member>);

impl<'a> GossipServers<'a> {
    /// Servers of `datacenter` that advertise an RPC port and a node ID. Two members claiming one
    /// node ID (an agent renamed while its old name lingers) resolve to the livelier one, then
    /// the later generation.
    fn new(gossip: &'a Membership, datacenter: &'a str) -> Self {
        let mut servers: BTreeMap<NodeId, &Member> = BTreeMap::new();
        for member in gossip.servers(datacenter) {
            if member.server_rpc_addr().is_none() || member.meta.node_id.is_empty() {
                continue;
            }
            let id = raft_id_from_node_id(&member.meta.node_id);
            let better = |held: &&Member| {
                (member.status, std::cmp::Reverse(member.generation))
                    < (held.status, std::cmp::Reverse(held.generation))
            };
            if servers.get(&id).is_none_or(better) {
                servers.insert(id, member);
            }
        }
        GossipServers(servers)
    }

    fn get(&self, id: NodeId) -> Option<&'a Member> {
        self.0.get(&id).copied()
    }

    fn is_live(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|member| is_live(member.status))
    }

    /// Another live server holds `info`'s name or RPC address under a different node ID.
    fn supersedes(&self, id: NodeId, info: &ServerInfo) -> bool {
        let address = info.socket_addr();
        self.0.iter().any(|(other, member)| {
            *other != id
                && is_live(member.status)
                && (member.name == info.name || (address.is_some() && member.server_rpc_addr() == address))
        })
    }
}

/// What the leader should change so the Raft configuration matches `gossip`, in the order to
/// apply them: removals, then additions, then promotions. Pure: same inputs, same actions.
pub fn plan(
    current: &RaftMembershipView,
    gossip: &Membership,
    datacenter: &str,
    now: Instant,
    settings: &AutopilotSettings,
) -> Vec<MembershipAction> {
    if current.changing {
        return Vec::new();
    }
    let servers = GossipServers::new(gossip, datacenter);
    let mut actions = removals(current, &servers, now, settings);
    actions.extend(additions(current, &servers));
    actions.extend(promotions(current, &servers, now, settings));
    actions
}

/// Why `id` should go, if it should, before quorum is considered.
fn removal_reason(
    id: NodeId,
    info: &ServerInfo,
    servers: &GossipServers<'_>,
    now: Instant,
    settings: &AutopilotSettings,
) -> Option<RemovalReason> {
    let member = servers.get(id);
    if member.is_some_and(|member| is_live(member.status)) {
        return None;
    }
    if member.is_some_and(|member| member.status == MemberStatus::Left) {
        return Some(RemovalReason::Left);
    }
    if servers.supersedes(id, info) {
        return Some(RemovalReason::Superseded);
    }
    let failed_for = member
        .filter(|member| member.status == MemberStatus::Failed)
        .map(|member| now.saturating_duration_since(member.status_since));
    match failed_for {
        Some(failed_for) if settings.cleanup_dead_servers && failed_for >= settings.dead_server_cleanup_after => {
            Some(RemovalReason::Failed)
        }
        _ => None,
    }
}

fn removals(
    current: &RaftMembershipView,
    servers: &GossipServers<'_>,
    now: Instant,
    settings: &AutopilotSettings,
) -> Vec<MembershipAction> {
    // Learners do not count for quorum: remove them as soon as they are gone.
    let mut actions: Vec<MembershipAction> = current
        .learners
        .iter()
        .filter_map(|(id, info)| {
            Some(MembershipAction::Remove(*id, removal_reason(*id, info, servers, now, settings)?))
        })
        .collect();
    let mut candidates: Vec<(RemovalReason, NodeId)> = current
        .voters
        .iter()
        .filter(|(id, _)| **id != current.leader)
        .filter_map(|(id, info)| Some((removal_reason(*id, info, servers, now, settings)?, *id)))
        .collect();
    candidates.sort();
    let mut voters: BTreeSet<NodeId> = current.voters.keys().copied().collect();
    let alive = |id: &NodeId| *id == current.leader || servers.is_live(*id);
    for (reason, id) in candidates {
        let remaining = voters.len() - 1;
        let remaining_alive = voters.iter().filter(|v| **v != id && alive(v)).count();
        let keeps_quorum = remaining >= 1 && remaining_alive > remaining / 2;
        let above_floor = reason != RemovalReason::Failed || remaining >= settings.min_quorum;
        if keeps_quorum && above_floor {
            voters.remove(&id);
            actions.push(MembershipAction::Remove(id, reason));
        }
    }
    actions
}

fn additions(current: &RaftMembershipView, servers: &GossipServers<'_>) -> Vec<MembershipAction> {
    servers
        .0
        .iter()
        .filter(|(id, member)| member.status == MemberStatus::Alive && !current.contains(**id))
        .filter_map(|(_, member)| {
            Some(MembershipAction::AddLearner(ServerInfo {
                name: member.name.clone(),
                node_id: member.meta.node_id.clone(),
                rpc_addr: member.server_rpc_addr()?.to_string(),
                lan_addr: member.addr.to_string(),
            }))
        })
        .collect()
}

fn promotions(
    current: &RaftMembershipView,
    servers: &GossipServers<'_>,
    now: Instant,
    settings: &AutopilotSettings,
) -> Vec<MembershipAction> {
    current
        .learners
        .keys()
        .filter(|id| promotion_wait(**id, current, servers, now, settings).is_none())
        .map(|id| MembershipAction::Promote(*id))
        .collect()
}

/// Why a learner is not promoted yet: the first promotion condition it fails, with the values
/// that fail it, so a log line shows which condition holds it back and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionWait {
    /// Not an alive server of our datacenter in the gossip view.
    NotAlive,
    /// Alive for `alive_for`, less than `server_stabilization_time` (`needed`).
    Stabilizing { alive_for: Duration, needed: Duration },
    /// More than `max_trailing_logs` behind the leader's log, or never reached (`behind` None).
    Trailing { behind: Option<u64> },
    /// Last answered the leader's replication `since` ago, longer than `last_contact_threshold`,
    /// or never (None).
    OutOfContact { since: Option<Duration> },
}

fn promotion_wait(
    id: NodeId,
    current: &RaftMembershipView,
    servers: &GossipServers<'_>,
    now: Instant,
    settings: &AutopilotSettings,
) -> Option<PromotionWait> {
    let Some(member) = servers.get(id).filter(|member| member.status == MemberStatus::Alive) else {
        return Some(PromotionWait::NotAlive);
    };
    let alive_for = now.saturating_duration_since(member.status_since);
    if alive_for < settings.server_stabilization_time {
        return Some(PromotionWait::Stabilizing { alive_for, needed: settings.server_stabilization_time });
    }
    let behind = current.matched.get(&id).map(|matched| current.last_log_index.saturating_sub(*matched));
    if behind.is_none_or(|behind| behind > settings.max_trailing_logs) {
        return Some(PromotionWait::Trailing { behind });
    }
    let since = current.last_contact.get(&id).copied();
    if since.is_none_or(|since| since > settings.last_contact_threshold) {
        return Some(PromotionWait::OutOfContact { since });
    }
    None
}

/// The learners [`plan`] does not promote now, and why. Autopilot otherwise says nothing about a
/// learner it keeps waiting: a server running with another `server_stabilization_time` than
/// meant showed only as a promotion 10 s late.
pub fn promotion_waits(
    current: &RaftMembershipView,
    gossip: &Membership,
    datacenter: &str,
    now: Instant,
    settings: &AutopilotSettings,
) -> Vec<(NodeId, PromotionWait)> {
    let servers = GossipServers::new(gossip, datacenter);
    current
        .learners
        .keys()
        .filter_map(|id| Some((*id, promotion_wait(*id, current, &servers, now, settings)?)))
        .collect()
}

/// Reconcile the Raft configuration with `membership` while this server leads, on every gossip
/// change and every `reconcile_interval`. Returns when Raft or the gossip view shuts down.
pub async fn run(
    server: Arc<Server>,
    membership: watch::Receiver<Membership>,
    settings: AutopilotSettings,
    feedback: Arc<PeerFeedback>,
) {
    let interval = settings.reconcile_interval;
    super::leading::while_leading(server, membership, interval, "raft configuration", |server, gossip| {
        let (settings, feedback) = (settings.clone(), feedback.clone());
        async move { reconcile_once(&server, &gossip, &settings, &feedback).await }
    })
    .await
}

/// Plan against the current configuration and apply the actions in order. The first failure ends
/// the round: the next round plans again from what actually happened.
async fn reconcile_once(server: &Server, gossip: &Membership, settings: &AutopilotSettings, feedback: &PeerFeedback) {
    let now = Instant::now();
    let last_contact = feedback.last_contact(now);
    let Some(view) = RaftMembershipView::from_metrics(&server.raft().metrics().borrow(), last_contact) else { return };
    let actions = plan(&view, gossip, server.datacenter(), now, settings);
    if tracing::enabled!(tracing::Level::DEBUG) && !view.changing {
        for (id, wait) in promotion_waits(&view, gossip, server.datacenter(), now, settings) {
            let name = view.info(id).map(|info| info.name.as_str()).unwrap_or_default();
            tracing::debug!(server = %name, ?wait, "autopilot: learner not promoted yet");
        }
    }
    for action in actions {
        let name = match &action {
            MembershipAction::AddLearner(info) => info.name.clone(),
            MembershipAction::Promote(id) | MembershipAction::Remove(id, _) => {
                view.info(*id).map(|info| info.name.clone()).unwrap_or_default()
            }
        };
        tracing::info!(server = %name, action = %action, "autopilot: changing the Raft configuration");
        match server.change_membership(&action).await {
            Ok(()) => {}
            // An operator's change, or one of ours that timed out, is still committing.
            Err(e @ MembershipError::InProgress) => {
                tracing::debug!(server = %name, action = %action, error = %e, "autopilot: will retry");
                return;
            }
            Err(e) => {
                tracing::warn!(server = %name, action = %action, error = %e, "autopilot: change failed; will retry");
                return;
            }
        }
    }
}

/// The Raft configuration as `operator raft list-peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfiguration {
    /// Voters and learners, sorted by node name.
    pub servers: Vec<RaftPeer>,
    /// Log index of the configuration entry (0 before any).
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftPeer {
    pub id: NodeId,
    pub info: ServerInfo,
    /// This server is the leader as far as the local server knows.
    pub leader: bool,
    pub voter: bool,
}

impl PeerRef {
    /// Whether `info` is the server this reference names. IDs compare case-insensitively (UUIDs);
    /// addresses as socket addresses when both parse, else as text.
    pub fn matches(&self, info: &ServerInfo) -> bool {
        match self {
            PeerRef::Id(id) => info.node_id.eq_ignore_ascii_case(id),
            PeerRef::Address(address) => match (address.parse::<SocketAddr>(), info.socket_addr()) {
                (Ok(wanted), Some(theirs)) => wanted == theirs,
                _ => info.rpc_addr == *address,
            },
        }
    }
}

/// Why `operator raft remove-peer` did not remove a server.
#[derive(Debug, thiserror::Error)]
pub enum RemovePeerError {
    /// No server in the configuration matches. Nothing changed.
    #[error("{0} was not found in the Raft configuration")]
    NotFound(PeerRef),
    /// openraft refused the change (no voter would be left, or another change was still under
    /// way when the hold timeout ran out). Nothing changed.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl Server {
    /// The Raft configuration as this server knows it (the configuration is replicated, so a
    /// follower's is the leader's as of its last append).
    pub fn raft_configuration(&self) -> RaftConfiguration {
        let metrics = self.raft.metrics().borrow().clone();
        let stored = &metrics.membership_config;
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut servers: Vec<RaftPeer> = membership
            .nodes()
            .map(|(id, info)| RaftPeer {
                id: *id,
                info: info.clone(),
                leader: metrics.current_leader == Some(*id),
                voter: voters.contains(id),
            })
            .collect();
        servers.sort_by(|a, b| (&a.info.name, a.id).cmp(&(&b.info.name, b.id)));
        RaftConfiguration { servers, index: stored.log_id().map_or(0, |log_id| log_id.index) }
    }

    /// Remove a server from the Raft configuration through the leader (forwarded when this
    /// server follows), as `DELETE /v1/operator/raft/peer` does.
    pub async fn remove_peer(&self, peer: &PeerRef) -> Result<(), RemovePeerError> {
        let deadline = Instant::now() + self.limits.hold_timeout;
        loop {
            let attempt = match self.leader_target() {
                LeaderTarget::Me => self.remove_peer_as_leader(peer).await,
                LeaderTarget::Peer(leader) => self.forward_remove_peer(&leader, peer).await,
                LeaderTarget::Unknown => Err(MembershipError::Leader(LeaderError::NotLeader { leader: None })),
            };
            match attempt {
                Ok(()) => return Ok(()),
                // Both pass: a leader appears, a change under way (autopilot's, say) commits.
                Err(MembershipError::Leader(LeaderError::NotLeader { .. }) | MembershipError::InProgress)
                    if Instant::now() < deadline =>
                {
                    self.wait_for_leader_change(deadline).await
                }
                Err(e @ MembershipError::InProgress) => return Err(RemovePeerError::Refused(e.to_string())),
                Err(MembershipError::Leader(LeaderError::NotLeader { .. })) => return Err(ServerError::NoLeader.into()),
                Err(MembershipError::Leader(LeaderError::Timeout)) => return Err(ServerError::Indeterminate.into()),
                Err(MembershipError::Leader(LeaderError::Stopped(why))) => return Err(ServerError::Stopped(why).into()),
                Err(e @ MembershipError::Refused(_)) => return Err(RemovePeerError::Refused(e.to_string())),
                Err(MembershipError::NotFound(peer)) => return Err(RemovePeerError::NotFound(peer)),
            }
        }
    }

    /// Remove `peer` with the local Raft, which must lead. Peers' forwarded requests land here
    /// and are never forwarded again.
    pub async fn remove_peer_as_leader(&self, peer: &PeerRef) -> Result<(), MembershipError> {
        if self.raft.metrics().borrow().current_leader != Some(self.id) {
            return Err(MembershipError::Leader(LeaderError::NotLeader { leader: self.leader() }));
        }
        let configuration = self.raft_configuration();
        let Some(target) = configuration.servers.iter().find(|server| peer.matches(&server.info)) else {
            return Err(MembershipError::NotFound(peer.clone()));
        };
        tracing::info!(server = %target.info, "operator: removing a server from the Raft configuration");
        self.change_membership(&MembershipAction::Remove(target.id, RemovalReason::Operator)).await
    }

    async fn forward_remove_peer(&self, leader: &ServerInfo, peer: &PeerRef) -> Result<(), MembershipError> {
        let not_leader = MembershipError::Leader(LeaderError::NotLeader { leader: None });
        let Some(addr) = leader.socket_addr() else { return Err(not_leader) };
        let request = Request::RemovePeer(peer.clone());
        match self.rpc.call::<_, Response>(addr, &request, self.limits.rpc_timeout).await {
            Ok(Response::RemovePeer(result)) => result,
            Ok(_) => Err(MembershipError::Leader(LeaderError::Stopped("leader sent an unexpected response".into()))),
            Err(e) if e.not_delivered() => Err(not_leader),
            Err(_) => Err(MembershipError::Leader(LeaderError::Timeout)),
        }
    }

    /// Before this server leaves the pool gracefully: if it leads a configuration with other
    /// voters, it removes itself first, so quorum shrinks with it instead of counting a server
    /// that is about to be gone (Consul's server `Leave` does the same). openraft keeps it
    /// leading until that configuration commits, then it steps down and the others elect a
    /// leader. A follower has nothing to do: the leader removes it when gossip shows it left.
    pub async fn leave_raft(&self) -> Result<(), MembershipError> {
        let deadline = Instant::now() + self.limits.hold_timeout;
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            let voters = metrics.membership_config.membership().voter_ids().count();
            if metrics.state != ServerState::Leader || voters <= 1 {
                return Ok(());
            }
            tracing::info!("leaving: removing this server, the leader, from the Raft configuration");
            match self.change_membership(&MembershipAction::Remove(self.id, RemovalReason::Left)).await {
                // Autopilot's change under way commits first; then ours.
                Err(MembershipError::InProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                result => return result,
            }
        }
    }

    /// Apply one configuration change with the local Raft, which must lead. A removal takes the
    /// server out entirely (a voter is not kept as a learner).
    pub async fn change_membership(&self, action: &MembershipAction) -> Result<(), MembershipError> {
        let _one_at_a_time = self.membership_changes.lock().await;
        let raft = &self.raft;
        // A leader that has removed itself keeps leading until that change is applied, then steps
        // down; openraft 0.9 must not be handed another change in between (it asserts).
        let metrics = raft.metrics().borrow().clone();
        let leads_as_voter = metrics.state == ServerState::Leader
            && metrics.membership_config.membership().voter_ids().any(|voter| voter == self.id);
        if !leads_as_voter {
            return Err(MembershipError::Leader(LeaderError::NotLeader { leader: None }));
        }
        // A configuration change commits twice (the joint configuration, then the final one).
        let limit = self.limits.commit_timeout * 2;
        let change = async {
            match action {
                MembershipAction::AddLearner(info) => {
                    raft.add_learner(raft_id_from_node_id(&info.node_id), info.clone(), false).await
                }
                MembershipAction::Promote(id) => {
                    raft.change_membership(ChangeMembers::AddVoterIds([*id].into()), true).await
                }
                MembershipAction::Remove(id, _) => {
                    let is_voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == *id);
                    let change = if is_voter {
                        ChangeMembers::RemoveVoters([*id].into())
                    } else {
                        ChangeMembers::RemoveNodes([*id].into())
                    };
                    raft.change_membership(change, false).await
                }
            }
        };
        match crate::io::timeout(limit, change).await {
            Err(_) => Err(MembershipError::Leader(LeaderError::Timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(MembershipError::Leader(LeaderError::NotLeader { leader: f.leader_node }))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )))) => Err(MembershipError::InProgress),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(MembershipError::Refused(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(MembershipError::Leader(LeaderError::Stopped(fatal.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests;
