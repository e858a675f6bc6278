//! Snapshot files on a [`Disk`].
//!
//! A snapshot is one file, `snapshot-<last index, 20 digits>-<term>.snap`, written whole with
//! `write_atomic`: a header record (the openraft metadata and the data length), then the data in
//! records of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes. Since the file is never half-written,
//! any torn or damaged record in it is corruption, and so is a header that disagrees with the
//! file name or the data length.
//!
//! Only the newest snapshot is kept. If the newest one is damaged, loading fails even when an
//! older one survives: falling back would silently rewind the state machine behind entries the
//! log has already purged.

use std::sync::Arc;

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use super::log_store::{decode_value, encode_value};
use super::{LogId, NodeId, ServerInfo};
use crate::storage::record;
use crate::storage::{Disk, DiskError};

/// The largest data record in a snapshot file; bounds the buffer a reader must trust at once.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// openraft's snapshot metadata with our types.
pub type Meta = SnapshotMeta<NodeId, ServerInfo>;

/// Snapshot files on a disk.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
}

/// The first record of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    meta: Meta,
    data_bytes: u64,
}

/// Where a snapshot sits in the log: (last index, term); `None` sorts first as (0, 0).
type Position = (u64, u64);

fn position(last_log_id: Option<LogId>) -> Position {
    last_log_id.map_or((0, 0), |id| (id.index, id.leader_id.term))
}

fn snapshot_name((index, term): Position) -> String {
    format!("snapshot-{index:020}-{term}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<Position> {
    let (index, term) = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if index.len() != 20 || !digits(index) || !digits(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

fn corrupt(name: &str, offset: u64, reason: String) -> DiskError {
    DiskError::Corrupt { name: name.to_owned(), offset, reason }
}

impl SnapshotStore {
    /// Snapshots kept on `disk` (which may be shared with the log: names do not collide).
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        SnapshotStore { disk }
    }

    /// Store a snapshot durably, then remove every other snapshot file.
    pub fn save(&self, meta: &Meta, data: &[u8]) -> Result<(), DiskError> {
        let name = snapshot_name(position(meta.last_log_id));
        let header = Header { meta: meta.clone(), data_bytes: data.len() as u64 };
        let mut bytes = Vec::with_capacity(data.len() + data.len() / SNAPSHOT_CHUNK_BYTES_MAX * 8 + 256);
        record::encode_into(&mut bytes, &encode_value(&header));
        for chunk in data.chunks(SNAPSHOT_CHUNK_BYTES_MAX) {
            record::encode_into(&mut bytes, chunk);
        }
        self.disk.write_atomic(&name, &bytes)?;
        // openraft replaces the current snapshot with each one it saves or installs, so anything
        // else on disk (older, or left by an interrupted save) is obsolete.
        for (_, other) in self.snapshot_files()? {
            if other != name {
                self.disk.remove(&other)?;
            }
        }
        Ok(())
    }

    /// The newest snapshot with its data, every record verified; `None` if there is none.
    pub fn load_latest(&self) -> Result<Option<(Meta, Vec<u8>)>, DiskError> {
        let Some((file_position, name)) = self.snapshot_files()?.pop() else {
            return Ok(None);
        };
        let bytes = self.disk.read(&name)?;
        let records = record::scan_complete(&name, &bytes)?;
        let Some(((header_offset, header), chunks)) = records.split_first() else {
            return Err(corrupt(&name, 0, "snapshot file holds no records".into()));
        };
        let header: Header = decode_value(&name, *header_offset, header)?;
        if position(header.meta.last_log_id) != file_position {
            let reason = format!("metadata says last log id {:?}, the file name disagrees", header.meta.last_log_id);
            return Err(corrupt(&name, *header_offset, reason));
        }
        let data: Vec<u8> = chunks.iter().flat_map(|(_, chunk)| chunk.iter().copied()).collect();
        if data.len() as u64 != header.data_bytes {
            let reason = format!("{} data bytes where the header promises {}", data.len(), header.data_bytes);
            return Err(corrupt(&name, bytes.len() as u64, reason));
        }
        Ok(Some((header.meta, data)))
    }

    /// Snapshot files, oldest first.
    fn snapshot_files(&self) -> Result<Vec<(Position, String)>, DiskError> {
        let mut files: Vec<(Position, String)> =
            self.disk.list()?.into_iter().filter_map(|name| Some((parse_snapshot_name(&name)?, name))).collect();
        files.sort();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Membership, StoredMembership};

    use super::*;
    use crate::storage::MemDisk;

    fn meta(term: u64, index: u64) -> Meta {
        let id = LogId::new(CommittedLeaderId::new(term, 1), index);
        let nodes: BTreeMap<NodeId, ServerInfo> = (1..=3)
            .map(|n| {
                (
                    n,
                    ServerInfo {
                        name: format!("s{n}"),
                        node_id: format!("id-{n}"),
                        rpc_addr: "10.0.0.1:8300".into(),
                        lan_addr: "10.0.0.1:8301".into(),
                    },
                )
            })
            .collect();
        let membership = Membership::new(vec![nodes.keys().copied().collect()], nodes);
        SnapshotMeta {
            last_log_id: Some(id),
            last_membership: StoredMembership::new(Some(id), membership),
            snapshot_id: format!("{term}-{index}"),
        }
    }

    fn store(disk: &MemDisk) -> SnapshotStore {
        SnapshotStore::new(Arc::new(disk.clone()))
    }

    fn snapshot_names(disk: &MemDisk) -> Vec<String> {
        disk.list().unwrap().into_iter().filter(|n| parse_snapshot_name(n).is_some()).collect()
    }

    /// Data larger than a chunk round-trips with its metadata, and so does empty data.
    #[test]
    fn save_and_load_round_trip() {
        let disk = MemDisk::new();
        assert!(store(&disk).load_latest().unwrap().is_none());
        let data: Vec<u8> = (0..2 * SNAPSHOT_CHUNK_BYTES_MAX + 100).map(|i| (i % 251) as u8).collect();
        store(&disk).save(&meta(2, 40), &data).unwrap();
        assert_eq!(store(&disk).load_latest().unwrap(), Some((meta(2, 40), data)));
        store(&disk).save(&meta(2, 41), &[]).unwrap();
        assert_eq!(store(&disk).load_latest().unwrap(), Some((meta(2, 41), Vec::new())));
    }

    /// Saving a snapshot removes the others and leaves the log's files alone.
    #[test]
    fn save_replaces_other_snapshots() {
        let disk = MemDisk::new();
        disk.write_atomic("log-meta", b"not a snapshot").unwrap();
        store(&disk).save(&meta(1, 10), b"old").unwrap();
        store(&disk).save(&meta(3, 30), b"new").unwrap();
        assert_eq!(snapshot_names(&disk), vec![snapshot_name((30, 3))]);
        assert_eq!(store(&disk).load_latest().unwrap(), Some((meta(3, 30), b"new".to_vec())));
        assert!(disk.read("log-meta").is_ok());
    }

    /// Copy `name` from `from` into `to`, as a file an interrupted save might leave behind.
    fn plant(from: &MemDisk, to: &MemDisk, name: &str) {
        to.write_atomic(name, &from.read(name).unwrap()).unwrap();
    }

    /// The newest snapshot is chosen by index and then term, compared as numbers.
    #[test]
    fn newest_is_chosen_numerically() {
        let (disk, other) = (MemDisk::new(), MemDisk::new());
        store(&other).save(&meta(10, 5), b"term ten").unwrap();
        plant(&other, &disk, &snapshot_name((5, 10)));
        store(&other).save(&meta(9, 5), b"term nine").unwrap();
        plant(&other, &disk, &snapshot_name((5, 9)));
        assert_eq!(store(&disk).load_latest().unwrap().unwrap().1, b"term ten");
    }

    /// A damaged data record is corruption naming the file and the record's offset.
    #[test]
    fn corrupt_snapshot_is_an_error() {
        let disk = MemDisk::new();
        let data = vec![7u8; SNAPSHOT_CHUNK_BYTES_MAX + 10];
        store(&disk).save(&meta(1, 8), &data).unwrap();
        let name = snapshot_name((8, 1));
        let bytes = disk.read(&name).unwrap();
        let offsets: Vec<u64> = record::scan_all(&name, &bytes).unwrap().0.iter().map(|(o, _)| *o).collect();
        disk.corrupt_byte(&name, offsets[2] + 8).unwrap();
        let err = store(&disk).load_latest().unwrap_err();
        assert!(
            matches!(&err, DiskError::Corrupt { name: n, offset, .. } if *n == name && *offset == offsets[2]),
            "{err}"
        );
    }

    /// A damaged newest snapshot is an error even though an older valid one exists.
    #[test]
    fn corrupt_newest_never_falls_back() {
        let (disk, other) = (MemDisk::new(), MemDisk::new());
        store(&disk).save(&meta(1, 8), b"older and fine").unwrap();
        store(&other).save(&meta(2, 20), b"newer").unwrap();
        let newer = snapshot_name((20, 2));
        plant(&other, &disk, &newer);
        disk.corrupt_byte(&newer, 3).unwrap();
        let err = store(&disk).load_latest().unwrap_err();
        assert!(matches!(&err, DiskError::Corrupt { name, offset: 0, .. } if *name == newer), "{err}");
    }

    /// A file missing its last data record, or whose header disagrees with its name, is corrupt.
    #[test]
    fn incomplete_or_misnamed_snapshot_is_an_error() {
        let disk = MemDisk::new();
        store(&disk).save(&meta(1, 8), &vec![1u8; SNAPSHOT_CHUNK_BYTES_MAX + 10]).unwrap();
        let name = snapshot_name((8, 1));
        let bytes = disk.read(&name).unwrap();
        let last = record::scan_all(&name, &bytes).unwrap().0.last().unwrap().0;
        disk.write_atomic(&name, &bytes[..last as usize]).unwrap();
        assert!(matches!(store(&disk).load_latest(), Err(DiskError::Corrupt { .. })));

        let misnamed = snapshot_name((9, 1));
        disk.write_atomic(&misnamed, &bytes).unwrap();
        let err = store(&disk).load_latest().unwrap_err();
        assert!(matches!(&err, DiskError::Corrupt { name, offset: 0, .. } if *name == misnamed), "{err}");
    }
}
