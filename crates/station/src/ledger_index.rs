//! What the ledger's sled database holds for each key: where the record's latest line is in the
//! audit log, not the record itself.
//!
//! The audit log already holds every record in full, fsynced before sled is written
//! (`docs/ARCHITECTURE.md`, "Durability"). sled 0.34 keeps every value it holds in memory
//! whatever its cache size (its page cache evicts by page, in shards, and a ledger's few
//! hundred leaf pages never fill a shard), so a copy of each record there made a station's
//! memory grow with its history: about 2 MB per 1,000 iPads (issue 9). A location is 13 bytes.
//! Reading a record is one positioned read of its line, which the kernel's page cache
//! usually holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::ledger::{AuditLine, MAX_AUDIT_LINE, key_of, parse_audit_line};

/// Version of what the index holds, kept in the clean-close note: a note without it (or with
/// another) was written by a ledger whose database held whole records, and the open replays
/// the log, which rewrites every entry as a location.
pub const INDEX_FORMAT: u32 = 1;

/// Tag of an encoded location. A whole record (the format before) starts with `{`.
const TAG: u8 = b'L';

/// Where one audit line is: its first byte and its length, the `\n` included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineAt {
    pub offset: u64,
    pub len: u32,
}

impl LineAt {
    /// `L`, the offset (8 bytes, little-endian), the length (4 bytes, little-endian).
    pub fn encode(self) -> [u8; 13] {
        let mut out = [0u8; 13];
        out[0] = TAG;
        out[1..9].copy_from_slice(&self.offset.to_le_bytes());
        out[9..13].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// `None` for anything [`LineAt::encode`] did not make.
    pub fn decode(bytes: &[u8]) -> Option<LineAt> {
        let bytes: &[u8; 13] = bytes.try_into().ok()?;
        if bytes[0] != TAG {
            return None;
        }
        let offset = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let len = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
        (len > 0 && len as usize <= MAX_AUDIT_LINE + 1).then_some(LineAt { offset, len })
    }
}

/// Why an index entry did not lead to its record.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the index entry is not a location")]
    NotALocation,
    #[error("reading {len} bytes at byte {offset} of the audit log: {source}")]
    Read {
        offset: u64,
        len: u32,
        source: io::Error,
    },
    #[error("the line at byte {offset} of the audit log {why}")]
    Line { offset: u64, why: String },
}

/// The record of `key` from the audit line `entry` points at, checked to be `key`'s.
pub fn read_record(
    log: &File,
    key: &str,
    entry: &[u8],
) -> Result<crate::record::DeviceRecord, IndexError> {
    let at = LineAt::decode(entry).ok_or(IndexError::NotALocation)?;
    let mut buf = vec![0u8; at.len as usize];
    log.read_exact_at(&mut buf, at.offset)
        .map_err(|source| IndexError::Read {
            offset: at.offset,
            len: at.len,
            source,
        })?;
    let line_err = |why: String| IndexError::Line {
        offset: at.offset,
        why,
    };
    if buf.last() != Some(&b'\n') {
        return Err(line_err("does not end where the index says".into()));
    }
    let line: AuditLine =
        parse_audit_line(buf.trim_ascii()).map_err(|e| line_err(format!("is unreadable: {e}")))?;
    if line.serial != key || key_of(&line.record) != key {
        return Err(line_err(format!("is not {key}'s record")));
    }
    Ok(line.record)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::record::DeviceRecord;

    #[test]
    fn a_location_reads_back_as_written_and_nothing_else_passes_for_one() {
        let at = LineAt {
            offset: 0x0102_0304_0506_0708,
            len: 1_234,
        };
        assert_eq!(LineAt::decode(&at.encode()), Some(at));
        let record = br#"{"serial":"DMPX","udid":"u"}"#;
        let mut wrong_tag = at.encode();
        wrong_tag[0] = b'{';
        let mut zero_len = at.encode();
        zero_len[9..].copy_from_slice(&0u32.to_le_bytes());
        let mut too_long = at.encode();
        too_long[9..].copy_from_slice(&u32::MAX.to_le_bytes());
        for (what, bytes) in [
            ("a whole record (the format before)", &record[..]),
            ("empty", &[][..]),
            ("one byte short", &at.encode()[..12]),
            ("another tag", &wrong_tag[..]),
            ("an empty line", &zero_len[..]),
            ("a line longer than any audit line read", &too_long[..]),
        ] {
            assert_eq!(LineAt::decode(bytes), None, "{what}");
        }
    }

    fn line_of(record: &DeviceRecord) -> Vec<u8> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "at_ms": 1, "serial": key_of(record), "event": "update", "record": record,
        }))
        .expect("json");
        line.push(b'\n');
        line
    }

    #[test]
    fn a_record_is_read_from_the_line_its_entry_points_at_and_checked() {
        let a = DeviceRecord::new_at("DMPA00000001", "00008030-A", 1);
        let b = DeviceRecord::new_at("DMPB00000002", "00008030-B", 2);
        let (la, lb) = (line_of(&a), line_of(&b));
        let mut file = tempfile::tempfile().expect("file");
        file.write_all(&la)
            .and_then(|()| file.write_all(&lb))
            .expect("write");
        let at_a = LineAt {
            offset: 0,
            len: la.len() as u32,
        };
        let at_b = LineAt {
            offset: la.len() as u64,
            len: lb.len() as u32,
        };
        assert_eq!(
            read_record(&file, "DMPA00000001", &at_a.encode()).expect("a"),
            a
        );
        assert_eq!(
            read_record(&file, "DMPB00000002", &at_b.encode()).expect("b"),
            b
        );

        let cases: [(&str, &str, Vec<u8>); 5] = [
            ("another key's line", "DMPA00000001", at_b.encode().to_vec()),
            (
                "a line cut short",
                "DMPA00000001",
                LineAt {
                    len: at_a.len - 5,
                    ..at_a
                }
                .encode()
                .to_vec(),
            ),
            (
                "a location in the middle of a line",
                "DMPB00000002",
                LineAt { offset: 3, ..at_b }.encode().to_vec(),
            ),
            (
                "past the end of the log",
                "DMPB00000002",
                LineAt {
                    offset: 1 << 20,
                    ..at_b
                }
                .encode()
                .to_vec(),
            ),
            (
                "a whole record",
                "DMPA00000001",
                serde_json::to_vec(&a).expect("json"),
            ),
        ];
        for (what, key, entry) in cases {
            assert!(read_record(&file, key, &entry).is_err(), "{what}");
        }
    }
}
