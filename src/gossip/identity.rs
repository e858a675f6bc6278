//! Who a member is on the wire: foca's [`Identity`].
//!
//! An identity is the member's name and gossip address, the metadata it announces, and a
//! generation. SWIM never lets a member come back from `Down` under the identity that went down,
//! so the generation is what lets an agent that was wrongly declared down (or that restarted)
//! rejoin at once: foca calls [`Identity::renew`], the generation grows, and the newer identity
//! wins the conflict with the one the cluster remembers at the same name and address.

use std::net::SocketAddr;
use std::sync::Arc;

use foca::Identity;

use super::{MemberMeta, Role};

/// One incarnation of one agent, as foca and the wire see it.
///
/// The name and metadata sit behind `Arc`s: foca clones identities and compares their
/// [`IdentityAddr`] on every update it applies, and those must not allocate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdentity {
    name: Arc<str>,
    addr: SocketAddr,
    meta: Arc<MemberMeta>,
    generation: u64,
}

/// What makes two identities "the same member": name and gossip address. Foca keeps at most one
/// identity per `IdentityAddr` and resolves conflicts with [`NodeIdentity::win_addr_conflict`].
/// (foca 1.x called this `has_same_prefix`.)
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct IdentityAddr {
    pub name: Arc<str>,
    pub addr: SocketAddr,
}

/// The address first: foca 2 finds a member by comparing its `IdentityAddr` with every member's
/// in turn (the largest cost at 1,000 agents), and two members almost always differ in address,
/// which compares without reading the names. Equal exactly when the derived order says so.
impl PartialEq for IdentityAddr {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.name == other.name
    }
}

/// As derived (name, then address), written out because `PartialEq` is.
impl std::hash::Hash for IdentityAddr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.addr.hash(state);
    }
}

impl NodeIdentity {
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr, meta: MemberMeta, generation: u64) -> Self {
        NodeIdentity { name: name.into(), addr, meta: Arc::new(meta), generation }
    }

    /// The stand-in for a member we know only by address: joining announces to it, because the
    /// joiner does not know the seed's name. The receiving driver recognises it (empty name) and
    /// addresses the announce to its own identity. Never a member: real names are never empty.
    pub fn placeholder(addr: SocketAddr) -> Self {
        let meta = MemberMeta {
            role: Role::Client,
            datacenter: String::new(),
            node_id: String::new(),
            server_port: None,
            build: String::new(),
            protocol: 0,
        };
        NodeIdentity::new("", addr, meta, 0)
    }

    pub fn is_placeholder(&self) -> bool {
        self.name.is_empty()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn meta(&self) -> &MemberMeta {
        &self.meta
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The same member at another generation.
    pub fn with_generation(&self, generation: u64) -> Self {
        NodeIdentity { generation, ..self.clone() }
    }

    /// True when both identities name the same member (same name and address), whatever their
    /// generation or metadata.
    pub fn has_same_prefix(&self, other: &Self) -> bool {
        self.name == other.name && self.addr == other.addr
    }
}

impl Identity for NodeIdentity {
    type Addr = IdentityAddr;

    /// The next generation: the identity that replaces one the cluster declared down.
    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(self.with_generation(generation))
    }

    fn addr(&self) -> IdentityAddr {
        IdentityAddr { name: self.name.clone(), addr: self.addr }
    }

    /// The higher generation wins. Two different identities at one generation can only come from
    /// a misconfiguration (two agents with one name and address); the metadata breaks the tie so
    /// every member keeps the same one.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.meta) > (adversary.generation, &adversary.meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(build: &str) -> MemberMeta {
        MemberMeta {
            role: Role::Server,
            datacenter: "dc1".into(),
            node_id: "6a3c4b52-54f4-4bd0-9a9a-000000000001".into(),
            server_port: Some(8300),
            build: build.into(),
            protocol: 1,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    /// A renewed identity is the same member and wins over the one it replaces, as foca requires.
    #[test]
    fn renew_bumps_generation_and_wins() {
        let id = NodeIdentity::new("a", addr(8301), meta("0.1.0"), 3);
        let renewed = id.renew().expect("renewable");
        assert_eq!(renewed.generation(), 4);
        assert!(renewed.has_same_prefix(&id));
        assert_eq!(Identity::addr(&renewed), Identity::addr(&id));
        assert!(renewed.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&renewed));
        assert_eq!(id.with_generation(u64::MAX).renew(), None);
    }

    /// Name and address together make the member: either one differing is another member.
    #[test]
    fn prefix_is_name_and_address() {
        let id = NodeIdentity::new("a", addr(8301), meta("0.1.0"), 0);
        assert!(!id.has_same_prefix(&NodeIdentity::new("b", addr(8301), meta("0.1.0"), 0)));
        assert!(!id.has_same_prefix(&NodeIdentity::new("a", addr(8302), meta("0.1.0"), 0)));
        assert!(id.has_same_prefix(&NodeIdentity::new("a", addr(8301), meta("0.2.0"), 9)));
    }

    /// Conflicts at one generation are decided the same way from both sides.
    #[test]
    fn ties_break_deterministically() {
        let x = NodeIdentity::new("a", addr(8301), meta("0.1.0"), 2);
        let y = NodeIdentity::new("a", addr(8301), meta("0.2.0"), 2);
        assert_ne!(x.win_addr_conflict(&y), y.win_addr_conflict(&x));
    }

    #[test]
    fn placeholder_is_recognised() {
        let p = NodeIdentity::placeholder(addr(8301));
        assert!(p.is_placeholder());
        assert!(!NodeIdentity::new("a", addr(8301), meta("0.1.0"), 0).is_placeholder());
    }
}
