//! The calling side: a pool of idle connections per peer, one request in flight per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::wire::{self, Preamble, RpcError};

/// Idle connections kept per peer; more are closed after use.
const MAX_IDLE_PER_PEER: usize = 8;

/// An idle connection older than this is not reused: the server closes connections idle for
/// [`super::IDLE_TIMEOUT`], and a request sent as it does so would be lost in an unknown state.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// A pooled connection and when it went idle.
type IdleConnection = (TcpStream, tokio::time::Instant);

/// A cheap-to-clone RPC client for one protocol.
#[derive(Debug, Clone)]
pub struct RpcClient {
    preamble: Preamble,
    idle: Arc<Mutex<BTreeMap<SocketAddr, Vec<IdleConnection>>>>,
}

impl RpcClient {
    pub fn new(preamble: Preamble) -> Self {
        RpcClient { preamble, idle: Arc::default() }
    }

    /// Send `request` to `peer` and wait for its response, all within `limit`. A connection that
    /// fails or times out is discarded, never reused: a late response would be read as the answer
    /// to the next request.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: SocketAddr,
        request: &Req,
        limit: Duration,
    ) -> Result<Resp, RpcError> {
        let exchange = async {
            let mut stream = match self.take_idle(peer) {
                Some(stream) => stream,
                None => self.connect(peer).await?,
            };
            wire::write_frame(&mut stream, request).await?;
            let response = wire::read_frame(&mut stream).await?;
            Ok::<_, RpcError>((stream, response))
        };
        let (stream, response) = crate::io::timeout(limit, exchange).await.map_err(|_| RpcError::Timeout)??;
        self.put_idle(peer, stream);
        Ok(response)
    }

    async fn connect(&self, peer: SocketAddr) -> Result<TcpStream, RpcError> {
        let mut stream = TcpStream::connect(peer).await.map_err(RpcError::Connect)?;
        let _ = stream.set_nodelay(true);
        wire::send_preamble(&mut stream, self.preamble).await.map_err(|e| match e {
            RpcError::Io(io) => RpcError::Connect(io),
            other => other,
        })?;
        Ok(stream)
    }

    /// An idle connection to `peer` that is still open. One the peer closed (it restarted or
    /// crashed) is dropped here: sending on it would make a request look delivered-but-lost when
    /// it never reached a live server, turning a safe retry into an unknown outcome.
    fn take_idle(&self, peer: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().expect("rpc pool lock");
        let conns = idle.get_mut(&peer)?;
        while let Some((mut stream, since)) = conns.pop() {
            if since.elapsed() < MAX_IDLE_AGE && !peer_closed(&mut stream) {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, peer: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("rpc pool lock");
        let conns = idle.entry(peer).or_default();
        if conns.len() < MAX_IDLE_PER_PEER {
            conns.push((stream, tokio::time::Instant::now()));
        }
    }

    /// Drop every idle connection to `peer` (after it restarted or was removed).
    pub fn forget(&self, peer: SocketAddr) {
        self.idle.lock().expect("rpc pool lock").remove(&peer);
    }
}

/// Whether an idle connection was closed by its peer (or has stray bytes, which would desync the
/// next exchange). Polls once without waiting: an open, idle connection has nothing to read.
fn peer_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    !matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A pooled connection whose peer went away is not reused; an open one is.
    #[tokio::test]
    async fn closed_idle_connections_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = RpcClient::new(Preamble::SERVER);
        let open = TcpStream::connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        client.put_idle(addr, open);
        assert!(client.take_idle(addr).is_some(), "an open idle connection is reused");

        let doomed = TcpStream::connect(addr).await.unwrap();
        let (closed_by_peer, _) = listener.accept().await.unwrap();
        drop(closed_by_peer);
        client.put_idle(addr, doomed);
        // The FIN takes a moment to arrive; until it does the connection still looks open.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (mut stream, _) = client.idle.lock().unwrap().get_mut(&addr).and_then(Vec::pop).unwrap();
            if peer_closed(&mut stream) {
                client.put_idle(addr, stream);
                assert!(client.take_idle(addr).is_none(), "a closed connection must not be handed out");
                break;
            }
            client.put_idle(addr, stream);
            assert!(tokio::time::Instant::now() < deadline, "the peer's close was never seen");
            tokio::task::yield_now().await;
        }
    }
}
