//! The DNS shell: UDP and TCP listeners, the choice of catalog to answer from, and recursors.
//!
//! Freshness: a server answers from its own replicated state when `allow_stale` is on and it
//! leads with a quorum's acknowledgement within `max_stale`, or follows and heard its leader
//! within `max_stale`; otherwise it first takes a read barrier confirmed by the leader's quorum
//! (the same as an HTTP `?consistent` read), and answers SERVFAIL if that does not come within
//! [`BARRIER_TIMEOUT`]. Client agents hold no catalog: they answer from per-name caches kept
//! current by blocking queries to a server ([`ClientView`]).
//!
//! Everything is bounded: requests over [`wire::REQUEST_BYTES_MAX`] are refused, at most
//! [`TCP_CONNECTIONS_MAX`] TCP connections are served at once (idle ones close after
//! [`TCP_IDLE`]), and at most [`SLOW_REQUESTS_MAX`] requests wait on a barrier or a recursor at a
//! time (more get SERVFAIL at once).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::answer::{self, Context, Shuffle, Step};
use super::client::{ClientView, Key};
use super::instances::InstanceMemo;
use super::name::{Parsed, Zone};
use super::wire::{self, Request, Transport};
use crate::config::DnsSettings;
use crate::io::udp::UdpSocket;
use crate::raft::NodeId;
use crate::server::{Consistency, Server};
use crate::state::State;

/// TCP connections served at once; more wait in the kernel's accept queue.
pub const TCP_CONNECTIONS_MAX: usize = 128;
/// A TCP connection that sends nothing for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Requests waiting on a read barrier or a recursor at once.
pub const SLOW_REQUESTS_MAX: usize = 256;
/// How long a request waits for a consistent read before SERVFAIL.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP receive loops sharing the socket.
const UDP_WORKERS: usize = 2;

/// The bound sockets, before their tasks start.
#[derive(Debug)]
pub struct DnsListeners {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    /// Where both listen (the same port on UDP and TCP).
    pub addr: SocketAddr,
}

/// Bind TCP and UDP on `ip:port`; port 0 takes an ephemeral port (TCP's, then the same for UDP).
pub async fn bind(ip: IpAddr, port: u16) -> std::io::Result<DnsListeners> {
    let tcp = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    let addr = tcp.local_addr()?;
    let udp = UdpSocket::bind(addr).await?;
    Ok(DnsListeners { udp: Arc::new(udp), tcp, addr })
}

/// Where answers come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// This agent is a server: its own replicated state.
    Server(Arc<Server>),
    /// A client agent: per-name caches filled from the servers and kept current by blocking
    /// queries ([`ClientView`]).
    Client(Arc<ClientView>),
}

/// What every request handler shares.
struct Shared {
    source: Source,
    /// The server's Raft ID, to tell whether it leads.
    raft_id: Option<NodeId>,
    settings: DnsSettings,
    zone: Zone,
    slow: Semaphore,
    /// A server's service answers, remembered while its catalog's index for the name stands.
    /// (A client's per-name catalogs are rebuilt from each fetch, so their indexes prove nothing.)
    memo: Option<InstanceMemo>,
}

/// Serve DNS on `listeners` until the task is dropped.
pub async fn serve(listeners: DnsListeners, source: Source, settings: DnsSettings, datacenter: String) {
    let zone = Zone::new(std::iter::once(settings.domain.as_str()).chain(settings.alt_domain.as_deref()), &datacenter);
    let raft_id = match &source {
        Source::Server(server) => Some(crate::raft::raft_id_from_node_id(&server.info().node_id)),
        Source::Client(_) => None,
    };
    let memo = matches!(source, Source::Server(_)).then(InstanceMemo::default);
    let shared = Arc::new(Shared { source, raft_id, settings, zone, slow: Semaphore::new(SLOW_REQUESTS_MAX), memo });
    let mut tasks = Vec::new();
    for _ in 0..UDP_WORKERS {
        tasks.push(tokio::spawn(udp_loop(listeners.udp.clone(), shared.clone())));
    }
    let tcp_shared = shared.clone();
    crate::io::accept_loop(listeners.tcp, TCP_CONNECTIONS_MAX, "DNS", move |stream, _| {
        serve_tcp(stream, tcp_shared.clone())
    })
    .await;
    for task in tasks {
        task.abort();
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    // One byte more than a request may be, so an oversized datagram is seen as such.
    let mut buffer = vec![0u8; wire::REQUEST_BYTES_MAX + 1];
    let mut shuffle = Shuffle::new(crate::io::random_seed());
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        let packet = &buffer[..len];
        match shared.quick(packet, Transport::Udp, &mut shuffle) {
            Quick::Reply(bytes) => send_udp(&socket, &bytes, peer).await,
            Quick::Drop => {}
            Quick::Slow(slow) => {
                let Ok(permit) = shared.slow.try_acquire() else {
                    send_udp(&socket, &slow.overloaded(&shared.settings), peer).await;
                    continue;
                };
                permit.forget();
                let (socket, shared, packet) = (socket.clone(), shared.clone(), packet.to_vec());
                let seed = crate::io::random_seed();
                tokio::spawn(async move {
                    let bytes = shared.slow(slow, &packet, &mut Shuffle::new(seed)).await;
                    shared.slow.add_permits(1);
                    send_udp(&socket, &bytes, peer).await;
                });
            }
        }
    }
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!(error = %e, %peer, "DNS UDP send failed");
    }
}

/// One TCP connection: length-prefixed requests, answered in order, until the client closes,
/// sends something that is not a query, or stays idle for [`TCP_IDLE`].
async fn serve_tcp(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut shuffle = Shuffle::new(crate::io::random_seed());
    let mut buffer = vec![0u8; wire::REQUEST_BYTES_MAX];
    loop {
        let mut prefix = [0u8; 2];
        match crate::io::timeout(TCP_IDLE, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 || len > wire::REQUEST_BYTES_MAX {
            // Reading it would mean buffering what cannot be a query; the stream is lost anyway.
            return;
        }
        match crate::io::timeout(TCP_IDLE, stream.read_exact(&mut buffer[..len])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let packet = &buffer[..len];
        let reply = match shared.quick(packet, Transport::Tcp, &mut shuffle) {
            Quick::Reply(bytes) => bytes,
            Quick::Drop => return,
            Quick::Slow(slow) => match shared.slow.try_acquire() {
                Ok(_permit) => shared.slow(slow, packet, &mut shuffle).await,
                Err(_) => slow.overloaded(&shared.settings),
            },
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else { return };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        // Flushed: a buffering stream (the simulator's) would otherwise hold the answer.
        if stream.write_all(&framed).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// What a packet needs after the synchronous part.
enum Quick {
    Reply(Vec<u8>),
    Drop,
    Slow(Slow),
}

/// Work that waits: a read barrier, a client's first fetch of a name, or a recursor.
enum Slow {
    Barrier(Request, Parsed),
    Fetch(Request, Parsed, Key),
    Recurse(Request),
}

impl Slow {
    fn request(&self) -> &Request {
        match self {
            Slow::Barrier(request, _) | Slow::Fetch(request, _, _) | Slow::Recurse(request) => request,
        }
    }

    fn overloaded(&self, settings: &DnsSettings) -> Vec<u8> {
        answer::error_reply(self.request(), ResponseCode::ServFail, settings)
    }
}

impl Shared {
    /// Everything that needs no waiting: decoding, errors, and answers from a fresh local state.
    fn quick(&self, packet: &[u8], transport: Transport, shuffle: &mut Shuffle) -> Quick {
        match answer::classify(packet, transport, &self.zone, &self.settings) {
            Step::Reply(bytes) => Quick::Reply(bytes),
            Step::Drop => Quick::Drop,
            Step::Recurse(request) => Quick::Slow(Slow::Recurse(request)),
            Step::Answer(request, parsed) => match &self.source {
                Source::Server(server) if self.stale_allowed(server) => {
                    Quick::Reply(self.answer_from(server, &request, &parsed, shuffle))
                }
                Source::Server(_) => Quick::Slow(Slow::Barrier(request, parsed)),
                Source::Client(view) => match Key::of(&parsed.lookup) {
                    None => Quick::Reply(self.answer_over(&State::default(), &request, &parsed, shuffle)),
                    Some(key) => match view.cached(&key) {
                        Some(state) => Quick::Reply(self.answer_over(&state, &request, &parsed, shuffle)),
                        None => Quick::Slow(Slow::Fetch(request, parsed, key)),
                    },
                },
            },
        }
    }

    async fn slow(&self, slow: Slow, packet: &[u8], shuffle: &mut Shuffle) -> Vec<u8> {
        match slow {
            Slow::Recurse(request) => match recurse(&self.settings, packet, request.metadata.id).await {
                Some(bytes) => bytes,
                None => answer::error_reply(&request, ResponseCode::ServFail, &self.settings),
            },
            Slow::Fetch(request, parsed, key) => {
                let Source::Client(view) = &self.source else {
                    return answer::error_reply(&request, ResponseCode::ServFail, &self.settings);
                };
                match view.fetch(key).await {
                    Some(state) => self.answer_over(&state, &request, &parsed, shuffle),
                    None => answer::error_reply(&request, ResponseCode::ServFail, &self.settings),
                }
            }
            Slow::Barrier(request, parsed) => {
                let Source::Server(server) = &self.source else {
                    return answer::error_reply(&request, ResponseCode::ServFail, &self.settings);
                };
                match crate::io::timeout(BARRIER_TIMEOUT, server.read_barrier(Consistency::Default)).await {
                    Ok(Ok(_)) => self.answer_from(server, &request, &parsed, shuffle),
                    _ => answer::error_reply(&request, ResponseCode::ServFail, &self.settings),
                }
            }
        }
    }

    /// May this server answer from its own state without asking the leader? Yes if it leads and
    /// a quorum acknowledged it within `max_stale`, or it follows and heard from its leader
    /// within `max_stale`. A leader cut off from its followers keeps believing it leads (nothing
    /// steps it down) while the others may already have elected another and taken writes: its
    /// quorum's silence is what dates its state.
    fn stale_allowed(&self, server: &Server) -> bool {
        if !self.settings.allow_stale {
            return false;
        }
        let (leader, millis_since_quorum_ack) = {
            let metrics = server.raft().metrics();
            let metrics = metrics.borrow();
            (metrics.current_leader, metrics.millis_since_quorum_ack)
        };
        match leader {
            None => false,
            // openraft republishes this on every turn of its loop, heartbeats included, so it is
            // at most a heartbeat interval older than the truth.
            Some(leader) if Some(leader) == self.raft_id => {
                millis_since_quorum_ack.is_some_and(|millis| Duration::from_millis(millis) <= self.settings.max_stale)
            }
            Some(_) => server.leader_contact_at().elapsed() <= self.settings.max_stale,
        }
    }

    fn answer_from(&self, server: &Server, request: &Request, parsed: &Parsed, shuffle: &mut Shuffle) -> Vec<u8> {
        self.answer_over(&server.state().read(), request, parsed, shuffle)
    }

    fn answer_over(&self, state: &State, request: &Request, parsed: &Parsed, shuffle: &mut Shuffle) -> Vec<u8> {
        let context =
            Context { catalog: state.catalog(), settings: &self.settings, zone: &self.zone, memo: self.memo.as_ref() };
        answer::answer(request, parsed, context, shuffle)
    }
}

/// Forward `packet` to each recursor in turn until one answers it (same ID, a response) within
/// the recursor timeout.
async fn recurse(settings: &DnsSettings, packet: &[u8], id: u16) -> Option<Vec<u8>> {
    for &upstream in &settings.recursors {
        let local = match upstream.ip() {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let Ok(socket) = UdpSocket::bind(local).await else { continue };
        if socket.send_to(packet, upstream).await.is_err() {
            continue;
        }
        let mut buffer = vec![0u8; usize::from(wire::UDP_BYTES_MAX)];
        let received = crate::io::timeout(settings.recursor_timeout, socket.recv_from(&mut buffer)).await;
        let Ok(Ok((len, from))) = received else {
            tracing::debug!(%upstream, "recursor did not answer in time");
            continue;
        };
        let reply = &buffer[..len];
        let answers_us = from == upstream && len >= 12 && reply[..2] == id.to_be_bytes() && reply[2] & 0x80 != 0;
        if answers_us {
            return Some(reply.to_vec());
        }
    }
    None
}
