//! Files: private ones (keys, PKCS#12, profiles holding passwords) created with mode 0600 from the
//! start, and every write done through a temporary file and a rename, so a reader never sees half
//! a file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ProfileError, Result};

/// Makes every temporary name unique, so concurrent writes of the same file cannot share one.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically, mode 0600 from creation (on Unix).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Writes `bytes` to `path` atomically, mode 0644 (less the umask) — for certificates.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o644)
}

/// Reads a whole file, refusing files larger than `max` bytes (inputs are small: certificates,
/// keys, profiles). Errors name the file.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| ProfileError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ProfileError::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(ProfileError::invalid(
            path.display().to_string(),
            format!("file larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Creates `dir` (and its parents) if it is missing; a folder created here gets mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| ProfileError::io(dir, e))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_owned();
    let tmp = dir.join(format!(
        ".{name}.tmp{}-{}",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_new(&tmp, bytes, mode).and_then(|()| std::fs::rename(&tmp, path));
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(ProfileError::io(path, e))
        }
    }
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.pem");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.pem")]);
    }

    #[test]
    fn read_limited_refuses_large_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, [0u8; 100]).expect("write");
        assert_eq!(read_limited(&path, 100).expect("read").len(), 100);
        let e = read_limited(&path, 99).expect_err("too large");
        assert!(e.to_string().contains("larger than 99"), "{e}");
        let e = read_limited(&dir.path().join("missing"), 10).expect_err("missing");
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn failed_write_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-dir").join("f");
        let e = write_private(&path, b"x").expect_err("parent missing");
        assert!(e.to_string().contains("no-such-dir"), "{e}");
    }
}
