//! Supervision identities and a signer that gets the challenge wrong.

use lockdown::ChallengeSigner;
use profiles::SupervisionIdentity;

/// A fresh supervision identity for `org` (lockdown makes it a [`ChallengeSigner`]).
pub fn new_identity(org: &str) -> SupervisionIdentity {
    SupervisionIdentity::create(org).expect("a new supervision identity")
}

/// The right certificate, but the signature covers other bytes than the challenge.
pub struct SignsWrongBytes<'a>(pub &'a SupervisionIdentity);

impl ChallengeSigner for SignsWrongBytes<'_> {
    fn certificate_der(&self) -> &[u8] {
        self.0.certificate_der()
    }

    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        let mut other = content.to_vec();
        other.push(0);
        self.0.sign(&other)
    }
}
