//! The real prober against real sockets and processes on this host: an HTTP server on
//! 127.0.0.1 started by each test, TCP ports open and closed, and shell scripts. Outcomes and
//! outputs are Consul's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use cairn::config::{CheckStatus, ScriptCommand};
use cairn::health::{Probe, ProbeResult, Prober, RealProber};
use tokio::net::TcpListener;

async fn probe(probe: Probe) -> ProbeResult {
    RealProber.probe("check", &probe).await
}

async fn echo(method: Method, headers: HeaderMap, body: String) -> String {
    let trace = headers.get("x-trace").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("-");
    format!("{method} trace={trace} agent={agent} body={body}")
}

/// A server with one route per behaviour a check may meet.
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/ok", any(|| async { "fine" }))
        .route("/busy", any(|| async { (StatusCode::TOO_MANY_REQUESTS, "slow down") }))
        .route("/fail", any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }))
        .route("/moved", any(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response() }))
        .route("/loop", any(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response() }))
        .route("/big", any(|| async { format!("{}END", "x".repeat(6000)) }))
        .route("/echo", any(echo))
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cairn::http::serve(listener, app));
    addr
}

fn http(url: String, follow_redirects: bool) -> Probe {
    Probe::Http {
        url,
        method: "GET".into(),
        header: BTreeMap::new(),
        body: None,
        tls_skip_verify: false,
        follow_redirects,
        timeout: Duration::from_secs(5),
    }
}

fn script(line: &str, timeout: Duration) -> Probe {
    Probe::Script { command: ScriptCommand::Shell(line.into()), timeout }
}

/// 2xx is passing, 429 warning, anything else critical, each with Consul's output line.
#[tokio::test]
async fn http_status_codes() {
    let addr = server().await;
    let ok = probe(http(format!("http://{addr}/ok"), false)).await;
    assert_eq!(ok, ProbeResult::new(CheckStatus::Passing, format!("HTTP GET http://{addr}/ok: 200 OK Output: fine")));
    let busy = probe(http(format!("http://{addr}/busy"), false)).await;
    assert_eq!(busy.status, CheckStatus::Warning, "{busy:?}");
    assert!(busy.output.ends_with(": 429 Too Many Requests Output: slow down"), "{busy:?}");
    let fail = probe(http(format!("http://{addr}/fail"), false)).await;
    assert_eq!(fail.status, CheckStatus::Critical, "{fail:?}");
    assert!(fail.output.ends_with(": 500 Internal Server Error Output: broken"), "{fail:?}");
}

/// With `disable_redirects` a redirect is the answer (critical); otherwise it is followed, at
/// most 10 times, and the output names the URL the check was given.
#[tokio::test]
async fn http_redirects() {
    let addr = server().await;
    let kept = probe(http(format!("http://{addr}/moved"), false)).await;
    assert_eq!(kept.status, CheckStatus::Critical);
    assert_eq!(kept.output, format!("HTTP GET http://{addr}/moved: 302 Found Output: "));
    let followed = probe(http(format!("http://{addr}/moved"), true)).await;
    assert_eq!(
        followed,
        ProbeResult::new(CheckStatus::Passing, format!("HTTP GET http://{addr}/moved: 200 OK Output: fine"))
    );
    let looping = probe(http(format!("http://{addr}/loop"), true)).await;
    assert_eq!(looping, ProbeResult::critical(format!("Get \"http://{addr}/loop\": stopped after 10 redirects")));
}

/// A server that never answers makes the check critical at its timeout, not later.
#[tokio::test]
async fn http_timeout() {
    let addr = server().await;
    let mut slow = http(format!("http://{addr}/slow"), false);
    if let Probe::Http { timeout, .. } = &mut slow {
        *timeout = Duration::from_millis(300);
    }
    let started = Instant::now();
    let result = probe(slow).await;
    assert_eq!(result, ProbeResult::critical(format!("Get \"http://{addr}/slow\": timed out after 300ms")));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Method, headers and body are sent as given, with Consul's User-Agent; the output keeps the
/// last 4 KiB of a long body.
#[tokio::test]
async fn http_request_and_body_limit() {
    let addr = server().await;
    let request = Probe::Http {
        url: format!("http://{addr}/echo"),
        method: "POST".into(),
        header: BTreeMap::from([("X-Trace".to_owned(), vec!["t1".to_owned()])]),
        body: Some("{\"ping\":1}".into()),
        tls_skip_verify: false,
        follow_redirects: true,
        timeout: Duration::from_secs(5),
    };
    let echoed = probe(request).await;
    assert_eq!(echoed.status, CheckStatus::Passing);
    assert!(echoed.output.ends_with("Output: POST trace=t1 agent=Consul Health Check body={\"ping\":1}"), "{echoed:?}");
    let big = probe(http(format!("http://{addr}/big"), false)).await;
    let body = big.output.split_once("Output: ").unwrap().1;
    assert_eq!(body.len(), 4096);
    assert!(body.ends_with("xxxEND"));
}

/// Refused connections, schemes other than http and https, and bad URLs are critical with a reason.
#[tokio::test]
async fn http_failures() {
    let closed = closed_port().await;
    let refused = probe(http(format!("http://{closed}/"), false)).await;
    assert_eq!(refused.status, CheckStatus::Critical);
    assert!(refused.output.starts_with(&format!("Get \"http://{closed}/\": dial tcp {closed}: ")), "{refused:?}");
    let ftp = probe(http("ftp://127.0.0.1:1/".into(), false)).await;
    assert_eq!(ftp, ProbeResult::critical("Get \"ftp://127.0.0.1:1/\": unsupported protocol scheme \"ftp\""));
    assert_eq!(probe(http("not a url".into(), false)).await.status, CheckStatus::Critical);
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// TCP: passing when the port accepts, critical when nothing listens.
#[tokio::test]
async fn tcp_open_and_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let result = probe(Probe::Tcp { address: open.to_string(), timeout: Duration::from_secs(5) }).await;
    assert_eq!(result, ProbeResult::new(CheckStatus::Passing, format!("TCP connect {open}: Success")));
    let closed = closed_port().await;
    let result = probe(Probe::Tcp { address: closed.to_string(), timeout: Duration::from_secs(5) }).await;
    assert_eq!(result.status, CheckStatus::Critical);
    assert!(result.output.starts_with(&format!("dial tcp {closed}: ")), "{result:?}");
}

/// Exit 0 passing, 1 warning, 2 critical; stdout and stderr are both kept; args run without a
/// shell; a command that cannot start is critical.
#[tokio::test]
async fn script_exit_codes() {
    let second = Duration::from_secs(10);
    assert_eq!(probe(script("echo fine", second)).await, ProbeResult::new(CheckStatus::Passing, "fine\n"));
    let warning = probe(script("echo out; echo err >&2; exit 1", second)).await;
    assert_eq!(warning.status, CheckStatus::Warning);
    assert!(warning.output.contains("out\n") && warning.output.contains("err\n"), "{warning:?}");
    assert_eq!(probe(script("exit 2", second)).await, ProbeResult::critical(""));
    let args = Probe::Script { command: ScriptCommand::Args(vec!["echo".into(), "$HOME".into()]), timeout: second };
    assert_eq!(probe(args).await.output, "$HOME\n", "no shell expands args");
    let missing = Probe::Script { command: ScriptCommand::Args(vec!["/nonexistent/check".into()]), timeout: second };
    let missing = probe(missing).await;
    assert_eq!(missing.status, CheckStatus::Critical);
    assert!(missing.output.starts_with("failed to run \"/nonexistent/check\""), "{missing:?}");
}

/// Output beyond 4 KiB keeps its last 4 KiB after Consul's "Captured N of M bytes" line.
#[tokio::test]
async fn script_output_truncated() {
    let result = probe(script("head -c 10000 /dev/zero | tr '\\0' a; printf END", Duration::from_secs(10))).await;
    let expected = format!("Captured 4096 of 10003 bytes\n...\n{}END", "a".repeat(4093));
    assert_eq!(result, ProbeResult::new(CheckStatus::Passing, expected));
}

/// On timeout the whole process group dies, the grandchild a shell left in the background
/// included, and the output is Consul's "Timed out" line followed by what the script wrote.
#[tokio::test]
async fn script_timeout_kills_the_process_group() {
    let started = Instant::now();
    let result = probe(script("sleep 1000 & echo $!; sleep 1000", Duration::from_millis(500))).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(result.status, CheckStatus::Critical);
    let pid = result.output.strip_prefix("Timed out (500ms) running check\n\n").expect("Consul's timeout line").trim();
    let pid: u32 = pid.parse().unwrap_or_else(|_| panic!("a pid in {:?}", result.output));
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gone, or a zombie waiting for a parent that does not reap (killed all the same).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
    }
}

/// The runner with the real prober: a TCP check turns passing while its port accepts and
/// critical once the listener is gone, each change sent once.
#[tokio::test]
async fn runner_follows_a_real_port() {
    use cairn::config::{CheckDefinition, CheckKind, Origin};
    use cairn::health::{CheckRunner, CheckSource, RunnerConfig};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let interval = Duration::from_millis(50);
    let definition = CheckDefinition {
        id: "port".into(),
        name: "port".into(),
        notes: None,
        service_id: None,
        initial_status: CheckStatus::Critical,
        kind: CheckKind::Tcp { address: address.clone(), interval, timeout: Duration::from_secs(1) },
        success_before_passing: 0,
        failures_before_critical: 2,
        deregister_critical_service_after: None,
        origin: Origin { path: "test.json".into(), field: "check".into() },
    };
    let (runner, mut updates) = CheckRunner::start(std::sync::Arc::new(RealProber), RunnerConfig::default());
    runner.upsert(&definition, CheckSource::Config).unwrap();
    let up = next_update(&mut updates).await;
    assert_eq!((up.status, up.output), (CheckStatus::Passing, format!("TCP connect {address}: Success")));
    drop(listener);
    let down = next_update(&mut updates).await;
    assert_eq!(down.status, CheckStatus::Critical);
    assert!(down.output.starts_with(&format!("dial tcp {address}: ")), "{down:?}");
}

async fn next_update(
    updates: &mut tokio::sync::mpsc::UnboundedReceiver<cairn::health::CheckUpdate>,
) -> cairn::health::CheckUpdate {
    tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("an update within 10 s")
        .expect("running")
}

/// A self-signed certificate for 127.0.0.1 and localhost (valid until 2126), made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500`.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUVBCMmZdZgQSm2T6s8ksnLM07oUYwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzEzMzgxMVoYDzIxMjYxMTEz
MTMzODExWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAT97x5nAIHR/+1ARxLBtpBvNqfuNNobGC9XMErefOLGvLJRqDtqo4YB
AOYM9cliB6/1MLV+Ww1tzYD373qwxlLAo28wbTAdBgNVHQ4EFgQUiITpSqek1HCh
dPicN2W6gvhSBGcwHwYDVR0jBBgwFoAUiITpSqek1HChdPicN2W6gvhSBGcwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI
zj0EAwIDSQAwRgIhANWVbX+Ktp7uaxNJA7Sm4fdoVbToaivxnwwIwK7JhYHsAiEA
3F0QyZiabEbZ8yUuoGK03z0LIKcWf8A1wbmH7KQD284=
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghzoyHps9OT9raEtm
fp+NqMi/Q3+UzZDPEs/ycv+BwfKhRANCAAT97x5nAIHR/+1ARxLBtpBvNqfuNNob
GC9XMErefOLGvLJRqDtqo4YBAOYM9cliB6/1MLV+Ww1tzYD373qwxlLA
-----END PRIVATE KEY-----
";

/// An HTTPS server answering "fine" on every path, with the self-signed test certificate.
async fn tls_server() -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    #[allow(deprecated)] // ring lacks post-quantum key exchange; irrelevant for a test server
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"fine"),
                    )))
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

/// HTTPS: with `tls_skip_verify` a self-signed server passes; without it the unknown issuer
/// makes the check critical, naming the TLS failure.
#[tokio::test]
async fn https_verifies_unless_told_not_to() {
    let addr = tls_server().await;
    let url = format!("https://{addr}/health");
    let mut skip = http(url.clone(), false);
    if let Probe::Http { tls_skip_verify, .. } = &mut skip {
        *tls_skip_verify = true;
    }
    assert_eq!(
        probe(skip).await,
        ProbeResult::new(CheckStatus::Passing, format!("HTTP GET {url}: 200 OK Output: fine"))
    );
    let verified = probe(http(url.clone(), false)).await;
    assert_eq!(verified.status, CheckStatus::Critical);
    assert!(verified.output.starts_with(&format!("Get \"{url}\": tls: ")), "{verified:?}");
}
