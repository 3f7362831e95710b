//! Signing device challenges with a supervision identity, abstracted so that the device-facing
//! code (MCInstall escalation, supervised pairing) does not own any private key.

/// Signs the challenges of MCInstall `Escalate` and of supervised lockdown pairing.
///
/// `sign` must return a DER-encoded CMS `SignedData` with the content **attached**
/// (encapsulated `id-data` = `content`, byte for byte, never canonicalised) and the signer's
/// certificate included as the **first** certificate (`docs/protocol.md` §5.2). The device
/// compares that certificate byte for byte with the one sent before (`certificate_der`).
///
/// Implementations must not log the private key.
pub trait ChallengeSigner: Send + Sync {
    /// The supervisor certificate, DER.
    fn certificate_der(&self) -> &[u8];
    /// CMS SignedData (DER) over `content`, attached, signer certificate first.
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String>;
}

impl<T: ChallengeSigner + ?Sized> ChallengeSigner for &T {
    fn certificate_der(&self) -> &[u8] {
        (**self).certificate_der()
    }
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        (**self).sign(content)
    }
}

impl<T: ChallengeSigner + ?Sized> ChallengeSigner for std::sync::Arc<T> {
    fn certificate_der(&self) -> &[u8] {
        (**self).certificate_der()
    }
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        (**self).sign(content)
    }
}

/// The organisation's supervision identity signs its own challenges (CMS, attached, its
/// certificate first, as `docs/protocol.md` §5.2 describes).
impl ChallengeSigner for profiles::SupervisionIdentity {
    fn certificate_der(&self) -> &[u8] {
        profiles::SupervisionIdentity::certificate_der(self)
    }
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        self.sign_challenge(content).map_err(|e| e.to_string())
    }
}
