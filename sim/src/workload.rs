//! Workload clients: simulated hosts that send KV requests to random servers over HTTP, exactly as
//! users would, and record what they observe in the [`History`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Targets;
use crate::history::{ClientId, History, KvOp, KvResult, OpId};
use crate::http::{request, HttpError, HttpResponse};
use crate::scenario::Workload;
use crate::trace::Trace;

/// Client id used for the checker's final reads.
pub const CHECKER_CLIENT: ClientId = 1000;

/// Answers no correct server gives (e.g. a 400 to a well-formed request): each one fails the run.
#[derive(Debug, Clone, Default)]
pub struct Anomalies(Arc<Mutex<Vec<String>>>);

impl Anomalies {
    fn push(&self, what: String) {
        self.0.lock().expect("anomalies lock").push(what);
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().expect("anomalies lock").clone()
    }
}

/// What every client shares.
#[derive(Clone)]
pub struct Recorder {
    pub history: Arc<Mutex<History>>,
    pub trace: Trace,
    pub anomalies: Anomalies,
    pub start: Instant,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn invoke(&self, client: ClientId, op: &KvOp) -> OpId {
        self.history.lock().expect("history lock").invoke(client, op.clone(), self.now_ms())
    }

    fn resolve(&self, id: OpId, client: ClientId, op: &KvOp, observed: Observed) {
        let now = self.now_ms();
        let mut history = self.history.lock().expect("history lock");
        match &observed {
            Observed::Ok(result) => history.complete(id, now, result.clone()),
            Observed::Indeterminate(_) => history.indeterminate(id),
            Observed::Failed(_) => history.failed(id),
        }
        drop(history);
        self.trace.record(now, format_args!("c{client} {op} -> {observed}"));
    }
}

/// What a client concluded from a response.
#[derive(Debug)]
enum Observed {
    Ok(KvResult),
    Indeterminate(String),
    Failed(String),
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Ok(result) => write!(f, "{result}"),
            Observed::Indeterminate(why) => write!(f, "indeterminate ({why})"),
            Observed::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

/// The running clients.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Ask every client to stop after its current request, and wait for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn client_ip(client: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, client as u8 + 1))
}

/// Start `workload.clients` client hosts against the `servers` targets.
pub fn start(handle: &Handle, workload: &Workload, servers: &Targets, recorder: &Recorder) -> Clients {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..workload.clients)
        .map(|client| {
            let host = handle.create_node().name(format!("c{client}")).ip(client_ip(client)).build();
            let (workload, recorder, stop, servers) =
                (workload.clone(), recorder.clone(), stop.clone(), servers.clone());
            host.spawn(client_loop(client, workload, servers, recorder, stop))
        })
        .collect();
    Clients { stop, tasks }
}

async fn client_loop(
    client: ClientId,
    workload: Workload,
    servers: Targets,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let limit = Duration::from_millis(workload.request_timeout_ms);
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let pause = thread_rng().gen_range(workload.pause_ms[0]..=workload.pause_ms[1]);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let key = format!("k{}", thread_rng().gen_range(0..workload.keys));
        let server = servers.pick();
        let roll: f64 = thread_rng().gen();
        let (op, consistent) = if roll < workload.read_ratio {
            (KvOp::Get { key }, thread_rng().gen_bool(workload.consistent_read_ratio))
        } else if roll < workload.read_ratio + workload.delete_ratio {
            (KvOp::Delete { key }, false)
        } else {
            sequence += 1;
            (KvOp::Put { key, value: format!("c{client}-{sequence}") }, false)
        };
        let id = recorder.invoke(client, &op);
        let observed = perform(server, &op, consistent, limit, &recorder.anomalies).await;
        recorder.resolve(id, client, &op, observed);
    }
}

/// Send one operation and classify the answer.
async fn perform(server: SocketAddr, op: &KvOp, consistent: bool, limit: Duration, anomalies: &Anomalies) -> Observed {
    let (method, path, body) = match op {
        KvOp::Put { key, value } => ("PUT", format!("/v1/kv/{key}"), Bytes::from(value.clone())),
        KvOp::Delete { key } => ("DELETE", format!("/v1/kv/{key}"), Bytes::new()),
        KvOp::Get { key } => {
            let mode = if consistent { "&consistent" } else { "" };
            ("GET", format!("/v1/kv/{key}?raw{mode}"), Bytes::new())
        }
    };
    let is_read = matches!(op, KvOp::Get { .. });
    match request(server, method, &path, body, limit).await {
        Ok(response) => classify(op, &response, anomalies, server),
        Err(HttpError::Connect(e)) => Observed::Failed(format!("connect: {e}")),
        // A read that got no answer had no effect either way.
        Err(_) if is_read => Observed::Failed("no answer".into()),
        Err(HttpError::Timeout) => Observed::Indeterminate("timeout".into()),
        Err(HttpError::Protocol(e)) => Observed::Indeterminate(e),
    }
}

fn classify(op: &KvOp, response: &HttpResponse, anomalies: &Anomalies, server: SocketAddr) -> Observed {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    match (op, response.status) {
        (KvOp::Put { .. } | KvOp::Delete { .. }, 200) if body.trim() == "true" => Observed::Ok(match op {
            KvOp::Put { .. } => KvResult::PutOk,
            _ => KvResult::DeleteOk,
        }),
        (KvOp::Get { .. }, 200) => Observed::Ok(KvResult::GetOk(Some(body))),
        (KvOp::Get { .. }, 404) => Observed::Ok(KvResult::GetOk(None)),
        // "No cluster leader" is only answered when the write was never submitted.
        (_, 500) if body.starts_with("No cluster leader") => Observed::Failed("no leader".into()),
        (KvOp::Get { .. }, 500) => Observed::Failed(body.trim().to_string()),
        (_, 500) => Observed::Indeterminate(body.trim().to_string()),
        (_, status) => {
            anomalies.push(format!("{server} answered {op} with {status}: {}", body.trim()));
            Observed::Failed(format!("unexpected {status}"))
        }
    }
}

/// After the run: read every key once more with `?consistent`, retrying until answered, and add
/// the reads to the history so the checkers see the final state.
pub async fn final_reads(handle: &Handle, keys: u32, servers: &Targets, recorder: &Recorder) -> Result<(), String> {
    let host = handle.create_node().name("checker").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1))).build();
    let (recorder, servers) = (recorder.clone(), servers.clone());
    host.spawn(async move {
        for key in (0..keys).map(|k| format!("k{k}")) {
            let op = KvOp::Get { key: key.clone() };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let server = servers.pick();
                let id = recorder.invoke(CHECKER_CLIENT, &op);
                let observed = perform(server, &op, true, Duration::from_secs(3), &recorder.anomalies).await;
                let answered = matches!(observed, Observed::Ok(_));
                recorder.resolve(id, CHECKER_CLIENT, &op, observed);
                if answered {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("final read of {key} got no answer for 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("checker task failed: {e}"))?
}

/// Write a probe key through any server until one write succeeds; returns when it did.
pub async fn probe_write(handle: &Handle, servers: &Targets, limit: Duration) -> Option<Duration> {
    let host = handle.create_node().name("prober").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 2))).build();
    let servers = servers.clone();
    host.spawn(async move {
        let start = Instant::now();
        while start.elapsed() < limit {
            let server = servers.pick();
            let answer =
                request(server, "PUT", "/v1/kv/probe", Bytes::from_static(b"probe"), Duration::from_secs(1)).await;
            if matches!(answer, Ok(HttpResponse { status: 200, .. })) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
    .await
    .ok()
    .flatten()
}
