//! Bootstrapping Raft from the servers gossip shows.
//!
//! Consul's `bootstrap_expect`: once at least that many servers of this datacenter are alive in
//! the LAN pool, this server asks each of them whether it already has a Raft configuration. Only
//! if none has does it initialize Raft with exactly those servers. Every server sees the same
//! members once gossip converges and computes the same set, and openraft accepts the same initial
//! configuration from several servers, so the cluster starts with one configuration. A server
//! that finds an initialized peer does nothing: the leader adds it (`server::membership`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Server;
use crate::gossip::{Member, MemberStatus, Membership};
use crate::raft::{raft_id_from_node_id, ServerInfo};
use crate::rpc::message::{Request, Response, ServerStatus};
use crate::rpc::RpcClient;

const STATUS_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often to look again when the view did not change (a peer's status may have).
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The Raft identity of a server member, if it is an alive server of `datacenter` with a usable
/// RPC address.
pub fn server_info(member: &Member, datacenter: &str) -> Option<ServerInfo> {
    if member.meta.datacenter != datacenter || member.status != MemberStatus::Alive {
        return None;
    }
    let rpc_addr = member.server_rpc_addr()?;
    Some(ServerInfo {
        name: member.name.clone(),
        node_id: member.meta.node_id.clone(),
        rpc_addr: rpc_addr.to_string(),
        lan_addr: member.addr.to_string(),
    })
}

/// The alive servers of `datacenter` in `membership`, by Raft ID.
pub fn alive_servers(membership: &Membership, datacenter: &str) -> BTreeMap<u64, ServerInfo> {
    membership
        .servers(datacenter)
        .filter_map(|member| server_info(member, datacenter))
        .map(|info| (raft_id_from_node_id(&info.node_id), info))
        .collect()
}

/// Run until Raft is initialized on this server (by us or by the cluster it joined). Without
/// `bootstrap_expect` there is nothing to do: the server waits to be added by a leader.
pub async fn run(server: Arc<Server>, mut membership: watch::Receiver<Membership>, bootstrap_expect: Option<u32>) {
    let Some(expect) = bootstrap_expect else { return };
    let rpc = RpcClient::new(crate::rpc::Preamble::SERVER);
    loop {
        if server.raft().is_initialized().await.unwrap_or(true) {
            return;
        }
        let servers = alive_servers(&membership.borrow_and_update(), server.datacenter());
        if servers.len() >= expect as usize && try_bootstrap(&server, &rpc, servers).await {
            return;
        }
        // Wake on the next change of the view, or after a while to ask the peers again.
        let _ = crate::io::timeout(RECHECK_INTERVAL, membership.changed()).await;
    }
}

/// Bootstrap with `servers` if none of them has a Raft configuration yet. Returns true once this
/// server's Raft is initialized.
async fn try_bootstrap(server: &Server, rpc: &RpcClient, servers: BTreeMap<u64, ServerInfo>) -> bool {
    for peer in servers.values().filter(|peer| peer.node_id != server.info().node_id) {
        match peer_status(rpc, peer).await {
            Some(status) if status.initialized => {
                tracing::info!(peer = %peer, "a server already has a Raft configuration; waiting to be added");
                return false;
            }
            Some(_) => {}
            None => return false, // cannot tell yet: try again next round
        }
    }
    if !servers.values().any(|peer| peer.node_id == server.info().node_id) {
        return false; // our own entry has not appeared in the view yet
    }
    tracing::info!(servers = ?servers.values().map(ToString::to_string).collect::<Vec<_>>(), "bootstrapping Raft");
    match server.raft().initialize(servers).await {
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
    match rpc.call::<_, Response>(addr, &Request::Status, STATUS_RPC_TIMEOUT).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{MemberMeta, Role};

    fn member(name: &str, role: Role, dc: &str, status: MemberStatus) -> Member {
        Member {
            name: name.into(),
            addr: "10.0.0.1:8301".parse().unwrap(),
            meta: MemberMeta {
                role,
                datacenter: dc.into(),
                node_id: format!("{name}-id"),
                server_port: Some(8300),
                build: "0.1.0".into(),
                protocol: 1,
            },
            status,
            generation: 1,
            status_since: tokio::time::Instant::now(),
        }
    }

    /// Only alive servers of our datacenter count towards `bootstrap_expect`.
    #[test]
    fn only_alive_servers_of_our_datacenter_count() {
        let view = Membership::from_members([
            member("s1", Role::Server, "dc1", MemberStatus::Alive),
            member("s2", Role::Server, "dc1", MemberStatus::Failed),
            member("s3", Role::Server, "dc2", MemberStatus::Alive),
            member("c1", Role::Client, "dc1", MemberStatus::Alive),
            member("s4", Role::Server, "dc1", MemberStatus::Alive),
        ]);
        let names: Vec<String> = alive_servers(&view, "dc1").into_values().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["s1", "s4"]);
        let s1 = alive_servers(&view, "dc1").into_values().find(|s| s.name == "s1").unwrap();
        assert_eq!(s1.rpc_addr, "10.0.0.1:8300");
        assert_eq!(s1.lan_addr, "10.0.0.1:8301");
    }
}
