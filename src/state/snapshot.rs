//! Snapshot encoding of [`State`], and its digest.
//!
//! Layout: one version byte ([`SNAPSHOT_VERSION`]), then the state in bincode 2's standard
//! configuration (varint integers, little endian: the same bytes on every platform). Maps are
//! ordered, so equal states encode to equal bytes, which is what makes [`State::digest`] a fair
//! comparison of replicas.
//!
//! Decoding treats the bytes as untrusted: a snapshot may come from a torn disk write or from
//! another server. Every failure is a [`SnapshotDecodeError`], and a decoded state must also pass
//! [`State::check_consistency`] before it is handed out.

use std::io::Write;

use bincode::config::{self, Config};
use thiserror::Error;

use super::{Inconsistency, State};

/// The snapshot layout written by this build. Decoding any other version is an error, so a later
/// layout change must bump it and keep a decoder for the old one.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Largest snapshot [`State::from_snapshot`] accepts (4 GiB). Bounds what decoding may allocate.
pub const SNAPSHOT_BYTES_MAX: usize = u32::MAX as usize;

/// Why snapshot bytes did not decode to a state. Nothing is produced in any case.
#[derive(Debug, Error)]
pub enum SnapshotDecodeError {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot version {found} is not {SNAPSHOT_VERSION}")]
    UnknownVersion { found: u8 },
    #[error("snapshot of {len} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}")]
    TooLarge { len: usize },
    #[error("snapshot body does not decode")]
    Malformed(#[source] bincode::error::DecodeError),
    #[error("snapshot has {extra} bytes after the state")]
    TrailingBytes { extra: usize },
    #[error("snapshot decodes to an impossible state")]
    Inconsistent(#[source] Inconsistency),
}

impl State {
    /// The snapshot bytes of this state (see the module docs for the layout).
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_VERSION];
        self.encode_into(&mut bytes);
        bytes
    }

    /// Decode and verify snapshot bytes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotDecodeError> {
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotDecodeError::TooLarge { len: bytes.len() });
        }
        let (&version, body) = bytes.split_first().ok_or(SnapshotDecodeError::Empty)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotDecodeError::UnknownVersion { found: version });
        }
        let (state, read) = decode_bounded(body)?;
        if read != body.len() {
            return Err(SnapshotDecodeError::TrailingBytes { extra: body.len() - read });
        }
        state.check_consistency().map_err(SnapshotDecodeError::Inconsistent)?;
        Ok(state)
    }

    /// FNV-1a (64-bit) of the snapshot bytes: equal states give equal digests on every platform
    /// and in every run. Streams the encoding, so it allocates nothing per call.
    pub fn digest(&self) -> u64 {
        let mut hasher = Fnv1a::default();
        hasher.write_byte(SNAPSHOT_VERSION);
        self.encode_into(&mut hasher);
        hasher.0
    }

    fn encode_into(&self, out: &mut impl Write) {
        // Writers here are in-memory and our types have no serializer that can refuse, so a
        // failure is a bug (e.g. a map with non-serializable keys added later).
        bincode::serde::encode_into_std_write(self, out, config::standard()).expect("state always encodes");
    }
}

/// Decode `body` with an allocation limit that fits it. bincode allocates a string's or byte
/// buffer's claimed length before reading it, so a corrupt length could ask for terabytes; its limit
/// caps the total it will claim. It charges every decoded integer its in-memory width (eight bytes
/// for a one-byte varint) and container lengths likewise, so an honest body claims up to about ten
/// times its encoded size. The limit is a type parameter, hence one step per size class: 64 times
/// the class's largest body.
fn decode_bounded(body: &[u8]) -> Result<(State, usize), SnapshotDecodeError> {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;
    fn decode<C: Config>(body: &[u8], config: C) -> Result<(State, usize), SnapshotDecodeError> {
        bincode::serde::decode_from_slice(body, config).map_err(SnapshotDecodeError::Malformed)
    }
    let standard = config::standard();
    match body.len() {
        len if len <= 64 * KIB => decode(body, standard.with_limit::<{ 64 * 64 * KIB }>()),
        len if len <= MIB => decode(body, standard.with_limit::<{ 64 * MIB }>()),
        len if len <= 16 * MIB => decode(body, standard.with_limit::<{ 64 * 16 * MIB }>()),
        len if len <= 256 * MIB => decode(body, standard.with_limit::<{ 16 * GIB }>()),
        _ => decode(body, standard.with_limit::<{ 64 * 4 * GIB }>()),
    }
}

/// 64-bit FNV-1a as a byte sink.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write_byte(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

impl Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        bytes.iter().for_each(|&byte| self.write_byte(byte));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bincode::error::DecodeError;
    use bytes::Bytes;

    use super::*;
    use crate::state::{Command, KvCommand};

    /// Many small entries decode to far more memory than they encode to (a one-byte value is a
    /// `Bytes` plus indexes in memory); a real state of that shape must still load. Found when a
    /// server that had snapshotted 1,000 short keys refused to start.
    #[test]
    fn many_small_entries_round_trip() {
        for count in [1_000u64, 20_000] {
            let mut state = State::default();
            for i in 1..=count {
                let set = KvCommand::Set { key: format!("k{i}"), value: Bytes::from_static(b"v"), flags: 0 };
                state.apply(i, &Command::Kv(set));
            }
            let bytes = state.to_snapshot();
            assert_eq!(State::from_snapshot(&bytes).unwrap(), state, "{count} entries, {} bytes", bytes.len());
        }
    }

    fn sample() -> State {
        let mut state = State::default();
        let set = KvCommand::Set { key: "a".into(), value: Bytes::from_static(b"1"), flags: 7 };
        state.apply(3, &Command::Kv(set));
        state.advance(4);
        state
    }

    /// A snapshot starts with its version byte and decodes back to the same state.
    #[test]
    fn snapshot_round_trips_with_version_byte() {
        let state = sample();
        let bytes = state.to_snapshot();
        assert_eq!(bytes[0], SNAPSHOT_VERSION);
        assert_eq!(State::from_snapshot(&bytes).unwrap(), state);
    }

    /// The digest is FNV-1a of exactly the snapshot bytes.
    #[test]
    fn digest_is_fnv1a_of_snapshot() {
        let state = sample();
        let mut hasher = Fnv1a::default();
        hasher.write_all(&state.to_snapshot()).unwrap();
        assert_eq!(state.digest(), hasher.0);
        assert_ne!(state.digest(), State::default().digest());
    }

    /// The FNV-1a implementation matches the published test vector for "a".
    #[test]
    fn fnv1a_matches_reference_vector() {
        let mut hasher = Fnv1a::default();
        hasher.write_all(b"a").unwrap();
        assert_eq!(hasher.0, 0xaf63_dc4c_8601_ec8c);
    }

    /// Empty input, another version, and extra bytes are each their own error.
    #[test]
    fn framing_errors_are_typed() {
        assert!(matches!(State::from_snapshot(&[]), Err(SnapshotDecodeError::Empty)));
        assert!(matches!(State::from_snapshot(&[9, 0]), Err(SnapshotDecodeError::UnknownVersion { found: 9 })));
        let mut bytes = sample().to_snapshot();
        bytes.push(0);
        assert!(matches!(State::from_snapshot(&bytes), Err(SnapshotDecodeError::TrailingBytes { extra: 1 })));
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(State::from_snapshot(&bytes), Err(SnapshotDecodeError::Malformed(_))));
    }

    /// A string length claiming far more than the input fails cleanly instead of allocating it.
    #[test]
    fn huge_claimed_length_is_refused() {
        // last_index = 0, then the first KV key's length as a varint u64 of about 2^60.
        let bytes = [SNAPSHOT_VERSION, 0, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let refused = State::from_snapshot(&bytes);
        assert!(matches!(refused, Err(SnapshotDecodeError::Malformed(DecodeError::LimitExceeded))), "{refused:?}");
    }

    /// Well-formed bytes describing an impossible state (an entry newer than the log) are refused.
    #[test]
    fn inconsistent_state_is_refused() {
        let mut state = sample();
        state.last_index = 1;
        let bytes = state.to_snapshot();
        assert!(matches!(State::from_snapshot(&bytes), Err(SnapshotDecodeError::Inconsistent(_))));
    }
}
