//! Services and checks registered through the HTTP API survive a restart, as in Consul: the
//! request bodies are kept in one file in the data directory and read back at start, through the
//! same parser as the API (so a body that no longer validates is reported and skipped, never
//! half-loaded). Maintenance modes are kept with them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::{Disk, DiskError};

/// The file in the data directory.
pub const REGISTRATIONS_FILE: &str = "agent-registrations.json";
/// The largest file read back: 10,000 services and 10,000 checks of a few KiB each.
pub const REGISTRATIONS_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// What the agent's API registered, as it was sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registrations {
    /// Service ID to the body of `PUT /v1/agent/service/register`.
    pub services: BTreeMap<String, Value>,
    /// Check ID to the body of `PUT /v1/agent/check/register`.
    pub checks: BTreeMap<String, Value>,
    /// The reason given for node maintenance, when it is on.
    pub node_maintenance: Option<String>,
    /// Service ID to the reason given for its maintenance.
    pub service_maintenance: BTreeMap<String, String>,
}

/// Why the file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{REGISTRATIONS_FILE}: {0}")]
    Disk(#[from] DiskError),
    #[error("{REGISTRATIONS_FILE}: {len} bytes is over the {REGISTRATIONS_BYTES_MAX}-byte limit")]
    TooLarge { len: u64 },
    #[error("{REGISTRATIONS_FILE}: not valid JSON at line {line}: {message}")]
    Corrupt { line: usize, message: String },
}

impl Registrations {
    /// The registrations kept on `disk`, or none if there is no file.
    pub fn load(disk: &dyn Disk) -> Result<Self, PersistError> {
        let len = match disk.len(REGISTRATIONS_FILE) {
            Ok(len) => len,
            Err(DiskError::NotFound { .. }) => return Ok(Registrations::default()),
            Err(e) => return Err(e.into()),
        };
        if len > REGISTRATIONS_BYTES_MAX {
            return Err(PersistError::TooLarge { len });
        }
        let bytes = disk.read(REGISTRATIONS_FILE)?;
        serde_json::from_slice(&bytes).map_err(|e| PersistError::Corrupt { line: e.line(), message: e.to_string() })
    }

    /// Replace the file (atomically: a crash leaves the old or the new one).
    pub fn save(&self, disk: &dyn Disk) -> Result<(), DiskError> {
        let bytes = serde_json::to_vec_pretty(self).expect("JSON values always serialize");
        disk.write_atomic(REGISTRATIONS_FILE, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;

    #[test]
    fn registrations_round_trip_and_a_missing_file_is_empty() {
        let disk = MemDisk::new();
        assert_eq!(Registrations::load(&disk).unwrap(), Registrations::default());
        let mut kept = Registrations::default();
        kept.services.insert("web".into(), serde_json::json!({"Name": "web", "Port": 80}));
        kept.node_maintenance = Some("patching".into());
        kept.save(&disk).unwrap();
        assert_eq!(Registrations::load(&disk).unwrap(), kept);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let disk = MemDisk::new();
        disk.write_atomic(REGISTRATIONS_FILE, b"{\"services\": [").unwrap();
        let error = Registrations::load(&disk).unwrap_err().to_string();
        assert!(error.starts_with(REGISTRATIONS_FILE), "{error}");
    }
}
