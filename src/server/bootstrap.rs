//! Finding the other servers and bootstrapping Raft.
//!
//! Until gossip exists, servers find each other through a join exchange on the LAN port (TCP
//! 8301): each side sends every server it knows and learns every server the other knows. A server
//! keeps exchanging with its `-retry-join` addresses (every `retry_interval` until one answers)
//! and, once any answered, with every server it knows (every second), until Raft is initialized.
//!
//! Bootstrap is Consul's `bootstrap_expect`: once at least that many servers know each other, each
//! asks every other one whether it already has a Raft configuration. Only if none has does it
//! initialize Raft with all the servers it knows. Every server computes the same set (the union
//! the exchange converges to), and openraft accepts the same initial configuration from several
//! servers, so the cluster starts with one configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::config::JoinAddress;
use crate::raft::{raft_id_from_node_id, ServerInfo};
use crate::rpc::message::{JoinRequest, JoinResponse, Request, Response, ServerStatus};
use crate::rpc::{Handler, RpcClient};

/// Period of the exchange with already-known servers while bootstrapping.
const KNOWN_SERVER_EXCHANGE_INTERVAL: Duration = Duration::from_secs(1);
const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Most servers one server keeps track of. Consul recommends 3 or 5 servers per datacenter; this is
/// a bound against a confused or hostile peer, not a sizing limit.
pub const MAX_KNOWN_SERVERS: usize = 64;

/// The servers this one has heard of, by node ID. What peers send is untrusted: entries that do
/// not name a node ID and two parseable addresses are ignored, and the set stops growing at
/// [`MAX_KNOWN_SERVERS`].
#[derive(Debug, Default)]
pub struct KnownServers(BTreeMap<String, ServerInfo>);

impl KnownServers {
    /// Add `servers` (a newer entry for a node ID replaces the older); returns how many were new.
    pub fn learn(&mut self, servers: impl IntoIterator<Item = ServerInfo>) -> usize {
        let before = self.0.len();
        for server in servers {
            let well_formed = !server.node_id.is_empty()
                && server.node_id.len() <= 64
                && server.name.len() <= 256
                && server.socket_addr().is_some()
                && server.lan_socket_addr().is_some();
            if !well_formed {
                tracing::warn!(server = ?server, "ignoring a malformed server entry from a join");
                continue;
            }
            if self.0.len() >= MAX_KNOWN_SERVERS && !self.0.contains_key(&server.node_id) {
                tracing::warn!(limit = MAX_KNOWN_SERVERS, "too many servers announced; ignoring the rest");
                break;
            }
            self.0.insert(server.node_id.clone(), server);
        }
        self.0.len() - before
    }

    /// Every known server, sorted by node ID.
    pub fn list(&self) -> Vec<ServerInfo> {
        self.0.values().cloned().collect()
    }
}

/// How to find the cluster.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub retry_join: Vec<JoinAddress>,
    pub retry_interval: Duration,
    /// Attempts at the retry-join addresses before giving up; 0 means forever.
    pub retry_max: u32,
    /// Bootstrap once this many servers know each other; `None`: never bootstrap, only join.
    pub bootstrap_expect: Option<u32>,
}

/// Answers the join exchange on the LAN port.
#[derive(Debug)]
pub struct JoinHandler(pub Arc<Server>);

impl Handler<JoinRequest, JoinResponse> for JoinHandler {
    async fn handle(&self, request: JoinRequest) -> JoinResponse {
        let server = &self.0;
        if request.datacenter != server.datacenter() {
            tracing::warn!(peer = %request.from, theirs = %request.datacenter, "refused join from another datacenter");
            return JoinResponse::WrongDatacenter { theirs: server.datacenter().to_string() };
        }
        let new = server.learn_servers(std::iter::once(request.from).chain(request.known));
        if new > 0 {
            tracing::info!(new, known = server.known_servers().len(), "learnt servers through a join");
        }
        JoinResponse::Known(server.known_servers())
    }
}

/// Run until Raft is initialized on this server (by us or by the cluster it joined).
pub async fn run(server: Arc<Server>, plan: JoinPlan) {
    let join_rpc = RpcClient::new(crate::rpc::Preamble::JOIN);
    let server_rpc = RpcClient::new(crate::rpc::Preamble::SERVER);
    let mut joined = false;
    let mut attempts = 0u32;
    let mut next_retry_join = tokio::time::Instant::now();
    loop {
        if server.raft().is_initialized().await.unwrap_or(true) {
            return;
        }
        let now = tokio::time::Instant::now();
        if !joined && now >= next_retry_join && !plan.retry_join.is_empty() {
            joined = join_any(&server, &join_rpc, &plan.retry_join).await;
            attempts += 1;
            next_retry_join = now + plan.retry_interval;
            if !joined && plan.retry_max > 0 && attempts >= plan.retry_max {
                tracing::error!(attempts, "could not join any of -retry-join; giving up");
                return;
            }
        }
        if joined {
            exchange_with_known(&server, &join_rpc).await;
        }
        if let Some(expect) = plan.bootstrap_expect {
            if try_bootstrap(&server, &server_rpc, expect).await {
                return;
            }
        }
        tokio::time::sleep(KNOWN_SERVER_EXCHANGE_INTERVAL).await;
    }
}

/// Exchange with each retry-join address; true if any answered.
async fn join_any(server: &Server, rpc: &RpcClient, addresses: &[JoinAddress]) -> bool {
    let mut any = false;
    for address in addresses {
        let resolved = match tokio::net::lookup_host((address.host.as_str(), address.port)).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                tracing::warn!(%address, error = %e, "cannot resolve join address");
                None
            }
        };
        if let Some(addr) = resolved {
            any |= exchange(server, rpc, addr).await;
        }
    }
    any
}

async fn exchange_with_known(server: &Server, rpc: &RpcClient) {
    for peer in server.known_servers() {
        if peer.node_id == server.info().node_id {
            continue;
        }
        if let Some(lan_addr) = peer.lan_socket_addr() {
            exchange(server, rpc, lan_addr).await;
        }
    }
}

async fn exchange(server: &Server, rpc: &RpcClient, addr: SocketAddr) -> bool {
    let request = JoinRequest {
        datacenter: server.datacenter().to_string(),
        from: server.info().clone(),
        known: server.known_servers(),
    };
    match rpc.call::<_, JoinResponse>(addr, &request, JOIN_RPC_TIMEOUT).await {
        Ok(JoinResponse::Known(servers)) => {
            server.learn_servers(servers);
            true
        }
        Ok(JoinResponse::WrongDatacenter { theirs }) => {
            tracing::error!(%addr, theirs, ours = server.datacenter(), "join address is in another datacenter");
            false
        }
        Err(e) => {
            tracing::debug!(%addr, error = %e, "join exchange failed");
            false
        }
    }
}

/// Bootstrap if `expect` servers are known and none of them has a Raft configuration yet.
/// Returns true once this server's Raft is initialized.
async fn try_bootstrap(server: &Server, rpc: &RpcClient, expect: u32) -> bool {
    let known = server.known_servers();
    if known.len() < expect as usize {
        return false;
    }
    for peer in known.iter().filter(|peer| peer.node_id != server.info().node_id) {
        match peer_status(rpc, peer).await {
            Some(status) if status.initialized => {
                tracing::info!(peer = %peer, "a known server already has a Raft configuration; not bootstrapping");
                return false;
            }
            Some(_) => {}
            None => return false, // cannot tell yet: try again next round
        }
    }
    let members: BTreeMap<_, _> = known.iter().map(|s| (raft_id_from_node_id(&s.node_id), s.clone())).collect();
    tracing::info!(servers = ?known.iter().map(ToString::to_string).collect::<Vec<_>>(), "bootstrapping Raft");
    match server.raft().initialize(members).await {
        Ok(()) => true,
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => true,
        Err(e) => {
            tracing::error!(error = %e, "bootstrap failed");
            false
        }
    }
}

async fn peer_status(rpc: &RpcClient, peer: &ServerInfo) -> Option<ServerStatus> {
    let addr = peer.socket_addr()?;
    match rpc.call::<_, Response>(addr, &Request::Status, JOIN_RPC_TIMEOUT).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(n: usize) -> ServerInfo {
        ServerInfo {
            name: format!("s{n}"),
            node_id: format!("id-{n}"),
            rpc_addr: format!("10.0.0.{}:8300", n % 250 + 1),
            lan_addr: format!("10.0.0.{}:8301", n % 250 + 1),
        }
    }

    /// Servers are learnt once by node ID; a newer entry replaces the older one.
    #[test]
    fn servers_are_keyed_by_node_id() {
        let mut known = KnownServers::default();
        assert_eq!(known.learn([server(1), server(2)]), 2);
        let moved = ServerInfo { rpc_addr: "10.9.9.9:8300".into(), ..server(1) };
        assert_eq!(known.learn([moved.clone(), server(2)]), 0);
        assert_eq!(known.list(), [moved, server(2)]);
    }

    /// Entries without a node ID or with unparseable addresses are ignored.
    #[test]
    fn malformed_entries_are_ignored() {
        let mut known = KnownServers::default();
        let no_id = ServerInfo { node_id: String::new(), ..server(1) };
        let bad_addr = ServerInfo { rpc_addr: "not an address".into(), ..server(2) };
        let huge_name = ServerInfo { name: "x".repeat(10_000), ..server(3) };
        assert_eq!(known.learn([no_id, bad_addr, huge_name, server(4)]), 1);
        assert_eq!(known.list(), [server(4)]);
    }

    /// A peer announcing thousands of servers cannot grow the set past the limit.
    #[test]
    fn the_set_is_bounded() {
        let mut known = KnownServers::default();
        known.learn((0..10_000).map(server));
        assert_eq!(known.list().len(), MAX_KNOWN_SERVERS);
    }
}
