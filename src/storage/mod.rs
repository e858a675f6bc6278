//! Durable storage: the one door between Raft state and the media it survives on.
//!
//! Everything Raft must not forget (log entries, the vote, snapshots) goes through [`Disk`], a flat
//! directory of named files with explicit durability points. Two implementations:
//! - [`FileDisk`]: a real directory; `sync` is `fdatasync`, `write_atomic` is write-temp, fsync,
//!   rename, fsync-directory.
//! - [`MemDisk`]: the simulated disk. It survives its node's restart (the simulator keeps it outside
//!   the node) and, on [`MemDisk::crash`], keeps only what was synced plus a random prefix of what was
//!   not, possibly tearing the last write in the middle.
//!
//! Framing of checksummed records lives in [`record`]; both the Raft log and snapshots use it, so a
//! torn or corrupted record is recognised the same way everywhere.

mod file;
mod mem;
pub mod record;

pub use file::FileDisk;
pub use mem::MemDisk;

use std::fmt::Debug;

/// A flat directory of named files. Names are plain file names (no `/`).
///
/// Durability contract: `append` and `truncate` are NOT durable until `sync(name)` returns;
/// `write_atomic` and `remove` are durable when they return. A crash may keep any prefix of the
/// operations issued on a file since its last `sync`, and the last kept append may be cut short.
pub trait Disk: Send + Sync + Debug + 'static {
    /// Names of the files that exist now (durable or not), sorted.
    fn list(&self) -> Result<Vec<String>, DiskError>;
    /// The whole content of `name`.
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError>;
    /// `len` bytes of `name` starting at `offset`; fewer only if the file ends first.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError>;
    /// The current length of `name` in bytes.
    fn len(&self, name: &str) -> Result<u64, DiskError>;
    /// Append `bytes` at the end of `name`, creating it if absent. Not durable until `sync`.
    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Cut `name` down to `len` bytes. Not durable until `sync`.
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError>;
    /// Make every earlier `append` and `truncate` of `name` durable.
    fn sync(&self, name: &str) -> Result<(), DiskError>;
    /// Replace `name` with `bytes`, atomically and durably.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Remove `name` durably. Removing a file that does not exist is not an error.
    fn remove(&self, name: &str) -> Result<(), DiskError>;
}

/// What went wrong talking to the disk. Every variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{name}: not found")]
    NotFound { name: String },
    #[error("{name}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A record failed its checksum or framing somewhere other than a torn tail: the data there
    /// cannot be trusted and must not be skipped silently.
    #[error("{name}: corrupt record at byte offset {offset}: {reason}")]
    Corrupt { name: String, offset: u64, reason: String },
}
