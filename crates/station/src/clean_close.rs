//! The ledger's clean-close note, `<state>/ledger.clean`: what a ledger closed in good order
//! knew (how long the audit log was, the naming counter, the records being worked on), so the
//! next open need not replay the audit log or scan every record.
//!
//! The note is taken (read and deleted) at open, before anything is written, and written again
//! only at a close where the database flushed and every write since the open went through. So
//! a note exists only while the ledger is closed, and a crash, a kill or a failed write leaves
//! none: the next open replays the log, as it must (`docs/ARCHITECTURE.md`, "Durability").

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the note inside the state folder.
pub const CLEAN_FILE: &str = "ledger.clean";

/// The longest note read. It holds a few numbers and the keys of the iPads being worked on
/// (a cart's worth); anything longer is not a note this station wrote.
const MAX_BYTES: u64 = 1024 * 1024;

/// What a cleanly closed ledger knew.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanClose {
    /// What the database's entries are (`crate::ledger_index::INDEX_FORMAT`); absent (0) in
    /// notes written when it held whole records.
    #[serde(default)]
    pub index: u32,
    /// The audit log's length when the database held all of it.
    pub audit_len: u64,
    /// The naming counter (the number the next iPad named takes).
    pub next_number: u32,
    /// Keys of the records whose outcome was `Working`.
    pub working: Vec<String>,
}

/// Reads and deletes the note. `None` when there is none, it cannot be read, or it cannot be
/// deleted (a note that outlives this open could vouch for a database a crash left behind).
pub fn take(state_dir: &Path) -> Option<CleanClose> {
    let path = state_dir.join(CLEAN_FILE);
    let bytes = match read_bounded(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        read => read,
    };
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete the ledger's clean-close note; replaying the audit log");
        return None;
    }
    // Make the deletion durable before the ledger writes anything.
    if let Ok(dir) = std::fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    serde_json::from_slice(&bytes.ok()?).ok()
}

/// Writes the note (0600, through a temporary file, so a torn write is never read as one).
pub fn write(state_dir: &Path, note: &CleanClose) -> io::Result<()> {
    let path = state_dir.join(CLEAN_FILE);
    let tmp = state_dir.join(format!("{CLEAN_FILE}.tmp"));
    let bytes = serde_json::to_vec(note).map_err(io::Error::other)?;
    crate::private::write_private(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "clean-close note too long",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let note = CleanClose {
            index: 1,
            audit_len: 4096,
            next_number: 31,
            working: vec!["DMPBUSY00001".into()],
        };
        write(dir.path(), &note).unwrap();
        assert_eq!(take(dir.path()), Some(note));
        assert_eq!(take(dir.path()), None, "taking deletes it");
    }

    #[test]
    fn a_damaged_or_oversized_note_is_no_note_and_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLEAN_FILE);
        for bytes in [
            b"{\"audit_len\":".to_vec(),
            b"[]".to_vec(),
            vec![b' '; MAX_BYTES as usize + 1],
        ] {
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(take(dir.path()), None);
            assert!(!path.exists());
        }
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(take(dir.path()), None, "missing fields");
        assert!(!path.exists());
    }
}
