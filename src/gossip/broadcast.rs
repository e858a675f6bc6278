//! Our custom broadcasts inside foca: which are news (relayed, handed to the driver) and which are
//! stale (dropped).
//!
//! foca owns its [`BroadcastHandler`] and offers no way back to it, so news is queued in an
//! [`Inbox`] the driver shares and drains after every call into foca.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Invalidates};

use super::identity::NodeIdentity;
use super::wire::{decode_broadcast, Broadcast, WireError};

/// Leave intents remembered for deduplication. Forgetting one only means relaying it again if it
/// comes back, which the other members then drop as stale.
const MAX_TRACKED_LEAVES: usize = 4096;
/// Queries remembered for deduplication, oldest forgotten first. A query is answered within its
/// timeout (seconds); by the time a thousand newer ones were seen it is long finished.
const MAX_TRACKED_QUERIES: usize = 1024;
/// News waiting for the driver. The driver drains after each packet, which carries at most
/// `MAX_BROADCASTS_PER_PACKET`; the bound only matters if it stops draining.
const MAX_INBOX: usize = 1024;

/// News from custom broadcasts, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inbox(Arc<Mutex<VecDeque<Broadcast>>>);

impl Inbox {
    pub(crate) fn drain(&self) -> Vec<Broadcast> {
        self.0.lock().expect("gossip inbox lock").drain(..).collect()
    }

    fn push(&self, broadcast: Broadcast) {
        let mut queue = self.0.lock().expect("gossip inbox lock");
        if queue.len() < MAX_INBOX {
            queue.push_back(broadcast);
        }
    }
}

/// What a queued broadcast is about, so fresher news replaces staler news in foca's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BroadcastKey {
    Leave { name: String, generation: u64 },
    Query { origin: String, id: u64 },
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Leave { name, generation }, BroadcastKey::Leave { name: other, generation: older }) => {
                name == other && generation >= older
            }
            (query @ BroadcastKey::Query { .. }, other) => query == other,
            (BroadcastKey::Leave { .. }, BroadcastKey::Query { .. }) => false,
        }
    }
}

/// Decides novelty: a leave intent is news if it is for a newer generation than any seen for
/// that name, a query if its (origin, id) was not seen. Unknown kinds (from newer agents) are
/// neither relayed nor errors.
#[derive(Debug)]
pub(crate) struct Handler {
    leaves: BTreeMap<String, u64>,
    queries: BTreeSet<(String, u64)>,
    query_order: VecDeque<(String, u64)>,
    inbox: Inbox,
}

impl Handler {
    pub(crate) fn new(inbox: Inbox) -> Self {
        Handler { leaves: BTreeMap::new(), queries: BTreeSet::new(), query_order: VecDeque::new(), inbox }
    }

    fn query_is_news(&mut self, origin: &str, id: u64) -> bool {
        let key = (origin.to_owned(), id);
        if self.queries.contains(&key) {
            return false;
        }
        if self.query_order.len() >= MAX_TRACKED_QUERIES {
            if let Some(oldest) = self.query_order.pop_front() {
                self.queries.remove(&oldest);
            }
        }
        self.queries.insert(key.clone());
        self.query_order.push_back(key);
        true
    }

    fn leave_is_news(&mut self, name: &str, generation: u64) -> bool {
        if self.leaves.get(name).is_some_and(|seen| *seen >= generation) {
            return false;
        }
        if self.leaves.len() >= MAX_TRACKED_LEAVES && !self.leaves.contains_key(name) {
            self.leaves.pop_first();
        }
        self.leaves.insert(name.to_owned(), generation);
        true
    }
}

impl BroadcastHandler<NodeIdentity> for Handler {
    type Key = BroadcastKey;
    type Error = WireError;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&NodeIdentity>) -> Result<Option<BroadcastKey>, WireError> {
        let broadcast = decode_broadcast(data)?;
        let key = match &broadcast {
            Broadcast::LeaveIntent { name, generation } => {
                if !self.leave_is_news(name, *generation) {
                    return Ok(None);
                }
                BroadcastKey::Leave { name: name.clone(), generation: *generation }
            }
            Broadcast::KeyringQuery(query) => {
                if !self.query_is_news(&query.origin, query.id) {
                    return Ok(None);
                }
                BroadcastKey::Query { origin: query.origin.clone(), id: query.id }
            }
            Broadcast::Unknown { .. } => return Ok(None),
        };
        self.inbox.push(broadcast);
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::wire::encode_broadcast;

    fn leave(name: &str, generation: u64) -> Vec<u8> {
        encode_broadcast(&Broadcast::LeaveIntent { name: name.into(), generation }).unwrap()
    }

    /// A leave intent is relayed once per generation; an older or repeated one is stale.
    #[test]
    fn leave_intents_are_news_once() {
        let inbox = Inbox::default();
        let mut handler = Handler::new(inbox.clone());
        assert!(handler.receive_item(&leave("a", 2), None).unwrap().is_some());
        assert!(handler.receive_item(&leave("a", 2), None).unwrap().is_none());
        assert!(handler.receive_item(&leave("a", 1), None).unwrap().is_none());
        assert!(handler.receive_item(&leave("a", 3), None).unwrap().is_some());
        assert!(handler.receive_item(&leave("b", 0), None).unwrap().is_some());
        assert_eq!(inbox.drain().len(), 3);
        assert!(inbox.drain().is_empty());
    }

    /// Kinds from newer agents are ignored, not errors; garbage is an error.
    #[test]
    fn unknown_kinds_ignored() {
        let inbox = Inbox::default();
        let mut handler = Handler::new(inbox.clone());
        assert!(handler.receive_item(&[0x7E, 1, 2], None).unwrap().is_none());
        assert!(handler.receive_item(&[0x01, 200], None).is_err());
        assert!(inbox.drain().is_empty());
    }

    /// A query is news once per (origin, id), so each member applies it once.
    #[test]
    fn queries_are_news_once() {
        use crate::gossip::wire::KeyringQuery;
        use crate::gossip::KeyringOp;
        let query = |origin: &str, id| {
            let q = KeyringQuery {
                id,
                origin: origin.into(),
                reply_to: "127.0.0.1:1".parse().unwrap(),
                op: KeyringOp::List,
            };
            encode_broadcast(&Broadcast::KeyringQuery(q)).unwrap()
        };
        let inbox = Inbox::default();
        let mut handler = Handler::new(inbox.clone());
        assert!(handler.receive_item(&query("a", 1), None).unwrap().is_some());
        assert!(handler.receive_item(&query("a", 1), None).unwrap().is_none());
        assert!(handler.receive_item(&query("b", 1), None).unwrap().is_some());
        assert_eq!(inbox.drain().len(), 2);
        for id in 2..(MAX_TRACKED_QUERIES as u64 + 10) {
            handler.receive_item(&query("a", id), None).unwrap();
        }
        assert!(handler.queries.len() <= MAX_TRACKED_QUERIES);
    }

    #[test]
    fn newer_leave_invalidates_older() {
        let old = BroadcastKey::Leave { name: "a".into(), generation: 1 };
        let new = BroadcastKey::Leave { name: "a".into(), generation: 2 };
        assert!(new.invalidates(&old));
        assert!(!old.invalidates(&new));
        assert!(!new.invalidates(&BroadcastKey::Leave { name: "b".into(), generation: 1 }));
    }
}
