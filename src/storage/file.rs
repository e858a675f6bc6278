//! [`FileDisk`]: a real directory.
//!
//! Durability follows the [`Disk`] contract with the usual POSIX steps: `sync` is `fdatasync`
//! (plus a directory fsync the first time a newly created file is synced, or its name could be
//! lost), `write_atomic` writes `name.tmp`, fsyncs it, renames it over `name` and fsyncs the
//! directory, and `remove` fsyncs the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Disk, DiskError};

/// Suffix of a half-written `write_atomic` file; such leftovers are removed on open.
const TMP_SUFFIX: &str = ".tmp";

/// At most this many append handles stay open; the log appends to one segment at a time, so
/// more only accumulate when many files are touched.
const OPEN_HANDLES_MAX: usize = 64;

/// A directory on a real file system.
#[derive(Debug)]
pub struct FileDisk {
    dir: PathBuf,
    handles: Mutex<Handles>,
}

#[derive(Debug, Default)]
struct Handles {
    /// Append handles by file name.
    open: BTreeMap<String, File>,
    /// Files this process created whose directory entry is not yet known to be durable.
    created_unsynced: BTreeSet<String>,
}

impl FileDisk {
    /// Open (creating if needed) the directory `dir`, and clear leftovers of interrupted atomic
    /// writes.
    pub fn open(dir: &Path) -> Result<FileDisk, DiskError> {
        let io_err = |source| DiskError::Io { name: dir.display().to_string(), source };
        fs::create_dir_all(dir).map_err(io_err)?;
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
                fs::remove_file(&path).map_err(io_err)?;
            }
        }
        let disk = FileDisk { dir: dir.to_owned(), handles: Mutex::new(Handles::default()) };
        disk.sync_dir()?;
        Ok(disk)
    }

    /// The directory this disk lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, DiskError> {
        let valid = !name.is_empty() && !name.contains('/') && !name.contains("..") && name != ".";
        if !valid {
            let source = io::Error::new(ErrorKind::InvalidInput, format!("invalid file name {name:?}"));
            return Err(DiskError::Io { name: name.to_owned(), source });
        }
        Ok(self.dir.join(name))
    }

    fn handles(&self) -> MutexGuard<'_, Handles> {
        // Handles are only inserted or removed whole, so a poisoned map is still consistent.
        self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        let io_err = |source| DiskError::Io { name: self.dir.display().to_string(), source };
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err)
    }

    /// The append handle of `name`, opening (and creating) the file if needed.
    fn handle<'h>(&self, handles: &'h mut Handles, name: &str) -> Result<&'h mut File, DiskError> {
        if !handles.open.contains_key(name) {
            let path = self.path(name)?;
            let io_err = |source| DiskError::Io { name: name.to_owned(), source };
            let existed = path.exists();
            let file = OpenOptions::new().append(true).create(true).open(&path).map_err(io_err)?;
            if !existed {
                handles.created_unsynced.insert(name.to_owned());
            }
            if handles.open.len() >= OPEN_HANDLES_MAX {
                evict_one(handles)?;
            }
            handles.open.insert(name.to_owned(), file);
        }
        Ok(handles.open.get_mut(name).expect("the handle was inserted above"))
    }
}

/// Close one append handle, syncing it first: a write-back error reported only to a closed
/// descriptor would otherwise be lost.
fn evict_one(handles: &mut Handles) -> Result<(), DiskError> {
    if let Some((name, file)) = handles.open.pop_first() {
        file.sync_data().map_err(|source| DiskError::Io { name, source })?;
    }
    Ok(())
}

fn map_io(name: &str, source: io::Error) -> DiskError {
    if source.kind() == ErrorKind::NotFound {
        DiskError::NotFound { name: name.to_owned() }
    } else {
        DiskError::Io { name: name.to_owned(), source }
    }
}

impl Disk for FileDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        let io_err = |source| DiskError::Io { name: self.dir.display().to_string(), source };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            // Names we did not write (not UTF-8) are not ours to list.
            if let Ok(name) = entry.file_name().into_string() {
                if !name.ends_with(TMP_SUFFIX) && entry.file_type().map_err(io_err)?.is_file() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        fs::read(self.path(name)?).map_err(|e| map_io(name, e))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let mut file = File::open(self.path(name)?).map_err(|e| map_io(name, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| map_io(name, e))?;
        let mut out = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut out).map_err(|e| map_io(name, e))?;
        Ok(out)
    }

    fn len(&self, name: &str) -> Result<u64, DiskError> {
        fs::metadata(self.path(name)?).map(|m| m.len()).map_err(|e| map_io(name, e))
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut handles = self.handles();
        let file = self.handle(&mut handles, name)?;
        file.write_all(bytes).map_err(|e| map_io(name, e))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        let path = self.path(name)?;
        if !path.exists() {
            return Err(DiskError::NotFound { name: name.to_owned() });
        }
        let mut handles = self.handles();
        // The handle is in append mode, so later appends land at the new end.
        self.handle(&mut handles, name)?.set_len(len).map_err(|e| map_io(name, e))
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let mut handles = self.handles();
        match handles.open.get(name) {
            Some(file) => file.sync_data().map_err(|e| map_io(name, e))?,
            None => File::open(&path).and_then(|f| f.sync_data()).map_err(|e| map_io(name, e))?,
        }
        if handles.created_unsynced.remove(name) {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let tmp = self.path(&format!("{name}{TMP_SUFFIX}"))?;
        let io_err = |source| DiskError::Io { name: name.to_owned(), source };
        let mut handles = self.handles();
        // A cached handle would keep appending to the replaced file.
        handles.open.remove(name);
        let mut file = File::create(&tmp).map_err(io_err)?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)?;
        self.sync_dir()?;
        handles.created_unsynced.remove(name);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        let mut handles = self.handles();
        handles.open.remove(name);
        handles.created_unsynced.remove(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(map_io(name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = format!("cairn-filedisk-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(unique);
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Appends, partial reads, truncation and sync behave as the `Disk` contract says.
    #[test]
    fn append_read_truncate_sync() {
        let tmp = TempDir::new();
        let disk = FileDisk::open(&tmp.0).unwrap();
        disk.append("a", b"hello").unwrap();
        disk.append("a", b" world").unwrap();
        disk.sync("a").unwrap();
        assert_eq!(disk.read("a").unwrap(), b"hello world");
        assert_eq!(disk.read_at("a", 6, 100).unwrap(), b"world");
        assert_eq!(disk.len("a").unwrap(), 11);
        disk.truncate("a", 5).unwrap();
        disk.append("a", b"!").unwrap();
        disk.sync("a").unwrap();
        assert_eq!(disk.read("a").unwrap(), b"hello!");
    }

    /// An atomic write replaces the file even when an append handle to the old one is cached.
    #[test]
    fn write_atomic_replaces_and_drops_stale_handle() {
        let tmp = TempDir::new();
        let disk = FileDisk::open(&tmp.0).unwrap();
        disk.append("f", b"old").unwrap();
        disk.write_atomic("f", b"new").unwrap();
        disk.append("f", b"er").unwrap();
        assert_eq!(disk.read("f").unwrap(), b"newer");
    }

    /// Listing is sorted, skips temp leftovers, and reopening clears them; removal is idempotent.
    #[test]
    fn list_remove_and_tmp_leftovers() {
        let tmp = TempDir::new();
        let disk = FileDisk::open(&tmp.0).unwrap();
        disk.write_atomic("b", b"1").unwrap();
        disk.append("a", b"2").unwrap();
        fs::write(tmp.0.join("c.tmp"), b"half").unwrap();
        assert_eq!(disk.list().unwrap(), vec!["a", "b"]);
        drop(disk);
        let disk = FileDisk::open(&tmp.0).unwrap();
        assert!(!tmp.0.join("c.tmp").exists());
        disk.remove("a").unwrap();
        disk.remove("a").unwrap();
        assert_eq!(disk.list().unwrap(), vec!["b"]);
        assert!(matches!(disk.read("a"), Err(DiskError::NotFound { .. })));
        assert!(matches!(disk.truncate("a", 0), Err(DiskError::NotFound { .. })));
    }

    /// Names that could escape the directory are refused as invalid input.
    #[test]
    fn rejects_bad_names() {
        let tmp = TempDir::new();
        let disk = FileDisk::open(&tmp.0).unwrap();
        for name in ["", "../x", "a/b", "..", "."] {
            let err = disk.append(name, b"x").unwrap_err();
            assert!(matches!(&err, DiskError::Io { source, .. } if source.kind() == ErrorKind::InvalidInput), "{err}");
        }
    }

    /// More files than the handle cache holds can be appended to and synced.
    #[test]
    fn handle_cache_is_bounded() {
        let tmp = TempDir::new();
        let disk = FileDisk::open(&tmp.0).unwrap();
        for i in 0..OPEN_HANDLES_MAX + 5 {
            disk.append(&format!("f{i:03}"), b"x").unwrap();
        }
        assert_eq!(disk.handles().open.len(), OPEN_HANDLES_MAX);
        for i in 0..OPEN_HANDLES_MAX + 5 {
            let name = format!("f{i:03}");
            disk.append(&name, b"y").unwrap();
            disk.sync(&name).unwrap();
            assert_eq!(disk.read(&name).unwrap(), b"xy");
        }
    }
}
