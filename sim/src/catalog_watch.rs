//! The client agents' services in the catalog: waiting until the agents' anti-entropy has
//! registered them, and sampling, from a host of its own, what every server answers to
//! `GET /v1/health/service/<name>?passing&stale`, and what every server and every up client
//! agent answers to the DNS questions `<name>.service.consul A` and `SRV` (each one's own view,
//! as a user asking it sees it: a server's replicated state, a client agent's per-name view).
//! [`crate::check::catalog`] judges the samples: an instance counts as shown only when every
//! answer shows it, and as gone only when none does.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::rr::RecordType;
use madsim::runtime::Handle;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::catalog::Sample;
use crate::cluster::{agent_ip, http_addr, Host};
use crate::faults::SharedCluster;
use crate::http::request;

/// How often the catalog is sampled (simulated time).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// A server that has not answered within this long is left out of the sample.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// The sampler's own host.
const WATCH_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 3, 3));
/// The host that waits for the agents' services to be registered.
const WAIT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 3, 4));

/// Wait until every up server lists every agent's instances of every service as passing: the
/// agents' anti-entropy has registered what their config defines and their checks passed.
/// An error after `limit` names the agents still missing.
pub async fn wait_registered(cluster: &SharedCluster, services: &[String], limit: Duration) -> Result<(), String> {
    let (cluster, services) = (cluster.clone(), services.to_vec());
    // Asked from a host of its own: the runner's host has no address to send from.
    let host = Handle::current().create_node().name("catalog-wait").ip(WAIT_IP).build();
    let waiting = host.spawn(async move {
        let start = Instant::now();
        let deadline = start + limit;
        loop {
            let samples = sample(&cluster, &services, start).await;
            let missing: Vec<String> = samples.iter().filter(|s| !s.visible).map(|s| format!("a{}", s.agent)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {limit:?}, not every server lists these agents' services as passing: {missing:?}"
                ));
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    });
    waiting.await.map_err(|e| format!("the waiting task failed: {e}"))?
}

/// The node names `server` lists as passing instances of `service`; `None` if it does not answer
/// in time (down, cut off): it has no say in this sample.
async fn passing_nodes(server: SocketAddr, service: String) -> Option<BTreeSet<String>> {
    let path = format!("/v1/health/service/{service}?passing&stale");
    let response = request(server, "GET", &path, Bytes::new(), ANSWER_WITHIN).await.ok()?;
    if response.status != 200 {
        return None;
    }
    let entries = serde_json::from_slice::<Vec<serde_json::Value>>(&response.body).ok()?;
    Some(entries.iter().filter_map(|e| e["Node"]["Node"].as_str().map(str::to_owned)).collect())
}

/// The agents behind the answer of the DNS interface on `host` to `<service>.service.consul`
/// (A records, or SRV records' glue); `None` if it does not answer in time.
async fn dns_nodes(host: IpAddr, service: String, rtype: RecordType, agents: usize) -> Option<BTreeSet<String>> {
    let dns = SocketAddr::new(host, cairn::config::Ports::default().dns);
    let addresses = crate::dns::service_addresses(dns, &service, rtype, ANSWER_WITHIN).await?;
    Some((0..agents).filter(|&i| addresses.contains(&agent_ip(i))).map(|i| format!("a{i}")).collect())
}

/// One sample of every agent: visible when every answer (HTTP and DNS, every service) lists it,
/// hidden when none does.
async fn sample(cluster: &SharedCluster, services: &[String], start: Instant) -> Vec<Sample> {
    let at_ms = start.elapsed().as_millis() as u64;
    let (servers, dns_hosts, agents) = {
        let c = cluster.lock().expect("cluster lock");
        let up = c.active().into_iter().filter(|i| c.is_up(Host::Server(*i))).map(http_addr).collect::<Vec<_>>();
        let up_agents = (0..c.agent_count()).filter(|i| c.is_up(Host::Agent(*i))).map(agent_ip);
        let dns_hosts: Vec<IpAddr> = up.iter().map(SocketAddr::ip).chain(up_agents).collect();
        (up, dns_hosts, c.agent_count())
    };
    // Every question at once, so a sample spans one round trip (or one timeout), not their sum.
    let mut questions = Vec::new();
    for service in services {
        for server in &servers {
            questions.push(tokio::spawn(passing_nodes(*server, service.clone())));
        }
        for host in &dns_hosts {
            for rtype in [RecordType::A, RecordType::SRV] {
                questions.push(tokio::spawn(dns_nodes(*host, service.clone(), rtype, agents)));
            }
        }
    }
    let mut answers = Vec::new();
    for question in questions {
        if let Ok(Some(answer)) = question.await {
            answers.push(answer);
        }
    }
    let until_ms = start.elapsed().as_millis() as u64;
    (0..agents)
        .map(|agent| {
            let node = format!("a{agent}");
            let visible = !answers.is_empty() && answers.iter().all(|nodes| nodes.contains(&node));
            let hidden = !answers.is_empty() && answers.iter().all(|nodes| !nodes.contains(&node));
            Sample { at_ms, until_ms, agent, visible, hidden }
        })
        .collect()
}

/// Samples taken so far, shared with the sampling task.
#[derive(Clone, Default)]
pub struct Samples(Arc<Mutex<Vec<Sample>>>);

impl Samples {
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut self.0.lock().expect("samples lock"))
    }
}

/// Sample every agent every [`SAMPLE_EVERY`], from a host of its own, until the task is aborted.
pub fn start_sampling(cluster: SharedCluster, services: Vec<String>, start: Instant) -> (Samples, JoinHandle<()>) {
    let samples = Samples::default();
    let sink = samples.clone();
    let host = Handle::current().create_node().name("catalog-watch").ip(WATCH_IP).build();
    let task = host.spawn(async move {
        loop {
            let taken = sample(&cluster, &services, start).await;
            sink.0.lock().expect("samples lock").extend(taken);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    });
    (samples, task)
}
