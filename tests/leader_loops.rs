//! The leader loops on real servers in this process (127.0.0.1, ephemeral ports), fed a
//! hand-made gossip view: autopilot adds a second server as a learner, promotes it once caught
//! up, and removes it when it leaves (an operator's removal sent to the follower is forwarded to
//! the leader); catalog reconciliation registers members and follows their health.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cairn::config::{AgentConfig, GossipSettings, LogLevel, Ports, RaftSettings};
use cairn::gossip::{Member, MemberMeta, MemberStatus, Membership, Role};
use cairn::node::NodeHandle;
use cairn::reconcile;
use cairn::server::membership::{self, AutopilotSettings, RaftConfiguration};
use cairn::server::Server;
use cairn::state::{CheckStatus, SERF_HEALTH_CHECK_ID};
use cairn::storage::MemDisk;
use tokio::sync::watch;
use tokio::time::Instant;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LIMIT: Duration = Duration::from_secs(20);

fn config(name: &str, bootstrap: bool) -> AgentConfig {
    AgentConfig {
        node_name: name.into(),
        node_id: None,
        datacenter: "dc1".into(),
        server: true,
        dev: false,
        bootstrap_expect: bootstrap.then_some(1),
        bootstrap: false,
        data_dir: None,
        bind_addr: LOCALHOST,
        advertise_addr: None,
        client_addr: LOCALHOST,
        retry_join: vec![],
        retry_interval: Duration::from_secs(1),
        retry_max: 0,
        // Port 0 everywhere: the kernel picks free ports and the agent advertises what it got.
        ports: Ports { http: 0, dns: 0, server: 0, serf_lan: 0, serf_wan: 0 },
        log_level: LogLevel::Info,
        raft: RaftSettings::default(),
        gossip: GossipSettings { disable_keyring_file: true, ..GossipSettings::defaults_for(true) },
        autopilot: cairn::config::AutopilotSettings::default(),
        ignored_keys: vec![],
    }
}

async fn start(name: &str, bootstrap: bool) -> NodeHandle {
    cairn::node::start(&config(name, bootstrap), Arc::new(MemDisk::new())).await.expect("the server starts")
}

/// How `server` appears in gossip, alive since long enough to be stable.
fn member_of(server: &Server, status: MemberStatus) -> Member {
    let info = server.info();
    let lan = info.lan_socket_addr().expect("a LAN address");
    member(&info.name, &info.node_id, lan, info.socket_addr().map(|rpc| rpc.port()), status)
}

fn member(name: &str, node_id: &str, addr: SocketAddr, server_port: Option<u16>, status: MemberStatus) -> Member {
    Member {
        name: name.into(),
        addr,
        meta: MemberMeta {
            role: if server_port.is_some() { Role::Server } else { Role::Client },
            datacenter: "dc1".into(),
            node_id: node_id.into(),
            server_port,
            build: "0.1.0".into(),
            protocol: 2,
        },
        status,
        generation: 1,
        status_since: Instant::now() - Duration::from_secs(60),
    }
}

/// (name, voter) of each server in `configuration`.
fn roles(configuration: &RaftConfiguration) -> Vec<(String, bool)> {
    configuration.servers.iter().map(|peer| (peer.info.name.clone(), peer.voter)).collect()
}

/// Wait until `server`'s Raft configuration has exactly `expected` roles.
async fn wait_for_roles(server: &Server, expected: &[(&str, bool)], what: &str) {
    let expected: Vec<(String, bool)> = expected.iter().map(|(name, voter)| (name.to_string(), *voter)).collect();
    let deadline = Instant::now() + LIMIT;
    let mut metrics = server.raft().metrics();
    while roles(&server.raft_configuration()) != expected {
        let now = Instant::now();
        assert!(now < deadline, "timed out waiting for {what}: {:?}", roles(&server.raft_configuration()));
        let _ = tokio::time::timeout(deadline - now, metrics.changed()).await;
    }
}

fn settings() -> AutopilotSettings {
    AutopilotSettings { reconcile_interval: Duration::from_millis(100), ..AutopilotSettings::default() }
}

/// A server gossip reports alive joins as a learner and is promoted once caught up; removed by
/// an operator through the follower, it comes back (gossip still says alive); once it leaves,
/// it is removed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_follows_gossip() {
    let a = start("a", true).await;
    let b = start("b", false).await;
    let (a_server, b_server) = (a.server.clone().expect("a server"), b.server.clone().expect("a server"));
    let deadline = Instant::now() + LIMIT;
    while a_server.leader().is_none() {
        assert!(Instant::now() < deadline, "a did not elect itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gossip = |b_status| {
        Membership::from_members([member_of(&a_server, MemberStatus::Alive), member_of(&b_server, b_status)])
    };
    let (gossip_tx, gossip_rx) = watch::channel(gossip(MemberStatus::Alive));
    let autopilot = tokio::spawn(membership::run(a_server.clone(), gossip_rx.clone(), settings()));
    wait_for_roles(&a_server, &[("a", true), ("b", true)], "b to be added and promoted").await;
    wait_for_roles(&b_server, &[("a", true), ("b", true)], "b to see the configuration").await;

    // With autopilot paused, an operator removes b by asking b itself: b forwards to a.
    autopilot.abort();
    let b_http = b.http_addr;
    let b_id = b_server.info().node_id.clone();
    let removed =
        tokio::task::spawn_blocking(move || common::delete(b_http, &format!("/v1/operator/raft/peer?id={b_id}")))
            .await
            .expect("the request thread");
    assert_eq!(removed.status, 200, "{}", removed.text());
    wait_for_roles(&a_server, &[("a", true)], "the operator's removal").await;

    // Gossip still has b alive, so autopilot brings it back; once b leaves, it goes.
    let autopilot = tokio::spawn(membership::run(a_server.clone(), gossip_rx, settings()));
    wait_for_roles(&a_server, &[("a", true), ("b", true)], "b to come back").await;
    gossip_tx.send_replace(gossip(MemberStatus::Left));
    wait_for_roles(&a_server, &[("a", true)], "b to be removed after leaving").await;

    autopilot.abort();
    b.shutdown().await;
    a.shutdown().await;
}

/// The serfHealth status of `node` in `server`'s catalog, `None` if the node is not there.
fn serf_health(server: &Server, node: &str) -> Option<CheckStatus> {
    let state = server.state().read();
    state.catalog().node(node)?;
    Some(state.catalog().check(node, SERF_HEALTH_CHECK_ID).map_or(CheckStatus::Maintenance, |c| c.status))
}

async fn wait_for_health(server: &Server, node: &str, expected: Option<CheckStatus>, what: &str) {
    let deadline = Instant::now() + LIMIT;
    let mut applied = server.state().subscribe();
    while serf_health(server, node) != expected {
        let now = Instant::now();
        assert!(now < deadline, "timed out waiting for {what}: {:?}", serf_health(server, node));
        let _ = tokio::time::timeout(deadline - now, applied.changed()).await;
    }
}

/// The leader registers itself (with the consul service) and a client member as gossip reports
/// them, turns the client critical when it fails and back when it returns, and deregisters it
/// once it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_follows_gossip() {
    let a = start("a", true).await;
    let a_server = a.server.clone().expect("a server");
    let client_addr = SocketAddr::from(([10, 0, 0, 9], 8301));
    let client = |status| member("c1", "00000000-0000-4000-8000-000000000009", client_addr, None, status);
    let gossip = |status| Membership::from_members([member_of(&a_server, MemberStatus::Alive), client(status)]);
    let (gossip_tx, gossip_rx) = watch::channel(gossip(MemberStatus::Alive));
    let reconciler = tokio::spawn(reconcile::run(a_server.clone(), gossip_rx));

    wait_for_health(&a_server, "c1", Some(CheckStatus::Passing), "c1 to be registered").await;
    wait_for_health(&a_server, "a", Some(CheckStatus::Passing), "the leader to register itself").await;
    {
        let state = a_server.state().read();
        let consul = state.catalog().service("a", reconcile::CONSUL_SERVICE).expect("the consul service on a");
        assert_eq!(Some(consul.port), a_server.info().socket_addr().map(|rpc| rpc.port()));
        assert_eq!(state.catalog().node("c1").map(|n| n.address.as_str()), Some("10.0.0.9"));
    }
    gossip_tx.send_replace(gossip(MemberStatus::Failed));
    wait_for_health(&a_server, "c1", Some(CheckStatus::Critical), "c1 to turn critical").await;
    gossip_tx.send_replace(gossip(MemberStatus::Alive));
    wait_for_health(&a_server, "c1", Some(CheckStatus::Passing), "c1 to pass again").await;
    gossip_tx.send_replace(gossip(MemberStatus::Left));
    wait_for_health(&a_server, "c1", None, "c1 to be deregistered").await;

    reconciler.abort();
    a.shutdown().await;
}
