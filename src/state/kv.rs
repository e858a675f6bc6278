//! The KV store with Consul's entry indexes, table index and tombstones.
//!
//! Consul derives the `X-Consul-Index` of a KV read from these, and blocking queries wait for it to
//! move past the index a client last saw. A deleted key leaves a tombstone (key → delete index) so
//! that a read of a prefix whose keys were deleted still reports an index that moved forward;
//! without it the index of `?recurse` could slide backwards and a watcher would miss the delete.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::{KvCommand, Outcome};
use super::consistency::{Inconsistency, Table};

/// One key with Consul's `DirEntry` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub flags: u64,
    /// Index of the write that created the key; kept across updates.
    pub create_index: u64,
    /// Index of the last write that changed the key.
    pub modify_index: u64,
    /// How many times a session acquired the key. No command acquires locks yet, so it stays 0,
    /// but updates keep it as Consul does.
    pub lock_index: u64,
    /// The session holding the lock, if any; kept across updates.
    pub session: Option<String>,
}

/// The KV table: entries, tombstones of deleted keys, and the table index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    entries: BTreeMap<String, KvEntry>,
    /// Deleted key → index of the delete. Bounded by [`Kv::reap_tombstones`].
    tombstones: BTreeMap<String, u64>,
    /// Highest index of any write or delete that changed the table (Consul's max of the `kvs` and
    /// `tombstones` table indexes). Never decreases, also not when tombstones are reaped.
    table_index: u64,
}

impl Kv {
    /// Apply one KV command at `index`. One arm per command; each leaves the table unchanged
    /// unless it reports `Done`.
    pub(crate) fn apply(&mut self, index: u64, command: &KvCommand) -> Outcome {
        match command {
            KvCommand::Set { key, value, flags } => self.set(index, key, value, *flags),
            KvCommand::Cas { key, value, flags, expected_modify_index } => {
                self.cas(index, key, value, *flags, *expected_modify_index)
            }
            KvCommand::Delete { key } => self.delete(index, key),
            KvCommand::DeleteCas { key, expected_modify_index } => self.delete_cas(index, key, *expected_modify_index),
            KvCommand::DeleteTree { prefix } => self.delete_tree(index, prefix),
        }
    }

    /// Consul (`kvsSetTxn`) skips a write that changes nothing: the entry keeps its ModifyIndex and
    /// the table index stays, so blocking queries are not woken by a rewrite of the same value.
    fn set(&mut self, index: u64, key: &str, value: &Bytes, flags: u64) -> Outcome {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.value != *value || entry.flags != flags {
                entry.value = value.clone();
                entry.flags = flags;
                entry.modify_index = index;
                self.table_index = index;
            }
            return Outcome::Done;
        }
        let entry = KvEntry {
            key: key.to_owned(),
            value: value.clone(),
            flags,
            create_index: index,
            modify_index: index,
            lock_index: 0,
            session: None,
        };
        self.entries.insert(key.to_owned(), entry);
        // A live entry's own index always exceeds its old tombstone's, so the tombstone says
        // nothing any more; dropping it keeps the graveyard small.
        self.tombstones.remove(key);
        self.table_index = index;
        Outcome::Done
    }

    fn cas(&mut self, index: u64, key: &str, value: &Bytes, flags: u64, expected: u64) -> Outcome {
        let current = self.entries.get(key).map_or(0, |entry| entry.modify_index);
        if current != expected {
            return Outcome::CasFailed;
        }
        self.set(index, key, value, flags)
    }

    fn delete(&mut self, index: u64, key: &str) -> Outcome {
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_owned(), index);
            self.table_index = index;
        }
        Outcome::Done
    }

    /// An absent key succeeds, as in Consul: the caller wanted it gone and it is.
    fn delete_cas(&mut self, index: u64, key: &str, expected: u64) -> Outcome {
        match self.entries.get(key) {
            None => Outcome::Done,
            Some(entry) if entry.modify_index != expected => Outcome::CasFailed,
            Some(_) => self.delete(index, key),
        }
    }

    /// Consul writes one tombstone for the prefix; one per key is as cheap to reap and keeps the
    /// index of every narrower prefix under it moving too.
    fn delete_tree(&mut self, index: u64, prefix: &str) -> Outcome {
        let doomed: Vec<String> = self.list(prefix).map(|entry| entry.key.clone()).collect();
        for key in doomed {
            self.delete(index, &key);
        }
        Outcome::Done
    }

    /// Forget the tombstones of deletes at or before `up_to_index` (Consul's tombstone GC, run
    /// once no blocking query can still need them). The table index stays; a prefix index may
    /// fall back to it or to its live entries.
    pub fn reap_tombstones(&mut self, up_to_index: u64) {
        self.tombstones.retain(|_, deleted_at| *deleted_at > up_to_index);
    }

    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.entries.range(prefix.to_owned()..).take_while(move |(key, _)| key.starts_with(prefix)).map(|(_, e)| e)
    }

    /// Keys under `prefix` for `?keys&separator=`: a key with `separator` after the prefix is
    /// rolled up to the part through its first separator, once. Sorted, without duplicates.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let separator = separator.filter(|sep| !sep.is_empty());
        let rolled: BTreeSet<&str> = self
            .list(prefix)
            .map(|entry| {
                let key = entry.key.as_str();
                match separator.and_then(|sep| key[prefix.len()..].find(sep).map(|at| at + sep.len())) {
                    Some(end) => &key[..prefix.len() + end],
                    None => key,
                }
            })
            .collect();
        rolled.into_iter().map(str::to_owned).collect()
    }

    /// `X-Consul-Index` of `GET /v1/kv/<key>`: the entry's ModifyIndex, or for a missing key the
    /// table index. Never 0: Consul answers at least 1 so a client's next blocking query waits.
    pub fn index_for_key(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(self.table_index, |entry| entry.modify_index).max(1)
    }

    /// `X-Consul-Index` of `?recurse` and `?keys`: the highest index among entries and tombstones
    /// under `prefix`; the table index when there are none (or the prefix is empty). At least 1.
    pub fn index_for_prefix(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.table_index.max(1);
        }
        let live = self.list(prefix).map(|entry| entry.modify_index).max().unwrap_or(0);
        let dead = self
            .tombstones
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, deleted_at)| *deleted_at)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.table_index.max(1),
            index => index,
        }
    }

    /// The table index (0 before any KV write).
    pub fn table_index(&self) -> u64 {
        self.table_index
    }

    /// Number of tombstones awaiting reaping.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Structural rules every reachable table obeys; checked on snapshots from disk or the wire.
    pub(crate) fn check_consistency(&self, last_index: u64) -> Result<(), Inconsistency> {
        if self.table_index > last_index {
            return Err(Inconsistency::TableIndexAhead { table: Table::Kv });
        }
        for (key, entry) in &self.entries {
            if entry.key != *key {
                return Err(Inconsistency::KeyMismatch { table: Table::Kv, key: key.clone() });
            }
            if entry.create_index == 0
                || entry.create_index > entry.modify_index
                || entry.modify_index > self.table_index
            {
                return Err(Inconsistency::RowIndexes { table: Table::Kv, key: key.clone() });
            }
        }
        for (key, deleted_at) in &self.tombstones {
            if *deleted_at == 0 || *deleted_at > self.table_index {
                return Err(Inconsistency::RowIndexes { table: Table::Tombstones, key: key.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kv: &mut Kv, index: u64, key: &str, value: &str) -> Outcome {
        kv.apply(index, &KvCommand::Set { key: key.into(), value: Bytes::from(value.to_owned()), flags: 0 })
    }

    fn cas(kv: &mut Kv, index: u64, key: &str, value: &str, expected: u64) -> Outcome {
        let value = Bytes::from(value.to_owned());
        kv.apply(index, &KvCommand::Cas { key: key.into(), value, flags: 0, expected_modify_index: expected })
    }

    fn delete(kv: &mut Kv, index: u64, key: &str) -> Outcome {
        kv.apply(index, &KvCommand::Delete { key: key.into() })
    }

    fn delete_cas(kv: &mut Kv, index: u64, key: &str, expected: u64) -> Outcome {
        kv.apply(index, &KvCommand::DeleteCas { key: key.into(), expected_modify_index: expected })
    }

    fn delete_tree(kv: &mut Kv, index: u64, prefix: &str) -> Outcome {
        kv.apply(index, &KvCommand::DeleteTree { prefix: prefix.into() })
    }

    /// A new key gets CreateIndex = ModifyIndex = the write's index, LockIndex 0 and no session.
    #[test]
    fn set_new_key_takes_index_as_create_and_modify() {
        let mut kv = Kv::default();
        assert_eq!(set(&mut kv, 5, "a", "1"), Outcome::Done);
        let entry = kv.get("a").unwrap();
        assert_eq!((entry.create_index, entry.modify_index, entry.lock_index), (5, 5, 0));
        assert_eq!(entry.session, None);
        assert_eq!(kv.table_index(), 5);
    }

    /// Updating a key keeps CreateIndex, LockIndex and Session and moves ModifyIndex.
    #[test]
    fn set_existing_key_keeps_create_lock_and_session() {
        let mut kv = Kv::default();
        set(&mut kv, 5, "a", "1");
        let entry = kv.entries.get_mut("a").unwrap();
        entry.lock_index = 3;
        entry.session = Some("s1".into());
        set(&mut kv, 9, "a", "2");
        let entry = kv.get("a").unwrap();
        assert_eq!((entry.create_index, entry.modify_index, entry.lock_index), (5, 9, 3));
        assert_eq!(entry.session.as_deref(), Some("s1"));
        assert_eq!(entry.value, Bytes::from_static(b"2"));
    }

    /// Rewriting the same value and flags changes nothing, as Consul's `kvsSetTxn` skips it.
    #[test]
    fn set_same_value_does_not_bump_indexes() {
        let mut kv = Kv::default();
        set(&mut kv, 5, "a", "1");
        set(&mut kv, 6, "b", "1");
        assert_eq!(set(&mut kv, 7, "a", "1"), Outcome::Done);
        assert_eq!(kv.get("a").unwrap().modify_index, 5);
        assert_eq!(kv.table_index(), 6);
    }

    /// A flags-only change is a change.
    #[test]
    fn set_new_flags_bumps_modify_index() {
        let mut kv = Kv::default();
        set(&mut kv, 5, "a", "1");
        kv.apply(6, &KvCommand::Set { key: "a".into(), value: Bytes::from_static(b"1"), flags: 42 });
        assert_eq!((kv.get("a").unwrap().flags, kv.get("a").unwrap().modify_index), (42, 6));
    }

    /// Cas with expected index 0 creates an absent key and fails on a present one.
    #[test]
    fn cas_zero_means_only_if_absent() {
        let mut kv = Kv::default();
        assert_eq!(cas(&mut kv, 3, "a", "1", 0), Outcome::Done);
        assert_eq!(cas(&mut kv, 4, "a", "2", 0), Outcome::CasFailed);
        assert_eq!(kv.get("a").unwrap().value, Bytes::from_static(b"1"));
        assert_eq!(kv.table_index(), 3);
    }

    /// Cas on a present key succeeds only with its current ModifyIndex.
    #[test]
    fn cas_requires_matching_modify_index() {
        let mut kv = Kv::default();
        set(&mut kv, 3, "a", "1");
        assert_eq!(cas(&mut kv, 4, "a", "2", 2), Outcome::CasFailed);
        assert_eq!(kv.get("a").unwrap().modify_index, 3);
        assert_eq!(cas(&mut kv, 5, "a", "2", 3), Outcome::Done);
        assert_eq!(kv.get("a").unwrap().modify_index, 5);
        assert_eq!(kv.get("a").unwrap().create_index, 3);
    }

    /// Cas with a non-zero index on an absent key fails.
    #[test]
    fn cas_nonzero_on_absent_key_fails() {
        let mut kv = Kv::default();
        assert_eq!(cas(&mut kv, 3, "a", "1", 7), Outcome::CasFailed);
        assert!(kv.is_empty());
    }

    /// Deleting an absent key succeeds and changes nothing, not even the table index.
    #[test]
    fn delete_absent_key_is_a_no_op() {
        let mut kv = Kv::default();
        set(&mut kv, 2, "a", "1");
        assert_eq!(delete(&mut kv, 3, "b"), Outcome::Done);
        assert_eq!(kv.table_index(), 2);
        assert_eq!(kv.tombstone_count(), 0);
    }

    /// Deleting a key leaves a tombstone, so the key's and its prefix's index move forward.
    #[test]
    fn delete_leaves_tombstone_that_moves_indexes() {
        let mut kv = Kv::default();
        set(&mut kv, 2, "app/a", "1");
        set(&mut kv, 3, "other", "1");
        delete(&mut kv, 4, "app/a");
        assert_eq!(kv.get("app/a"), None);
        assert_eq!(kv.index_for_key("app/a"), 4);
        assert_eq!(kv.index_for_prefix("app/"), 4);
        assert_eq!(kv.tombstone_count(), 1);
    }

    /// DeleteCas on an absent key succeeds, as Consul returns true for it.
    #[test]
    fn delete_cas_absent_key_succeeds() {
        let mut kv = Kv::default();
        assert_eq!(delete_cas(&mut kv, 3, "a", 9), Outcome::Done);
        assert_eq!(kv.table_index(), 0);
    }

    /// DeleteCas on a present key needs its ModifyIndex.
    #[test]
    fn delete_cas_requires_matching_modify_index() {
        let mut kv = Kv::default();
        set(&mut kv, 3, "a", "1");
        assert_eq!(delete_cas(&mut kv, 4, "a", 2), Outcome::CasFailed);
        assert!(kv.get("a").is_some());
        assert_eq!(delete_cas(&mut kv, 5, "a", 3), Outcome::Done);
        assert!(kv.get("a").is_none());
        assert_eq!(kv.table_index(), 5);
    }

    /// DeleteTree removes exactly the keys with the prefix.
    #[test]
    fn delete_tree_removes_prefix_only() {
        let mut kv = Kv::default();
        for (i, key) in ["app/a", "app/b/c", "apple", "b"].iter().enumerate() {
            set(&mut kv, i as u64 + 1, key, "v");
        }
        delete_tree(&mut kv, 10, "app/");
        let left: Vec<&str> = kv.list("").map(|e| e.key.as_str()).collect();
        assert_eq!(left, ["apple", "b"]);
        assert_eq!(kv.index_for_prefix("app/b/"), 10);
    }

    /// DeleteTree with the empty prefix removes everything.
    #[test]
    fn delete_tree_empty_prefix_removes_all() {
        let mut kv = Kv::default();
        set(&mut kv, 1, "a", "v");
        set(&mut kv, 2, "b/c", "v");
        delete_tree(&mut kv, 3, "");
        assert!(kv.is_empty());
        assert_eq!(kv.table_index(), 3);
    }

    /// DeleteTree that matches nothing changes nothing.
    #[test]
    fn delete_tree_without_match_is_a_no_op() {
        let mut kv = Kv::default();
        set(&mut kv, 1, "a", "v");
        delete_tree(&mut kv, 2, "zzz");
        assert_eq!(kv.table_index(), 1);
    }

    /// `list` yields exactly the keys with the prefix, sorted.
    #[test]
    fn list_is_sorted_and_prefix_bounded() {
        let mut kv = Kv::default();
        for (i, key) in ["b", "a/2", "a/1", "a", "a0"].iter().enumerate() {
            set(&mut kv, i as u64 + 1, key, "v");
        }
        let listed: Vec<&str> = kv.list("a/").map(|e| e.key.as_str()).collect();
        assert_eq!(listed, ["a/1", "a/2"]);
        assert_eq!(kv.list("").count(), 5);
    }

    /// With a separator, keys roll up to their first separator after the prefix, once each.
    #[test]
    fn keys_roll_up_at_separator() {
        let mut kv = Kv::default();
        for (i, key) in ["web/a", "web/b/c", "web/b/d", "web/e/", "webx", "x"].iter().enumerate() {
            set(&mut kv, i as u64 + 1, key, "v");
        }
        assert_eq!(kv.keys("web/", Some("/")), ["web/a", "web/b/", "web/e/"]);
        assert_eq!(kv.keys("", Some("/")), ["web/", "webx", "x"]);
        assert_eq!(kv.keys("web", None).len(), 5);
        assert_eq!(kv.keys("web", Some("")).len(), 5);
    }

    /// The index of a present key is its ModifyIndex, not the table index.
    #[test]
    fn index_for_present_key_is_modify_index() {
        let mut kv = Kv::default();
        set(&mut kv, 3, "a", "1");
        set(&mut kv, 8, "b", "1");
        assert_eq!(kv.index_for_key("a"), 3);
    }

    /// The index of a missing key is the table index, and never 0.
    #[test]
    fn index_for_missing_key_is_table_index_at_least_one() {
        let mut kv = Kv::default();
        assert_eq!(kv.index_for_key("a"), 1);
        assert_eq!(kv.index_for_prefix("a"), 1);
        set(&mut kv, 8, "b", "1");
        assert_eq!(kv.index_for_key("a"), 8);
    }

    /// A prefix's index is the highest among its entries and tombstones, not the table's.
    #[test]
    fn index_for_prefix_covers_entries_and_tombstones() {
        let mut kv = Kv::default();
        set(&mut kv, 2, "a/1", "v");
        set(&mut kv, 3, "a/2", "v");
        set(&mut kv, 4, "a/3", "v");
        delete(&mut kv, 5, "a/2");
        set(&mut kv, 6, "a/1", "w");
        set(&mut kv, 9, "b", "v");
        assert_eq!(kv.index_for_prefix("a/"), 6);
        assert_eq!(kv.index_for_prefix("a/2"), 5);
        assert_eq!(kv.index_for_prefix("c/"), 9);
        assert_eq!(kv.index_for_prefix(""), 9);
    }

    /// Recreating a deleted key drops its tombstone; the prefix index follows the new entry.
    #[test]
    fn recreate_drops_tombstone() {
        let mut kv = Kv::default();
        set(&mut kv, 1, "a", "v");
        delete(&mut kv, 2, "a");
        set(&mut kv, 3, "a", "v");
        assert_eq!(kv.tombstone_count(), 0);
        assert_eq!(kv.index_for_prefix("a"), 3);
    }

    /// Reaping removes tombstones up to the index and keeps later ones and the table index.
    #[test]
    fn reap_tombstones_up_to_index() {
        let mut kv = Kv::default();
        set(&mut kv, 1, "a/1", "v");
        set(&mut kv, 2, "a/2", "v");
        set(&mut kv, 3, "b", "v");
        delete(&mut kv, 4, "a/1");
        delete(&mut kv, 5, "a/2");
        kv.reap_tombstones(4);
        assert_eq!(kv.tombstone_count(), 1);
        assert_eq!(kv.index_for_prefix("a/1"), 5, "no tombstone left: falls back to the table index");
        assert_eq!(kv.index_for_prefix("a/2"), 5);
        kv.reap_tombstones(5);
        assert_eq!(kv.tombstone_count(), 0);
        assert_eq!(kv.table_index(), 5);
    }
}
