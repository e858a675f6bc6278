//! The leader's gossip-driven loops on real agents in this process (127.0.0.1, ephemeral ports),
//! started by `node::start` as in production and fed by real gossip: autopilot adds a server
//! that joins the pool as a learner, promotes it once stable and caught up, and removes it when it
//! leaves (an operator's removal sent to the follower is forwarded to the leader, and gossip
//! brings the server back); catalog reconciliation registers every member with `serfHealth`,
//! turns a crashed client critical, passes it again when it restarts, and deregisters it when it
//! leaves.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use cairn::config::{AgentConfig, GossipSettings, LogLevel, Ports, RaftSettings};
use cairn::node::NodeHandle;
use cairn::reconcile;
use cairn::server::membership::RaftConfiguration;
use cairn::server::Server;
use cairn::state::{CheckStatus, SERF_HEALTH_CHECK_ID};
use cairn::storage::MemDisk;
use tokio::time::Instant;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generous: failure detection alone takes several seconds at the LAN timing, and the machine is
/// shared with other tests.
const LIMIT: Duration = Duration::from_secs(30);

fn config(name: &str, server: bool, bootstrap: bool) -> AgentConfig {
    AgentConfig {
        node_name: name.into(),
        node_id: None,
        datacenter: "dc1".into(),
        server,
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
        gossip: GossipSettings { disable_keyring_file: true, ..GossipSettings::defaults_for(server) },
        // Promote after 1 s of stability instead of Consul's 10 s, to keep the test short.
        autopilot: cairn::config::AutopilotSettings {
            server_stabilization_time: Duration::from_secs(1),
            ..cairn::config::AutopilotSettings::default()
        },
        local: Default::default(),
        dns: Default::default(),
        ignored_keys: vec![],
    }
}

async fn start(config: &AgentConfig, disk: &MemDisk) -> NodeHandle {
    cairn::node::start(config, Arc::new(disk.clone())).await.expect("the agent starts")
}

/// Start `config` and join it to the pool through `seed`.
async fn start_joined(config: &AgentConfig, disk: &MemDisk, seed: &NodeHandle) -> NodeHandle {
    let node = start(config, disk).await;
    let joined = node.gossip.join(&[seed.lan_addr]).await.expect("join through the seed");
    assert_eq!(joined, 1, "{} joins through {}", config.node_name, seed.lan_addr);
    node
}

/// Start a server that bootstraps alone and wait until it leads.
async fn start_leader(name: &str) -> NodeHandle {
    let node = start(&config(name, true, true), &MemDisk::new()).await;
    let server = node.server.clone().expect("a server");
    let deadline = Instant::now() + LIMIT;
    while server.leader().is_none() {
        assert!(Instant::now() < deadline, "{name} did not elect itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

/// (name, voter) of each server in `configuration`.
fn roles(configuration: &RaftConfiguration) -> Vec<(String, bool)> {
    configuration.servers.iter().map(|peer| (peer.info.name.clone(), peer.voter)).collect()
}

/// Wait until `server`'s Raft configuration, at an index above `after`, has exactly `expected`
/// roles; returns that index.
async fn wait_for_roles(server: &Server, expected: &[(&str, bool)], after: u64, what: &str) -> u64 {
    let expected: Vec<(String, bool)> = expected.iter().map(|(name, voter)| (name.to_string(), *voter)).collect();
    let deadline = Instant::now() + LIMIT;
    let mut metrics = server.raft().metrics();
    loop {
        let configuration = server.raft_configuration();
        if roles(&configuration) == expected && configuration.index > after {
            return configuration.index;
        }
        let now = Instant::now();
        assert!(now < deadline, "timed out waiting for {what}: {:?}", roles(&configuration));
        let _ = tokio::time::timeout(deadline - now, metrics.changed()).await;
    }
}

/// A server that joins the pool becomes a voter (through a learner stage); removed by an operator
/// through itself (forwarded to the leader), it is added back because gossip still shows it
/// alive; once it leaves the pool, it is removed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_follows_gossip() {
    let a = start_leader("a").await;
    let b = start_joined(&config("b", true, false), &MemDisk::new(), &a).await;
    let (a_server, b_server) = (a.server.clone().expect("a server"), b.server.clone().expect("a server"));

    let added = wait_for_roles(&a_server, &[("a", true), ("b", true)], 0, "b to be added and promoted").await;
    wait_for_roles(&b_server, &[("a", true), ("b", true)], 0, "b to see the configuration").await;

    let b_http = b.http_addr;
    let b_id = b_server.info().node_id.clone();
    let removed =
        tokio::task::spawn_blocking(move || common::delete(b_http, &format!("/v1/operator/raft/peer?id={b_id}")))
            .await
            .expect("the request thread");
    assert_eq!(removed.status, 200, "{}", removed.text());
    // Removal, re-addition as a learner and promotion are three more configurations.
    let back = wait_for_roles(&a_server, &[("a", true), ("b", true)], added + 2, "b to come back").await;

    b.leave_and_shutdown().await;
    wait_for_roles(&a_server, &[("a", true)], back, "b to be removed after leaving").await;
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

/// The leader registers itself (with the consul service) and a client agent that joins; the
/// client crashing turns its serfHealth critical, restarting it (same data, new generation)
/// passes it again, and its leaving deregisters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_follows_gossip() {
    let a = start_leader("a").await;
    let a_server = a.server.clone().expect("a server");
    let client_config = config("c1", false, false);
    let client_disk = MemDisk::new();
    let client = start_joined(&client_config, &client_disk, &a).await;

    wait_for_health(&a_server, "c1", Some(CheckStatus::Passing), "c1 to be registered").await;
    wait_for_health(&a_server, "a", Some(CheckStatus::Passing), "the leader to register itself").await;
    {
        let state = a_server.state().read();
        let consul = state.catalog().service("a", reconcile::CONSUL_SERVICE).expect("the consul service on a");
        assert_eq!(Some(consul.port), a_server.info().socket_addr().map(|rpc| rpc.port()));
        assert_eq!(state.catalog().node("c1").map(|n| n.address.as_str()), Some("127.0.0.1"));
        assert!(state.catalog().service("c1", reconcile::CONSUL_SERVICE).is_none(), "clients carry no consul service");
    }

    client.shutdown().await;
    wait_for_health(&a_server, "c1", Some(CheckStatus::Critical), "c1 to turn critical after crashing").await;
    let client = start_joined(&client_config, &client_disk, &a).await;
    wait_for_health(&a_server, "c1", Some(CheckStatus::Passing), "c1 to pass again after restarting").await;
    client.leave_and_shutdown().await;
    wait_for_health(&a_server, "c1", None, "c1 to be deregistered after leaving").await;
    a.shutdown().await;
}
