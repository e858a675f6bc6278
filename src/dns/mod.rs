//! The DNS interface: healthy instances by name, on UDP and TCP at `client_addr:ports.dns`.
//!
//! - [`name`]: which question a name asks (Consul's `web.service.consul`, `_web._tcp...`,
//!   `n1.node...`, `<hex>.addr...`), pure.
//! - [`wire`]: untrusted bytes to a checked [`wire::Request`] before anything is allocated for
//!   them, pure.
//! - [`reply`]: responses written straight to wire bytes as answers are added, each refused
//!   once the transport's size (EDNS, 64 KiB over TCP) is reached, TC set where due, pure.
//! - [`answer`](mod@answer): the core: a request, a catalog snapshot, the settings and a seeded shuffle in,
//!   response bytes out.
//! - [`server`]: the shell: the sockets, which catalog is fresh enough to answer from (a
//!   server's own state within `max_stale`, else after a read barrier), and forwarding to
//!   recursors.
//! - [`client`]: a client agent's local view: a small catalog per name asked, filled from a
//!   server and kept current by blocking queries, dropped when unused.

pub mod answer;
pub mod client;
pub mod instances;
pub mod name;
pub mod reply;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;

pub use answer::{answer, classify, respond, Context, Shuffle, Step};
pub use name::{Lookup, Zone};
pub use server::{bind, DnsListeners};
pub use wire::Transport;
