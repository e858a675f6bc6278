//! LAN gossip: SWIM membership and failure detection among every agent, server or client.
//!
//! The protocol core is `foca` (sans-io SWIM); this module drives it over UDP on the LAN port
//! (`-serf-lan-port`, 8301), encrypts packets with the keyring when `-encrypt` is set, and keeps
//! the [`Membership`] view that the rest of the agent reads: servers find each other in it, the
//! Raft leader reconciles it into the catalog and into the Raft configuration, and
//! `/v1/agent/members` shows it.
//!
//! Everything that flows out of this module is in the types below; the rest is private.

pub mod identity;
pub mod keyring;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What an agent is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Server,
    Client,
}

/// What every member tells the others about itself, typed (Serf carries these as string tags).
/// Fixed for one incarnation of an agent: a change means a new identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    pub role: Role,
    pub datacenter: String,
    /// The agent's node ID (a UUID); servers' Raft IDs derive from it.
    pub node_id: String,
    /// Servers only: the port of their server RPC listener (on the member's address).
    pub server_port: Option<u16>,
    /// `cairn` version, e.g. "0.1.0".
    pub build: String,
    /// Gossip protocol version this member speaks.
    pub protocol: u8,
}

/// A member's state as this agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Someone failed to probe it; it has a while to refute before it is declared failed.
    Suspect,
    /// Declared down by the cluster (not heard from, did not refute). Reaped after
    /// `reconnect_timeout` (72 h by default).
    Failed,
    /// Left gracefully (`cairn leave`, or a signal), or was force-left.
    Left,
}

impl MemberStatus {
    /// Consul's word for it (`cairn members`, `/v1/agent/members` use Serf's numbers).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Failed => "failed",
            MemberStatus::Left => "left",
        }
    }
}

/// One member of the LAN pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name (unique in the datacenter).
    pub name: String,
    /// Its gossip address (the LAN port).
    pub addr: SocketAddr,
    pub meta: MemberMeta,
    pub status: MemberStatus,
    /// Grows each time the agent restarts or renews its identity after a false failure verdict.
    pub generation: u64,
    /// When this agent saw the member enter its current status.
    pub status_since: tokio::time::Instant,
}

impl Member {
    /// The member's server RPC address, if it is a server.
    pub fn server_rpc_addr(&self) -> Option<SocketAddr> {
        let port = self.meta.server_port.filter(|_| self.meta.role == Role::Server)?;
        Some(SocketAddr::new(self.addr.ip(), port))
    }
}

/// The whole LAN pool as this agent sees it, by node name. Published on every change through a
/// `tokio::sync::watch` channel; readers take a snapshot and never hold it across an await.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<String, Member>,
}

impl Membership {
    /// A view holding exactly `members` (the gossip driver builds it; tests build their own).
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Self {
        Membership { members: members.into_iter().map(|m| (m.name.clone(), m)).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Every member, this agent included, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The servers of `datacenter`, in any status.
    pub fn servers<'a>(&'a self, datacenter: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.iter().filter(move |m| m.meta.role == Role::Server && m.meta.datacenter == datacenter)
    }
}
