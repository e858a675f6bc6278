//! [`MemDisk`]: the simulated disk.
//!
//! Each file keeps its durable bytes and the operations issued since its last `sync`; reads see
//! the durable bytes with those operations applied. [`MemDisk::crash`] plays the part of a power
//! cut: per file it keeps a seeded random prefix of the pending operations, possibly tearing the
//! first append it drops, and makes the outcome durable. A file whose creation was never synced
//! vanishes when none of its writes survive, as it can on a real file system.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Disk, DiskError};
use crate::raft::fnv1a64;

/// An in-memory disk that models crashes. Clones share the same files, so the simulator can keep
/// a handle that outlives the node using it.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
}

#[derive(Debug, Default)]
struct MemFile {
    /// What survives a crash. `None`: the file's creation itself was never synced.
    durable: Option<Vec<u8>>,
    /// Operations since the last sync, oldest first.
    pending: Vec<PendingOp>,
    /// `durable` with `pending` applied: what reads see.
    current: Vec<u8>,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Append(Vec<u8>),
    Truncate(u64),
}

impl PendingOp {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            PendingOp::Append(data) => bytes.extend_from_slice(data),
            PendingOp::Truncate(len) => bytes.truncate(*len as usize),
        }
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> MutexGuard<'_, BTreeMap<String, MemFile>> {
        // Every operation completes its update before releasing the lock and nothing in it can
        // panic half-way, so a poisoned lock still guards consistent files.
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lose power: each file keeps a random prefix of its unsynced operations (the first dropped
    /// append may survive in part), and what is kept becomes durable. The same seed and the same
    /// history give the same outcome.
    pub fn crash(&self, rng_seed: u64) {
        let mut files = self.files();
        files.retain(|name, file| crash_file(file, SplitMix64::new(rng_seed ^ fnv1a64(name.as_bytes()))));
    }

    /// Flip every bit of the byte at `offset` of `name`, in what reads see and in the durable copy
    /// where it reaches that far: damage on the medium, for tests and fault scenarios.
    pub fn corrupt_byte(&self, name: &str, offset: u64) -> Result<(), DiskError> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let at = offset as usize;
        assert!(at < file.current.len(), "corrupt_byte({name}, {offset}) is past the end of the file");
        file.current[at] ^= 0xff;
        if let Some(byte) = file.durable.as_mut().and_then(|d| d.get_mut(at)) {
            *byte ^= 0xff;
        }
        Ok(())
    }

    /// The bytes of every file as reads see them.
    pub fn total_bytes(&self) -> u64 {
        self.files().values().map(|f| f.current.len() as u64).sum()
    }

    /// How many files exist now.
    pub fn file_count(&self) -> usize {
        self.files().len()
    }
}

/// Apply a crash to one file; false when the file does not survive it.
fn crash_file(file: &mut MemFile, mut rng: SplitMix64) -> bool {
    let kept_ops = rng.below(file.pending.len() as u64 + 1) as usize;
    let existed = file.durable.is_some();
    let mut bytes = file.durable.take().unwrap_or_default();
    for op in &file.pending[..kept_ops] {
        op.apply(&mut bytes);
    }
    let mut torn_len = 0;
    if let Some(PendingOp::Append(data)) = file.pending.get(kept_ops) {
        if !data.is_empty() && rng.next_u64() & 1 == 1 {
            torn_len = rng.below(data.len() as u64) as usize;
            bytes.extend_from_slice(&data[..torn_len]);
        }
    }
    file.pending.clear();
    file.current = bytes.clone();
    file.durable = Some(bytes);
    existed || kept_ops > 0 || torn_len > 0
}

fn not_found(name: &str) -> DiskError {
    DiskError::NotFound { name: name.to_owned() }
}

impl Disk for MemDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self.files().keys().cloned().collect())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.files().get(name).map(|f| f.current.clone()).ok_or_else(|| not_found(name))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let files = self.files();
        let bytes = &files.get(name).ok_or_else(|| not_found(name))?.current;
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(len).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    fn len(&self, name: &str) -> Result<u64, DiskError> {
        self.files().get(name).map(|f| f.current.len() as u64).ok_or_else(|| not_found(name))
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut files = self.files();
        let file = files.entry(name.to_owned()).or_default();
        file.current.extend_from_slice(bytes);
        file.pending.push(PendingOp::Append(bytes.to_vec()));
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.current.truncate(len as usize);
        file.pending.push(PendingOp::Truncate(len));
        Ok(())
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.durable = Some(file.current.clone());
        file.pending.clear();
        Ok(())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let file = MemFile { durable: Some(bytes.to_vec()), pending: Vec::new(), current: bytes.to_vec() };
        self.files().insert(name.to_owned(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.files().remove(name);
        Ok(())
    }
}

/// SplitMix64: a tiny, well-mixed generator, so crash outcomes depend on the seed alone.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; `bound` must be positive. The modulo bias is irrelevant at the
    /// sizes a crash chooses among.
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value to return");
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SEEDS: u64 = 200;

    /// Data written and synced survives every crash, whatever the seed.
    #[test]
    fn synced_data_survives_crash() {
        for seed in 0..SEEDS {
            let disk = MemDisk::new();
            disk.append("a", b"hello").unwrap();
            disk.sync("a").unwrap();
            disk.append("a", b" world").unwrap();
            disk.crash(seed);
            let got = disk.read("a").unwrap();
            assert!(got.starts_with(b"hello"), "seed {seed}: {got:?}");
        }
    }

    /// Unsynced appends survive some crashes and are lost in others; what survives is a prefix of
    /// what was written, over the synced bytes: a crash never invents data.
    #[test]
    fn unsynced_appends_survive_as_a_prefix() {
        let mut lengths = BTreeSet::new();
        for seed in 0..SEEDS {
            let disk = MemDisk::new();
            disk.append("a", b"base").unwrap();
            disk.sync("a").unwrap();
            for chunk in [&b"0123"[..], b"4567", b"89"] {
                disk.append("a", chunk).unwrap();
            }
            disk.crash(seed);
            let got = disk.read("a").unwrap();
            assert!(b"base0123456789".starts_with(&got) && got.len() >= 4, "seed {seed}: {got:?}");
            lengths.insert(got.len());
        }
        assert!(lengths.contains(&4) && lengths.contains(&14), "outcomes {lengths:?}");
        let torn = lengths.iter().any(|l| ![4, 8, 12, 14].contains(l));
        assert!(torn, "no seed tore an append: {lengths:?}");
    }

    /// With a truncate among the pending operations, every outcome is one a prefix of the
    /// operations (plus part of the first dropped append) explains, and each of them occurs.
    #[test]
    fn crash_outcomes_follow_operation_order() {
        let allowed: BTreeSet<&[u8]> = [&b"abcdef"[..], b"ab", b"abx", b"abxy"].into_iter().collect();
        let mut seen = BTreeSet::new();
        for seed in 0..SEEDS {
            let disk = MemDisk::new();
            disk.write_atomic("f", b"abcdef").unwrap();
            disk.truncate("f", 2).unwrap();
            disk.append("f", b"xy").unwrap();
            disk.crash(seed);
            let got = disk.read("f").unwrap();
            assert!(allowed.contains(&got[..]), "seed {seed}: {got:?}");
            seen.insert(got);
        }
        assert_eq!(seen.len(), allowed.len(), "outcomes {seen:?}");
    }

    /// A file whose creation was never synced may vanish in a crash, or survive with a prefix.
    #[test]
    fn unsynced_new_file_may_vanish() {
        let (mut vanished, mut survived) = (false, false);
        for seed in 0..SEEDS {
            let disk = MemDisk::new();
            disk.append("new", b"data").unwrap();
            disk.crash(seed);
            match disk.read("new") {
                Err(DiskError::NotFound { .. }) => vanished = true,
                Ok(bytes) => {
                    assert!(!bytes.is_empty() && b"data".starts_with(&bytes), "seed {seed}: {bytes:?}");
                    survived = true;
                }
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        assert!(vanished && survived);
    }

    /// The same history and seed give the same disk after a crash.
    #[test]
    fn crash_is_deterministic() {
        let run = |seed| {
            let disk = MemDisk::new();
            for (i, name) in ["a", "b", "c"].iter().enumerate() {
                disk.append(name, &[i as u8; 7]).unwrap();
                disk.sync(name).unwrap();
                disk.append(name, &[9; 13]).unwrap();
                disk.append(name, &[8; 5]).unwrap();
            }
            disk.crash(seed);
            disk.list().unwrap().iter().map(|n| (n.clone(), disk.read(n).unwrap())).collect::<Vec<_>>()
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed), "seed {seed}");
        }
        assert!((0..20).any(|seed| run(seed) != run(seed + 1)), "the seed changes nothing");
    }

    /// `write_atomic` and `remove` are durable at once; a crash does not undo them.
    #[test]
    fn atomic_writes_and_removes_are_durable() {
        let disk = MemDisk::new();
        disk.write_atomic("keep", b"v1").unwrap();
        disk.append("gone", b"x").unwrap();
        disk.sync("gone").unwrap();
        disk.remove("gone").unwrap();
        disk.crash(7);
        assert_eq!(disk.read("keep").unwrap(), b"v1");
        assert!(matches!(disk.read("gone"), Err(DiskError::NotFound { .. })));
        assert_eq!(disk.list().unwrap(), vec!["keep".to_owned()]);
    }

    /// Clones share files, reads see unsynced writes, and the accounting helpers agree.
    #[test]
    fn clones_share_state_and_reads_see_pending_writes() {
        let disk = MemDisk::new();
        let other = disk.clone();
        other.append("f", b"abcdef").unwrap();
        assert_eq!(disk.read_at("f", 2, 3).unwrap(), b"cde");
        assert_eq!(disk.read_at("f", 4, 10).unwrap(), b"ef");
        assert_eq!(disk.len("f").unwrap(), 6);
        assert_eq!((disk.total_bytes(), disk.file_count()), (6, 1));
        disk.corrupt_byte("f", 0).unwrap();
        assert_eq!(other.read("f").unwrap()[0], b'a' ^ 0xff);
    }
}
