//! The Raft log and vote, durable on a [`Disk`].
//!
//! # Files
//! - `log-<first index, 20 digits>.seg`: segments, each a run of [`record`]s whose payloads are
//!   bincode-encoded entries with consecutive indexes. A new segment starts once the last one
//!   reaches [`LogStoreLimits::segment_size_bytes`].
//! - `log-meta`: the last purged log id; `vote`; `committed`. Each is one record, replaced with
//!   `write_atomic`.
//!
//! # Durability order
//! - `append` writes every entry of the call, then syncs each touched segment once (group
//!   commit) before it reports the entries flushed. A segment is synced before the next one
//!   receives its first byte, so a later segment never survives a crash that an earlier one's
//!   tail did not.
//! - `truncate` removes later segments newest first and then cuts and syncs the segment holding
//!   the first removed entry, so a crash part-way leaves a prefix of the old log.
//! - `purge` records the purged id before it deletes any segment; recovery finishes a purge that
//!   a crash interrupted.
//!
//! # Recovery
//! A torn tail of the last segment is a write that was never acknowledged: it is cut away (unless
//! it would drop an entry known to be committed). Anything else that does not add up (a bad
//! checksum, a torn non-last segment, a gap between segments, an entry that contradicts the
//! purged id) is [`DiskError::Corrupt`], and the server refuses to start rather than lose data.
//!
//! # Memory
//! Only an index of the live entries (segment, offset, length, log id) and a bounded cache of the
//! newest entries are kept; older entries are read back from their segment on demand.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::storage::record::{self, ScanEnd, Scanner, Step};
use crate::storage::{Disk, DiskError};

/// Segments roll over once they reach this size, unless configured otherwise.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// How many of the newest entries stay in memory by default: replication reads the tail.
pub const CACHED_ENTRIES_MAX_DEFAULT: usize = 1024;

const META_FILE: &str = "log-meta";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";

/// Default of [`LogStoreLimits::committed_lag_entries_max`].
pub const COMMITTED_LAG_ENTRIES_MAX_DEFAULT: u64 = 1024;

/// Size bounds of a [`LogStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreLimits {
    /// A segment that has reached this size receives no more entries.
    pub segment_size_bytes: u64,
    /// How many of the newest entries are kept decoded in memory.
    pub cached_entries_max: usize,
    /// How far the committed index may run ahead of its copy on disk. Writing it on every commit
    /// would cost an atomic file replacement (two fsyncs and a rename) per write on every server;
    /// an older value is always safe (committed entries stay committed), it only means a restarted
    /// server re-applies a little less by itself and waits for the leader's commit index.
    pub committed_lag_entries_max: u64,
}

impl Default for LogStoreLimits {
    fn default() -> Self {
        LogStoreLimits {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            cached_entries_max: CACHED_ENTRIES_MAX_DEFAULT,
            committed_lag_entries_max: COMMITTED_LAG_ENTRIES_MAX_DEFAULT,
        }
    }
}

/// The durable Raft log and vote. openraft holds the one writer (deliberately not `Clone`:
/// `append` relies on no other write running while it syncs) and hands out [`LogReader`]s to its
/// replication tasks.
#[derive(Debug)]
pub struct LogStore {
    shared: Arc<Mutex<Inner>>,
}

/// A read-only view of a [`LogStore`], sharing its state.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    disk: Arc<dyn Disk>,
    limits: LogStoreLimits,
    /// Segment files by the index of their first record.
    segments: BTreeMap<u64, Segment>,
    /// Where each live entry is: `slots[i]` holds the entry with index `first_index() + i`.
    slots: VecDeque<Slot>,
    /// The newest live entries, a suffix of the log.
    cache: VecDeque<Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    /// The newest committed log id openraft reported.
    committed: Option<LogId>,
    /// The committed log id last written to disk (older than `committed` by at most
    /// `limits.committed_lag_entries_max` entries).
    committed_on_disk: Option<LogId>,
}

#[derive(Debug, Clone)]
struct Segment {
    name: String,
    len_bytes: u64,
    /// One past the index of its last record (purged records included).
    end_index: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The first index of the segment holding the entry, its key in `Inner::segments`.
    segment: u64,
    offset: u64,
    record_bytes: u32,
    log_id: LogId,
}

/// Entries of one `append` call bound for one segment, not yet written.
#[derive(Debug)]
struct PendingWrite {
    segment: u64,
    bytes: Vec<u8>,
    entries: Vec<(Slot, Entry)>,
}

impl LogStore {
    /// Open the log on `disk` with default limits, recovering what a crash left.
    pub fn open(disk: Arc<dyn Disk>) -> Result<LogStore, DiskError> {
        Self::open_with(disk, LogStoreLimits::default())
    }

    /// Open the log on `disk`, recovering what a crash left.
    pub fn open_with(disk: Arc<dyn Disk>, limits: LogStoreLimits) -> Result<LogStore, DiskError> {
        assert!(limits.segment_size_bytes > 0, "a segment must be allowed to hold something");
        let last_purged = read_state::<LogId>(&*disk, META_FILE)?;
        let vote = read_state::<Vote>(&*disk, VOTE_FILE)?;
        let committed = read_state::<Option<LogId>>(&*disk, COMMITTED_FILE)?.flatten();
        let mut inner = Inner {
            disk,
            limits,
            segments: BTreeMap::new(),
            slots: VecDeque::new(),
            cache: VecDeque::new(),
            last_purged,
            vote,
            committed,
            committed_on_disk: committed,
        };
        inner.recover()?;
        Ok(LogStore { shared: Arc::new(Mutex::new(inner)) })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }
}

fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock is a bug (assertions only); the process is going down anyway.
    shared.lock().expect("log store lock poisoned by an earlier panic")
}

/// The file name of the segment whose first entry has `first_index`.
fn segment_name(first_index: u64) -> String {
    format!("log-{first_index:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn corrupt(name: &str, offset: u64, reason: String) -> DiskError {
    DiskError::Corrupt { name: name.to_owned(), offset, reason }
}

/// An entry too large for one record: the layers above should have refused it, but a write that
/// slipped through is an operating error, not a reason to panic.
fn oversized(name: &str, index: u64, payload_bytes: usize) -> DiskError {
    let reason = format!(
        "entry {index} encodes to {payload_bytes} bytes, above the {}-byte record limit",
        record::RECORD_PAYLOAD_BYTES_MAX
    );
    DiskError::Io { name: name.to_owned(), source: io::Error::new(io::ErrorKind::InvalidInput, reason) }
}

/// `value` in the on-disk encoding: bincode 2, standard configuration.
pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types (entries, ids, snapshot metadata) use no serde features bincode lacks, so failing
    // here is a programming error.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("value is bincode-encodable")
}

/// Decode the record payload at `offset` of file `name`; anything undecodable is corruption.
pub(crate) fn decode_value<T: DeserializeOwned>(name: &str, offset: u64, payload: &[u8]) -> Result<T, DiskError> {
    // A payload passed its checksum, but a length inside it still must not make the decoder
    // allocate more than a record can hold.
    let config = bincode::config::standard().with_limit::<{ record::RECORD_PAYLOAD_BYTES_MAX }>();
    match bincode::serde::decode_from_slice(payload, config) {
        Ok((value, used)) if used == payload.len() => Ok(value),
        Ok((_, used)) => Err(corrupt(name, offset, format!("{} trailing bytes after the value", payload.len() - used))),
        Err(e) => Err(corrupt(name, offset, format!("undecodable record: {e}"))),
    }
}

/// Replace the single-record file `name` with `value`, durably.
fn write_state<T: Serialize>(disk: &dyn Disk, name: &str, value: &T) -> Result<(), DiskError> {
    disk.write_atomic(name, &record::encode(&encode_value(value)))
}

/// The value in the single-record file `name`, or `None` if the file does not exist.
fn read_state<T: DeserializeOwned>(disk: &dyn Disk, name: &str) -> Result<Option<T>, DiskError> {
    let bytes = match disk.read(name) {
        Ok(bytes) => bytes,
        Err(DiskError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match record::scan_complete(name, &bytes)?[..] {
        [(offset, payload)] => decode_value(name, offset, payload).map(Some),
        ref records => Err(corrupt(name, 0, format!("expected one record, found {}", records.len()))),
    }
}

impl Inner {
    fn first_index(&self) -> Option<u64> {
        self.slots.front().map(|s| s.log_id.index)
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.slots.back().map(|s| s.log_id).or(self.last_purged)
    }

    /// The slot of live entry `index`; callers check it is live.
    fn slot(&self, index: u64) -> Slot {
        let first = self.first_index().expect("a live index implies a non-empty log");
        self.slots[(index - first) as usize]
    }

    fn cache_push(&mut self, entry: Entry) {
        if self.limits.cached_entries_max == 0 {
            return;
        }
        if self.cache.len() >= self.limits.cached_entries_max {
            self.cache.pop_front();
        }
        self.cache.push_back(entry);
    }

    // ------------------------------------------------------------------------------ recovery

    /// Load every segment in order, finishing an interrupted purge and cutting a torn tail.
    fn recover(&mut self) -> Result<(), DiskError> {
        let mut found: Vec<(u64, String)> =
            self.disk.list()?.into_iter().filter_map(|name| Some((parse_segment_name(&name)?, name))).collect();
        found.sort();
        let purged_index = self.last_purged.map(|p| p.index);
        let mut prev_end_index = None;
        for (i, (first, name)) in found.iter().enumerate() {
            let next_first = found.get(i + 1).map(|(next, _)| *next);
            if let (Some(purged), Some(next)) = (purged_index, next_first) {
                if next <= purged + 1 {
                    tracing::warn!(segment = %name, purged, "removing a segment an interrupted purge left behind");
                    self.disk.remove(name)?;
                    continue;
                }
            }
            self.check_segment_start(name, *first, prev_end_index)?;
            prev_end_index = self.load_segment(*first, name, next_first.is_none())?;
        }
        Ok(())
    }

    /// A segment must continue the previous one, or (the first one) the purged prefix.
    fn check_segment_start(&self, name: &str, first: u64, prev_end_index: Option<u64>) -> Result<(), DiskError> {
        match (prev_end_index, self.last_purged) {
            (Some(expected), _) if first != expected => Err(corrupt(
                name,
                0,
                format!("segment starts at index {first} but the previous one ends before {expected}"),
            )),
            (None, Some(purged)) if first > purged.index + 1 => Err(corrupt(
                name,
                0,
                format!("log resumes at index {first} but only entries up to {} were purged", purged.index),
            )),
            _ => Ok(()),
        }
    }

    /// Read and index one segment. Returns one past its last index, or `None` when the segment
    /// (the last one) held nothing live and was removed.
    fn load_segment(&mut self, first: u64, name: &str, is_last: bool) -> Result<Option<u64>, DiskError> {
        let bytes = self.disk.read(name)?;
        let (records, end) = record::scan_all(name, &bytes)?;
        let mut entries = Vec::with_capacity(records.len());
        let mut end_index = first;
        for (offset, payload) in records {
            let entry: Entry = decode_value(name, offset, payload)?;
            if entry.log_id.index != end_index {
                let reason = format!("entry index {} where {end_index} was expected", entry.log_id.index);
                return Err(corrupt(name, offset, reason));
            }
            end_index += 1;
            entries.push((offset, payload.len(), entry));
        }
        let len_bytes = match end {
            ScanEnd::Clean => bytes.len() as u64,
            ScanEnd::Torn { offset, reason } => {
                self.cut_torn_tail(name, is_last, offset, format!("{reason:?}"), end_index, bytes.len() as u64)?;
                offset
            }
        };
        if entries.is_empty() && !is_last {
            return Err(corrupt(name, 0, "a segment that is not the last holds no entries".into()));
        }
        let live_from = self.last_purged.map_or(0, |p| p.index + 1);
        if is_last && end_index <= live_from {
            tracing::warn!(segment = %name, "removing the last segment: it holds no live entries");
            self.disk.remove(name)?;
            return Ok(None);
        }
        for (offset, payload_len, entry) in entries {
            self.recover_entry(name, first, offset, payload_len, entry)?;
        }
        self.segments.insert(first, Segment { name: name.to_owned(), len_bytes, end_index });
        Ok(Some(end_index))
    }

    /// Cut a torn tail off the last segment: it is a write that was never acknowledged. Anywhere
    /// else, or when it would lose a committed entry, it is corruption.
    fn cut_torn_tail(
        &self,
        name: &str,
        is_last: bool,
        offset: u64,
        reason: String,
        end_index: u64,
        file_bytes: u64,
    ) -> Result<(), DiskError> {
        if !is_last {
            return Err(corrupt(name, offset, format!("torn record ({reason}) in a segment that is not the last")));
        }
        // A corrupted length field looks like a torn write; the saved commit point tells them
        // apart when the log would end before it.
        let purged_index = self.last_purged.map(|p| p.index);
        if let Some(committed) = self.committed {
            if committed.index >= end_index && purged_index.is_none_or(|p| committed.index > p) {
                let reason = format!("torn record ({reason}) where committed entry {} should be", committed.index);
                return Err(corrupt(name, offset, reason));
            }
        }
        tracing::warn!(
            segment = %name, offset, dropped_bytes = file_bytes - offset, %reason,
            "cutting the torn tail of the last log segment: a write that was never acknowledged"
        );
        self.disk.truncate(name, offset)?;
        self.disk.sync(name)
    }

    /// Index one recovered entry, unless it is purged (checking the one at the purge point).
    fn recover_entry(
        &mut self,
        name: &str,
        segment: u64,
        offset: u64,
        payload_len: usize,
        entry: Entry,
    ) -> Result<(), DiskError> {
        let log_id = entry.log_id;
        if let Some(purged) = self.last_purged {
            if log_id.index == purged.index && log_id != purged {
                return Err(corrupt(name, offset, format!("entry {log_id} contradicts the purged log id {purged}")));
            }
            if log_id.index <= purged.index {
                return Ok(());
            }
        }
        if let Some(prev) = self.slots.back() {
            if log_id.leader_id < prev.log_id.leader_id {
                return Err(corrupt(name, offset, format!("entry {log_id} has an older leader than {}", prev.log_id)));
            }
        }
        let record_bytes = (record::HEADER_BYTES + payload_len) as u32;
        self.slots.push_back(Slot { segment, offset, record_bytes, log_id });
        self.cache_push(entry);
        Ok(())
    }

    // ------------------------------------------------------------------------------ writes

    /// Write `entries` after the last one, rolling segments as they fill. Returns the segment
    /// still to be synced (earlier ones were synced when the next began).
    fn write_entries(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<Option<String>, DiskError> {
        let mut pending: Option<PendingWrite> = None;
        let mut expected = self.last_log_id().map(|l| l.index + 1);
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(expected) = expected {
                assert_eq!(index, expected, "appended entries must continue the log without a hole");
            }
            expected = Some(index + 1);
            let payload = encode_value(&entry);
            if payload.len() > record::RECORD_PAYLOAD_BYTES_MAX {
                return Err(oversized(&segment_name(index), index, payload.len()));
            }
            if self.must_roll(pending.as_ref()) {
                if let Some(done) = pending.take() {
                    let name = self.flush(done)?;
                    self.disk.sync(&name)?;
                }
                self.segments.insert(index, Segment { name: segment_name(index), len_bytes: 0, end_index: index });
            }
            let last_segment = self.segments.last_key_value().expect("a segment was ensured above");
            let (segment, segment_bytes) = (*last_segment.0, last_segment.1.len_bytes);
            let write = pending.get_or_insert_with(|| PendingWrite { segment, bytes: Vec::new(), entries: Vec::new() });
            let offset = segment_bytes + write.bytes.len() as u64;
            let before = write.bytes.len();
            record::encode_into(&mut write.bytes, &payload);
            let record_bytes = (write.bytes.len() - before) as u32;
            write.entries.push((Slot { segment, offset, record_bytes, log_id: entry.log_id }, entry));
        }
        pending.map(|write| self.flush(write)).transpose()
    }

    fn must_roll(&self, pending: Option<&PendingWrite>) -> bool {
        let Some((_, last)) = self.segments.last_key_value() else { return true };
        let pending_bytes = pending.map_or(0, |w| w.bytes.len() as u64);
        last.len_bytes + pending_bytes >= self.limits.segment_size_bytes
    }

    /// Append one segment's share of a batch to its file and index it. Not yet synced.
    fn flush(&mut self, write: PendingWrite) -> Result<String, DiskError> {
        let segment = self.segments.get_mut(&write.segment).expect("pending writes target a known segment");
        let first_index = write.entries.first().map(|(slot, _)| slot.log_id.index);
        assert_eq!(first_index, Some(segment.end_index), "a segment must grow without a hole");
        self.disk.append(&segment.name, &write.bytes)?;
        segment.len_bytes += write.bytes.len() as u64;
        segment.end_index += write.entries.len() as u64;
        let name = segment.name.clone();
        for (slot, entry) in write.entries {
            self.slots.push_back(slot);
            self.cache_push(entry);
        }
        Ok(name)
    }

    /// Remove the entries from `index` on.
    fn truncate_from(&mut self, index: u64) -> Result<(), DiskError> {
        let (Some(first), Some(last)) = (self.first_index(), self.slots.back().map(|s| s.log_id.index)) else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        assert!(self.last_purged.is_none_or(|p| index > p.index), "truncating purged entries at {index}");
        let index = index.max(first);
        let holder = self.slot(index);
        // Newest first, so a crash part-way still leaves a prefix of the log.
        let doomed: Vec<u64> = self.segments.range(index..).map(|(first, _)| *first).collect();
        for key in doomed.into_iter().rev() {
            self.disk.remove(&self.segments[&key].name)?;
            self.segments.remove(&key);
        }
        if holder.segment < index {
            let segment = self.segments.get_mut(&holder.segment).expect("slots point at known segments");
            self.disk.truncate(&segment.name, holder.offset)?;
            self.disk.sync(&segment.name)?;
            segment.len_bytes = holder.offset;
            segment.end_index = index;
        }
        self.slots.truncate((index - first) as usize);
        while self.cache.back().is_some_and(|e| e.log_id.index >= index) {
            self.cache.pop_back();
        }
        Ok(())
    }

    /// Forget the entries up to `log_id` inclusive: record it, then delete whole segments.
    fn purge_to(&mut self, log_id: LogId) -> Result<(), DiskError> {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        write_state(&*self.disk, META_FILE, &log_id)?;
        self.last_purged = Some(log_id);
        while self.slots.front().is_some_and(|s| s.log_id.index <= log_id.index) {
            self.slots.pop_front();
        }
        while self.cache.front().is_some_and(|e| e.log_id.index <= log_id.index) {
            self.cache.pop_front();
        }
        let doomed: Vec<u64> =
            self.segments.iter().filter(|(_, s)| s.end_index <= log_id.index + 1).map(|(first, _)| *first).collect();
        for key in doomed {
            self.disk.remove(&self.segments[&key].name)?;
            self.segments.remove(&key);
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ reads

    /// The live entries with indexes in `start..end`, from the cache or the segments.
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, DiskError> {
        let (Some(first), Some(last)) = (self.first_index(), self.slots.back().map(|s| s.log_id.index)) else {
            return Ok(Vec::new());
        };
        let (start, end) = (start.max(first), end.min(last + 1));
        if start >= end {
            return Ok(Vec::new());
        }
        let cache_first = self.cache.front().map_or(last + 1, |e| e.log_id.index);
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut index = start;
        while index < end.min(cache_first) {
            index = self.read_run(index, end.min(cache_first), &mut out)?;
        }
        if end > cache_first {
            // The disk reads stopped at the cache, so `index` is where the cached part begins.
            let from = (index - cache_first) as usize;
            out.extend(self.cache.range(from..(end - cache_first) as usize).cloned());
        }
        Ok(out)
    }

    /// Read entries from `start` on that share its segment (up to `end`) with one disk read,
    /// verifying each. Returns the index after the last one read.
    fn read_run(&self, start: u64, end: u64, out: &mut Vec<Entry>) -> Result<u64, DiskError> {
        let head = self.slot(start);
        let mut stop = start + 1;
        while stop < end && self.slot(stop).segment == head.segment {
            stop += 1;
        }
        let tail = self.slot(stop - 1);
        let name = &self.segments[&head.segment].name;
        let span_bytes = (tail.offset + u64::from(tail.record_bytes) - head.offset) as usize;
        let bytes = self.disk.read_at(name, head.offset, span_bytes)?;
        let mut scanner = Scanner::starting_at(name, &bytes, head.offset);
        for index in start..stop {
            let slot = self.slot(index);
            let entry: Entry = match scanner.step()? {
                Step::Record { offset, payload } if offset == slot.offset => decode_value(name, offset, payload)?,
                other => {
                    return Err(corrupt(name, slot.offset, format!("expected entry {}, found {other:?}", slot.log_id)))
                }
            };
            if entry.log_id != slot.log_id {
                return Err(corrupt(
                    name,
                    slot.offset,
                    format!("expected entry {}, found {}", slot.log_id, entry.log_id),
                ));
            }
            out.push(entry);
        }
        Ok(stop)
    }
}

/// `range` as `start..end`, saturating at the ends of `u64`.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

fn read_range(shared: &Mutex<Inner>, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
    let (start, end) = bounds(&range);
    lock(shared).read_entries(start, end).map_err(|e| StorageIOError::read_logs(&e).into())
}

impl LogStore {
    /// Write and index `entries`, then make them durable. The lock is released for the final
    /// sync: readers may see the entries meanwhile, which openraft allows before the flush.
    fn append_durably(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), DiskError> {
        let (disk, unsynced) = {
            let mut inner = self.inner();
            let unsynced = inner.write_entries(entries)?;
            (Arc::clone(&inner.disk), unsynced)
        };
        match unsynced {
            Some(name) => disk.sync(&name),
            None => Ok(()),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.shared, range)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.shared, range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner();
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: inner.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner();
        write_state(&*inner.disk, VOTE_FILE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner();
        inner.committed = committed;
        let on_disk = inner.committed_on_disk.map_or(0, |id| id.index + 1);
        let now = committed.map_or(0, |id| id.index + 1);
        if now >= on_disk + inner.limits.committed_lag_entries_max {
            write_state(&*inner.disk, COMMITTED_FILE, &committed).map_err(|e| StorageIOError::write_logs(&e))?;
            inner.committed_on_disk = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_durably(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(io::Error::other(e)));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner().truncate_from(log_id.index).map_err(|e| {
            StorageIOError::new(openraft::ErrorSubject::Log(log_id), openraft::ErrorVerb::Delete, &e).into()
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner().purge_to(log_id).map_err(|e| {
            StorageIOError::new(openraft::ErrorSubject::Log(log_id), openraft::ErrorVerb::Delete, &e).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::state::{Command, KvCommand};
    use crate::storage::MemDisk;

    /// Small enough that a few entries fill a segment and most reads miss the cache.
    pub(super) const SMALL: LogStoreLimits =
        LogStoreLimits { segment_size_bytes: 300, cached_entries_max: 4, committed_lag_entries_max: 1 };

    pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime").block_on(fut)
    }

    pub(super) fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// An entry with a real command payload (and a blank one every fifth index).
    pub(super) fn entry(term: u64, index: u64) -> Entry {
        let payload = if index % 5 == 0 {
            EntryPayload::Blank
        } else {
            let value = Bytes::from(vec![index as u8; 40]);
            EntryPayload::Normal(vec![Command::Kv(KvCommand::Set { key: format!("key-{index}"), value, flags: term })])
        };
        Entry { log_id: log_id(term, index), payload }
    }

    fn entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry> {
        indexes.map(|i| entry(term, i)).collect()
    }

    pub(super) fn open(disk: &MemDisk) -> LogStore {
        LogStore::open_with(Arc::new(disk.clone()), SMALL).expect("the log opens")
    }

    pub(super) fn append(store: &mut LogStore, batch: Vec<Entry>) {
        block_on(store.blocking_append(batch)).expect("append succeeds")
    }

    fn read(store: &mut LogStore, range: impl RangeBounds<u64> + Clone + Debug + Send) -> Vec<Entry> {
        block_on(store.try_get_log_entries(range)).expect("read succeeds")
    }

    fn state(store: &mut LogStore) -> (Option<LogId>, Option<LogId>) {
        let st = block_on(store.get_log_state()).expect("log state");
        (st.last_purged_log_id, st.last_log_id)
    }

    fn segment_files(disk: &MemDisk) -> Vec<String> {
        disk.list().unwrap().into_iter().filter(|n| parse_segment_name(n).is_some()).collect()
    }

    /// Entries appended over several segments read back identically, from disk and from cache,
    /// through the store and through a separate reader.
    #[test]
    fn append_and_read_across_segments() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        let all = entries(1, 0..30);
        for batch in all.chunks(7) {
            append(&mut store, batch.to_vec());
        }
        assert!(segment_files(&disk).len() >= 5, "{:?}", segment_files(&disk));
        assert_eq!(read(&mut store, ..), all);
        assert_eq!(read(&mut store, 5..17), all[5..17]);
        assert_eq!(read(&mut store, 24..=29), all[24..30]);
        assert_eq!(read(&mut store, 28..100), all[28..30]);
        assert!(read(&mut store, 30..).is_empty());
        let mut reader = block_on(store.get_log_reader());
        assert_eq!(block_on(reader.try_get_log_entries(3..9)).unwrap(), all[3..9]);
        assert_eq!(state(&mut store), (None, Some(log_id(1, 29))));
    }

    /// Truncating inside a segment and at a segment's first entry removes exactly the later
    /// entries, on disk too, and the log continues from there.
    #[test]
    fn truncate_across_segments() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        append(&mut store, entries(1, 0..30));
        let starts: Vec<u64> = segment_files(&disk).iter().filter_map(|n| parse_segment_name(n)).collect();
        let boundary = starts[3];
        block_on(store.truncate(log_id(1, boundary))).unwrap();
        assert_eq!(read(&mut store, ..), entries(1, 0..boundary));
        assert!(!segment_files(&disk).contains(&segment_name(boundary)));
        block_on(store.truncate(log_id(1, boundary - 2))).unwrap();
        assert_eq!(state(&mut store), (None, Some(log_id(1, boundary - 3))));
        append(&mut store, entries(2, boundary - 2..boundary + 10));
        let mut want = entries(1, 0..boundary - 2);
        want.extend(entries(2, boundary - 2..boundary + 10));
        assert_eq!(read(&mut store, ..), want);
        assert_eq!(read(&mut open(&disk), ..), want);
    }

    /// Purging deletes whole segments at or below the purge point, keeps the rest readable, and
    /// survives a reopen; purging past the end empties the log and appends resume after it.
    #[test]
    fn purge_across_segments() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        append(&mut store, entries(1, 0..30));
        let before = segment_files(&disk).len();
        block_on(store.purge(log_id(1, 12))).unwrap();
        assert!(segment_files(&disk).len() < before);
        assert_eq!(read(&mut store, ..), entries(1, 13..30));
        assert_eq!(state(&mut store), (Some(log_id(1, 12)), Some(log_id(1, 29))));
        let mut reopened = open(&disk);
        assert_eq!(read(&mut reopened, ..), entries(1, 13..30));
        assert_eq!(state(&mut reopened), (Some(log_id(1, 12)), Some(log_id(1, 29))));

        block_on(reopened.purge(log_id(3, 40))).unwrap();
        assert!(segment_files(&disk).is_empty());
        assert_eq!(state(&mut reopened), (Some(log_id(3, 40)), Some(log_id(3, 40))));
        append(&mut reopened, entries(3, 41..45));
        let mut again = open(&disk);
        assert_eq!(read(&mut again, ..), entries(3, 41..45));
        assert_eq!(state(&mut again), (Some(log_id(3, 40)), Some(log_id(3, 44))));
    }

    /// Everything a store reports survives a clean close and reopen unchanged.
    #[test]
    fn reopen_restores_identical_state() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        append(&mut store, entries(1, 0..20));
        block_on(store.truncate(log_id(1, 15))).unwrap();
        append(&mut store, entries(2, 15..25));
        block_on(store.purge(log_id(1, 6))).unwrap();
        let vote = Vote::new_committed(2, 3);
        block_on(store.save_vote(&vote)).unwrap();
        block_on(store.save_committed(Some(log_id(2, 18)))).unwrap();
        let snapshot = |s: &mut LogStore| {
            (read(s, ..), state(s), block_on(s.read_vote()).unwrap(), block_on(s.read_committed()).unwrap())
        };
        let before = snapshot(&mut store);
        drop(store);
        let mut reopened = open(&disk);
        assert_eq!(snapshot(&mut reopened), before);
        assert_eq!(before.2, Some(vote));
    }

    /// A disk that dies at a chosen sync: that sync and every later write fail, as if the
    /// machine lost power right there.
    #[derive(Debug)]
    struct DyingDisk {
        disk: MemDisk,
        syncs_left: Mutex<Option<usize>>,
        dead: AtomicBool,
    }

    impl DyingDisk {
        fn new(disk: MemDisk) -> Self {
            DyingDisk { disk, syncs_left: Mutex::new(None), dead: AtomicBool::new(false) }
        }

        fn die_at_sync(&self, syncs_that_succeed: usize) {
            *self.syncs_left.lock().unwrap() = Some(syncs_that_succeed);
        }

        fn alive(&self, name: &str) -> Result<(), DiskError> {
            if self.dead.load(Ordering::SeqCst) {
                return Err(DiskError::Io { name: name.into(), source: io::Error::other("the disk lost power") });
            }
            Ok(())
        }
    }

    impl Disk for DyingDisk {
        fn list(&self) -> Result<Vec<String>, DiskError> {
            self.disk.list()
        }
        fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
            self.disk.read(name)
        }
        fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
            self.disk.read_at(name, offset, len)
        }
        fn len(&self, name: &str) -> Result<u64, DiskError> {
            self.disk.len(name)
        }
        fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
            self.alive(name)?;
            self.disk.append(name, bytes)
        }
        fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
            self.alive(name)?;
            self.disk.truncate(name, len)
        }
        fn sync(&self, name: &str) -> Result<(), DiskError> {
            self.alive(name)?;
            let mut left = self.syncs_left.lock().unwrap();
            match *left {
                Some(0) => {
                    self.dead.store(true, Ordering::SeqCst);
                    return self.alive(name);
                }
                Some(n) => *left = Some(n - 1),
                None => {}
            }
            self.disk.sync(name)
        }
        fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
            self.alive(name)?;
            self.disk.write_atomic(name, bytes)
        }
        fn remove(&self, name: &str) -> Result<(), DiskError> {
            self.alive(name)?;
            self.disk.remove(name)
        }
    }

    /// Append `batches` until the disk dies; returns how many entries were acknowledged.
    fn append_until_death(store: &mut LogStore, batches: &[Entry]) -> usize {
        let mut acked = 0;
        for batch in batches.chunks(4) {
            if block_on(store.blocking_append(batch.to_vec())).is_err() {
                break;
            }
            acked += batch.len();
        }
        acked
    }

    /// For 200 crash points and seeds: every acknowledged entry survives, whatever else survives
    /// continues it without a gap, and recovery never reports an error.
    #[test]
    fn crash_keeps_every_acknowledged_entry() {
        for seed in 0..200u64 {
            let mem = MemDisk::new();
            let dying = Arc::new(DyingDisk::new(mem.clone()));
            let mut store = LogStore::open_with(dying.clone(), SMALL).unwrap();
            let all = entries(1, 0..40);
            append(&mut store, all[..10].to_vec());
            dying.die_at_sync((seed % 6) as usize);
            let acked = 10 + append_until_death(&mut store, &all[10..]);
            drop(store);
            mem.crash(seed);
            let got = read(&mut open(&mem), ..);
            assert!(got.len() >= acked, "seed {seed}: {} entries survive, {acked} were acknowledged", got.len());
            assert_eq!(got, all[..got.len()], "seed {seed}");
        }
    }

    /// After an acknowledged truncation, a crash during the following appends recovers a prefix of
    /// the new log that holds every acknowledged entry, never a truncated one.
    #[test]
    fn crash_after_truncate_keeps_the_new_history() {
        for seed in 0..200u64 {
            let mem = MemDisk::new();
            let dying = Arc::new(DyingDisk::new(mem.clone()));
            let mut store = LogStore::open_with(dying.clone(), SMALL).unwrap();
            append(&mut store, entries(1, 0..20));
            block_on(store.truncate(log_id(1, 9))).unwrap();
            let mut want = entries(1, 0..9);
            want.extend(entries(2, 9..30));
            dying.die_at_sync((seed % 5) as usize);
            let acked = 9 + append_until_death(&mut store, &want[9..]);
            drop(store);
            mem.crash(seed);
            let got = read(&mut open(&mem), ..);
            assert!(got.len() >= acked, "seed {seed}: {} entries survive, {acked} were acknowledged", got.len());
            assert_eq!(got, want[..got.len()], "seed {seed}");
        }
    }

    /// The byte offsets of the records in `name`.
    fn record_offsets(disk: &MemDisk, name: &str) -> Vec<u64> {
        let bytes = disk.read(name).unwrap();
        record::scan_all(name, &bytes).unwrap().0.into_iter().map(|(offset, _)| offset).collect()
    }

    fn open_err(disk: &MemDisk) -> DiskError {
        LogStore::open_with(Arc::new(disk.clone()), SMALL).expect_err("the log must refuse to open")
    }

    /// A damaged record in the middle of the log makes open fail, naming its file and offset.
    #[test]
    fn corrupt_record_refuses_to_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        let victim = segment_files(&disk)[1].clone();
        let offset = record_offsets(&disk, &victim)[1];
        disk.corrupt_byte(&victim, offset + 12).unwrap();
        match open_err(&disk) {
            DiskError::Corrupt { name, offset: at, .. } => assert_eq!((name, at), (victim, offset)),
            other => panic!("{other}"),
        }
    }

    /// A damaged last record of the last segment is corruption too: its end is inside the file.
    #[test]
    fn corrupt_final_record_refuses_to_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        let last = segment_files(&disk).pop().unwrap();
        let offset = *record_offsets(&disk, &last).last().unwrap();
        disk.corrupt_byte(&last, offset + 9).unwrap();
        assert!(matches!(open_err(&disk), DiskError::Corrupt { name, offset: at, .. } if name == last && at == offset));
    }

    /// A torn (or zero-filled) tail of the last segment is cut away on open and synced; the log
    /// keeps every complete entry and accepts new ones after them.
    #[test]
    fn torn_tail_is_truncated() {
        for tail in [&record::encode(b"half a record")[..9], &[0u8; 16][..]] {
            let disk = MemDisk::new();
            append(&mut open(&disk), entries(1, 0..30));
            let last = segment_files(&disk).pop().unwrap();
            let clean_len = disk.len(&last).unwrap();
            disk.append(&last, tail).unwrap();
            disk.sync(&last).unwrap();
            let mut store = open(&disk);
            assert_eq!(disk.len(&last).unwrap(), clean_len);
            disk.crash(1);
            assert_eq!(disk.len(&last).unwrap(), clean_len, "the cut was synced");
            append(&mut store, entries(1, 30..32));
            assert_eq!(read(&mut open(&disk), ..), entries(1, 0..32));
        }
    }

    /// A torn end in a segment that is not the last is corruption, not a tail to drop.
    #[test]
    fn torn_middle_segment_refuses_to_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        let victim = segment_files(&disk)[2].clone();
        let offset = *record_offsets(&disk, &victim).last().unwrap();
        disk.truncate(&victim, disk.len(&victim).unwrap() - 3).unwrap();
        disk.sync(&victim).unwrap();
        assert!(
            matches!(open_err(&disk), DiskError::Corrupt { name, offset: at, .. } if name == victim && at == offset)
        );
    }

    /// A torn tail that would drop an entry the saved commit point covers is corruption.
    #[test]
    fn torn_tail_below_commit_point_refuses_to_open() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        append(&mut store, entries(1, 0..30));
        block_on(store.save_committed(Some(log_id(1, 29)))).unwrap();
        let last = segment_files(&disk).pop().unwrap();
        let offset = *record_offsets(&disk, &last).last().unwrap();
        disk.truncate(&last, offset + 10).unwrap();
        disk.sync(&last).unwrap();
        assert!(matches!(open_err(&disk), DiskError::Corrupt { name, offset: at, .. } if name == last && at == offset));
    }

    /// A missing segment in the middle is a gap, reported at the segment after it.
    #[test]
    fn gap_between_segments_refuses_to_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        let files = segment_files(&disk);
        disk.remove(&files[2]).unwrap();
        assert!(matches!(open_err(&disk), DiskError::Corrupt { name, offset: 0, .. } if name == files[3]));
    }

    /// An entry at the purge point whose id differs from the purged id is corruption.
    #[test]
    fn entry_contradicting_purge_refuses_to_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        write_state(&disk, META_FILE, &log_id(2, 3)).unwrap();
        let first = segment_files(&disk)[0].clone();
        let offset = record_offsets(&disk, &first)[3];
        assert!(
            matches!(open_err(&disk), DiskError::Corrupt { name, offset: at, .. } if name == first && at == offset)
        );
    }

    /// Segments an interrupted purge left behind are removed on open.
    #[test]
    fn interrupted_purge_is_finished_on_open() {
        let disk = MemDisk::new();
        append(&mut open(&disk), entries(1, 0..30));
        let before = segment_files(&disk).len();
        write_state(&disk, META_FILE, &log_id(1, 15)).unwrap();
        let mut store = open(&disk);
        assert!(segment_files(&disk).len() < before);
        assert_eq!(read(&mut store, ..), entries(1, 16..30));
        assert_eq!(state(&mut store), (Some(log_id(1, 15)), Some(log_id(1, 29))));
    }

    /// The same log works on a real directory: appends, truncation, purge and reopening.
    #[test]
    fn works_on_a_real_directory() {
        let dir = std::env::temp_dir().join(format!("cairn-log-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open_dir = || LogStore::open_with(Arc::new(crate::storage::FileDisk::open(&dir).unwrap()), SMALL).unwrap();
        let mut store = open_dir();
        append(&mut store, entries(1, 0..30));
        block_on(store.truncate(log_id(1, 20))).unwrap();
        append(&mut store, entries(2, 20..25));
        block_on(store.purge(log_id(1, 7))).unwrap();
        drop(store);
        let mut want = entries(1, 8..20);
        want.extend(entries(2, 20..25));
        let got = read(&mut open_dir(), ..);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, want);
    }

    /// An entry too large for a record is refused with an error, and the log stays as it was.
    #[test]
    fn oversized_entry_is_an_error() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        append(&mut store, entries(1, 0..3));
        let value = Bytes::from(vec![0u8; record::RECORD_PAYLOAD_BYTES_MAX + 1]);
        let command = Command::Kv(KvCommand::Set { key: "huge".into(), value, flags: 0 });
        let huge = Entry { log_id: log_id(1, 3), payload: EntryPayload::Normal(vec![command]) };
        assert!(block_on(store.blocking_append([huge])).is_err());
        assert_eq!(read(&mut open(&disk), ..), entries(1, 0..3));
    }

    /// A checksummed payload claiming an absurd length is reported as corrupt, not allocated.
    #[test]
    fn decoding_respects_the_record_limit() {
        // bincode varint: 0xfd, then a u64 length of 2^60.
        let payload = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let err = decode_value::<Vec<u8>>("f", 8, &payload).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { offset: 8, .. }), "{err}");
    }

    /// The commit point reaches the disk only every `committed_lag_entries_max` entries (writing it
    /// per commit would triple the fsyncs of every write), and what is on disk is never ahead.
    #[test]
    fn committed_is_persisted_lazily() {
        let disk = MemDisk::new();
        let limits = LogStoreLimits { committed_lag_entries_max: 10, ..SMALL };
        let reopened_committed = |disk: &MemDisk| {
            let mut store = LogStore::open_with(Arc::new(disk.clone()), limits).unwrap();
            block_on(store.read_committed()).unwrap()
        };
        let mut store = LogStore::open_with(Arc::new(disk.clone()), limits).unwrap();
        block_on(store.save_committed(Some(log_id(1, 5)))).unwrap();
        assert_eq!(reopened_committed(&disk), None);
        block_on(store.save_committed(Some(log_id(1, 9)))).unwrap();
        assert_eq!(reopened_committed(&disk), Some(log_id(1, 9)));
        block_on(store.save_committed(Some(log_id(1, 12)))).unwrap();
        assert_eq!(block_on(store.read_committed()).unwrap(), Some(log_id(1, 12)));
        assert_eq!(reopened_committed(&disk), Some(log_id(1, 9)));
    }

    /// Vote and commit point round-trip through their files; a damaged vote file is corruption.
    #[test]
    fn vote_and_committed_are_durable_and_checked() {
        let disk = MemDisk::new();
        let mut store = open(&disk);
        assert_eq!(block_on(store.read_vote()).unwrap(), None);
        block_on(store.save_vote(&Vote::new(4, 2))).unwrap();
        block_on(store.save_committed(None)).unwrap();
        let mut reopened = open(&disk);
        assert_eq!(block_on(reopened.read_vote()).unwrap(), Some(Vote::new(4, 2)));
        assert_eq!(block_on(reopened.read_committed()).unwrap(), None);
        disk.corrupt_byte(VOTE_FILE, 9).unwrap();
        assert!(matches!(open_err(&disk), DiskError::Corrupt { name, offset: 0, .. } if name == VOTE_FILE));
    }
}

/// The log against a plain map, over random histories that include reopening and crashing.
#[cfg(test)]
mod model_tests {
    use proptest::prelude::*;

    use super::tests::{append, block_on, entry, log_id, open};
    use super::*;
    use crate::storage::MemDisk;

    #[derive(Debug, Clone)]
    enum Op {
        Append { count: u64, new_term: bool },
        Truncate { back: u64 },
        Purge { ahead: u64 },
        Reopen,
        Crash { seed: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1u64..7, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
            1 => (0u64..8).prop_map(|back| Op::Truncate { back }),
            1 => (0u64..10).prop_map(|ahead| Op::Purge { ahead }),
            1 => Just(Op::Reopen),
            1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        ]
    }

    #[derive(Debug, Default)]
    struct Model {
        entries: BTreeMap<u64, Entry>,
        purged: Option<LogId>,
        term: u64,
    }

    impl Model {
        fn live_from(&self) -> u64 {
            self.purged.map_or(0, |p| p.index + 1)
        }

        fn next_index(&self) -> u64 {
            self.entries.keys().next_back().map_or(self.live_from(), |last| last + 1)
        }

        fn last_log_id(&self) -> Option<LogId> {
            self.entries.values().next_back().map(|e| e.log_id).or(self.purged)
        }
    }

    /// Apply `op` to both the store and the model.
    fn apply(op: &Op, disk: &MemDisk, store: &mut LogStore, model: &mut Model) {
        match *op {
            Op::Append { count, new_term } => {
                model.term += u64::from(new_term);
                let next = model.next_index();
                let batch: Vec<Entry> = (next..next + count).map(|i| entry(model.term, i)).collect();
                model.entries.extend(batch.iter().map(|e| (e.log_id.index, e.clone())));
                append(store, batch);
            }
            Op::Truncate { back } => {
                let at = model.next_index().saturating_sub(back).max(model.live_from());
                model.entries.split_off(&at);
                block_on(store.truncate(log_id(model.term, at))).unwrap();
            }
            Op::Purge { ahead } => {
                let at = model.live_from() + ahead;
                let id = model.entries.get(&at).map_or(log_id(model.term, at), |e| e.log_id);
                model.entries = model.entries.split_off(&(at + 1));
                model.purged = Some(id);
                block_on(store.purge(id)).unwrap();
            }
            Op::Reopen => *store = open(disk),
            Op::Crash { seed } => {
                // Every operation so far was acknowledged, so a crash must lose none of it.
                disk.crash(seed);
                *store = open(disk);
            }
        }
    }

    proptest! {
        /// Random appends, truncations, purges, reopens and crashes leave the log equal to the model.
        #[test]
        fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
            let disk = MemDisk::new();
            let mut store = open(&disk);
            let mut model = Model::default();
            for op in &ops {
                apply(op, &disk, &mut store, &mut model);
                let got = block_on(store.try_get_log_entries(..)).unwrap();
                let want: Vec<Entry> = model.entries.values().cloned().collect();
                prop_assert_eq!(got, want, "after {:?}", op);
                let st = block_on(store.get_log_state()).unwrap();
                prop_assert_eq!((st.last_purged_log_id, st.last_log_id), (model.purged, model.last_log_id()));
                let mid = model.live_from() + 2;
                let got = block_on(store.try_get_log_entries(mid..mid + 5)).unwrap();
                let want: Vec<Entry> = model.entries.range(mid..mid + 5).map(|(_, e)| e.clone()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

/// openraft's own storage test suite, run against the log store with a minimal state machine
/// (the suite needs one; the real one lives in `raft::state_machine`).
#[cfg(test)]
mod suite_tests {
    use std::io::Cursor;

    use openraft::storage::{RaftStateMachine, Snapshot};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};

    use super::*;
    use crate::raft::{NodeId, ServerInfo};
    use crate::state::Outcome;
    use crate::storage::MemDisk;

    type Membership = StoredMembership<NodeId, ServerInfo>;

    #[derive(Debug, Default)]
    struct MachineState {
        applied: Option<LogId>,
        membership: Membership,
        snapshot: Option<(SnapshotMeta<NodeId, ServerInfo>, Vec<u8>)>,
        snapshots_built: u64,
    }

    /// Tracks only what the suite inspects: the applied id, membership and snapshots.
    #[derive(Debug, Clone, Default)]
    struct TestMachine(Arc<Mutex<MachineState>>);

    impl RaftSnapshotBuilder<TypeConfig> for TestMachine {
        async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
            let mut st = self.0.lock().unwrap();
            st.snapshots_built += 1;
            let meta = SnapshotMeta {
                last_log_id: st.applied,
                last_membership: st.membership.clone(),
                snapshot_id: st.snapshots_built.to_string(),
            };
            let data = encode_value(&(st.applied, st.membership.clone()));
            st.snapshot = Some((meta.clone(), data.clone()));
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
        }
    }

    impl RaftStateMachine<TypeConfig> for TestMachine {
        type SnapshotBuilder = Self;

        async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
            let st = self.0.lock().unwrap();
            Ok((st.applied, st.membership.clone()))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
        where
            I: IntoIterator<Item = Entry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            let mut st = self.0.lock().unwrap();
            let mut outcomes = Vec::new();
            for entry in entries {
                st.applied = Some(entry.log_id);
                if let EntryPayload::Membership(m) = entry.payload {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                }
                outcomes.push(vec![Outcome::Done]);
            }
            Ok(outcomes)
        }

        async fn get_snapshot_builder(&mut self) -> Self {
            self.clone()
        }

        async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<NodeId, ServerInfo>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), StorageError> {
            let data = snapshot.into_inner();
            let (applied, membership) = decode_value("snapshot", 0, &data).map_err(|e| StorageIOError::read(&e))?;
            let mut st = self.0.lock().unwrap();
            (st.applied, st.membership) = (applied, membership);
            st.snapshot = Some((meta.clone(), data));
            Ok(())
        }

        async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
            let st = self.0.lock().unwrap();
            Ok(st.snapshot.clone().map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
        }
    }

    struct Builder(LogStoreLimits);

    impl StoreBuilder<TypeConfig, LogStore, TestMachine> for Builder {
        async fn build(&self) -> Result<((), LogStore, TestMachine), StorageError> {
            let store = LogStore::open_with(Arc::new(MemDisk::new()), self.0).map_err(|e| StorageIOError::read(&e))?;
            Ok(((), store, TestMachine::default()))
        }
    }

    type OpenraftSuite = Suite<TypeConfig, LogStore, TestMachine, Builder, ()>;

    /// Run the named suite tests one by one, then the snapshot transfer test. The suite's own
    /// `test_all` cannot be used: it includes the test skipped below.
    macro_rules! run_suite {
        ($limits:expr, [$($test:ident),* $(,)?]) => {{
            let builder = Builder($limits);
            $(
                super::tests::block_on(async {
                    let ((), store, machine) = builder.build().await?;
                    OpenraftSuite::$test(store, machine).await
                })
                .unwrap_or_else(|e| panic!("{}: {e}", stringify!($test)));
            )*
            super::tests::block_on(OpenraftSuite::transfer_snapshot(&builder)).expect("transfer_snapshot");
        }};
    }

    /// Every test of openraft's storage suite but one passes with a few entries per segment.
    ///
    /// Skipped: `get_initial_state_membership_from_log_and_sm`, which appends index 1 after index
    /// 2 was purged. Raft never appends below the purge point, and this log asserts that appends
    /// continue it without a hole rather than silently storing a disconnected entry.
    #[test]
    fn openraft_suite_small_segments() {
        run_all(super::tests::SMALL);
    }

    /// The same with one entry per segment and no cache: every read goes to disk and every purge
    /// and truncation meets a segment boundary.
    #[test]
    fn openraft_suite_one_entry_per_segment() {
        run_all(LogStoreLimits { segment_size_bytes: 1, cached_entries_max: 0, committed_lag_entries_max: 1 });
    }

    fn run_all(limits: LogStoreLimits) {
        run_suite!(
            limits,
            [
                last_membership_in_log_initial,
                last_membership_in_log,
                last_membership_in_log_multi_step,
                get_membership_initial,
                get_membership_from_log_and_empty_sm,
                get_membership_from_empty_log_and_sm,
                get_membership_from_log_le_sm_last_applied,
                get_membership_from_log_gt_sm_last_applied_1,
                get_membership_from_log_gt_sm_last_applied_2,
                get_initial_state_without_init,
                get_initial_state_with_state,
                get_initial_state_last_log_gt_sm,
                get_initial_state_last_log_lt_sm,
                get_initial_state_log_ids,
                get_initial_state_re_apply_committed,
                save_vote,
                get_log_entries,
                limited_get_log_entries,
                try_get_log_entry,
                initial_logs,
                get_log_state,
                get_log_id,
                last_id_in_log,
                last_applied_state,
                purge_logs_upto_0,
                purge_logs_upto_5,
                purge_logs_upto_20,
                delete_logs_since_11,
                delete_logs_since_0,
                append_to_log,
                snapshot_meta,
                apply_single,
                apply_multiple,
            ]
        );
    }
}
