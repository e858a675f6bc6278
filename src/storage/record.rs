//! Checksummed record framing, shared by the Raft log, its small state files and snapshots.
//!
//! A record is `[u32 LE payload length][u32 LE crc32c of payload][payload]`. A file is a sequence of
//! records. [`Scanner`] walks one file's bytes and tells apart the three ways a file can end:
//! cleanly; with a torn tail (a write the crash cut short, which was never acknowledged and may be
//! truncated away); or with corruption (bad data that a writer did finish, which must never be
//! skipped silently).
//!
//! One ambiguity is inherent in the format: a corrupted length field that points past the end of
//! the file looks exactly like a torn write. The scanner reports it as torn; callers that know a
//! file was written atomically (snapshots, state files) treat any torn end as corruption.

use super::DiskError;

/// Bytes of framing before each payload: length, then checksum.
pub const HEADER_BYTES: usize = 8;

/// The largest payload a record may carry. A declared length above it is corruption, not a torn
/// write: no writer produces it, so the scanner refuses to read that far.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Append one record carrying `payload` to `out`.
///
/// Panics if `payload` is empty or longer than [`RECORD_PAYLOAD_BYTES_MAX`]: callers control
/// what they frame, so that is a programming error.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(!payload.is_empty(), "a record payload must not be empty (length 0 marks corruption)");
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "record payload of {} bytes is too large", payload.len());
    // The assertion above bounds the length well below u32::MAX.
    let len = payload.len() as u32;
    out.reserve(HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record carrying `payload`, framed.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, payload);
    out
}

/// Why a file ends in a torn record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornReason {
    /// Fewer than [`HEADER_BYTES`] bytes remain.
    ShortHeader,
    /// The header declares more payload bytes than the file holds.
    ShortPayload { declared_bytes: u32 },
    /// Everything from here on is zero bytes: the file grew but the data never reached it.
    ZeroFill,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last record ends exactly at the end of the buffer.
    Clean,
    /// The bytes from `offset` on are an unfinished write; truncating the file to `offset` leaves
    /// only complete records.
    Torn { offset: u64, reason: TornReason },
}

/// One step of a scan: a verified record, or the end verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Record { offset: u64, payload: &'a [u8] },
    End(ScanEnd),
}

/// Walks the records of one file's content, verifying each checksum.
#[derive(Debug)]
pub struct Scanner<'a> {
    name: &'a str,
    buf: &'a [u8],
    /// Where `buf` starts in the file, so reported offsets are file offsets.
    base_offset: u64,
    offset: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner over `buf`, the content of the file called `name` (used in errors).
    pub fn new(name: &'a str, buf: &'a [u8]) -> Self {
        Self::starting_at(name, buf, 0)
    }

    /// A scanner over `buf`, a part of file `name` read from `base_offset` on: offsets in records
    /// and errors are positions in the file.
    pub fn starting_at(name: &'a str, buf: &'a [u8], base_offset: u64) -> Self {
        Scanner { name, buf, base_offset, offset: 0 }
    }

    /// The next record, or the verdict on how the buffer ends. After `End`, keeps returning it.
    pub fn step(&mut self) -> Result<Step<'a>, DiskError> {
        let at = self.offset;
        let rest = &self.buf[at..];
        if rest.is_empty() {
            return Ok(Step::End(ScanEnd::Clean));
        }
        let file_offset = self.base_offset + at as u64;
        let torn = |reason| Ok(Step::End(ScanEnd::Torn { offset: file_offset, reason }));
        if rest.len() < HEADER_BYTES {
            return torn(TornReason::ShortHeader);
        }
        let declared_bytes = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let len = declared_bytes as usize;
        if len == 0 {
            // No writer frames an empty payload, so a zero length is either a zero-filled tail or
            // damage.
            if rest.iter().all(|b| *b == 0) {
                return torn(TornReason::ZeroFill);
            }
            return Err(self.corrupt(at, "record length is 0".into()));
        }
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return Err(self.corrupt(at, format!("record length {len} exceeds {RECORD_PAYLOAD_BYTES_MAX}")));
        }
        if rest.len() - HEADER_BYTES < len {
            return torn(TornReason::ShortPayload { declared_bytes });
        }
        let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
        let actual = crc32c::crc32c(payload);
        if actual != crc {
            return Err(self.corrupt(at, format!("checksum {actual:#010x} does not match stored {crc:#010x}")));
        }
        self.offset = at + HEADER_BYTES + len;
        Ok(Step::Record { offset: file_offset, payload })
    }

    fn corrupt(&self, offset: usize, reason: String) -> DiskError {
        DiskError::Corrupt { name: self.name.to_owned(), offset: self.base_offset + offset as u64, reason }
    }
}

/// Verified records, each as (byte offset in the file, payload).
pub type Records<'a> = Vec<(u64, &'a [u8])>;

/// Every record of `buf` with its byte offset, and how the buffer ends.
pub fn scan_all<'a>(name: &'a str, buf: &'a [u8]) -> Result<(Records<'a>, ScanEnd), DiskError> {
    let mut scanner = Scanner::new(name, buf);
    let mut records = Vec::new();
    loop {
        match scanner.step()? {
            Step::Record { offset, payload } => records.push((offset, payload)),
            Step::End(end) => return Ok((records, end)),
        }
    }
}

/// The records of a file that was written whole (atomically): any torn end there is damage, since
/// no crash can leave such a file half-written.
pub fn scan_complete<'a>(name: &'a str, buf: &'a [u8]) -> Result<Records<'a>, DiskError> {
    match scan_all(name, buf)? {
        (records, ScanEnd::Clean) => Ok(records),
        (_, ScanEnd::Torn { offset, reason }) => Err(DiskError::Corrupt {
            name: name.to_owned(),
            offset,
            reason: format!("file written atomically ends in a torn record ({reason:?})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for p in payloads {
            offsets.push(out.len() as u64);
            encode_into(&mut out, p);
        }
        (out, offsets)
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 0..8)
    }

    proptest! {
        /// Encoding records and scanning them back yields the same payloads at the same offsets.
        #[test]
        fn round_trip(ps in payloads()) {
            let (buf, offsets) = stream(&ps);
            let (records, end) = scan_all("f", &buf).unwrap();
            prop_assert_eq!(end, ScanEnd::Clean);
            let got: Vec<(u64, Vec<u8>)> = records.iter().map(|(o, p)| (*o, p.to_vec())).collect();
            let want: Vec<(u64, Vec<u8>)> = offsets.into_iter().zip(ps).collect();
            prop_assert_eq!(got, want);
        }

        /// Any prefix of a valid stream is whole records then a torn tail or a clean end, never corruption.
        #[test]
        fn prefixes_are_torn_never_corrupt(ps in payloads(), cut in any::<prop::sample::Index>()) {
            let (buf, offsets) = stream(&ps);
            let cut = cut.index(buf.len() + 1);
            let (records, end) = scan_all("f", &buf[..cut]).unwrap();
            let whole = offsets.iter().zip(&ps).filter(|(o, p)| **o as usize + HEADER_BYTES + p.len() <= cut).count();
            prop_assert_eq!(records.len(), whole);
            let boundary = offsets.get(whole).map_or(buf.len(), |o| *o as usize);
            if cut == boundary {
                prop_assert_eq!(end, ScanEnd::Clean);
            } else {
                let torn_at = matches!(end, ScanEnd::Torn { offset, .. } if offset as usize == boundary);
                prop_assert!(torn_at, "cut {} ends {:?}", cut, end);
            }
        }

        /// A flipped checksum or payload byte in a record followed by another is reported as corrupt there.
        #[test]
        fn flipped_byte_is_corrupt(ps in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 2..8),
                                   which in any::<prop::sample::Index>(),
                                   at in any::<prop::sample::Index>(),
                                   mask in 1u8..) {
            let (mut buf, offsets) = stream(&ps);
            let victim = which.index(ps.len() - 1);
            let start = offsets[victim] as usize + 4;
            let end = offsets[victim + 1] as usize;
            buf[start + at.index(end - start)] ^= mask;
            let err = scan_all("f", &buf).unwrap_err();
            let reported = matches!(err, DiskError::Corrupt { offset, .. } if offset == offsets[victim]);
            prop_assert!(reported, "{}", err);
        }

        /// A flipped length byte is never accepted: the scan is corrupt at that record or torn there.
        #[test]
        fn flipped_length_is_never_accepted(ps in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 2..8),
                                            which in any::<prop::sample::Index>(),
                                            at in 0usize..4,
                                            mask in 1u8..) {
            let (mut buf, offsets) = stream(&ps);
            let victim = which.index(ps.len() - 1);
            buf[offsets[victim] as usize + at] ^= mask;
            match scan_all("f", &buf) {
                Err(DiskError::Corrupt { offset, .. }) => prop_assert_eq!(offset, offsets[victim]),
                Ok((records, ScanEnd::Torn { offset, .. })) => {
                    prop_assert_eq!(offset, offsets[victim]);
                    prop_assert_eq!(records.len(), victim);
                }
                other => prop_assert!(false, "accepted a damaged length: {:?}", other),
            }
        }
    }

    /// Zero bytes after the last record are a torn tail (a file extended but never written).
    #[test]
    fn zero_fill_is_torn() {
        let mut buf = encode(b"abc");
        buf.extend_from_slice(&[0; 20]);
        let (records, end) = scan_all("f", &buf).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(end, ScanEnd::Torn { offset: 11, reason: TornReason::ZeroFill });
    }

    /// A zero length followed by non-zero bytes is corruption, not a tail to drop.
    #[test]
    fn zero_length_before_data_is_corrupt() {
        let mut buf = vec![0; 8];
        buf.extend_from_slice(&encode(b"abc"));
        let err = scan_all("seg", &buf).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { ref name, offset: 0, .. } if name == "seg"), "{err}");
    }

    /// A declared length above the maximum is corruption even at the end of the file.
    #[test]
    fn oversized_length_is_corrupt() {
        let mut buf = encode(b"abc");
        buf.extend_from_slice(&(RECORD_PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        buf.extend_from_slice(&[1, 2, 3, 4]);
        let err = scan_all("f", &buf).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { offset: 11, .. }), "{err}");
    }

    /// A checksum failure in the last record is corruption: its declared end is inside the file.
    #[test]
    fn bad_checksum_in_last_record_is_corrupt() {
        let mut buf = encode(b"abc");
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(scan_all("f", &buf), Err(DiskError::Corrupt { offset: 0, .. })));
    }

    /// A scanner over part of a file reports file offsets, in records and in errors.
    #[test]
    fn starting_at_reports_file_offsets() {
        let mut buf = encode(b"first");
        let second = buf.len();
        buf.extend_from_slice(&encode(b"second"));
        let mut scanner = Scanner::starting_at("f", &buf[second..], second as u64);
        assert_eq!(scanner.step().unwrap(), Step::Record { offset: second as u64, payload: b"second" });
        buf[second + 9] ^= 1;
        let err = Scanner::starting_at("f", &buf[second..], second as u64).step().unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { offset, .. } if offset == second as u64), "{err}");
    }

    /// A file that must be whole treats a torn end as corruption.
    #[test]
    fn scan_complete_rejects_torn_end() {
        let buf = encode(b"abcdef");
        assert_eq!(scan_complete("f", &buf).unwrap().len(), 1);
        let err = scan_complete("f", &buf[..buf.len() - 1]).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { offset: 0, .. }), "{err}");
    }
}
