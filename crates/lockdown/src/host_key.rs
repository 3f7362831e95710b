//! The station's pairing key: one RSA-2048 key per process, shared by the pair records it makes
//! (as root and host key), generated once on a blocking thread and never on the async runtime.
//!
//! Why one key may be shared (docs/protocol.md §2.6): a pair record is keyed on the device by its
//! HostID; what the device checks is that the TLS client presents the HostCertificate it was
//! given in that record, and that the DeviceCertificate is for its own DevicePublicKey. Nothing
//! binds a key to one device: pymobiledevice3's `LockdownClient.pair(private_key=…)` reuses a
//! caller's host key across pairings, and libimobiledevice before 1.1.6 kept one host key per
//! host in its user preferences folder. Each pairing still gets its own HostID and a fresh
//! device certificate signed with this key.

use std::sync::Arc;

use profiles::rsa_signer::RsaSigner;
use rsa::RsaPrivateKey;
use tokio::sync::OnceCell;

use crate::error::LockdownError;

static KEY: OnceCell<Arc<HostKey>> = OnceCell::const_new();

/// The key and its signer (ring, converted once: a pair record's two certificate signatures
/// then take about a millisecond instead of the `rsa` crate's ten or more).
pub struct HostKey {
    pub key: RsaPrivateKey,
    pub signer: RsaSigner,
}

impl HostKey {
    pub fn new(key: RsaPrivateKey) -> Self {
        HostKey {
            signer: RsaSigner::new(&key),
            key,
        }
    }
}

/// Generates a new RSA-2048 key on a blocking thread (CPU-heavy: ~0.1–1 s).
pub async fn generate() -> Result<RsaPrivateKey, LockdownError> {
    tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048))
        .await
        .map_err(|e| LockdownError::PairRecord(format!("key generation task: {e}")))?
        .map_err(|e| LockdownError::PairRecord(format!("key generation: {e}")))
}

/// The process's pairing key, generated on first use (off the async threads); later callers
/// get the same key without waiting.
pub async fn shared() -> Result<Arc<HostKey>, LockdownError> {
    KEY.get_or_try_init(|| async {
        let key = generate().await?;
        // ring checks the key when the signer is made: CPU work too, so not on the runtime.
        tokio::task::spawn_blocking(move || Arc::new(HostKey::new(key)))
            .await
            .map_err(|e| LockdownError::PairRecord(format!("key preparation task: {e}")))
    })
    .await
    .cloned()
}

/// Whether the key has been made (a station is ready to pair without waiting).
pub fn is_ready() -> bool {
    KEY.initialized()
}

/// Starts generating the pairing key in the background, so the first iPad does not wait for
/// it (the daemon calls this at start-up). Needs a tokio runtime.
pub fn prepare_in_background() {
    if KEY.initialized() {
        return;
    }
    tokio::spawn(async {
        if let Err(e) = shared().await {
            tracing::warn!(error = %e, "could not prepare the pairing key; the first pairing will retry");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_the_same_key() {
        let (a, b) = tokio::join!(shared(), shared());
        let (a, b) = (a.expect("key"), b.expect("key"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.key, shared().await.expect("key").key);
        assert!(a.signer.fast(), "a 2048-bit key is signed with by ring");
    }
}
