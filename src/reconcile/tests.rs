use std::net::SocketAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use tokio::time::Instant;

use super::*;
use crate::gossip::MemberMeta;
use crate::state::State;

const DC: &str = "dc1";
/// The leader's own node name.
const LEADER: &str = "leader";

fn uuid(n: u8) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// Member `name` with node ID `uuid(n)` at 10.0.0.n, a client unless `server`.
fn member(name: &str, n: u8, server: bool, status: MemberStatus) -> Member {
    Member {
        name: name.into(),
        addr: SocketAddr::from(([10, 0, 0, n], 8301)),
        meta: MemberMeta {
            role: if server { Role::Server } else { Role::Client },
            datacenter: DC.into(),
            node_id: uuid(n),
            server_port: server.then_some(8300),
            build: "0.1.0".into(),
            protocol: 2,
        },
        status,
        generation: 1,
        status_since: Instant::now(),
    }
}

fn gossip(members: impl IntoIterator<Item = Member>) -> Membership {
    let leader = member(LEADER, 1, true, MemberStatus::Alive);
    Membership::from_members(std::iter::once(leader).chain(members))
}

/// A state and the index of its last write.
#[derive(Default)]
struct Catalogue {
    state: State,
}

impl Catalogue {
    fn apply(&mut self, commands: &[Command]) {
        for command in commands {
            let index = self.state.last_index() + 1;
            let outcome = self.state.apply(index, command);
            assert_eq!(outcome, Outcome::Done, "{command:?}");
        }
        self.state.check_consistency().expect("a consistent catalog");
    }

    fn plan(&self, gossip: &Membership) -> Vec<Command> {
        plan(gossip, self.state.catalog(), DC, LEADER)
    }

    /// Plan, apply, and check that planning again asks for nothing: one pass converges.
    fn reconcile(&mut self, gossip: &Membership) -> Vec<Command> {
        let commands = self.plan(gossip);
        self.apply(&commands);
        assert_eq!(self.plan(gossip), [], "a second pass after {commands:?}");
        commands
    }

    fn catalog(&self) -> &Catalog {
        self.state.catalog()
    }

    fn serf_health(&self, node: &str) -> Option<(CheckStatus, String)> {
        let check = self.catalog().check(node, SERF_HEALTH_CHECK_ID)?;
        assert_eq!(check.name, SERF_HEALTH_CHECK_NAME);
        Some((check.status, check.output.clone()))
    }

    /// Register a node as `/v1/catalog/register` or an agent's anti-entropy would: a service
    /// `web` and whatever `checks`.
    fn register_by_hand(&mut self, node: &str, node_id: &str, checks: Vec<CheckDefinition>) {
        let registration = Registration {
            node: node.into(),
            node_id: node_id.into(),
            address: "192.0.2.7".into(),
            service: Some(ServiceDefinition { service: "web".into(), port: 80, ..Default::default() }),
            checks,
            ..Default::default()
        };
        self.apply(&[Command::Catalog(CatalogCommand::Register(registration))]);
    }
}

fn passing() -> Option<(CheckStatus, String)> {
    Some((CheckStatus::Passing, SERF_ALIVE_OUTPUT.into()))
}

fn critical() -> Option<(CheckStatus, String)> {
    Some((CheckStatus::Critical, SERF_FAILED_OUTPUT.into()))
}

/// An alive client becomes a node at its gossip IP, with its node ID and a passing serfHealth.
#[test]
fn an_alive_member_is_registered_passing() {
    let mut catalog = Catalogue::default();
    let commands = catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    assert_eq!(commands.len(), 2, "the leader and c1: {commands:?}");
    let node = catalog.catalog().node("c1").expect("c1 is registered");
    assert_eq!((node.address.as_str(), node.id.as_str()), ("10.0.0.2", uuid(2).as_str()));
    assert_eq!(catalog.serf_health("c1"), passing());
    assert_eq!(catalog.catalog().services_of_node("c1").count(), 0, "clients get no consul service");
}

/// A server also carries the `consul` service on its server RPC port, with Consul's metadata.
#[test]
fn servers_carry_the_consul_service() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("s2", 2, true, MemberStatus::Alive)]));
    let service = catalog.catalog().service("s2", CONSUL_SERVICE).expect("the consul service");
    assert_eq!((service.service.as_str(), service.port), (CONSUL_SERVICE, 8300));
    assert_eq!(service.meta.get("version").map(String::as_str), Some("0.1.0"));
    assert_eq!(service.meta.get("raft_version").map(String::as_str), Some("3"));
    let servers: Vec<&str> =
        catalog.catalog().service_instances(CONSUL_SERVICE).iter().map(|(n, _)| n.node.as_str()).collect();
    assert_eq!(servers, [LEADER, "s2"]);
}

/// A suspect member is still passing: suspicion may be refuted.
#[test]
fn a_suspect_member_stays_passing() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    assert_eq!(catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Suspect)])), []);
    assert_eq!(catalog.serf_health("c1"), passing());
}

/// A failed member's serfHealth turns critical; its services stay, to come back when it does.
#[test]
fn a_failed_member_turns_critical_and_back() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("s2", 2, true, MemberStatus::Alive)]));
    let commands = catalog.reconcile(&gossip([member("s2", 2, true, MemberStatus::Failed)]));
    assert_eq!(commands.len(), 1);
    assert_eq!(catalog.serf_health("s2"), critical());
    assert!(catalog.catalog().service("s2", CONSUL_SERVICE).is_some());
    assert_eq!(catalog.catalog().node("s2").map(|n| n.address.as_str()), Some("10.0.0.2"));

    catalog.reconcile(&gossip([member("s2", 2, true, MemberStatus::Alive)]));
    assert_eq!(catalog.serf_health("s2"), passing());
}

/// A member seen only as failed was never in the catalog and is not added.
#[test]
fn a_member_that_failed_unseen_is_not_added() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([]));
    assert_eq!(catalog.plan(&gossip([member("c1", 2, false, MemberStatus::Failed)])), []);
}

/// A member that left is deregistered with everything on it, its agent's own services included.
#[test]
fn a_member_that_left_is_deregistered_entirely() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    catalog.register_by_hand("c1", &uuid(2), vec![]);
    assert!(catalog.catalog().service("c1", "web").is_some());
    let commands = catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Left)]));
    assert_eq!(commands.len(), 1);
    assert!(catalog.catalog().node("c1").is_none());
    assert_eq!(catalog.catalog().checks_of_node("c1").count(), 0);
    assert!(catalog.catalog().service_instances("web").is_empty());
}

/// A member reaped from gossip (gone from the view) is deregistered since it has serfHealth.
#[test]
fn a_reaped_member_is_deregistered() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Failed)]));
    catalog.reconcile(&gossip([]));
    assert!(catalog.catalog().node("c1").is_none());
}

/// Nodes registered through the catalog API without serfHealth (external services) are kept,
/// whatever gossip says.
#[test]
fn nodes_without_serf_health_are_kept() {
    let mut catalog = Catalogue::default();
    let mem_check = CheckDefinition { check_id: "mem".into(), status: CheckStatus::Passing, ..Default::default() };
    catalog.register_by_hand("external", "", vec![mem_check]);
    assert_eq!(catalog.reconcile(&gossip([])).len(), 1, "only the leader is registered");
    assert!(catalog.catalog().node("external").is_some());
}

/// The leader is never deregistered by its own reconciliation, even when gossip says it left.
#[test]
fn the_leader_never_deregisters_itself() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([]));
    let leaving = Membership::from_members([member(LEADER, 1, true, MemberStatus::Left)]);
    assert_eq!(catalog.plan(&leaving), []);
}

/// Members of other datacenters are neither registered nor, while in the view, reaped.
#[test]
fn other_datacenters_are_ignored() {
    let mut catalog = Catalogue::default();
    let mut elsewhere = member("c9", 9, false, MemberStatus::Alive);
    elsewhere.meta.datacenter = "dc2".into();
    catalog.reconcile(&gossip([elsewhere]));
    assert!(catalog.catalog().node("c9").is_none());
}

/// A member back under its name with a new node ID replaces the old node: the old identity's
/// services go with it, even though its serfHealth was passing (which would make the catalog
/// refuse the name to the new ID).
#[test]
fn a_new_identity_replaces_the_old_node() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    catalog.register_by_hand("c1", &uuid(2), vec![]);
    let commands = catalog.reconcile(&gossip([member("c1", 3, false, MemberStatus::Alive)]));
    assert!(matches!(&commands[0], Command::Catalog(CatalogCommand::Deregister(d)) if d.node == "c1"));
    let node = catalog.catalog().node("c1").expect("c1 is registered again");
    assert_eq!((node.id.as_str(), node.address.as_str()), (uuid(3).as_str(), "10.0.0.3"));
    assert!(catalog.catalog().service("c1", "web").is_none(), "the old identity's service is gone");
    assert_eq!(catalog.serf_health("c1"), passing());
}

/// Re-registering a member (its address changed) keeps the tagged addresses and metadata its
/// agent synced.
#[test]
fn re_registration_keeps_node_metadata() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("c1", 2, false, MemberStatus::Alive)]));
    let synced = Registration {
        node: "c1".into(),
        node_id: uuid(2),
        address: "10.0.0.2".into(),
        tagged_addresses: BTreeMap::from([("lan".into(), "10.0.0.2".into())]),
        node_meta: BTreeMap::from([("rack".into(), "r1".into())]),
        ..Default::default()
    };
    catalog.apply(&[Command::Catalog(CatalogCommand::Register(synced))]);
    let mut moved = member("c1", 2, false, MemberStatus::Alive);
    moved.addr = SocketAddr::from(([10, 0, 1, 2], 8301));
    assert_eq!(catalog.reconcile(&gossip([moved])).len(), 1);
    let node = catalog.catalog().node("c1").unwrap();
    assert_eq!(node.address, "10.0.1.2");
    assert_eq!(node.meta.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(node.tagged_addresses.get("lan").map(String::as_str), Some("10.0.0.2"));
}

/// An agent renamed while its old name lingers as failed: the live name owns the node ID, and
/// the catalog settles on it instead of renaming the node back and forth.
#[test]
fn two_names_with_one_node_id_settle_on_the_live_one() {
    let mut catalog = Catalogue::default();
    catalog.reconcile(&gossip([member("old", 2, false, MemberStatus::Alive)]));
    let renamed = gossip([member("old", 2, false, MemberStatus::Failed), member("new", 2, false, MemberStatus::Alive)]);
    catalog.reconcile(&renamed);
    assert!(catalog.catalog().node("old").is_none(), "the registration under the new name renamed the node");
    assert_eq!(catalog.serf_health("new"), passing());
}

/// The planner over the state machine's own catalog, step by step through a member's life:
/// every step converges in one pass and the catalog stays consistent.
#[test]
fn plan_and_apply_round_trip_through_a_members_life() {
    let mut catalog = Catalogue::default();
    for status in
        [MemberStatus::Alive, MemberStatus::Suspect, MemberStatus::Failed, MemberStatus::Alive, MemberStatus::Left]
    {
        catalog.reconcile(&gossip([member("s2", 2, true, status)]));
        let expected = match status {
            MemberStatus::Alive | MemberStatus::Suspect => passing(),
            MemberStatus::Failed => critical(),
            MemberStatus::Left => None,
        };
        assert_eq!(catalog.serf_health("s2"), expected, "{status:?}");
    }
}

const NAMES: &[&str] = &["a", "b", "c"];
const STATUSES: &[MemberStatus] =
    &[MemberStatus::Alive, MemberStatus::Suspect, MemberStatus::Failed, MemberStatus::Left];

/// A random gossip view over a few names and node IDs (so identities collide), some members
/// absent (reaped).
fn view() -> impl Strategy<Value = Membership> {
    let one = (select(NAMES), 2u8..5, any::<bool>(), select(STATUSES), any::<bool>());
    vec(one, 0..5).prop_map(|members| {
        gossip(members.into_iter().map(|(name, id, server, status, _)| member(name, id, server, status)))
    })
}

proptest! {
    /// Through any sequence of gossip views, each reconciliation converges in one pass (planning
    /// again asks for nothing), every write is accepted, and the catalog ends up saying what
    /// gossip says about every live member.
    #[test]
    fn any_sequence_of_views_converges(views in vec(view(), 1..8)) {
        let mut catalog = Catalogue::default();
        for view in &views {
            catalog.reconcile(view);
            for member in owners(view, DC) {
                let health = catalog.serf_health(&member.name);
                if matches!(member.status, MemberStatus::Alive | MemberStatus::Suspect) {
                    prop_assert_eq!(health, passing(), "{:?}", member);
                } else if member.status == MemberStatus::Left && member.name != LEADER {
                    prop_assert!(catalog.catalog().node(&member.name).is_none());
                }
            }
        }
    }
}
