//! CMS SignedData with the content attached, as the fake servers and the virtual iPads sign:
//! the MDM's enrollment profile, and the device's MachineInfo request (Apple's Device
//! Management documentation, "MachineInfo": "CMS-signed with the device identity
//! certificate"). SHA-256 with RSA PKCS#1 v1.5, the signer's certificate included.

use cms::builder::{SignedDataBuilder, SignerInfoBuilder, create_signing_time_attribute};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::oid::db::{rfc5911, rfc5912};
use der::{Any, Decode, Encode, Tag};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::SimError;

fn err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> SimError {
    move |e| SimError::Key(format!("{what}: {e}"))
}

/// Signs `content` with `key`, whose certificate is `cert_der`; returns the DER ContentInfo.
pub fn sign_attached(
    key: &RsaPrivateKey,
    cert_der: &[u8],
    content: &[u8],
) -> Result<Vec<u8>, SimError> {
    let cert = Certificate::from_der(cert_der).map_err(|e| err("signer certificate")(&e))?;
    let signer = SigningKey::<Sha256>::new(key.clone());
    let econtent = Any::new(Tag::OctetString, content).map_err(|e| err("CMS content")(&e))?;
    let eci = EncapsulatedContentInfo {
        econtent_type: rfc5911::ID_DATA,
        econtent: Some(econtent),
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let mut info = SignerInfoBuilder::new(&signer, sid, sha256.clone(), &eci, None)
        .map_err(|e| err("CMS signer")(&e))?;
    info.add_signed_attribute(
        create_signing_time_attribute().map_err(|e| err("CMS signing time")(&e))?,
    )
    .map_err(|e| err("CMS signing time")(&e))?;
    let mut builder = SignedDataBuilder::new(&eci);
    builder
        .add_digest_algorithm(sha256)
        .map_err(|e| err("CMS digest")(&e))?
        .add_certificate(CertificateChoices::Certificate(cert))
        .map_err(|e| err("CMS certificate")(&e))?
        .add_signer_info::<_, Signature>(info)
        .map_err(|e| err("CMS signature")(&e))?;
    builder
        .build()
        .map_err(|e| err("CMS SignedData")(&e))?
        .to_der()
        .map_err(|e| err("CMS encoding")(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_signed_here_verifies_as_the_device_checks_it() {
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let (_, leaf, _) =
            crate::activation_server::loopback_certificates(&key, "CN=test CA").unwrap();
        let signed = sign_attached(&key, &leaf, b"hello").unwrap();
        let (content, cert) = crate::cms_verify::verify_attached_by_included(&signed).unwrap();
        assert_eq!(content, b"hello");
        assert_eq!(cert, leaf);
        let mut tampered = signed.clone();
        let at = tampered.windows(5).position(|w| w == b"hello").unwrap();
        tampered[at] = b'j';
        assert!(crate::cms_verify::verify_attached_by_included(&tampered).is_err());
    }
}
