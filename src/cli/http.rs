//! A small blocking HTTP/1.1 client for the CLI: one request per connection to the local agent.
//! The CLI runs outside the agent's runtime, so plain `std::net` is the right tool here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response the CLI reads (a members list of thousands of agents fits easily).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why a CLI request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid HTTP address {0:?}: expected host:port or http://host:port")]
    BadAddress(String),
    #[error("cannot reach the agent at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent a malformed response")]
    Malformed,
    #[error("the agent's response is over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The agent answered with an error status; `body` is its message.
    #[error("Unexpected response code: {status} ({body})")]
    Status { status: u16, body: String },
}

/// The agent's HTTP address, from `-http-addr`, `CAIRN_HTTP_ADDR` or `CONSUL_HTTP_ADDR`, else
/// 127.0.0.1:8500.
#[derive(Debug, Clone)]
pub struct AgentAddr(String);

impl AgentAddr {
    pub fn resolve(flag: Option<&str>) -> AgentAddr {
        let from_env = || std::env::var("CAIRN_HTTP_ADDR").or_else(|_| std::env::var("CONSUL_HTTP_ADDR")).ok();
        let raw = flag.map(str::to_string).or_else(from_env).unwrap_or_else(|| "127.0.0.1:8500".into());
        AgentAddr(raw.trim_start_matches("http://").trim_end_matches('/').to_string())
    }

    fn socket_addr(&self) -> Result<SocketAddr, HttpError> {
        self.0.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| HttpError::BadAddress(self.0.clone()))
    }
}

/// A response with a success status (2xx).
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|_| HttpError::Malformed)
    }
}

/// Send one request; a non-2xx status is an error carrying the agent's message.
pub fn request(agent: &AgentAddr, method: &str, path: &str, body: &[u8]) -> Result<Answer, HttpError> {
    let addr = agent.socket_addr()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|source| HttpError::Connect { addr: agent.0.clone(), source })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        agent.0,
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES as u64 + 1).read_to_end(&mut raw)?;
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge);
    }
    let (status, body) = parse(&raw).ok_or(HttpError::Malformed)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status { status, body: String::from_utf8_lossy(&body).trim().to_string() });
    }
    Ok(Answer { body })
}

fn parse(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    Some((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).ok()?.trim(), 16).ok()?;
        data = &data[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain and chunked bodies both parse; an error status is kept for the caller.
    #[test]
    fn responses_parse() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse(plain), Some((200, b"ok".to_vec())));
        let chunked = b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked), Some((500, b"abcde".to_vec())));
        assert_eq!(parse(b"garbage"), None);
    }

    /// The agent address accepts Consul's spellings.
    #[test]
    fn agent_address_spellings() {
        assert_eq!(AgentAddr::resolve(Some("http://127.0.0.1:9500/")).0, "127.0.0.1:9500");
        assert_eq!(AgentAddr::resolve(Some("10.0.0.1:8500")).0, "10.0.0.1:8500");
    }
}
