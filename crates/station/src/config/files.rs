//! Reading the files a config names (each once per load, bounded in size) and the digests the
//! fingerprint is made of.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::problems::{Problems, plain_io};

/// Largest file the config may point at that is read whole (profiles, certificates, password),
/// and largest config file.
pub(super) const MAX_REFERENCED_FILE: u64 = 16 << 20;
/// Rounds of SHA-256 over the Wi-Fi password for the settings fingerprint. The fingerprint is
/// stored in the ledger and its exports; stretching makes guessing a weak password from it
/// expensive (20 000 rounds: about 5 ms in a release build, once per load).
const PASSWORD_DIGEST_ROUNDS: u32 = 20_000;

/// Reads a file the config names, recording a problem (naming the file) if it cannot be read.
pub(super) fn read_file(field: &str, path: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    match read_limited(path, MAX_REFERENCED_FILE) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            p.add(
                field,
                format!("cannot read {}: {}", path.display(), plain_io(&e)),
            );
            None
        }
    }
}

pub(super) fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a folder, not a file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", max >> 20),
        ));
    }
    Ok(bytes)
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn stretched_digest(password: &str) -> String {
    let mut digest = Sha256::new_with_prefix(b"cartprep wifi password v1\0");
    digest.update(password.as_bytes());
    let mut out = digest.finalize();
    for _ in 1..PASSWORD_DIGEST_ROUNDS {
        out = Sha256::digest(out);
    }
    hex(&out)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
