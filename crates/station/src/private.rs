//! The station's files are for the station: state folders 0700, files 0600 (ledger, audit log,
//! exports, pair records). A service group that must read exports gets them by another way
//! (README, "Permissions"), not by loosening these.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tracing::warn;

/// Mode of the station's folders.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the station's files.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) as 0700; an existing one open to others is narrowed
/// to 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Options that create a file as 0600.
pub fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Narrows an open file that others can read to 0600 (a file made by an older version).
pub fn restrict_file(file: &File, path: &Path) {
    let narrowed = file.metadata().and_then(|m| {
        if m.permissions().mode() & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        } else {
            Ok(())
        }
    });
    if let Err(e) = narrowed {
        warn!(path = %path.display(), error = %e, "could not make the file private (0600)");
    }
}

/// Narrows a folder made by a library that follows the umask (sled): folders 0700, files
/// 0600, a few levels deep. Best effort: a failure is logged, not fatal.
pub fn restrict_tree(dir: &Path) {
    fn walk(dir: &Path, depth: u32) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
        if depth == 0 {
            return Ok(());
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), depth - 1)?;
            } else if kind.is_file() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(FILE_MODE))?;
            }
        }
        Ok(())
    }
    if let Err(e) = walk(dir, 3) {
        warn!(dir = %dir.display(), error = %e, "could not make the folder private (0700/0600)");
    }
}

/// Writes `bytes` to `path` as a 0600 file (replacing what was there, and narrowing its mode).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_0700_and_files_0600_even_when_they_existed_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/inner");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(open.join("f"), b"x").unwrap();
        fs::set_permissions(open.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        create_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        restrict_tree(&open);
        assert_eq!(mode(&open.join("f")), 0o600);

        let export = root.path().join("serials.csv");
        fs::write(&export, b"old").unwrap();
        fs::set_permissions(&export, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&export, b"Serial Number\n").unwrap();
        assert_eq!(mode(&export), 0o600);
        assert_eq!(fs::read(&export).unwrap(), b"Serial Number\n");
    }
}
