//! Files that hold keys or pair records: created with mode 0600, replaced atomically.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes every temporary name unique, so concurrent writes of the same file cannot share one.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` through a temporary file in the same folder, mode 0600 from the start.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    // No fsync: the rename already makes a reader see the old file or the new one, and the
    // simulator's files only need to outlive a killed process (the page cache does that), not
    // a power cut. A sync per saved pair record was the simulator's largest CPU cost per iPad,
    // taken from the same two cores as the client it serves.
    drop(f);
    std::fs::rename(&tmp, path)
}
