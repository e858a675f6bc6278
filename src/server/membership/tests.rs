use std::net::SocketAddr;

use super::*;
use crate::gossip::{MemberMeta, Role};

const DC: &str = "dc1";

/// Node IDs whose Raft IDs are easy to read: `uuid(3)` maps to Raft ID 3.
fn uuid(n: u64) -> String {
    format!("{n:016x}-0000-4000-8000-000000000000")
}

fn ip(n: u64) -> [u8; 4] {
    [10, 0, 0, n as u8]
}

fn member(n: u64, status: MemberStatus, since: Instant) -> Member {
    Member {
        name: format!("s{n}"),
        addr: SocketAddr::from((ip(n), 8301)),
        meta: MemberMeta {
            role: Role::Server,
            datacenter: DC.into(),
            node_id: uuid(n),
            server_port: Some(8300),
            build: "0.1.0".into(),
            protocol: 2,
        },
        status,
        generation: 1,
        status_since: since,
    }
}

fn info(n: u64) -> ServerInfo {
    ServerInfo {
        name: format!("s{n}"),
        node_id: uuid(n),
        rpc_addr: SocketAddr::from((ip(n), 8300)).to_string(),
        lan_addr: SocketAddr::from((ip(n), 8301)).to_string(),
    }
}

/// Server 1 leads; `voters` and `learners` list the others. Every member is caught up.
fn view(voters: &[u64], learners: &[u64]) -> RaftMembershipView {
    let members = |ids: &[u64]| ids.iter().map(|n| (*n, info(*n))).collect::<BTreeMap<_, _>>();
    let mut voters = members(voters);
    voters.insert(1, info(1));
    let learners = members(learners);
    let followers = || voters.keys().chain(learners.keys()).filter(|id| **id != 1);
    let matched = followers().map(|id| (*id, 1000)).collect();
    let last_contact = followers().map(|id| (*id, Duration::from_millis(50))).collect();
    RaftMembershipView { leader: 1, voters, learners, last_log_index: 1000, matched, last_contact, changing: false }
}

/// A gossip view where every server of `view` is alive since `since`, plus `extra` members.
fn gossip_of(ids: &[u64], since: Instant, extra: Vec<Member>) -> Membership {
    Membership::from_members(ids.iter().map(|n| member(*n, MemberStatus::Alive, since)).chain(extra))
}

fn settings() -> AutopilotSettings {
    AutopilotSettings::default()
}

/// An instant far enough from `now` that every delay has run out.
fn long_ago(now: Instant) -> Instant {
    now.checked_sub(Duration::from_secs(3600)).expect("the clock is past an hour")
}

/// A new alive server of our datacenter joins as a learner, with its RPC and gossip addresses.
#[test]
fn a_new_alive_server_becomes_a_learner() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![member(4, MemberStatus::Alive, now)]);
    let actions = plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings());
    assert_eq!(actions, [MembershipAction::AddLearner(info(4))]);
}

/// A server that is suspect or failed when first seen is not added until it is alive.
#[test]
fn only_alive_servers_are_added() {
    let now = Instant::now();
    for status in [MemberStatus::Suspect, MemberStatus::Failed, MemberStatus::Left] {
        let gossip = gossip_of(&[1], now, vec![member(4, status, now)]);
        assert_eq!(plan(&view(&[], &[]), &gossip, DC, now, &settings()), [], "{status:?}");
    }
}

/// A caught-up learner that has been alive for the stabilization time is promoted; one that
/// trails the leader by more than `max_trailing_logs`, or joined too recently, stays a learner.
#[test]
fn caught_up_stable_learners_are_promoted() {
    let now = Instant::now();
    let stable_since = now - Duration::from_secs(11);
    let gossip = gossip_of(
        &[1, 2, 3],
        stable_since,
        vec![
            member(4, MemberStatus::Alive, stable_since),
            member(5, MemberStatus::Alive, stable_since),
            member(6, MemberStatus::Alive, now - Duration::from_secs(5)),
        ],
    );
    let mut current = view(&[2, 3], &[4, 5, 6]);
    current.matched.insert(4, 1000 - 250); // exactly at the threshold
    current.matched.insert(5, 1000 - 251); // one entry too far behind
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), [MembershipAction::Promote(4)]);

    // Once 5 catches up and 6 has been stable long enough, both are promoted.
    current.matched.insert(5, 999);
    let later = now + Duration::from_secs(6);
    let actions = plan(&current, &gossip, DC, later, &settings());
    let expected = [4, 5, 6].map(MembershipAction::Promote);
    assert_eq!(actions, expected);
}

/// A learner the leader has no replication progress for (never reached) is not promoted.
#[test]
fn a_learner_without_progress_is_not_promoted() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2], long_ago(now), vec![]);
    let mut current = view(&[], &[2]);
    current.matched.remove(&2);
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), []);
}

/// A caught-up, stable learner that has not answered the leader within `last_contact_threshold`
/// (or never has) stays a learner: as a voter it would slow every commit.
#[test]
fn a_learner_out_of_contact_is_not_promoted() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![]);
    let mut current = view(&[], &[2, 3]);
    current.last_contact.insert(2, Duration::from_millis(201));
    current.last_contact.remove(&3);
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), []);
    current.last_contact.insert(2, Duration::from_millis(200));
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), [MembershipAction::Promote(2)]);
}

/// Every learner `plan` does not promote is reported with the first condition it fails and the
/// values that fail it (the stabilization time in force among them); the one it promotes is not.
#[test]
fn learners_left_waiting_say_why() {
    let now = Instant::now();
    let gossip = gossip_of(
        &[1, 2, 4, 5, 6],
        long_ago(now),
        vec![member(3, MemberStatus::Alive, now - Duration::from_secs(2)), member(7, MemberStatus::Suspect, now)],
    );
    let mut current = view(&[], &[2, 3, 4, 5, 6, 7]);
    current.matched.insert(4, 1000 - 251);
    current.matched.remove(&5);
    current.last_contact.insert(6, Duration::from_millis(201));
    let needed = settings().server_stabilization_time;
    assert_eq!(
        promotion_waits(&current, &gossip, DC, now, &settings()),
        [
            (3, PromotionWait::Stabilizing { alive_for: Duration::from_secs(2), needed }),
            (4, PromotionWait::Trailing { behind: Some(251) }),
            (5, PromotionWait::Trailing { behind: None }),
            (6, PromotionWait::OutOfContact { since: Some(Duration::from_millis(201)) }),
            (7, PromotionWait::NotAlive),
        ]
    );
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), [MembershipAction::Promote(2)]);
}

/// A server that left gracefully is removed at once, voter or learner.
#[test]
fn left_servers_are_removed_at_once() {
    let now = Instant::now();
    let gossip = gossip_of(
        &[1, 2, 3],
        long_ago(now),
        vec![member(4, MemberStatus::Left, now), member(5, MemberStatus::Left, now)],
    );
    let actions = plan(&view(&[2, 3, 4], &[5]), &gossip, DC, now, &settings());
    assert_eq!(
        actions,
        [MembershipAction::Remove(5, RemovalReason::Left), MembershipAction::Remove(4, RemovalReason::Left)]
    );
}

/// A failed server is removed only once it has been failed for `dead_server_cleanup_after`, and
/// never when cleanup is switched off.
#[test]
fn failed_servers_are_removed_after_the_cleanup_delay() {
    let now = Instant::now();
    let failed_at = now - Duration::from_secs(10);
    let gossip = gossip_of(&[1, 2, 3, 4], long_ago(now), vec![member(5, MemberStatus::Failed, failed_at)]);
    let current = view(&[2, 3, 4, 5], &[]);
    let settings = AutopilotSettings { dead_server_cleanup_after: Duration::from_secs(30), ..settings() };
    assert_eq!(plan(&current, &gossip, DC, now, &settings), []);
    let later = failed_at + Duration::from_secs(30);
    assert_eq!(plan(&current, &gossip, DC, later, &settings), [MembershipAction::Remove(5, RemovalReason::Failed)]);
    let off = AutopilotSettings { cleanup_dead_servers: false, ..settings };
    assert_eq!(plan(&current, &gossip, DC, later, &off), []);
}

/// Failed voters are removed only while the voters left keep a quorum of alive servers: of five
/// voters with two failed, both go (three alive of three remain); of three with two failed, none
/// goes (one alive of two would be no quorum).
#[test]
fn removals_keep_a_quorum_of_alive_voters() {
    let now = Instant::now();
    let failed = |n| member(n, MemberStatus::Failed, long_ago(now));
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![failed(4), failed(5)]);
    let actions = plan(&view(&[2, 3, 4, 5], &[]), &gossip, DC, now, &settings());
    assert_eq!(
        actions,
        [MembershipAction::Remove(4, RemovalReason::Failed), MembershipAction::Remove(5, RemovalReason::Failed)]
    );

    let gossip = gossip_of(&[1], long_ago(now), vec![failed(2), failed(3)]);
    assert_eq!(plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings()), []);
}

/// Gossip failing four of seven voters while Raft may still reach them: removing one would leave
/// three alive of six, no quorum, so nothing is removed (raft-autopilot would remove up to three).
#[test]
fn a_gossip_majority_failure_removes_nothing() {
    let now = Instant::now();
    let failed = |n| member(n, MemberStatus::Failed, long_ago(now));
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![failed(4), failed(5), failed(6), failed(7)]);
    assert_eq!(plan(&view(&[2, 3, 4, 5, 6, 7], &[]), &gossip, DC, now, &settings()), []);
}

/// Dead-server cleanup stops at `min_quorum` voters; a server that left still goes.
#[test]
fn cleanup_stops_at_min_quorum() {
    let now = Instant::now();
    let gossip = gossip_of(
        &[1, 2],
        long_ago(now),
        vec![member(3, MemberStatus::Failed, long_ago(now)), member(4, MemberStatus::Left, now)],
    );
    let settings = AutopilotSettings { min_quorum: 3, ..settings() };
    let actions = plan(&view(&[2, 3, 4], &[]), &gossip, DC, now, &settings);
    assert_eq!(actions, [MembershipAction::Remove(4, RemovalReason::Left)]);
}

/// The leader never removes itself, even when gossip says it left: a follower removes it after
/// it stops.
#[test]
fn the_leader_never_removes_itself() {
    let now = Instant::now();
    let gossip = gossip_of(&[2, 3], long_ago(now), vec![member(1, MemberStatus::Left, now)]);
    assert_eq!(plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings()), []);
}

/// Servers of another datacenter and client agents are neither added nor counted.
#[test]
fn other_datacenters_and_clients_are_ignored() {
    let now = Instant::now();
    let mut elsewhere = member(4, MemberStatus::Alive, long_ago(now));
    elsewhere.meta.datacenter = "dc2".into();
    let mut client = member(5, MemberStatus::Alive, long_ago(now));
    client.meta.role = Role::Client;
    client.meta.server_port = None;
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![elsewhere, client]);
    assert_eq!(plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings()), []);
}

/// A configuration entry whose server is missing from gossip is kept: the view may simply not
/// have converged yet.
#[test]
fn servers_absent_from_gossip_are_kept() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2], long_ago(now), vec![]);
    assert_eq!(plan(&view(&[2, 3], &[4]), &gossip, DC, now, &settings()), []);
}

/// A server that comes back under the same name with a new node ID replaces its old entry: the
/// old one is removed at once and the new one joins as a learner.
#[test]
fn a_new_identity_under_the_same_name_replaces_the_old_entry() {
    let now = Instant::now();
    let mut reborn = member(9, MemberStatus::Alive, now);
    reborn.name = "s3".into();
    reborn.addr = SocketAddr::from((ip(3), 8301));
    let gossip = gossip_of(&[1, 2], long_ago(now), vec![reborn]);
    let actions = plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings());
    let new_info = ServerInfo { name: "s3".into(), node_id: uuid(9), ..info(3) };
    assert_eq!(
        actions,
        [MembershipAction::Remove(3, RemovalReason::Superseded), MembershipAction::AddLearner(new_info)]
    );
}

/// Likewise for a new identity at the same RPC address under another name, even while the old
/// name still shows as failed.
#[test]
fn a_new_identity_at_the_same_address_replaces_the_old_entry() {
    let now = Instant::now();
    let mut successor = member(9, MemberStatus::Alive, now);
    successor.addr = SocketAddr::from((ip(3), 8301));
    let gossip = gossip_of(&[1, 2], long_ago(now), vec![member(3, MemberStatus::Failed, now), successor]);
    let actions = plan(&view(&[2, 3], &[]), &gossip, DC, now, &settings());
    assert_eq!(actions[0], MembershipAction::Remove(3, RemovalReason::Superseded));
    assert!(matches!(&actions[1], MembershipAction::AddLearner(info) if info.node_id == uuid(9)));
}

/// Nothing is planned while a configuration change is under way: openraft takes one at a time.
#[test]
fn nothing_is_planned_during_a_change() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![member(4, MemberStatus::Alive, now)]);
    let current = RaftMembershipView { changing: true, ..view(&[2, 3], &[]) };
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), []);
}

/// A matching cluster needs nothing, and planning is the same every time (no hidden state).
#[test]
fn a_matching_configuration_needs_nothing() {
    let now = Instant::now();
    let gossip = gossip_of(&[1, 2, 3], long_ago(now), vec![]);
    let current = view(&[2, 3], &[]);
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), []);
    assert_eq!(plan(&current, &gossip, DC, now, &settings()), []);
}

/// Operators name servers by node ID (any case) or by RPC address (as text or socket address).
#[test]
fn peer_references_match_id_or_address() {
    let server = info(3);
    assert!(PeerRef::Id(uuid(3).to_uppercase()).matches(&server));
    assert!(!PeerRef::Id(uuid(4)).matches(&server));
    assert!(PeerRef::Address("10.0.0.3:8300".into()).matches(&server));
    assert!(!PeerRef::Address("10.0.0.3:8301".into()).matches(&server));
    assert!(!PeerRef::Address("s3".into()).matches(&server));
}

/// The leader's view comes from openraft's metrics: voters, learners, replication progress, and
/// whether a change is still under way; a follower has no view.
#[test]
fn the_view_is_read_from_leader_metrics() {
    let log_id = |index| openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), index);
    let nodes: BTreeMap<NodeId, ServerInfo> = [1, 2, 3].into_iter().map(|n| (n, info(n))).collect();
    let membership = openraft::Membership::new(vec![[1, 2].into()], nodes);
    let mut metrics = Metrics::new_initial(1);
    metrics.state = ServerState::Leader;
    metrics.last_log_index = Some(40);
    metrics.last_applied = Some(log_id(40));
    metrics.membership_config = Arc::new(openraft::StoredMembership::new(Some(log_id(30)), membership));
    metrics.replication = Some([(2, Some(log_id(39))), (3, None)].into());

    let view = RaftMembershipView::from_metrics(&metrics, BTreeMap::new()).expect("a leader has a view");
    assert_eq!(view.voters.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(view.learners.keys().copied().collect::<Vec<_>>(), [3]);
    assert_eq!((view.leader, view.last_log_index), (1, 40));
    assert_eq!(view.matched, BTreeMap::from([(2, 39)]));
    assert!(!view.changing);

    // A configuration entry not yet applied means a change is still in flight.
    metrics.last_applied = Some(log_id(29));
    assert!(RaftMembershipView::from_metrics(&metrics, BTreeMap::new()).unwrap().changing);

    metrics.state = ServerState::Follower;
    assert_eq!(RaftMembershipView::from_metrics(&metrics, BTreeMap::new()), None);
}
