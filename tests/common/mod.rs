//! Shared harness for tests on real processes and sockets: start `cairn` agents on 127.0.0.1 with
//! free ports and their own data directories, talk HTTP to them, wait on conditions with deadlines.
//! Every process started is killed when its handle drops.
#![allow(dead_code)]

pub mod dns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nobody listens on right now (the kernel's choice of an ephemeral port).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A fresh directory under the system temp dir, removed on drop (kept when `CAIRN_TEST_KEEP` is
/// set, to read the agents' logs after a run).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("cairn-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CAIRN_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ports one agent listens on.
#[derive(Debug, Clone, Copy)]
pub struct AgentPorts {
    pub http: u16,
    pub dns: u16,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
}

impl AgentPorts {
    /// Five distinct free ports: each probe is held until all are picked, since a released probe
    /// port may be handed out again at once. (Another process can still take one before the agent
    /// binds it; tests that start many agents at once retry on "Address already in use".)
    pub fn free() -> AgentPorts {
        let probes: Vec<TcpListener> =
            (0..5).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")).collect();
        let port = |i: usize| probes[i].local_addr().expect("local addr").port();
        AgentPorts { http: port(0), dns: port(1), server: port(2), serf_lan: port(3), serf_wan: port(4) }
    }

    pub fn flags(&self) -> Vec<String> {
        [
            ("-http-port", self.http),
            ("-dns-port", self.dns),
            ("-server-port", self.server),
            ("-serf-lan-port", self.serf_lan),
            ("-serf-wan-port", self.serf_wan),
        ]
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect()
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }
}

/// A running `cairn` process.
pub struct Agent {
    child: Child,
    pub ports: AgentPorts,
    pub log: PathBuf,
}

impl Agent {
    /// Start `cairn agent <args>` with `ports`; its output goes to `log`.
    pub fn start(args: &[String], ports: AgentPorts, log: PathBuf) -> Agent {
        let out = std::fs::File::create(&log).expect("create agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("agent")
            .args(args)
            .args(ports.flags())
            .env("CAIRN_LOG", std::env::var("CAIRN_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out)
            .spawn()
            .expect("start the cairn binary");
        Agent { child, ports, log }
    }

    pub fn http(&self) -> SocketAddr {
        self.ports.http_addr()
    }

    /// Kill the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has ended.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Start a client agent `name` that joins `server`'s LAN pool, keeping its data and log in `dir`.
pub fn start_client(dir: &TempDir, server: &Agent, name: &str) -> Agent {
    let join = format!("127.0.0.1:{}", server.ports.serf_lan);
    let data_dir = dir.path().join(name).display().to_string();
    let args =
        ["-node", name, "-bind", "127.0.0.1", "-data-dir", &data_dir, "-retry-join", &join, "-retry-interval", "200ms"];
    Agent::start(&args.map(String::from), AgentPorts::free(), dir.path().join(format!("{name}.log")))
}

/// Run the `cairn <args>` CLI against `agent`'s HTTP API; (success, stdout, stderr).
pub fn cli(agent: &Agent, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .arg(format!("-http-addr=127.0.0.1:{}", agent.ports.http))
        .output()
        .expect("run the cairn CLI");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `condition` until it holds; panic with `what` (and `context`) after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response as the tests look at it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with a 30 s read timeout.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::other(format!("malformed response: {:?}", String::from_utf8_lossy(&raw))))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// GET and expect an answer (any status); panics on connection errors.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn put(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    http(addr, "PUT", path, body).unwrap_or_else(|e| panic!("PUT {path}: {e}"))
}

pub fn delete(addr: SocketAddr, path: &str) -> Response {
    http(addr, "DELETE", path, b"").unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
}

/// The leader address an agent reports, `None` while it knows none (or is not answering).
pub fn leader_of(addr: SocketAddr) -> Option<String> {
    let response = http(addr, "GET", "/v1/status/leader", b"").ok()?;
    let leader: String = serde_json::from_slice(&response.body).ok()?;
    (!leader.is_empty()).then_some(leader)
}
