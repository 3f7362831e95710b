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

use rsa::RsaPrivateKey;
use tokio::sync::OnceCell;

use crate::error::LockdownError;

static KEY: OnceCell<Arc<RsaPrivateKey>> = OnceCell::const_new();

/// Generates a new RSA-2048 key on a blocking thread (CPU-heavy: ~0.1–1 s).
pub async fn generate() -> Result<RsaPrivateKey, LockdownError> {
    tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048))
        .await
        .map_err(|e| LockdownError::PairRecord(format!("key generation task: {e}")))?
        .map_err(|e| LockdownError::PairRecord(format!("key generation: {e}")))
}

/// The process's pairing key, generated on first use (off the async threads); later callers
/// get the same key without waiting.
pub async fn shared() -> Result<Arc<RsaPrivateKey>, LockdownError> {
    KEY.get_or_try_init(|| async { generate().await.map(Arc::new) })
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
        assert_eq!(a.as_ref(), shared().await.expect("key").as_ref());
    }
}
