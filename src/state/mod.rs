//! The replicated state machine: a pure value changed only by [`State::apply`].
//!
//! Every server applies the same committed [`Command`]s in log order with their Raft index, so
//! every replica holds the same `State`. It holds the KV store ([`Kv`]) and the catalog
//! ([`Catalog`]) with Consul's per-entry `CreateIndex`/`ModifyIndex` and per-table indexes, from
//! which the `X-Consul-Index` of a read is derived. The global index ([`State::last_index`]) is the
//! index of the last applied log entry and only ever increases.
//!
//! Determinism is the contract: no clock, no randomness, no I/O, and only ordered maps, so that
//! equal logs give equal states, equal snapshots ([`State::to_snapshot`]) and equal digests
//! ([`State::digest`]) on every platform.

pub mod catalog;
pub mod command;
mod consistency;
pub mod kv;
mod snapshot;

#[cfg(test)]
mod proptests;

use serde::{Deserialize, Serialize};

pub use catalog::{
    Catalog, CatalogError, HealthBar, HealthCheck, Node, NodeEntries, ServiceInstance, SERF_HEALTH_CHECK_ID,
};
pub use command::*;
pub use consistency::{Inconsistency, Table};
pub use kv::{Kv, KvEntry};
pub use snapshot::{SnapshotDecodeError, SNAPSHOT_BYTES_MAX, SNAPSHOT_VERSION};

/// The whole replicated state at [`State::last_index`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    last_index: u64,
    kv: Kv,
    catalog: Catalog,
}

impl State {
    /// Apply one committed command at Raft log index `index`, which must be greater than
    /// [`State::last_index`]. The index advances whatever the outcome: a failed check-and-set or
    /// a rejected registration is still an applied log entry.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        if !self.take_index(index) {
            return Outcome::Done;
        }
        self.apply_at(index, command)
    }

    /// Apply the commands of one log entry in order, all at its `index`, as Consul applies the
    /// operations of a transaction: each sees the effects of those before it, and every row they
    /// touch gets `index` as its modify index. Servers batch concurrent writes this way so that
    /// one log append (and one fsync per server) commits many of them.
    pub fn apply_batch(&mut self, index: u64, commands: &[Command]) -> Vec<Outcome> {
        if !self.take_index(index) {
            return vec![Outcome::Done; commands.len()];
        }
        commands.iter().map(|command| self.apply_at(index, command)).collect()
    }

    fn apply_at(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Kv(command) => self.kv.apply(index, command),
            Command::Catalog(command) => self.catalog.apply(index, command),
        }
    }

    /// Record an entry without a command (Raft blank entries, membership changes): they move the
    /// global index, which reads report when nothing else changed.
    pub fn advance(&mut self, index: u64) {
        self.take_index(index);
    }

    /// Move `last_index` to `index`. Raft hands out each index once and in order, so anything else
    /// is a bug in the caller: loud in debug builds, ignored (no change) in release.
    fn take_index(&mut self, index: u64) -> bool {
        debug_assert!(index > self.last_index, "index {index} applied after {}", self.last_index);
        if index <= self.last_index {
            return false;
        }
        self.last_index = index;
        true
    }

    /// Index of the last applied log entry; 0 before any.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Forget KV tombstones of deletes at or before `up_to_index` (see [`Kv::reap_tombstones`]).
    /// Replicas must do this at the same point of the log, so only a command should call it.
    pub fn reap_tombstones(&mut self, up_to_index: u64) {
        self.kv.reap_tombstones(up_to_index);
    }

    /// The structural rules every state reached by `apply` obeys. [`State::from_snapshot`]
    /// enforces them; tests and the simulator can assert them.
    pub fn check_consistency(&self) -> Result<(), Inconsistency> {
        self.kv.check_consistency(self.last_index)?;
        self.catalog.check_consistency(self.last_index)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn cas_absent(key: &str) -> Command {
        let value = Bytes::from_static(b"v");
        Command::Kv(KvCommand::Cas { key: key.into(), value, flags: 0, expected_modify_index: 0 })
    }

    /// A command that fails still consumes its log index, and changes nothing else.
    #[test]
    fn failed_command_still_advances_index() {
        let mut state = State::default();
        assert_eq!(state.apply(1, &cas_absent("a")), Outcome::Done);
        assert_eq!(state.apply(2, &cas_absent("a")), Outcome::CasFailed);
        let rejected = state.apply(3, &Command::Catalog(CatalogCommand::Register(Registration::default())));
        assert!(matches!(rejected, Outcome::Rejected(_)));
        assert_eq!(state.last_index(), 3);
        assert_eq!((state.kv().table_index(), state.catalog().nodes_index()), (1, 0));
    }

    /// Entries without a command move only the global index.
    #[test]
    fn advance_moves_only_the_global_index() {
        let mut state = State::default();
        state.apply(1, &cas_absent("a"));
        state.advance(5);
        assert_eq!(state.last_index(), 5);
        assert_eq!(state.kv().index_for_key("a"), 1);
    }

    /// The commands of a batch apply in order at the batch's index: a check-and-set sees the write
    /// before it in the same batch, and both rows carry the batch's index.
    #[test]
    fn batch_applies_in_order_at_one_index() {
        let mut state = State::default();
        let set = |key: &str, value: &'static [u8]| {
            Command::Kv(KvCommand::Set { key: key.into(), value: Bytes::from_static(value), flags: 0 })
        };
        let cas = Command::Kv(KvCommand::Cas {
            key: "a".into(),
            value: Bytes::from_static(b"3"),
            flags: 0,
            expected_modify_index: 7,
        });
        let outcomes = state.apply_batch(7, &[set("a", b"1"), set("b", b"2"), cas, cas_absent("b")]);
        assert_eq!(outcomes, [Outcome::Done, Outcome::Done, Outcome::Done, Outcome::CasFailed]);
        assert_eq!(state.last_index(), 7);
        let a = state.kv().get("a").unwrap();
        assert_eq!((a.value.as_ref(), a.create_index, a.modify_index), (&b"3"[..], 7, 7));
        assert_eq!(state.kv().get("b").unwrap().modify_index, 7);
        state.check_consistency().unwrap();
    }

    /// Applying at an index already applied is a caller bug, caught in debug builds.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "applied after")]
    fn stale_index_is_a_programmer_error() {
        let mut state = State::default();
        state.apply(2, &cas_absent("a"));
        state.apply(2, &cas_absent("b"));
    }
}
