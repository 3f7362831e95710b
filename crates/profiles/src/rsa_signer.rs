//! RSA PKCS#1 v1.5 with SHA-256 signatures made by ring, for the certificate and CMS builders.
//!
//! The `rsa` crate's private-key operation (num-bigint-dig) takes several milliseconds; ring's
//! takes well under one, and a station signs two to three times per iPad (the pair record's
//! certificates, the escalation challenge). PKCS#1 v1.5 is deterministic, so both give the same
//! bytes for the same key and message (tested below); only the speed differs. The key is
//! checked and converted once, when the signer is made; a key ring does not take (it takes
//! 2048 to 4096 bits, an imported identity may have another size) is signed with by the `rsa`
//! crate as before.

use der::referenced::RefToOwned;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{Keypair, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureAlgorithmIdentifier,
};

/// Signs with one RSA key: sha256WithRSAEncryption.
pub struct RsaSigner {
    with: With,
    public: RsaPublicKey,
}

enum With {
    Ring(ring::signature::RsaKeyPair),
    RsaCrate(SigningKey<Sha256>),
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaSigner").finish_non_exhaustive()
    }
}

impl RsaSigner {
    /// A signer for `key` (ring checks the key here: a few milliseconds, once).
    pub fn new(key: &RsaPrivateKey) -> Self {
        let ring = key
            .to_pkcs1_der()
            .ok()
            .and_then(|der| ring::signature::RsaKeyPair::from_der(der.as_bytes()).ok());
        RsaSigner {
            with: match ring {
                Some(k) => With::Ring(k),
                None => With::RsaCrate(SigningKey::new(key.clone())),
            },
            public: RsaPublicKey::from(key),
        }
    }

    /// Whether ring signs (false: the `rsa` crate does).
    pub fn fast(&self) -> bool {
        matches!(self.with, With::Ring(_))
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }
}

impl Keypair for RsaSigner {
    type VerifyingKey = VerifyingKey<Sha256>;

    fn verifying_key(&self) -> Self::VerifyingKey {
        VerifyingKey::new(self.public.clone())
    }
}

impl DynSignatureAlgorithmIdentifier for RsaSigner {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        // The same identifier (and NULL parameters) the `rsa` crate's SHA-256 signer writes.
        Ok(
            <SigningKey<Sha256> as SignatureAlgorithmIdentifier>::SIGNATURE_ALGORITHM_IDENTIFIER
                .ref_to_owned(),
        )
    }
}

impl Signer<Signature> for RsaSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Signature, rsa::signature::Error> {
        let key_pair = match &self.with {
            With::Ring(k) => k,
            With::RsaCrate(k) => return k.try_sign(msg),
        };
        let mut sig = vec![0; key_pair.public().modulus_len()];
        key_pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .map_err(|_| rsa::signature::Error::new())?;
        Signature::try_from(sig.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::{SignatureEncoding, Verifier};

    #[test]
    fn signatures_are_the_rsa_crates_byte_for_byte_and_verify() {
        let key = crate::identity::tests::shared().private_key();
        let ours = RsaSigner::new(key);
        assert!(ours.fast());
        let theirs = SigningKey::<Sha256>::new(key.clone());
        for msg in [&b""[..], b"challenge\r\n\x00", &[0xA5; 4096]] {
            let a = ours.try_sign(msg).expect("ring signs");
            let b = theirs.try_sign(msg).expect("rsa signs");
            assert_eq!(a.to_bytes(), b.to_bytes());
            ours.verifying_key().verify(msg, &a).expect("verifies");
        }
        assert_eq!(
            ours.signature_algorithm_identifier().expect("identifier"),
            theirs.signature_algorithm_identifier().expect("identifier")
        );
    }

    #[test]
    fn a_key_ring_does_not_take_is_still_signed_with() {
        // 1024 bits: below ring's minimum.
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).expect("key");
        let signer = RsaSigner::new(&key);
        assert!(!signer.fast());
        let sig = signer.try_sign(b"challenge").expect("signs");
        signer
            .verifying_key()
            .verify(b"challenge", &sig)
            .expect("verifies");
    }
}
