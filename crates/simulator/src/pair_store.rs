//! usbmuxd's pair-record store and SystemBUID, on disk as Linux usbmuxd keeps them:
//! `<dir>/<UDID>.plist` (the bytes clients saved, returned verbatim) and
//! `<dir>/SystemConfiguration.plist` holding `SystemBUID`. Files are 0600.

use std::path::{Path, PathBuf};

use plist::{Dictionary, Value};
use usbmux::ResultCode;

use crate::files::write_private;

#[derive(Debug)]
pub struct PairStore {
    dir: PathBuf,
    buid: String,
}

/// errno values Linux usbmuxd puts in Result.Number for pair-record failures.
const ENOENT: ResultCode = ResultCode::ENOENT;
const EINVAL: ResultCode = ResultCode::EINVAL;

impl PairStore {
    /// Opens (creating) the store; the SystemBUID is made once and kept.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("SystemConfiguration.plist");
        let existing = crate::untrusted::dictionary_file(&config)
            .ok()
            .and_then(|d| {
                d.get("SystemBUID")
                    .and_then(Value::as_string)
                    .map(str::to_owned)
            });
        let buid = match existing {
            Some(b) => b,
            None => {
                let buid = crate::rng::uuid_upper();
                let mut d = Dictionary::new();
                d.insert("SystemBUID".into(), buid.clone().into());
                let mut bytes = Vec::new();
                plist::to_writer_xml(&mut bytes, &d).map_err(std::io::Error::other)?;
                write_private(&config, &bytes)?;
                buid
            }
        };
        Ok(PairStore {
            dir: dir.to_owned(),
            buid,
        })
    }

    pub fn system_buid(&self) -> &str {
        &self.buid
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A UDID becomes a file name only if it is plainly one (hex digits and hyphens), so a
    /// record ID can never name SystemConfiguration or a path outside the store. (Linux
    /// usbmuxd is laxer; no real client sends anything but a UDID.)
    fn path(&self, udid: &str) -> Result<PathBuf, ResultCode> {
        let plausible = !udid.is_empty()
            && udid.len() <= 64
            && udid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !plausible {
            return Err(EINVAL);
        }
        Ok(self.dir.join(format!("{udid}.plist")))
    }

    pub fn read(&self, udid: &str) -> Result<Vec<u8>, ResultCode> {
        std::fs::read(self.path(udid)?).map_err(|_| ENOENT)
    }

    /// Stores a record after the checks Linux usbmuxd makes (at least 8 bytes, a dict plist).
    pub fn save(&self, udid: &str, data: &[u8]) -> Result<(), ResultCode> {
        let path = self.path(udid)?;
        if data.len() < 8 || crate::untrusted::dictionary(data).is_err() {
            return Err(EINVAL);
        }
        write_private(&path, data).map_err(|_| ENOENT)
    }

    pub fn delete(&self, udid: &str) -> Result<(), ResultCode> {
        std::fs::remove_file(self.path(udid)?).map_err(|e| match e.raw_os_error() {
            Some(n) if n > 0 => ResultCode(n as u32),
            _ => ENOENT,
        })
    }
}
