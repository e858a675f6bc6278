//! Server-to-server RPC: what crosses the server port (8300) and the LAN join port (8301).
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
pub use message::{JoinRequest, JoinResponse, Request, Response};
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
    crate::io::accept_loop(listener, MAX_CONNECTIONS, "rpc", |stream, peer| {
        let handler = handler.clone();
        async move {
            if let Err(e) = serve_connection::<Req, Resp, H>(stream, preamble, &*handler).await {
                tracing::debug!(%peer, error = %e, "rpc connection closed");
            }
        }
    })
    .await
}

async fn serve_connection<Req, Resp, H>(mut stream: TcpStream, preamble: Preamble, handler: &H) -> Result<(), RpcError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Handler<Req, Resp>,
{
    crate::io::timeout(PREAMBLE_TIMEOUT, wire::expect_preamble(&mut stream, preamble))
        .await
        .map_err(|_| RpcError::Timeout)??;
    loop {
        let request: Req = match wire::read_frame(&mut stream).await {
            Ok(request) => request,
            Err(RpcError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let response = handler.handle(request).await;
        wire::write_frame(&mut stream, &response).await?;
    }
}
