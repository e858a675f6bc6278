//! The production prober: runs the script, sends the HTTP request, opens the TCP connection.
//! Results and outputs follow Consul's (`agent/checks/check.go`) so that dashboards and
//! scripts reading `Output` see what they saw with Consul.
//!
//! HTTP and TCP go through our `tokio::net` (the simulator's sockets under madsim); scripts go
//! through [`crate::io::process`], which the simulator does not model: simulations use a
//! [`super::ScriptedProber`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{format_duration, CheckStatus, ScriptCommand};
use crate::io::process::{self, CapturedOutput, ProcessEnd};

use super::prober::{Probe, ProbeFuture, ProbeResult, Prober};
use super::schedule::OUTPUT_LEN_MAX;

/// Redirects an HTTP check follows before giving up (Go's `http.Client`, which Consul uses).
pub const REDIRECTS_MAX: usize = 10;

/// Consul's, so services that treat health checks specially recognise cairn's.
const USER_AGENT: &str = "Consul Health Check";
const ACCEPT: &str = "text/plain, text/*, */*";
/// Headers Go's client drops when a redirect leads to another host.
const SENSITIVE_HEADERS: &[&str] = &["authorization", "www-authenticate", "cookie", "cookie2"];

#[derive(Debug, Clone, Copy, Default)]
pub struct RealProber;

impl Prober for RealProber {
    fn probe<'a>(&'a self, _check_id: &'a str, probe: &'a Probe) -> ProbeFuture<'a> {
        Box::pin(async move {
            match probe {
                Probe::Script { command, timeout } => script(command, *timeout).await,
                Probe::Http { url, method, header, body, tls_skip_verify, follow_redirects, timeout } => {
                    let request = HttpProbe {
                        url,
                        method,
                        header,
                        body: body.as_deref(),
                        tls_skip_verify: *tls_skip_verify,
                        follow_redirects: *follow_redirects,
                    };
                    request.run(*timeout).await
                }
                Probe::Tcp { address, timeout } => tcp(address, *timeout).await,
            }
        })
    }
}

/// Exit 0 passing, 1 warning, anything else (signals included) critical; the output is the
/// last 4 KiB of stdout and stderr together.
async fn script(command: &ScriptCommand, timeout: Duration) -> ProbeResult {
    let shell_args;
    let (program, args) = match command {
        // Consul takes $SHELL if set; /bin/sh always is, and does not depend on the agent's
        // environment.
        ScriptCommand::Shell(line) => {
            shell_args = ["-c".to_owned(), line.clone()];
            ("/bin/sh", &shell_args[..])
        }
        ScriptCommand::Args(argv) => match argv.split_first() {
            Some((program, args)) => (program.as_str(), args),
            None => return ProbeResult::critical("the script check has no command"),
        },
    };
    let run = process::run_command(program, args, timeout, OUTPUT_LEN_MAX).await;
    let output = run.output.render();
    match run.end {
        ProcessEnd::Exited(exit) => {
            let status = match exit.code() {
                Some(0) => CheckStatus::Passing,
                Some(1) => CheckStatus::Warning,
                _ => CheckStatus::Critical,
            };
            ProbeResult::new(status, output)
        }
        ProcessEnd::TimedOut => {
            let mut message = format!("Timed out ({}) running check", format_duration(timeout));
            if !output.is_empty() {
                message.push_str("\n\n");
                message.push_str(&output);
            }
            ProbeResult::critical(message)
        }
        ProcessEnd::Failed(e) => ProbeResult::critical(format!("failed to run {program:?}: {e}")),
    }
}

/// Passing with `TCP connect <address>: Success` if a connection opens within the timeout.
async fn tcp(address: &str, timeout: Duration) -> ProbeResult {
    match crate::io::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => ProbeResult::new(CheckStatus::Passing, format!("TCP connect {address}: Success")),
        Ok(Err(e)) => ProbeResult::critical(format!("dial tcp {address}: {e}")),
        Err(_) => ProbeResult::critical(format!("dial tcp {address}: i/o timeout")),
    }
}

struct HttpProbe<'a> {
    url: &'a str,
    method: &'a str,
    header: &'a BTreeMap<String, Vec<String>>,
    body: Option<&'a str>,
    tls_skip_verify: bool,
    follow_redirects: bool,
}

/// One request's target and content, which a redirect changes.
struct Hop {
    target: Uri,
    method: Method,
    headers: BTreeMap<String, Vec<String>>,
    body: Bytes,
}

impl HttpProbe<'_> {
    /// 2xx passing, 429 warning, anything else critical, with output
    /// `HTTP <method> <url>: <status> Output: <last 4 KiB of the body>`. One timeout covers the
    /// whole exchange, redirects included; a body still arriving at the timeout is cut there and
    /// the status code decides, as in Consul. `https` URLs verify the server against Mozilla's
    /// roots unless `tls_skip_verify`.
    async fn run(&self, timeout: Duration) -> ProbeResult {
        let deadline = Instant::now() + timeout;
        let failed = |why: String| ProbeResult::critical(format!("{} \"{}\": {why}", go_op(self.method), self.url));
        let Ok(method) = Method::from_bytes(self.method.as_bytes()) else {
            return ProbeResult::critical(format!("net/http: invalid method {:?}", self.method));
        };
        let target = match self.url.parse::<Uri>() {
            Ok(target) => target,
            Err(e) => return ProbeResult::critical(format!("parse \"{}\": {e}", self.url)),
        };
        let body = Bytes::from(self.body.unwrap_or_default().to_owned());
        let mut hop = Hop { target, method, headers: self.header.clone(), body };
        let mut redirects = 0;
        let (response, connection) = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (response, connection) = match crate::io::timeout(remaining, send(&hop, self.tls_skip_verify)).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(why)) => return failed(why),
                Err(_) => return failed(format!("timed out after {}", format_duration(timeout))),
            };
            let location = response.headers().get(hyper::header::LOCATION).and_then(|l| l.to_str().ok());
            let next = match location {
                Some(location) if self.follow_redirects && is_followed_redirect(response.status()) => {
                    redirect(&hop, response.status(), location)
                }
                _ => None,
            };
            let Some(next) = next else { break (response, connection) };
            connection.abort();
            if redirects == REDIRECTS_MAX {
                return failed(format!("stopped after {REDIRECTS_MAX} redirects"));
            }
            redirects += 1;
            hop = next;
        };
        let status = response.status();
        let output = read_body(response, deadline).await;
        connection.abort();
        let result = match status.as_u16() {
            200..=299 => CheckStatus::Passing,
            429 => CheckStatus::Warning,
            _ => CheckStatus::Critical,
        };
        let status_line = match status.canonical_reason() {
            Some(reason) => format!("{} {reason}", status.as_u16()),
            None => status.as_u16().to_string(),
        };
        ProbeResult::new(result, format!("HTTP {} {}: {status_line} Output: {output}", self.method, self.url))
    }
}

/// Sends one request on a new connection (Consul disables keep-alive for checks), over TLS for
/// `https`. The returned task drives the connection; abort it when done with the response.
async fn send(hop: &Hop, tls_skip_verify: bool) -> Result<(Response<Incoming>, JoinHandle<()>), String> {
    let tls = match hop.target.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => return Err(format!("unsupported protocol scheme {:?}", other.unwrap_or_default())),
    };
    let host = hop.target.host().ok_or("no host in the URL")?;
    let port = hop.target.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let address = format!("{host}:{port}");
    let stream = TcpStream::connect(address.as_str()).await.map_err(|e| format!("dial tcp {address}: {e}"))?;
    let request = request(hop, host)?;
    if !tls {
        return exchange(stream, request).await;
    }
    // A URL's IPv6 host is bracketed; a TLS server name is not.
    let name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = ServerName::try_from(name).map_err(|e| format!("invalid TLS server name {host:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(tls_skip_verify));
    let stream = connector.connect(name, stream).await.map_err(|e| format!("tls: {e}"))?;
    exchange(stream, request).await
}

/// Runs one HTTP/1.1 exchange over `stream`.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(Response<Incoming>, JoinHandle<()>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    match sender.send_request(request).await {
        Ok(response) => Ok((response, connection)),
        Err(e) => {
            connection.abort();
            Err(e.to_string())
        }
    }
}

/// The request of one hop: Consul's default User-Agent and Accept unless the check sets them,
/// and `Connection: close`.
fn request(hop: &Hop, host: &str) -> Result<Request<Full<Bytes>>, String> {
    let path = hop.target.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::builder().method(hop.method.clone()).uri(path);
    let has = |name: &str| hop.headers.keys().any(|k| k.eq_ignore_ascii_case(name));
    if !has("host") {
        // host[:port] as written in the URL, without any user:password@.
        let authority = match hop.target.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        request = request.header(hyper::header::HOST, authority);
    }
    for (name, values) in &hop.headers {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    if !has("user-agent") {
        request = request.header(hyper::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        request = request.header(hyper::header::ACCEPT, ACCEPT);
    }
    request
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(hop.body.clone()))
        .map_err(|e| format!("invalid request: {e}"))
}

/// The TLS client settings, built once: Mozilla's roots (webpki-roots), or with
/// `tls_skip_verify` no certificate or name verification at all (Go's `InsecureSkipVerify`,
/// which Consul uses; handshake signatures are still checked). HTTP/1.1 only.
fn tls_config(skip_verify: bool) -> Arc<ClientConfig> {
    static VERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let build = || {
        // rustls 0.23.48 deprecates ring for lacking post-quantum key exchange; a health probe
        // of a service on the same network does not need it, and ring builds without the
        // cmake toolchain aws-lc-rs needs.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let mut config = if skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerify(provider))).with_no_client_auth()
        } else {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    if skip_verify { UNVERIFIED.get_or_init(build) } else { VERIFIED.get_or_init(build) }.clone()
}

/// Accepts any certificate for any name; only for checks that set `tls_skip_verify`.
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The last 4 KiB of the body, read until it ends, fails or the deadline passes.
async fn read_body(response: Response<Incoming>, deadline: Instant) -> String {
    let mut output = CapturedOutput::new(OUTPUT_LEN_MAX);
    let mut body = response.into_body();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match crate::io::timeout(remaining, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    output.write(data);
                }
            }
            Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    output.text()
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The request a redirect leads to, as Go's client makes it: 301/302/303 turn a request other
/// than GET or HEAD into a body-less GET, 307/308 repeat it; credentials and cookies are not
/// sent on to another host. `None` if the location is not a URL.
fn redirect(hop: &Hop, status: StatusCode, location: &str) -> Option<Hop> {
    let target = resolve(&hop.target, location)?;
    let (method, body) = match status.as_u16() {
        301..=303 if hop.method != Method::GET && hop.method != Method::HEAD => (Method::GET, Bytes::new()),
        _ => (hop.method.clone(), hop.body.clone()),
    };
    let mut headers = hop.headers.clone();
    if target.authority() != hop.target.authority() {
        headers.retain(|name, _| {
            let name = name.to_ascii_lowercase();
            !SENSITIVE_HEADERS.contains(&name.as_str()) && name != "host"
        });
    }
    Some(Hop { target, method, headers, body })
}

/// `location` resolved against `base` (absolute, scheme-relative, absolute-path or relative).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let absolute = if location.contains("://") {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let directory = if directory.is_empty() { "/" } else { directory };
        format!("{scheme}://{authority}{directory}{location}")
    };
    absolute.parse().ok()
}

/// Go's name for a request in errors: `Get`, `Post`, ...
fn go_op(method: &str) -> String {
    let mut chars = method.chars();
    chars
        .next()
        .map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redirect locations resolve as a browser would, for the forms servers send.
    #[test]
    fn locations_resolve() {
        let base: Uri = "http://a.test:8080/x/y?q=1".parse().unwrap();
        let cases = [
            ("http://b.test/z", "http://b.test/z"),
            ("//c.test/z", "http://c.test/z"),
            ("/z?k=v", "http://a.test:8080/z?k=v"),
            ("z", "http://a.test:8080/x/z"),
        ];
        for (location, expected) in cases {
            assert_eq!(resolve(&base, location).unwrap().to_string(), expected, "{location}");
        }
    }

    /// A 302 after a POST becomes a body-less GET; a 307 repeats the POST; credentials stay
    /// with their host.
    #[test]
    fn redirects_as_go_follows_them() {
        let mut headers = BTreeMap::new();
        headers.insert("Authorization".to_owned(), vec!["secret".to_owned()]);
        headers.insert("X-Trace".to_owned(), vec!["1".to_owned()]);
        let hop = Hop {
            target: "http://a.test/login".parse().unwrap(),
            method: Method::POST,
            headers,
            body: Bytes::from_static(b"form"),
        };
        let found = redirect(&hop, StatusCode::FOUND, "/home").unwrap();
        assert_eq!((found.method, found.body.len()), (Method::GET, 0));
        assert!(found.headers.contains_key("Authorization"), "same host keeps credentials");
        let temporary = redirect(&hop, StatusCode::TEMPORARY_REDIRECT, "http://b.test/login").unwrap();
        assert_eq!((temporary.method, &temporary.body[..]), (Method::POST, &b"form"[..]));
        assert_eq!(temporary.headers.keys().collect::<Vec<_>>(), ["X-Trace"], "another host gets no credentials");
    }

    #[test]
    fn go_op_names() {
        assert_eq!((go_op("GET").as_str(), go_op("post").as_str(), go_op("").as_str()), ("Get", "Post", ""));
    }
}
