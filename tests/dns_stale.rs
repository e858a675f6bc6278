//! How fresh a server's DNS answers are, on three real server processes on 127.0.0.1: a server
//! answers from its own replicated state only while it leads with a quorum's acknowledgement, or
//! heard its leader, within `dns_config.max_stale`; otherwise it takes a read barrier confirmed
//! by a quorum, and answers SERVFAIL when that does not come within the barrier timeout (2 s).
//! Asked with hickory-proto messages over UDP and TCP (tests/common/dns.rs).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::dns::{a_records, ask_tcp, ask_udp};
use common::{leader_of, put, wait_until, Agent, AgentPorts, TempDir};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;

/// Elections and gossip on a shared 2-core machine.
const ELECTION_LIMIT: Duration = Duration::from_secs(30);
/// The `max_stale` the servers are configured with: short, so the test is.
const MAX_STALE: Duration = Duration::from_secs(1);
/// The server's barrier timeout (`dns::server::BARRIER_TIMEOUT`) plus room: a query on a server
/// without quorum is answered within this, SERVFAIL.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
const SERVICE: &str = "web.service.consul.";

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// Three servers that find each other through `-retry-join` and share one DNS config.
struct Cluster {
    dir: TempDir,
    ports: Vec<AgentPorts>,
    agents: Vec<Option<Agent>>,
    config: PathBuf,
}

impl Cluster {
    /// Three servers sharing the config file `config` (JSON).
    fn start(label: &str, config: serde_json::Value) -> Cluster {
        let dir = TempDir::new(label);
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).expect("write the config");
        let config = path;
        let ports: Vec<AgentPorts> = (0..3).map(|_| AgentPorts::free()).collect();
        let mut cluster = Cluster { dir, ports, agents: Vec::new(), config };
        cluster.agents = (0..3).map(|i| Some(cluster.launch(i))).collect();
        cluster
    }

    /// Start server `i` on its ports and data directory (a restart finds its data there).
    fn launch(&self, i: usize) -> Agent {
        let data_dir = self.dir.path().join(format!("s{i}")).display().to_string();
        let mut args: Vec<String> = [
            "-server",
            "-bootstrap-expect",
            "3",
            "-node",
            &format!("s{i}"),
            "-bind",
            "127.0.0.1",
            "-data-dir",
            &data_dir,
            "-retry-interval",
            "200ms",
            "-config-file",
            &self.config.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        for (_, other) in self.ports.iter().enumerate().filter(|(j, _)| *j != i) {
            args.push("-retry-join".into());
            args.push(format!("127.0.0.1:{}", other.serf_lan));
        }
        let log = self.dir.path().join(format!("s{i}-{}.log", std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()));
        Agent::start(&args, self.ports[i], log)
    }

    fn http(&self, i: usize) -> SocketAddr {
        self.ports[i].http_addr()
    }

    fn dns(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i].dns))
    }

    /// The leader's index once all three servers name the same one.
    fn wait_for_leader(&self) -> usize {
        let mut leader = None;
        wait_until(ELECTION_LIMIT, "three servers to agree on a leader", || {
            let views: Vec<Option<String>> = (0..3).map(|i| leader_of(self.http(i))).collect();
            leader = match &views[0] {
                Some(first) if views.iter().all(|v| v.as_ref() == Some(first)) => {
                    self.ports.iter().position(|p| *first == format!("127.0.0.1:{}", p.server))
                }
                _ => None,
            };
            leader.is_some()
        });
        leader.expect("checked by the wait")
    }

    fn kill(&mut self, i: usize) {
        self.agents[i].take().expect("the server is running").kill();
    }

    /// Kill every server but `survivor`, followers first, so the leader never loses its quorum
    /// while another server is still up to win an election against `survivor`.
    fn kill_all_but(&mut self, survivor: usize, leader: usize) {
        for i in (0..3).filter(|&i| i != survivor && i != leader) {
            self.kill(i);
        }
        if leader != survivor {
            self.kill(leader);
        }
    }

    /// Register `ext1` at 10.0.0.5 with a passing `web` instance, and wait until every server's
    /// DNS answers it.
    fn register_web(&self, through: usize) {
        let body = json!({
            "Node": "ext1", "Address": "10.0.0.5",
            "Service": {"ID": "web-1", "Service": "web", "Port": 8080},
            "Checks": [{"CheckID": "web-1-http", "Name": "web HTTP", "ServiceID": "web-1", "Status": "passing"}]
        });
        let answer = put(self.http(through), "/v1/catalog/register", body.to_string().as_bytes());
        assert_eq!((answer.status, answer.text().trim()), (200, "true"), "{}", answer.text());
        wait_until(ELECTION_LIMIT, "every server to answer the instance", || {
            (0..3).all(|i| answered(&ask_udp(self.dns(i), SERVICE, RecordType::A, None)))
        });
    }
}

/// NOERROR with the registered instance.
fn answered(message: &Message) -> bool {
    message.metadata.response_code == ResponseCode::NoError && a_records(message) == [ip("10.0.0.5")]
}

fn is_servfail(message: &Message) -> bool {
    message.metadata.response_code == ResponseCode::ServFail && message.answers.is_empty()
}

/// For `window`, every answer from `addr` is SERVFAIL: nothing from a state nobody can vouch
/// for. A window of a few `max_stale` shows it is not a race with the staleness clock.
fn assert_only_servfail(addr: SocketAddr, window: Duration, why: &str) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        for reply in [ask_udp(addr, SERVICE, RecordType::A, None), ask_tcp(addr, SERVICE, RecordType::A)] {
            assert!(
                is_servfail(&reply),
                "{why}, yet it answered {:?} {:?}",
                reply.metadata.response_code,
                reply.answers
            );
        }
    }
}

/// Every server answers from its own state while the leader is up. A follower left alone (its
/// leader and the other follower killed) may answer from its state for `max_stale` after it last
/// heard the leader, and from then on answers SERVFAIL, nothing else, while it has no quorum;
/// once a killed server restarts on its data and quorum returns, it answers the instance again.
///
/// Raft runs 8 times slower than by default (heartbeats every 400 ms, a follower stands for
/// election no sooner than 3.6 s after it last heard its leader): a candidate has no leader and
/// takes the barrier anyway, so with default timing (candidate after about 0.5 s) the `max_stale`
/// rule itself would never be what refuses the stale answer.
#[test]
fn a_follower_without_quorum_answers_servfail_after_max_stale_until_quorum_returns() {
    let config = json!({"dns_config": {"max_stale": "1s"}, "performance": {"raft_multiplier": 8}});
    let mut cluster = Cluster::start("dns-stale-quorum", config);
    let leader = cluster.wait_for_leader();
    cluster.register_web(leader);
    let survivor = (leader + 1) % 3;
    let dead_leader = format!("127.0.0.1:{}", cluster.ports[leader].server);

    cluster.kill_all_but(survivor, leader);
    let killed_at = Instant::now();
    let dns = cluster.dns(survivor);
    let mut past_max_stale = None;
    wait_until(MAX_STALE + ANSWER_LIMIT * 2, "a question asked max_stale after the leader died", || {
        let followed = leader_of(cluster.http(survivor));
        let asked_after = killed_at.elapsed();
        let reply = ask_udp(dns, SERVICE, RecordType::A, None);
        if asked_after < MAX_STALE {
            assert!(is_servfail(&reply) || answered(&reply), "neither the instance nor SERVFAIL: {reply:?}");
            return false;
        }
        past_max_stale = Some((followed, asked_after, reply));
        true
    });
    let (followed, asked_after, reply) = past_max_stale.expect("checked by the wait");
    assert!(is_servfail(&reply), "asked {asked_after:?} after the leader died, past max_stale: {reply:?}");
    assert_eq!(followed, Some(dead_leader), "it still followed the dead leader: max_stale, not an election, refused");
    assert_only_servfail(dns, MAX_STALE * 3, "the survivor has no quorum");

    cluster.agents[leader] = Some(cluster.launch(leader));
    wait_until(ELECTION_LIMIT, "the survivor to answer again once quorum returns", || {
        answered(&ask_udp(dns, SERVICE, RecordType::A, None))
    });
    assert!(answered(&ask_tcp(dns, SERVICE, RecordType::A)));
}

/// With `allow_stale = false` a follower answers only through the read barrier: it answers while
/// its leader is up, and the very first question after it lost its quorum is SERVFAIL, with no
/// `max_stale` window in between.
#[test]
fn without_allow_stale_a_follower_answers_only_through_the_barrier() {
    let mut cluster = Cluster::start("dns-stale-barrier", json!({"dns_config": {"allow_stale": false}}));
    let leader = cluster.wait_for_leader();
    cluster.register_web(leader);
    let follower = (leader + 1) % 3;
    assert!(answered(&ask_tcp(cluster.dns(follower), SERVICE, RecordType::A)));

    cluster.kill_all_but(follower, leader);
    assert_only_servfail(cluster.dns(follower), MAX_STALE * 2, "the follower may not answer stale and has no quorum");
}

/// A leader whose followers are all gone cannot confirm with a quorum that it still leads (under
/// a partition the followers would elect another leader and take writes), so after `max_stale`
/// without a quorum it must answer SERVFAIL as a follower would.
#[test]
fn a_leader_without_quorum_stops_answering_after_max_stale() {
    let mut cluster = Cluster::start("dns-stale-leader", json!({"dns_config": {"max_stale": "1s"}}));
    let leader = cluster.wait_for_leader();
    cluster.register_web(leader);

    cluster.kill_all_but(leader, leader);
    let dns = cluster.dns(leader);
    wait_until(MAX_STALE + ANSWER_LIMIT * 2, "the leader without quorum to answer SERVFAIL", || {
        is_servfail(&ask_udp(dns, SERVICE, RecordType::A, None))
    });
    assert_only_servfail(dns, MAX_STALE * 3, "the leader has no quorum");
}
