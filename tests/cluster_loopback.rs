//! Three real server processes on 127.0.0.1: they find each other through -retry-join, bootstrap,
//! replicate, survive the leader's crash, and a restarted server comes back with its data; a
//! fourth server started later joins the Raft configuration and leaves it again.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{get, leader_of, put, wait_until, Agent, AgentPorts, TempDir};

const ELECTION_LIMIT: Duration = Duration::from_secs(30);

struct Cluster {
    dir: TempDir,
    ports: Vec<AgentPorts>,
    agents: Vec<Option<Agent>>,
    /// `-bootstrap-expect` of every server: the servers started first.
    bootstrap_expect: usize,
}

impl Cluster {
    fn start(size: usize, label: &str) -> Cluster {
        Cluster::start_some(size, size, label)
    }

    /// Ports for `size` servers, of which the first `started` start now (and bootstrap).
    fn start_some(size: usize, started: usize, label: &str) -> Cluster {
        let ports: Vec<AgentPorts> = (0..size).map(|_| AgentPorts::free()).collect();
        let mut cluster = Cluster { dir: TempDir::new(label), ports, agents: Vec::new(), bootstrap_expect: started };
        cluster.write_autopilot_config();
        cluster.agents = (0..size).map(|i| (i < started).then(|| cluster.launch(i))).collect();
        cluster
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{i}"))
    }

    fn launch(&self, i: usize) -> Agent {
        let mut args: Vec<String> = vec![
            "-server".into(),
            "-bootstrap-expect".into(),
            self.bootstrap_expect.to_string(),
            "-node".into(),
            format!("s{i}"),
            "-bind".into(),
            "127.0.0.1".into(),
            "-data-dir".into(),
            self.data_dir(i).display().to_string(),
            "-retry-interval".into(),
            "200ms".into(),
            "-config-file".into(),
            self.autopilot_config().display().to_string(),
        ];
        for (_, other) in self.ports.iter().enumerate().filter(|(j, _)| *j != i) {
            args.push("-retry-join".into());
            args.push(format!("127.0.0.1:{}", other.serf_lan));
        }
        let log = self.dir.path().join(format!("s{i}-{}.log", std::process::id()));
        Agent::start(&args, self.ports[i], log)
    }

    /// A config file that promotes new servers after 1 s of stability instead of 10 s.
    fn autopilot_config(&self) -> PathBuf {
        self.dir.path().join("autopilot.json")
    }

    /// Written once, before any agent starts: rewriting it at each launch truncated it while
    /// servers started just before were still reading it, and an empty config file is an empty
    /// source (as in Consul), so such a server ran with the 10 s default; when it led, the later
    /// server became a voter only after 10 s.
    fn write_autopilot_config(&self) {
        let config = r#"{"autopilot": {"server_stabilization_time": "1s"}}"#;
        std::fs::write(self.autopilot_config(), config).expect("write the config");
    }

    /// (node name, voter) of each server in the Raft configuration `i` serves, by name.
    fn raft_roles(&self, i: usize) -> Vec<(String, bool)> {
        let Ok(response) = common::http(self.http(i), "GET", "/v1/operator/raft/configuration?stale", b"") else {
            return Vec::new();
        };
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let servers = body["Servers"].as_array().cloned().unwrap_or_default();
        let mut roles: Vec<(String, bool)> = servers
            .iter()
            .map(|s| (s["Node"].as_str().unwrap_or_default().to_string(), s["Voter"].as_bool().unwrap_or(false)))
            .collect();
        roles.sort();
        roles
    }

    fn http(&self, i: usize) -> std::net::SocketAddr {
        self.ports[i].http_addr()
    }

    /// The leader's index once every running server names the same one.
    fn agreed_leader(&self) -> Option<usize> {
        let running: Vec<usize> = (0..self.ports.len()).filter(|&i| self.agents[i].is_some()).collect();
        let views: Vec<Option<String>> = running.iter().map(|&i| leader_of(self.http(i))).collect();
        let first = views.first()?.clone()?;
        if views.iter().any(|v| v.as_deref() != Some(first.as_str())) {
            return None;
        }
        // Right after a crash the survivors still name the dead leader until they time out.
        self.ports.iter().position(|p| first == format!("127.0.0.1:{}", p.server)).filter(|&i| running.contains(&i))
    }

    fn wait_for_leader(&self, what: &str) -> usize {
        let mut leader = None;
        wait_until(ELECTION_LIMIT, what, || {
            leader = self.agreed_leader();
            leader.is_some()
        });
        leader.expect("checked by the wait")
    }
}

/// The servers bootstrap together, writes through a follower are replicated, and every server
/// answers a consistent read with the value; a stale read on a follower catches up too.
#[test]
fn three_servers_bootstrap_and_replicate() {
    let cluster = Cluster::start(3, "cluster-replicate");
    let leader = cluster.wait_for_leader("three servers to agree on a leader");
    let follower = (leader + 1) % 3;

    let written = put(cluster.http(follower), "/v1/kv/service/web", b"10.0.0.5:80");
    assert_eq!((written.status, written.text().trim()), (200, "true"), "write through a follower");
    for i in 0..3 {
        let read = get(cluster.http(i), "/v1/kv/service/web?raw&consistent");
        assert_eq!((read.status, read.body.as_slice()), (200, &b"10.0.0.5:80"[..]), "consistent read on s{i}");
    }
    let other = (leader + 2) % 3;
    wait_until(Duration::from_secs(10), "a stale read on a follower to see the write", || {
        get(cluster.http(other), "/v1/kv/service/web?raw&stale").body == b"10.0.0.5:80"
    });
    let stale = get(cluster.http(other), "/v1/kv/service/web?stale");
    assert!(stale.header("X-Consul-LastContact").is_some());
    let peers = get(cluster.http(other), "/v1/status/peers").json();
    assert_eq!(peers.as_array().map(Vec::len), Some(3));
}

/// Killing the leader's process: the two others elect a new leader and keep accepting writes;
/// the killed server, restarted on its data directory, rejoins with everything written.
#[test]
fn leader_crash_failover_and_restart_with_data() {
    let mut cluster = Cluster::start(3, "cluster-failover");
    let first = cluster.wait_for_leader("three servers to agree on a leader");
    assert_eq!(put(cluster.http(first), "/v1/kv/before", b"1").text().trim(), "true");

    cluster.agents[first].take().expect("leader is running").kill();
    let second = cluster.wait_for_leader("the survivors to elect a new leader");
    assert_ne!(second, first);
    let survivor = (0..3).find(|&i| i != first && i != second).unwrap();
    assert_eq!(put(cluster.http(survivor), "/v1/kv/after", b"2").text().trim(), "true");
    assert_eq!(get(cluster.http(second), "/v1/kv/before?raw&consistent").body, b"1");

    cluster.agents[first] = Some(cluster.launch(first));
    wait_until(Duration::from_secs(20), "the restarted server to catch up", || {
        let addr = cluster.http(first);
        common::http(addr, "GET", "/v1/kv/after?raw&stale", b"").is_ok_and(|r| r.body == b"2")
    });
    assert_eq!(get(cluster.http(first), "/v1/kv/before?raw&stale").body, b"1");
    cluster.wait_for_leader("all three to agree on a leader again");
}

/// A corrupted record in the middle of the Raft log stops the server with an error naming the
/// file and the byte offset; nothing is silently dropped.
#[test]
fn corrupt_log_stops_the_server_with_file_and_offset() {
    let mut cluster = Cluster::start(1, "cluster-corrupt");
    cluster.wait_for_leader("the single server to lead");
    for i in 0..20 {
        assert_eq!(put(cluster.http(0), &format!("/v1/kv/k{i}"), b"value").status, 200);
    }
    cluster.agents[0].take().expect("running").kill();

    let raft_dir = cluster.data_dir(0).join("raft");
    let segment = std::fs::read_dir(&raft_dir)
        .expect("raft directory exists")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("log-")))
        .expect("a log segment exists");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside the first record's payload (after its 8-byte header): later records follow it, so
    // this cannot be mistaken for a torn tail.
    bytes[12] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let mut restarted = cluster.launch(0);
    wait_until(Duration::from_secs(10), "the server to refuse to start", || restarted.try_exit().is_some());
    assert!(!restarted.try_exit().unwrap().success());
    let log = restarted.log_text();
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(log.contains(&name) && log.contains("offset"), "error should name {name} and the offset:\n{log}");
}

/// With a low snapshot threshold, a server snapshots its state and purges its log as it goes;
/// restarted, it recovers every key from the snapshot plus the log tail.
#[test]
fn snapshots_compact_the_log_and_restore_on_restart() {
    let dir = TempDir::new("cluster-snapshot");
    let config = dir.path().join("raft.json");
    std::fs::write(&config, r#"{"raft_snapshot_threshold": 100, "raft_trailing_logs": 20}"#).unwrap();
    let data = dir.path().join("data");
    let ports = AgentPorts::free();
    let args: Vec<String> = [
        "-server",
        "-bootstrap",
        "-bind",
        "127.0.0.1",
        "-data-dir",
        data.to_str().unwrap(),
        "-config-file",
        config.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::start(&args, ports, dir.path().join("first.log"));
    wait_until(ELECTION_LIMIT, "the server to lead", || leader_of(agent.http()).is_some());
    for i in 0..1000 {
        assert_eq!(put(agent.http(), &format!("/v1/kv/key/{i:04}"), i.to_string().as_bytes()).status, 200);
    }
    let raft_dir = data.join("raft");
    let names = || -> Vec<String> {
        std::fs::read_dir(&raft_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    wait_until(Duration::from_secs(10), "a snapshot and a purged log", || {
        let files = names();
        files.iter().any(|n| n.starts_with("snapshot-")) && files.iter().any(|n| n == "log-meta")
    });
    agent.kill();

    let restarted = Agent::start(&args, ports, dir.path().join("second.log"));
    wait_until(ELECTION_LIMIT, "the restarted server to lead", || leader_of(restarted.http()).is_some());
    let keys = get(restarted.http(), "/v1/kv/key/?keys").json();
    assert_eq!(keys.as_array().map(Vec::len), Some(1000), "every key survives the restart");
    assert_eq!(get(restarted.http(), "/v1/kv/key/0999?raw").body, b"999");
}

/// A server started after the cluster bootstrapped joins through gossip and autopilot makes it a
/// voter on every server's configuration; once it leaves (`PUT /v1/agent/leave`), it is removed
/// from the configuration and its process exits.
#[test]
fn a_later_server_joins_raft_and_leaving_removes_it() {
    let mut cluster = Cluster::start_some(4, 3, "cluster-join-leave");
    let leader = cluster.wait_for_leader("three servers to agree on a leader");
    let voters = |names: &[&str]| -> Vec<(String, bool)> { names.iter().map(|n| (n.to_string(), true)).collect() };
    assert_eq!(cluster.raft_roles(leader), voters(&["s0", "s1", "s2"]));

    cluster.agents[3] = Some(cluster.launch(3));
    wait_until(ELECTION_LIMIT, "s3 to become a voter on every server", || {
        (0..4).all(|i| cluster.raft_roles(i) == voters(&["s0", "s1", "s2", "s3"]))
    });
    assert_eq!(put(cluster.http(3), "/v1/kv/joined", b"yes").text().trim(), "true", "a write through s3");

    let left = common::http(cluster.http(3), "PUT", "/v1/agent/leave", b"").expect("s3 answers the leave");
    assert_eq!(left.status, 200, "{}", left.text());
    wait_until(ELECTION_LIMIT, "s3 to be removed from the configuration", || {
        (0..3).all(|i| cluster.raft_roles(i) == voters(&["s0", "s1", "s2"]))
    });
    let s3 = cluster.agents[3].as_mut().expect("s3 was started");
    wait_until(ELECTION_LIMIT, "s3's process to exit after leaving", || s3.try_exit().is_some());
    cluster.agents[3] = None;
    cluster.wait_for_leader("the three remaining servers to agree on a leader");
}
