//! What the ledger's sled database holds: for each key, where the record's latest line is in
//! the audit log (not the record itself), in 256 buckets.
//!
//! The audit log already holds every record in full, fsynced before sled is written
//! (`docs/ARCHITECTURE.md`, "Durability"). sled 0.34 keeps every value and every tree page in
//! memory whatever its cache size (its page cache evicts by page, in shards, and a ledger's
//! pages never fill a shard), and reads an entry for every page at open. Whole records as
//! values made a station's heap grow by ~3 MB per 1,000 iPads; one key per iPad still cost
//! ~0.5 KB of sled's tree per iPad and an open ~30% slower with 10,000 iPads of history. So the
//! index is 256 sled values (a few pages, whatever the history), each a sorted list of
//! `key → location` (~25 bytes an iPad). Reading a record is one positioned read of its line,
//! which the kernel's page cache usually holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::ledger::{AuditLine, MAX_AUDIT_LINE, key_of, parse_audit_line};
use crate::record::DeviceRecord;

/// Version of what the index holds, kept in the clean-close note: a note without it (or with
/// another) was written by a ledger whose database held something else (whole records, or one
/// key per iPad), and the open replays the log, which rewrites the index.
pub const INDEX_FORMAT: u32 = 2;

/// How many buckets the keys are spread over.
const BUCKETS: u64 = 256;

/// Prefix of a bucket's sled key (`index/00` … `index/3f`). Keys of earlier formats (serials,
/// `udid:…`) never start with it.
const BUCKET_PREFIX: &[u8] = b"index/";

/// Prefix of keys the ledger keeps beside the index (the naming counter): a rebuild leaves
/// them alone.
pub const META_PREFIX: &[u8] = b"meta/";

/// First byte of an encoded bucket.
const TAG: u8 = b'B';

/// Where one audit line is: its first byte and its length, the `\n` included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineAt {
    pub offset: u64,
    pub len: u32,
}

/// Why the index did not lead to a record.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("ledger database error: {0}")]
    Db(#[from] sled::Error),
    #[error("index bucket {bucket} is damaged ({why})")]
    Bucket { bucket: String, why: &'static str },
    #[error("reading {len} bytes at byte {offset} of the audit log: {source}")]
    Read {
        offset: u64,
        len: u32,
        source: io::Error,
    },
    #[error("the line at byte {offset} of the audit log {why}")]
    Line { offset: u64, why: String },
}

/// The sled key of the bucket `key` belongs in: FNV-1a of the key, so it is the same in every
/// process and version.
fn bucket_of(key: &str) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = BUCKET_PREFIX.to_vec();
    out.extend_from_slice(format!("{:02x}", h % BUCKETS).as_bytes());
    out
}

fn is_bucket(sled_key: &[u8]) -> bool {
    sled_key.starts_with(BUCKET_PREFIX)
}

/// The entries of an encoded bucket, in order, borrowed from it. `bucket` names it in errors.
fn entries<'a>(bucket: &[u8], bytes: &'a [u8]) -> Result<Vec<(&'a str, LineAt)>, IndexError> {
    let damaged = |why| IndexError::Bucket {
        bucket: String::from_utf8_lossy(bucket).into_owned(),
        why,
    };
    let mut rest = bytes.strip_prefix(&[TAG]).ok_or(damaged("no tag"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (klen, r) = rest.split_first_chunk::<2>().ok_or(damaged("cut short"))?;
        let klen = usize::from(u16::from_le_bytes(*klen));
        if r.len() < klen + 12 {
            return Err(damaged("cut short"));
        }
        let (key, r) = r.split_at(klen);
        let key = std::str::from_utf8(key).map_err(|_| damaged("a key is not UTF-8"))?;
        let (offset, r) = r.split_first_chunk::<8>().ok_or(damaged("cut short"))?;
        let (len, r) = r.split_first_chunk::<4>().ok_or(damaged("cut short"))?;
        let at = LineAt {
            offset: u64::from_le_bytes(*offset),
            len: u32::from_le_bytes(*len),
        };
        if key.is_empty() || at.len == 0 || at.len as usize > MAX_AUDIT_LINE + 1 {
            return Err(damaged("an entry is out of range"));
        }
        if out.last().is_some_and(|&(k, _): &(&str, LineAt)| k >= key) {
            return Err(damaged("keys out of order"));
        }
        out.push((key, at));
        rest = r;
    }
    Ok(out)
}

/// A bucket's bytes: the tag, then each entry (key length u16, key, offset u64, length u32,
/// little-endian), sorted by key.
fn encode<K: AsRef<str>>(entries: &[(K, LineAt)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * 40);
    out.push(TAG);
    for (key, at) in entries {
        let key = key.as_ref();
        // Keys are serials or `udid:<UDID>`, far below 64 KiB; `set` refuses longer ones.
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&at.offset.to_le_bytes());
        out.extend_from_slice(&at.len.to_le_bytes());
    }
    out
}

/// Where the latest line of `key` is, if the index has it.
pub fn lookup(db: &sled::Db, key: &str) -> Result<Option<LineAt>, IndexError> {
    let bucket = bucket_of(key);
    let Some(bytes) = db.get(&bucket)? else {
        return Ok(None);
    };
    let list = entries(&bucket, &bytes)?;
    Ok(list
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .map(|i| list[i].1))
}

/// Points `key` at `at`, or removes it (`None`). The ledger writes the index from one thread at
/// a time (under its audit log's lock), so a read-modify-write of a bucket is safe.
pub fn set(db: &sled::Db, key: &str, at: Option<LineAt>) -> Result<(), IndexError> {
    let bucket = bucket_of(key);
    if key.is_empty() || key.len() > usize::from(u16::MAX) {
        return Err(IndexError::Bucket {
            bucket: String::from_utf8_lossy(&bucket).into_owned(),
            why: "a key of that length cannot be indexed",
        });
    }
    let current = db.get(&bucket)?;
    let mut list = match &current {
        Some(bytes) => entries(&bucket, bytes)?,
        None => Vec::new(),
    };
    match (list.binary_search_by(|(k, _)| (*k).cmp(key)), at) {
        (Ok(i), Some(at)) => list[i].1 = at,
        (Err(i), Some(at)) => list.insert(i, (key, at)),
        (Ok(i), None) => {
            list.remove(i);
        }
        (Err(_), None) => return Ok(()),
    }
    if list.is_empty() {
        db.remove(&bucket)?;
    } else {
        db.insert(bucket, encode(&list))?;
    }
    Ok(())
}

/// Every entry, in no particular order.
pub fn all(db: &sled::Db) -> Result<Vec<(String, LineAt)>, IndexError> {
    let mut out = Vec::new();
    for item in db.scan_prefix(BUCKET_PREFIX) {
        let (bucket, bytes) = item?;
        out.extend(
            entries(&bucket, &bytes)?
                .into_iter()
                .map(|(k, at)| (k.to_owned(), at)),
        );
    }
    Ok(out)
}

/// Makes the index hold exactly `want` (the audit log's latest line of each key), and nothing
/// from an earlier format. Returns how many keys were missing, pointed elsewhere, or were
/// indexed but not in `want`.
pub fn rebuild(
    db: &sled::Db,
    want: &std::collections::BTreeMap<String, LineAt>,
) -> Result<usize, IndexError> {
    let mut buckets: std::collections::BTreeMap<Vec<u8>, Vec<(String, LineAt)>> =
        Default::default();
    for (key, at) in want {
        // `want` is sorted, so each bucket's list is too.
        buckets
            .entry(bucket_of(key))
            .or_default()
            .push((key.clone(), *at));
    }
    // What the index says now: bucket entries, and the keys of an earlier format (one sled
    // key per record, holding its record or a location) with no location to trust.
    let mut have: std::collections::BTreeMap<String, Option<LineAt>> = Default::default();
    let mut sled_keys = Vec::new();
    for item in db.iter() {
        let (sled_key, bytes) = item?;
        if sled_key.starts_with(META_PREFIX) {
            continue;
        }
        if is_bucket(&sled_key) {
            // A damaged bucket is rewritten whole below.
            for (key, at) in entries(&sled_key, &bytes).unwrap_or_default() {
                have.insert(key.to_owned(), Some(at));
            }
        } else {
            have.entry(String::from_utf8_lossy(&sled_key).into_owned())
                .or_insert(None);
        }
        sled_keys.push(sled_key);
    }
    let changed = want
        .iter()
        .filter(|(key, at)| have.get(*key) != Some(&Some(**at)))
        .count()
        + have.keys().filter(|key| !want.contains_key(*key)).count();
    for sled_key in sled_keys {
        if !buckets.contains_key(sled_key.as_ref()) {
            db.remove(&sled_key)?;
        }
    }
    for (bucket, new) in buckets {
        let bytes = encode(&new);
        if db.get(&bucket)?.as_deref() != Some(&bytes[..]) {
            db.insert(bucket, bytes)?;
        }
    }
    Ok(changed)
}

/// The record of `key` from the audit line `at`, checked to be a whole line holding `key`'s
/// record.
pub fn read_record(log: &File, key: &str, at: LineAt) -> Result<DeviceRecord, IndexError> {
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
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;

    fn at(offset: u64, len: u32) -> LineAt {
        LineAt { offset, len }
    }

    fn temp_db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::open(dir.path().join("db")).expect("sled");
        (dir, db)
    }

    #[test]
    fn keys_are_spread_over_256_buckets_the_same_way_every_time() {
        let used: std::collections::BTreeSet<Vec<u8>> = (0..5_000)
            .map(|i| bucket_of(&format!("DMP{i:09}")))
            .collect();
        assert_eq!(used.len(), 256, "5,000 serials use every bucket");
        assert!(used.iter().all(|b| is_bucket(b) && b.len() == 8));
        // Pinned (FNV-1a): a change of hash would strand every index written before it.
        assert_eq!(bucket_of("DMPA00000001"), b"index/1a".to_vec());
        assert_eq!(bucket_of(""), b"index/25".to_vec());
    }

    #[test]
    fn set_lookup_and_remove_keep_each_bucket_sorted() {
        let (_dir, db) = temp_db();
        let keys: Vec<String> = (0..200).rev().map(|i| format!("DMP{i:09}")).collect();
        for (i, k) in keys.iter().enumerate() {
            set(&db, k, Some(at(i as u64 * 100, 99))).expect("set");
        }
        set(&db, &keys[7], Some(at(5_000_000, 1_234))).expect("move");
        set(&db, &keys[8], None).expect("remove");
        set(&db, "DMPNEVERSEEN", None).expect("removing an unknown key is a no-op");
        assert_eq!(lookup(&db, &keys[0]).expect("get"), Some(at(0, 99)));
        assert_eq!(
            lookup(&db, &keys[7]).expect("get"),
            Some(at(5_000_000, 1_234))
        );
        assert_eq!(lookup(&db, &keys[8]).expect("get"), None);
        assert_eq!(lookup(&db, "DMPNEVERSEEN").expect("get"), None);
        assert_eq!(all(&db).expect("all").len(), 199);
        for item in db.iter() {
            let (bucket, bytes) = item.expect("item");
            entries(&bucket, &bytes).expect("every bucket reads back sorted");
        }
    }

    #[test]
    fn a_damaged_bucket_is_an_error_not_a_guess() {
        let good = encode(&[("DMPA", at(0, 10)), ("DMPB", at(10, 10))]);
        let mut out_of_order = encode(&[("DMPB", at(0, 10))]);
        out_of_order.extend_from_slice(&encode(&[("DMPA", at(10, 10))])[1..]);
        let zero_len = encode(&[("DMPA", at(0, 0))]);
        let too_long = encode(&[("DMPA", at(0, u32::MAX))]);
        let whole_record = br#"{"serial":"DMPA","udid":"u"}"#.to_vec();
        for (what, bytes) in [
            (
                "cut in the middle of an entry",
                good[..good.len() - 3].to_vec(),
            ),
            ("no tag", good[1..].to_vec()),
            ("a whole record (an earlier format)", whole_record),
            ("keys out of order", out_of_order),
            ("an empty line", zero_len),
            ("a line longer than any audit line read", too_long),
        ] {
            assert!(entries(b"index/00", &bytes).is_err(), "{what}");
        }
        assert_eq!(entries(b"index/00", &good).expect("good").len(), 2);
        assert_eq!(entries(b"index/00", &[TAG]).expect("empty").len(), 0);
    }

    #[test]
    fn a_rebuild_leaves_exactly_what_the_log_says_and_counts_what_changed() {
        let (_dir, db) = temp_db();
        // An earlier format's keys: one whole record, one location per key.
        db.insert("DMPOLD000001", &b"{\"serial\":\"DMPOLD000001\"}"[..])
            .expect("old");
        db.insert("DMPGONE00001", &b"{\"serial\":\"DMPGONE00001\"}"[..])
            .expect("old");
        db.insert(&b"meta/next_number"[..], &7u32.to_le_bytes()[..])
            .expect("meta");
        set(&db, "DMPKEPT00001", Some(at(0, 10))).expect("set");
        set(&db, "DMPMOVED0001", Some(at(10, 10))).expect("set");
        set(&db, "DMPSTALE0001", Some(at(20, 10))).expect("set");
        let want: BTreeMap<String, LineAt> = [
            ("DMPOLD000001", at(100, 10)),
            ("DMPKEPT00001", at(0, 10)),
            ("DMPMOVED0001", at(110, 10)),
            ("DMPNEW000001", at(120, 10)),
        ]
        .into_iter()
        .map(|(k, a)| (k.to_owned(), a))
        .collect();
        // Changed: DMPOLD000001 (no location yet), DMPGONE00001 and DMPSTALE0001 (not in the
        // log), DMPMOVED0001 (elsewhere), DMPNEW000001 (missing); DMPKEPT00001 is right.
        assert_eq!(rebuild(&db, &want).expect("rebuild"), 5);
        let mut now = all(&db).expect("all");
        now.sort();
        assert_eq!(now, want.clone().into_iter().collect::<Vec<_>>());
        assert!(
            db.iter()
                .keys()
                .map(|k| k.expect("key"))
                .all(|k| is_bucket(&k) || k.starts_with(META_PREFIX))
        );
        assert!(
            db.get("meta/next_number").expect("get").is_some(),
            "meta keys stay"
        );
        assert_eq!(
            rebuild(&db, &want).expect("again"),
            0,
            "nothing left to change"
        );
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
        let at_a = at(0, la.len() as u32);
        let at_b = at(la.len() as u64, lb.len() as u32);
        assert_eq!(read_record(&file, "DMPA00000001", at_a).expect("a"), a);
        assert_eq!(read_record(&file, "DMPB00000002", at_b).expect("b"), b);
        for (what, key, entry) in [
            ("another key's line", "DMPA00000001", at_b),
            ("a line cut short", "DMPA00000001", at(0, at_a.len - 5)),
            (
                "a location in the middle of a line",
                "DMPB00000002",
                at(3, at_b.len),
            ),
            (
                "past the end of the log",
                "DMPB00000002",
                at(1 << 20, at_b.len),
            ),
        ] {
            assert!(read_record(&file, key, entry).is_err(), "{what}");
        }
    }
}
