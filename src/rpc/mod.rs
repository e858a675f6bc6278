//! Server-to-server RPC: what crosses the server port (8300).
//!
//! A connection opens with a 4-byte preamble naming the protocol and its version, then carries
//! request/response frames one at a time ([`wire`]). Every frame is length-bounded and decoded with an
//! allocation limit, so a hostile or confused peer costs at most one frame's worth of memory and its
//! connection. [`client`] keeps a small pool of idle connections per peer; [`serve`] runs a listener
//! and hands each decoded request to a [`Handler`].

pub mod client;
pub mod message;
pub mod wire;

pub use client::RpcClient;
pub use message::{Request, Response};
pub use wire::{Preamble, RpcError};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

/// Most connections one listener serves at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 100000;

/// How long a new connection may take to send its preamble before it is dropped.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with no request for this long is closed. A peer whose host died (or whose
/// goodbye was lost) never closes its end, and each such half-open connection would hold one of
/// the [`MAX_CONNECTIONS`] slots forever. Live peers are unaffected: Raft traffic flows every
/// heartbeat, and the client pool does not reuse connections idle for half this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Something that answers requests of type `Req` with `Resp`.
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    fn handle(&self, request: Req) -> impl Future<Output = Resp> + Send;
}

/// Accept connections on `listener` forever, serving each with `handler`. Connections that send the
/// wrong preamble or a malformed frame are closed; nothing else is affected.
pub async fn serve<Req, Resp, H>(listener: TcpListener, preamble: Preamble, handler: Arc<H>)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + Sync + 'static,
    H: Handler<Req, Resp>,
{
    serve_with_idle_timeout(listener, preamble, handler, IDLE_TIMEOUT).await
}

/// [`serve`], closing connections idle for `idle_timeout`.
pub async fn serve_with_idle_timeout<Req, Resp, H>(
    listener: TcpListener,
    preamble: Preamble,
    handler: Arc<H>,
    idle_timeout: Duration,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + Sync + 'static,
    H: Handler<Req, Resp>,
{
    crate::io::accept_loop(listener, MAX_CONNECTIONS, "rpc", |stream, peer| {
        let handler = handler.clone();
        async move {
            if let Err(e) = serve_connection::<Req, Resp, H>(stream, preamble, &*handler, idle_timeout).await {
                tracing::debug!(%peer, error = %e, "rpc connection closed");
            }
        }
    })
    .await
}

async fn serve_connection<Req, Resp, H>(
    mut stream: TcpStream,
    preamble: Preamble,
    handler: &H,
    idle_timeout: Duration,
) -> Result<(), RpcError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Handler<Req, Resp>,
{
    crate::io::timeout(PREAMBLE_TIMEOUT, wire::expect_preamble(&mut stream, preamble))
        .await
        .map_err(|_| RpcError::Timeout)??;
    loop {
        let request: Req = match crate::io::timeout(idle_timeout, wire::read_frame(&mut stream)).await {
            Err(_) => return Ok(()), // idle for too long: see IDLE_TIMEOUT
            Ok(Ok(request)) => request,
            Ok(Err(RpcError::Closed)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        let response = handler.handle(request).await;
        wire::write_frame(&mut stream, &response).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    struct Echo;

    impl Handler<u32, u32> for Echo {
        async fn handle(&self, request: u32) -> u32 {
            request + 1
        }
    }

    /// A connection that answered requests and then went quiet is closed by the server after the
    /// idle timeout, so a peer that vanished cannot hold a connection slot forever.
    #[tokio::test]
    async fn idle_connections_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idle = Duration::from_millis(200);
        tokio::spawn(serve_with_idle_timeout::<u32, u32, Echo>(listener, Preamble::SERVER, Arc::new(Echo), idle));

        let client = RpcClient::new(Preamble::SERVER);
        let answer: u32 = client.call(addr, &41u32, Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, 42, "a live connection is served");

        let mut quiet = TcpStream::connect(addr).await.unwrap();
        wire::send_preamble(&mut quiet, Preamble::SERVER).await.unwrap();
        let mut byte = [0u8; 1];
        let read = crate::io::timeout(Duration::from_secs(10), quiet.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "the server should close an idle connection, got {read:?}");
    }
}
