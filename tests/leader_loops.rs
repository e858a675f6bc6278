//! The autopilot leader loop on two real servers in this process (127.0.0.1, ephemeral ports),
//! fed a hand-made gossip view: the loop adds the second server as a learner, promotes it once
//! caught up, and removes it when it leaves; an operator's removal sent to the follower is
//! forwarded to the leader.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use cairn::config::{AgentConfig, LogLevel, Ports, RaftSettings};
use cairn::gossip::{Member, MemberMeta, MemberStatus, Membership, Role};
use cairn::node::NodeHandle;
use cairn::server::membership::{self, AutopilotSettings, RaftConfiguration};
use cairn::server::Server;
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
    Member {
        name: info.name.clone(),
        addr: lan,
        meta: MemberMeta {
            role: Role::Server,
            datacenter: "dc1".into(),
            node_id: info.node_id.clone(),
            server_port: info.socket_addr().map(|rpc| rpc.port()),
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
    let deadline = Instant::now() + LIMIT;
    while a.server.leader().is_none() {
        assert!(Instant::now() < deadline, "a did not elect itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gossip = |b_status| {
        Membership::from_members([member_of(&a.server, MemberStatus::Alive), member_of(&b.server, b_status)])
    };
    let (gossip_tx, gossip_rx) = watch::channel(gossip(MemberStatus::Alive));
    let autopilot = tokio::spawn(membership::run(a.server.clone(), gossip_rx.clone(), settings()));
    wait_for_roles(&a.server, &[("a", true), ("b", true)], "b to be added and promoted").await;
    wait_for_roles(&b.server, &[("a", true), ("b", true)], "b to see the configuration").await;

    // With autopilot paused, an operator removes b by asking b itself: b forwards to a.
    autopilot.abort();
    let b_http = b.http_addr;
    let b_id = b.server.info().node_id.clone();
    let removed =
        tokio::task::spawn_blocking(move || common::delete(b_http, &format!("/v1/operator/raft/peer?id={b_id}")))
            .await
            .expect("the request thread");
    assert_eq!(removed.status, 200, "{}", removed.text());
    wait_for_roles(&a.server, &[("a", true)], "the operator's removal").await;

    // Gossip still has b alive, so autopilot brings it back; once b leaves, it goes.
    let autopilot = tokio::spawn(membership::run(a.server.clone(), gossip_rx, settings()));
    wait_for_roles(&a.server, &[("a", true), ("b", true)], "b to come back").await;
    gossip_tx.send_replace(gossip(MemberStatus::Left));
    wait_for_roles(&a.server, &[("a", true)], "b to be removed after leaving").await;

    autopilot.abort();
    b.shutdown().await;
    a.shutdown().await;
}
