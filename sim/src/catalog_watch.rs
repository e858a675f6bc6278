//! The client agents' services in the catalog: registering them at the start (as each agent's
//! anti-entropy would) and sampling, from outside, what every server's `?passing` answer shows of
//! them. [`crate::check::catalog`] judges the samples.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::state::{CatalogCommand, Command, Outcome, Registration, ServiceDefinition};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::catalog::Sample;
use crate::cluster::{agent_ip, Host};
use crate::faults::SharedCluster;

/// How often the catalog is sampled (simulated time).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Port every simulated service instance listens on.
const SERVICE_PORT: u16 = 8080;

/// Register one instance of each of `services` on every agent, through the leader. Returns when
/// all are acknowledged, or an error after `limit`.
pub async fn register_services(cluster: &SharedCluster, services: &[String], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let agents = cluster.lock().expect("cluster lock").agent_count();
    for agent in 0..agents {
        for service in services {
            while let Err(why) = register_once(cluster, agent, service).await {
                if Instant::now() > deadline {
                    return Err(format!("registering {service} on a{agent}: {why}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

async fn register_once(cluster: &SharedCluster, agent: usize, service: &str) -> Result<(), String> {
    let (server, node_id) = {
        let c = cluster.lock().expect("cluster lock");
        let server = c.leader().and_then(|leader| c.live(leader)).ok_or("no leader")?;
        let running = c.running(Host::Agent(agent)).ok_or("the agent is not running")?;
        (server, running.agent.node_id.clone())
    };
    let registration = Registration {
        node: format!("a{agent}"),
        node_id,
        address: agent_ip(agent).to_string(),
        service: Some(ServiceDefinition {
            id: service.to_owned(),
            service: service.to_owned(),
            port: SERVICE_PORT,
            ..ServiceDefinition::default()
        }),
        ..Registration::default()
    };
    match server.write(Command::Catalog(CatalogCommand::Register(registration))).await {
        Ok(reply) => match reply.outcome {
            Outcome::Rejected(why) => Err(format!("refused: {why}")),
            _ => Ok(()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// What every live server answers for one agent: (all instances passing everywhere, none passing
/// anywhere).
fn observe(cluster: &SharedCluster, agent: usize, services: &[String]) -> (bool, bool) {
    let c = cluster.lock().expect("cluster lock");
    let node = format!("a{agent}");
    let address: IpAddr = agent_ip(agent);
    let (mut visible, mut hidden) = (true, true);
    for server in c.active().into_iter().filter_map(|i| c.live(i)) {
        let state = server.state().read();
        for service in services {
            let passing = state
                .catalog()
                .passing_instances(service)
                .iter()
                .any(|(n, instance)| n.node == node && n.address == address.to_string() && instance.id == *service);
            visible &= passing;
            hidden &= !passing;
        }
    }
    (visible, hidden)
}

/// Samples taken so far, shared with the sampling task.
#[derive(Clone, Default)]
pub struct Samples(Arc<Mutex<Vec<Sample>>>);

impl Samples {
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut self.0.lock().expect("samples lock"))
    }
}

/// Sample every agent every [`SAMPLE_EVERY`] until the task is aborted.
pub fn start_sampling(cluster: SharedCluster, services: Vec<String>, start: Instant) -> (Samples, JoinHandle<()>) {
    let samples = Samples::default();
    let sink = samples.clone();
    let task = tokio::spawn(async move {
        loop {
            let agents = cluster.lock().expect("cluster lock").agent_count();
            let at_ms = start.elapsed().as_millis() as u64;
            for agent in 0..agents {
                let (visible, hidden) = observe(&cluster, agent, &services);
                sink.0.lock().expect("samples lock").push(Sample { at_ms, agent, visible, hidden });
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    });
    (samples, task)
}
