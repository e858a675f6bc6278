//! Consul's Raft operator API and CLI against `cairn agent -dev`: a real process on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{cli, delete, get, leader_of, wait_until, Agent, AgentPorts, TempDir};

fn dev_agent(dir: &TempDir) -> Agent {
    let agent =
        Agent::start(&["-dev".into(), "-node".into(), "dev1".into()], AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    agent
}

/// The configuration of a single dev server, in Consul's shape: itself, leader and voter, at its
/// RPC address, with its node ID and the log index of its configuration entry.
#[test]
fn the_configuration_lists_the_dev_server() {
    let dir = TempDir::new("operator-config");
    let agent = dev_agent(&dir);
    for path in ["/v1/operator/raft/configuration", "/v1/operator/raft/configuration?stale"] {
        let response = get(agent.http(), path);
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        let servers = body["Servers"].as_array().expect("Servers is a list");
        assert_eq!(servers.len(), 1, "{body}");
        let server = &servers[0];
        assert_eq!(server["Node"], "dev1");
        assert_eq!(server["Address"], format!("127.0.0.1:{}", agent.ports.server));
        assert_eq!((server["Leader"].as_bool(), server["Voter"].as_bool()), (Some(true), Some(true)));
        assert_eq!(server["ProtocolVersion"], "3");
        let id = server["ID"].as_str().expect("ID is a string");
        assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a UUID node ID: {id}");
        // The log index of the configuration entry: 0 for the one a single server bootstraps with.
        assert_eq!(body["Index"].as_u64(), Some(0), "{body}");
        assert_eq!(response.header("X-Consul-KnownLeader"), Some("true"));
    }
}

/// Removing a server the configuration does not hold is a 400 naming it, and so is a request that
/// names no server or two; the configuration is unchanged.
#[test]
fn removing_an_unknown_peer_is_a_bad_request() {
    let dir = TempDir::new("operator-remove");
    let agent = dev_agent(&dir);
    let unknown = delete(agent.http(), "/v1/operator/raft/peer?id=00000000-0000-0000-0000-000000000000");
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(unknown.text().contains("was not found in the Raft configuration"), "{}", unknown.text());
    let by_address = delete(agent.http(), "/v1/operator/raft/peer?address=192.0.2.1:8300");
    assert_eq!(by_address.status, 400);
    assert!(by_address.text().contains(r#"address "192.0.2.1:8300""#), "{}", by_address.text());
    let neither = delete(agent.http(), "/v1/operator/raft/peer");
    assert_eq!(neither.status, 400);
    assert!(neither.text().contains("Must specify either ?id"), "{}", neither.text());
    let servers = get(agent.http(), "/v1/operator/raft/configuration").json()["Servers"].clone();
    assert_eq!(servers.as_array().map(Vec::len), Some(1));
}

/// `cairn operator raft list-peers` prints Consul's table from what the agent serves, and
/// `remove-peer` reports the agent's refusal.
#[test]
fn the_cli_lists_peers_and_reports_refusals() {
    let dir = TempDir::new("operator-cli");
    let agent = dev_agent(&dir);
    let (ok, out, err) = cli(&agent, &["operator", "raft", "list-peers"]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]);
    assert_eq!(lines.len(), 2, "{out}");
    let row = &lines[1];
    let address = format!("127.0.0.1:{}", agent.ports.server);
    assert_eq!((row[0], row[2], row[3], row[4], row[5]), ("dev1", address.as_str(), "leader", "true", "3"), "{out}");

    let (ok, _, err) = cli(&agent, &["operator", "raft", "remove-peer", "-address=192.0.2.1:8300"]);
    assert!(!ok);
    assert!(err.contains("Error removing peer") && err.contains("was not found"), "{err}");
}
