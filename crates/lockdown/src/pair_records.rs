//! Pair records: read from usbmuxd first (it is the store Debian's tools and Linux usbmuxd use),
//! else from our own state folder; saved to both. Files are 0600: they hold private keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use idevice::pairing_file::PairingFile;
use usbmux::bounded_plist::{self, BoundedPlistError, Limits};
use usbmux::{UsbmuxAddress, UsbmuxClient};

use crate::error::LockdownError;

/// A pair record is a few KiB (three certificates, a key, a few strings).
pub const PAIR_RECORD_LIMITS: Limits = Limits::new(1024 * 1024);

/// Our own copy of pair records, `<dir>/<UDID>.plist`.
#[derive(Debug, Clone)]
pub struct PairRecordStore {
    dir: PathBuf,
}

fn plausible_udid(udid: &str) -> bool {
    !udid.is_empty()
        && udid.len() <= 64
        && udid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl PairRecordStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PairRecordStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, udid: &str) -> Result<PathBuf, LockdownError> {
        if !plausible_udid(udid) {
            return Err(LockdownError::PairRecord(format!(
                "refusing odd UDID {udid:?} as a file name"
            )));
        }
        Ok(self.dir.join(format!("{udid}.plist")))
    }

    /// The record's bytes, refusing a file larger than [`PAIR_RECORD_LIMITS`] allows.
    pub fn load(&self, udid: &str) -> Result<Option<Vec<u8>>, LockdownError> {
        match bounded_plist::read_file(&self.path(udid)?, PAIR_RECORD_LIMITS.max_bytes) {
            Ok(b) => Ok(Some(b)),
            Err(BoundedPlistError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(BoundedPlistError::Io(e)) => Err(e.into()),
            Err(e) => Err(LockdownError::PairRecordPlist(e)),
        }
    }

    /// Writes atomically, mode 0600 from creation.
    pub fn save(&self, udid: &str, bytes: &[u8]) -> Result<(), LockdownError> {
        let path = self.path(udid)?;
        // Pair records are secrets: their folder is the station's alone (0700).
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dir.mode(0o700);
        }
        dir.create(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".{udid}.plist.tmp{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn delete(&self, udid: &str) -> Result<(), LockdownError> {
        match std::fs::remove_file(self.path(udid)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Parses a pair-record file (XML or binary plist) within [`PAIR_RECORD_LIMITS`]: the file
/// comes from disk or from usbmuxd, and idevice's own parser has no depth bound.
pub fn parse(bytes: &[u8]) -> Result<PairingFile, LockdownError> {
    let value = bounded_plist::from_bytes(bytes, PAIR_RECORD_LIMITS)
        .map_err(LockdownError::PairRecordPlist)?;
    PairingFile::from_value(&value).map_err(|e| LockdownError::PairRecord(e.to_string()))
}

/// Serialises a pair record to the XML file format Linux usbmuxd stores.
pub fn serialize(record: &PairingFile) -> Result<Vec<u8>, LockdownError> {
    record
        .clone()
        .serialize()
        .map_err(|e| LockdownError::PairRecord(e.to_string()))
}

/// Finds a pair record for `udid`: usbmuxd's store first, then ours.
pub async fn find(
    addr: &UsbmuxAddress,
    store: Option<&PairRecordStore>,
    udid: &str,
    transcript: &usbmux::Transcript,
) -> Result<Option<PairingFile>, LockdownError> {
    if let Some(bytes) = UsbmuxClient::connect(addr)
        .await?
        .recorded(transcript)
        .read_pair_record(udid)
        .await?
    {
        match parse(&bytes) {
            Ok(r) => return Ok(Some(r)),
            Err(e) => tracing::warn!(
                udid,
                "usbmuxd's pair record is unusable ({e}); trying our own"
            ),
        }
    }
    if let Some(store) = store
        && let Some(bytes) = store.load(udid)?
    {
        return parse(&bytes).map(Some);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usbmux::test_support::{Format, dict_with_deep_array};

    const UDID: &str = "00008030-001A2B3C4D5E6F70";

    #[test]
    fn a_pair_record_file_nested_ten_thousand_levels_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PairRecordStore::new(dir.path());
        for format in [Format::Binary, Format::Xml] {
            let record =
                dict_with_deep_array(format, &[("HostID", "H"), ("SystemBUID", "B")], 10_000);
            store.save(UDID, &record).expect("save");
            let bytes = store.load(UDID).expect("load").expect("present");
            assert!(
                matches!(
                    parse(&bytes),
                    Err(LockdownError::PairRecordPlist(
                        BoundedPlistError::TooDeep { .. }
                    ))
                ),
                "{format:?}"
            );
        }
    }

    #[test]
    fn an_oversized_pair_record_file_is_not_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PairRecordStore::new(dir.path());
        let big = vec![b' '; PAIR_RECORD_LIMITS.max_bytes + 1];
        store.save(UDID, &big).expect("save");
        assert!(matches!(
            store.load(UDID),
            Err(LockdownError::PairRecordPlist(
                BoundedPlistError::TooLarge { .. }
            ))
        ));
    }
}
