//! The shell over the runtime: time, tasks, sockets and randomness.
//!
//! Our crate depends on `madsim-tokio` under the name `tokio`. Built normally it is plain tokio;
//! built with `RUSTFLAGS="--cfg madsim"` its `net`, `time` and `task` are the simulator's. Third-party
//! crates keep the real tokio, so the one that schedules work of its own (openraft) is bridged here
//! through [`RaftRuntime`]. `cfg(madsim)` appears only in this module (and in `sim/`).

pub mod process;
mod raft_runtime;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use raft_runtime::{Elapsed, RaftRuntime, Timeout};

use std::future::Future;
use std::time::Duration;

/// Accept connections on `listener` forever, each served by its own task running `serve`, at most
/// `max_connections` at once (further clients wait in the kernel's accept queue). TCP_NODELAY is
/// set on every connection: request/response protocols must not wait on Nagle's algorithm.
pub async fn accept_loop<F, Fut>(listener: TcpListener, max_connections: usize, what: &'static str, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = serve(stream, peer);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
}

/// Run `fut` with a deadline. Works in both runtimes (madsim's own `timeout` has an unnameable type).
pub fn timeout<F: Future>(limit: Duration, fut: F) -> Timeout<F> {
    raft_runtime::timeout(limit, fut)
}

/// A fresh 64-bit seed: from the simulator's seeded generator under madsim, from the operating
/// system otherwise. Every random choice of the agent derives from seeds drawn here.
pub fn random_seed() -> u64 {
    #[cfg(madsim)]
    {
        madsim::rand::random()
    }
    #[cfg(not(madsim))]
    {
        rand08::random()
    }
}

/// This host's first private (RFC 1918) IPv4 address, the address Consul advertises by default
/// when bound to 0.0.0.0.
pub fn first_private_ipv4() -> Option<std::net::Ipv4Addr> {
    let interfaces = if_addrs::get_if_addrs().ok()?;
    let mut private: Vec<std::net::Ipv4Addr> = interfaces
        .iter()
        .filter_map(|interface| match interface.ip() {
            std::net::IpAddr::V4(v4) if v4.is_private() => Some(v4),
            _ => None,
        })
        .collect();
    private.sort();
    private.into_iter().next()
}

/// This host's name, the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
