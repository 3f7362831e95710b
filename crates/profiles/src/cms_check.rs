//! Checking a CMS SignedData the way a device checks a signed profile: the signature verifies
//! with the signer certificate the message itself includes, whoever issued it. Unlike
//! [`crate::cms::verify_attached`] (our own SHA-256/RSA signatures), this reads what MDM servers
//! sign with: RSA PKCS#1 v1.5 with SHA-1/256/384/512 and ECDSA on P-256/P-384, checked with
//! `ring`. Anything else is [`CmsCheckError::Unsupported`], which is not a bad signature: the
//! device may well accept it (`docs/protocol.md` §7.1).

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::oid::ObjectIdentifier;
use der::oid::db::{rfc5911, rfc5912};
use der::{Decode, Encode, Tag, Tagged};
use ring::signature::{self as sig, VerificationAlgorithm};
use x509_cert::Certificate;

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a message's signature could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmsCheckError {
    /// Not a CMS SignedData with attached content at all.
    #[error("not a CMS SignedData message: {0}")]
    NotSignedData(String),
    /// Well-formed, but signed in a way this checker does not read (BER encoding, another
    /// algorithm): neither good nor bad.
    #[error("cartprep cannot check this signature: {0}")]
    Unsupported(String),
    /// The signature, or the digest of the content, does not match.
    #[error("{0}")]
    DoesNotVerify(String),
}

/// A message whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSignature {
    /// The signed content, exactly as embedded.
    pub content: Vec<u8>,
    /// The signer certificate's subject (RFC 4514 form, as `x509-cert` prints it).
    pub signer_subject: String,
}

/// Verifies `bytes` (DER) with the signer certificate it includes.
pub fn verify_by_included_signer(bytes: &[u8]) -> Result<CheckedSignature, CmsCheckError> {
    let not = |why: String| CmsCheckError::NotSignedData(why);
    let unsupported = |why: String| CmsCheckError::Unsupported(why);
    let bad = |why: &str| CmsCheckError::DoesNotVerify(why.to_owned());
    let info = match ContentInfo::from_der(bytes) {
        Ok(info) => info,
        // A BER message is still a signed one; only its signature is out of our reach.
        Err(_) if crate::ber::signed_data(bytes).is_some() => {
            return Err(unsupported("the message is BER-encoded, not DER".into()));
        }
        Err(e) => return Err(not(e.to_string())),
    };
    if info.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(not(format!("content type {}", info.content_type)));
    }
    let sd: SignedData = info
        .content
        .decode_as()
        .map_err(|e| not(format!("malformed SignedData ({e})")))?;
    let content = match &sd.encap_content_info.econtent {
        Some(any) if any.tag() == Tag::OctetString => any.value().to_vec(),
        Some(any) => return Err(not(format!("eContent is {}", any.tag()))),
        None => return Err(not("no attached content (detached)".into())),
    };
    let signer = sd
        .signer_infos
        .0
        .get(0)
        .ok_or_else(|| not("no signer".into()))?;
    let cert = crate::cms::signer_certificate(&sd, &signer.sid)
        .ok_or_else(|| bad("the signer's certificate is not in the message"))?;
    let digest = digest_algorithm(&signer.digest_alg.oid)
        .ok_or_else(|| unsupported(format!("digest algorithm {}", signer.digest_alg.oid)))?;
    let signed = match &signer.signed_attrs {
        Some(attrs) => {
            let md = attrs
                .iter()
                .find(|a| a.oid == rfc5911::ID_MESSAGE_DIGEST)
                .and_then(|a| a.values.get(0))
                .ok_or_else(|| bad("no messageDigest attribute"))?
                .decode_as::<der::asn1::OctetStringRef<'_>>()
                .map_err(|_| bad("malformed messageDigest attribute"))?;
            if md.as_bytes() != ring::digest::digest(digest, &content).as_ref() {
                return Err(bad("the content does not match its signed digest"));
            }
            attrs
                .to_der()
                .map_err(|e| not(format!("signed attributes ({e})")))?
        }
        None => content.clone(),
    };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.raw_bytes();
    let algorithm = verification_algorithm(spki, digest)
        .ok_or_else(|| unsupported(format!("a {} key with {:?}", spki.algorithm.oid, digest)))?;
    sig::UnparsedPublicKey::new(algorithm, key)
        .verify(&signed, signer.signature.as_bytes())
        .map_err(|_| bad("not made with the key of the signer certificate it includes"))?;
    Ok(CheckedSignature {
        content,
        signer_subject: cert.tbs_certificate.subject.to_string(),
    })
}

/// The subject of the first certificate a message carries, BER or DER, without checking
/// anything: to name a signer whose signature could not be checked.
pub fn first_certificate_subject(bytes: &[u8]) -> Option<String> {
    let first = crate::ber::signed_data(bytes)?
        .certificates
        .into_iter()
        .next()?;
    Certificate::from_der(&first)
        .ok()
        .map(|c| c.tbs_certificate.subject.to_string())
}

fn digest_algorithm(oid: &ObjectIdentifier) -> Option<&'static ring::digest::Algorithm> {
    match *oid {
        ID_SHA1 => Some(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        rfc5912::ID_SHA_256 => Some(&ring::digest::SHA256),
        rfc5912::ID_SHA_384 => Some(&ring::digest::SHA384),
        rfc5912::ID_SHA_512 => Some(&ring::digest::SHA512),
        _ => None,
    }
}

/// The `ring` algorithm for the signer's key and the digest it signed with.
fn verification_algorithm(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    digest: &'static ring::digest::Algorithm,
) -> Option<&'static dyn VerificationAlgorithm> {
    let d = |a: &ring::digest::Algorithm| std::ptr::eq(digest, a);
    if spki.algorithm.oid == ID_RSA_ENCRYPTION {
        return if d(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY) {
            Some(&sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)
        } else if d(&ring::digest::SHA256) {
            Some(&sig::RSA_PKCS1_2048_8192_SHA256)
        } else if d(&ring::digest::SHA384) {
            Some(&sig::RSA_PKCS1_2048_8192_SHA384)
        } else if d(&ring::digest::SHA512) {
            Some(&sig::RSA_PKCS1_2048_8192_SHA512)
        } else {
            None
        };
    }
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())?;
    match (curve, d(&ring::digest::SHA256), d(&ring::digest::SHA384)) {
        (SECP256R1, true, _) => Some(&sig::ECDSA_P256_SHA256_ASN1),
        (SECP256R1, _, true) => Some(&sig::ECDSA_P256_SHA384_ASN1),
        (SECP384R1, true, _) => Some(&sig::ECDSA_P384_SHA256_ASN1),
        (SECP384R1, _, true) => Some(&sig::ECDSA_P384_SHA384_ASN1),
        _ => None,
    }
}

/// The certificate's SubjectKeyIdentifier extension value.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::shared;

    #[test]
    fn our_own_signature_verifies_and_names_its_signer() {
        let id = shared();
        let der = crate::sign_attached(id, b"profile bytes").expect("sign");
        let checked = verify_by_included_signer(&der).expect("verifies");
        assert_eq!(checked.content, b"profile bytes");
        assert!(
            checked.signer_subject.contains("Apple Configurator"),
            "{checked:?}"
        );
        assert_eq!(
            first_certificate_subject(&der).as_deref(),
            Some(checked.signer_subject.as_str())
        );
    }

    #[test]
    fn a_changed_content_or_signature_does_not_verify() {
        let id = shared();
        let der = crate::sign_attached(id, b"0123456789abcdef").expect("sign");
        let pos = der
            .windows(16)
            .position(|w| w == b"0123456789abcdef")
            .expect("content in the DER");
        let mut content = der.clone();
        content[pos] = b'X';
        assert!(matches!(
            verify_by_included_signer(&content),
            Err(CmsCheckError::DoesNotVerify(_))
        ));
        // The signature is the message's last bytes.
        let mut signature = der.clone();
        let last = signature.len() - 1;
        signature[last] ^= 0x01;
        assert_eq!(
            verify_by_included_signer(&signature),
            Err(CmsCheckError::DoesNotVerify(
                "not made with the key of the signer certificate it includes".into()
            ))
        );
    }

    #[test]
    fn what_is_not_cms_is_told_apart_from_a_bad_signature() {
        for bytes in [
            &b"<?xml version=\"1.0\"?><plist/>"[..],
            &[0x30, 0x03, 0x02, 0x01, 0x00],
        ] {
            assert!(
                matches!(
                    verify_by_included_signer(bytes),
                    Err(CmsCheckError::NotSignedData(_))
                ),
                "{bytes:?}"
            );
        }
    }

    /// Signs `content` with a new key made by `openssl` (`key` as `openssl req -newkey`
    /// takes it, `curve` for EC) and the digest `md`; `stream` makes OpenSSL write BER.
    fn openssl_signed(key: &str, curve: Option<&str>, md: &str, stream: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("the `openssl` command is needed for this test (CI installs it)");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (cert, private, input, out) = (path("cert"), path("key"), path("in"), path("out"));
        std::fs::write(&input, b"<plist/>").unwrap();
        let mut req = vec!["req", "-x509", "-newkey", key];
        let curve_opt = curve.map(|c| format!("ec_paramgen_curve:{c}"));
        if let Some(c) = &curve_opt {
            req.extend(["-pkeyopt", c.as_str()]);
        }
        req.extend(["-nodes", "-keyout", &private, "-out", &cert, "-days", "2"]);
        req.extend(["-subj", "/CN=MDM profile signer/O=Example"]);
        run(&req);
        let mut sign = vec!["cms", "-sign", "-binary", "-nodetach", "-outform", "DER"];
        sign.extend(["-md", md, "-signer", &cert, "-inkey", &private]);
        sign.extend(["-in", &input, "-out", &out]);
        if stream {
            sign.push("-stream");
        }
        run(&sign);
        std::fs::read(&out).unwrap()
    }

    #[test]
    fn signatures_made_with_openssl_in_the_usual_algorithms_verify() {
        for (key, curve, md) in [
            ("rsa:2048", None, "sha256"),
            ("rsa:2048", None, "sha1"),
            ("rsa:2048", None, "sha512"),
            ("ec", Some("P-256"), "sha256"),
            ("ec", Some("P-384"), "sha384"),
        ] {
            let der = openssl_signed(key, curve, md, false);
            let checked = verify_by_included_signer(&der)
                .unwrap_or_else(|e| panic!("{key} {curve:?} {md}: {e}"));
            assert_eq!(checked.content, b"<plist/>", "{key} {md}");
            assert!(
                checked.signer_subject.contains("MDM profile signer"),
                "{checked:?}"
            );
        }
    }

    #[test]
    fn a_ber_message_is_not_checked_rather_than_called_bad() {
        let ber = openssl_signed("rsa:2048", None, "sha256", true);
        assert!(matches!(
            verify_by_included_signer(&ber),
            Err(CmsCheckError::Unsupported(_))
        ));
        assert!(
            first_certificate_subject(&ber)
                .unwrap()
                .contains("MDM profile signer")
        );
    }
}
