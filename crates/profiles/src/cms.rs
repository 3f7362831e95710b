//! CMS SignedData with the content attached: the answer to MCInstall's `Escalate` challenge and
//! to supervised pairing's `PairingChallenge`.
//!
//! What the device checks (`docs/protocol.md` §5.2): the signature verifies, the first
//! certificate is byte-equal to the escalated supervisor certificate, and the embedded content is
//! exactly the challenge. So the content is signed **as raw bytes** — never canonicalised (no
//! LF → CRLF, the bug behind pymobiledevice3's intermittent `SignedRequestRejected`).
//!
//! Layout: `ContentInfo { signedData, SignedData { version 1, digestAlgorithms {sha-256},
//! encapContentInfo { id-data, content }, certificates [signer], signerInfos [{ version 1,
//! issuerAndSerialNumber, sha-256, signedAttrs {contentType, signingTime, messageDigest},
//! sha256WithRSAEncryption, signature }] } }`, DER.

use cms::builder::{SignedDataBuilder, SignerInfoBuilder, create_signing_time_attribute};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier};
use der::asn1::OctetStringRef;
use der::oid::db::{rfc5911, rfc5912};
use der::{Any, Decode, Encode, Tag, Tagged};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::{ProfileError, Result, crypto};
use crate::identity::SupervisionIdentity;

/// Signs `content` with the identity: CMS SignedData, DER, content attached exactly as given,
/// SHA-256, the signer certificate included, signer identified by issuer and serial number,
/// signed attributes contentType, signingTime and messageDigest.
pub fn sign_attached(identity: &SupervisionIdentity, content: &[u8]) -> Result<Vec<u8>> {
    let certificate = identity.certificate().clone();
    let signer = identity.signer();
    let econtent = Any::new(Tag::OctetString, content).map_err(crypto("CMS content"))?;
    let eci = EncapsulatedContentInfo {
        econtent_type: rfc5911::ID_DATA,
        econtent: Some(econtent),
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: certificate.tbs_certificate.issuer.clone(),
        serial_number: certificate.tbs_certificate.serial_number.clone(),
    });
    // cms 0.2.3's builder::Error is Display but not std::error::Error: mapped here.
    let mut signer_info = SignerInfoBuilder::new(signer, sid, sha256.clone(), &eci, None)
        .map_err(crypto("CMS signer"))?;
    signer_info
        .add_signed_attribute(create_signing_time_attribute().map_err(crypto("CMS signing time"))?)
        .map_err(crypto("CMS signing time"))?;
    let mut builder = SignedDataBuilder::new(&eci);
    builder
        .add_digest_algorithm(sha256)
        .map_err(crypto("CMS digest algorithm"))?
        .add_certificate(CertificateChoices::Certificate(certificate))
        .map_err(crypto("CMS certificate"))?
        .add_signer_info::<_, Signature>(signer_info)
        .map_err(crypto("CMS signature"))?;
    let content_info = builder.build().map_err(crypto("CMS SignedData"))?;
    content_info.to_der().map_err(crypto("CMS encoding"))
}

impl SupervisionIdentity {
    /// Signs an MCInstall `Escalate` challenge or a supervised-pairing `PairingChallenge`:
    /// the DER to send as `SignedRequest` / `ChallengeResponse`. See [`sign_attached`].
    pub fn sign_challenge(&self, challenge: &[u8]) -> Result<Vec<u8>> {
        sign_attached(self, challenge)
    }
}

/// The content and certificates of a SignedData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedContent {
    /// The encapsulated content (eContent), exactly as embedded.
    pub content: Vec<u8>,
    /// The certificates (DER) in the order they appear in the message; empty when the message
    /// carries none.
    pub certificates: Vec<Vec<u8>>,
}

/// Reads the attached content and certificates of a CMS SignedData without verifying the
/// signature (e.g. a signed `.mobileconfig`). DER is parsed with the `cms` crate; BER
/// (indefinite lengths, chunked content, as macOS `security cms` writes) is read with a small
/// BER reader.
pub fn signed_content(bytes: &[u8]) -> Result<SignedContent> {
    let what = "CMS SignedData";
    match signed_data_der(bytes) {
        Ok(sd) => {
            let content = match &sd.encap_content_info.econtent {
                Some(any) => econtent_bytes(any)?,
                None => {
                    return Err(ProfileError::invalid(
                        what,
                        "no attached content (detached)",
                    ));
                }
            };
            // The wire order of the certificates (the cms crate sorts the SET on decoding).
            let certificates = crate::ber::signed_data(bytes)
                .map(|s| s.certificates)
                .unwrap_or_default();
            Ok(SignedContent {
                content,
                certificates,
            })
        }
        Err(der_error) => match crate::ber::signed_data(bytes) {
            Some(s) => match s.content {
                Some(content) => Ok(SignedContent {
                    content,
                    certificates: s.certificates,
                }),
                None => Err(ProfileError::invalid(
                    what,
                    "no attached content (detached)",
                )),
            },
            None => Err(der_error),
        },
    }
}

/// The certificate among those a SignedData carries that `sid` names: by issuer and serial
/// number, or by subject key identifier.
pub(crate) fn signer_certificate<'a>(
    sd: &'a SignedData,
    sid: &SignerIdentifier,
) -> Option<&'a Certificate> {
    sd.certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        })
        .find(|c| match sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                c.tbs_certificate.issuer == ias.issuer
                    && c.tbs_certificate.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                subject_key_id(c).as_deref() == Some(ski.0.as_bytes())
            }
        })
}

fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    use x509_cert::ext::pkix::SubjectKeyIdentifier;
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == rfc5912::ID_CE_SUBJECT_KEY_IDENTIFIER)?;
    SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())
        .ok()
        .map(|ski| ski.0.as_bytes().to_vec())
}

/// Verifies a DER SignedData made by [`sign_attached`] (or any signer using SHA-256 with RSA
/// PKCS#1 v1.5 and signed attributes) the way the device does: the first signer's signature
/// verifies with its certificate (found in the message by issuer and serial number), and the
/// messageDigest attribute is the SHA-256 of the attached content. Returns the content and the
/// certificates; checking that `certificates[0]` is the expected supervisor certificate is the
/// caller's job.
pub fn verify_attached(bytes: &[u8]) -> Result<SignedContent> {
    let what = "CMS SignedData";
    let fail = |reason: &str| ProfileError::invalid(what, reason.to_owned());
    let sd = signed_data_der(bytes)?;
    let content = match &sd.encap_content_info.econtent {
        Some(any) => econtent_bytes(any)?,
        None => return Err(fail("no attached content (detached)")),
    };
    let signer = sd.signer_infos.0.get(0).ok_or_else(|| fail("no signer"))?;
    if signer.digest_alg.oid != rfc5912::ID_SHA_256 {
        return Err(ProfileError::invalid(
            what,
            format!("unsupported digest algorithm {}", signer.digest_alg.oid),
        ));
    }
    if !matches!(signer.sid, SignerIdentifier::IssuerAndSerialNumber(_)) {
        return Err(fail(
            "signer identified by key identifier, not issuer and serial",
        ));
    }
    let cert = signer_certificate(&sd, &signer.sid)
        .ok_or_else(|| fail("the signer's certificate is not in the message"))?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| fail("no signed attributes"))?;
    let attr_value = |oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.get(0))
    };
    let digest = attr_value(rfc5911::ID_MESSAGE_DIGEST)
        .ok_or_else(|| fail("no messageDigest attribute"))?
        .decode_as::<OctetStringRef<'_>>()
        .map_err(|_| fail("malformed messageDigest attribute"))?;
    if digest.as_bytes() != Sha256::digest(&content).as_slice() {
        return Err(fail("messageDigest does not match the content"));
    }
    let content_type = attr_value(rfc5911::ID_CONTENT_TYPE)
        .ok_or_else(|| fail("no contentType attribute"))?
        .decode_as::<der::oid::ObjectIdentifier>()
        .map_err(|_| fail("malformed contentType attribute"))?;
    if content_type != sd.encap_content_info.econtent_type {
        return Err(fail("contentType attribute differs from the content type"));
    }
    let signed = attrs
        .to_der()
        .map_err(|e| ProfileError::invalid(what, format!("signed attributes: {e}")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| ProfileError::invalid(what, format!("signer key: {e}")))?;
    let public_key = rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|_| fail("the signer's key is not RSA"))?;
    let signature = Signature::try_from(signer.signature.as_bytes())
        .map_err(|_| fail("malformed signature"))?;
    VerifyingKey::<Sha256>::new(public_key)
        .verify(&signed, &signature)
        .map_err(|_| fail("the signature does not verify"))?;
    let certificates = crate::ber::signed_data(bytes)
        .map(|s| s.certificates)
        .unwrap_or_default();
    Ok(SignedContent {
        content,
        certificates,
    })
}

fn signed_data_der(bytes: &[u8]) -> Result<SignedData> {
    let what = "CMS SignedData";
    let ci = ContentInfo::from_der(bytes)
        .map_err(|e| ProfileError::invalid(what, format!("not a DER CMS message ({e})")))?;
    if ci.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(ProfileError::invalid(
            what,
            format!("content type {} is not signedData", ci.content_type),
        ));
    }
    ci.content
        .decode_as::<SignedData>()
        .map_err(|e| ProfileError::invalid(what, format!("malformed SignedData ({e})")))
}

fn econtent_bytes(any: &Any) -> Result<Vec<u8>> {
    if any.tag() != Tag::OctetString {
        return Err(ProfileError::invalid(
            "CMS SignedData",
            format!("eContent is {} rather than an OCTET STRING", any.tag()),
        ));
    }
    Ok(any.value().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::shared;

    /// Content with LF, CR, CRLF, NUL and high bytes: any canonicalisation changes it.
    const TRICKY: &[u8] = b"\x0a\x00\x0d\x0a\xff\x0d line\nend\r";

    #[test]
    fn cms_crate_reads_back_content_and_certificate() {
        let id = shared();
        let der = sign_attached(id, TRICKY).expect("sign");
        let ci = ContentInfo::from_der(&der).expect("ContentInfo");
        assert_eq!(ci.content_type, rfc5911::ID_SIGNED_DATA);
        let sd: SignedData = ci.content.decode_as().expect("SignedData");
        assert_eq!(sd.encap_content_info.econtent_type, rfc5911::ID_DATA);
        let econtent = sd.encap_content_info.econtent.as_ref().expect("attached");
        assert_eq!(econtent.tag(), Tag::OctetString);
        assert_eq!(econtent.value(), TRICKY);
        let certs = sd.certificates.as_ref().expect("certificates");
        let CertificateChoices::Certificate(first) = certs.0.get(0).expect("one cert") else {
            panic!("not an X.509 certificate");
        };
        assert_eq!(first.to_der().expect("der"), id.certificate_der());

        // Signer: issuerAndSerialNumber, SHA-256, the three signed attributes.
        let si = sd.signer_infos.0.get(0).expect("signer");
        let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
            panic!("sid is not issuerAndSerialNumber");
        };
        assert_eq!(
            ias.serial_number,
            id.certificate().tbs_certificate.serial_number
        );
        assert_eq!(si.digest_alg.oid, rfc5912::ID_SHA_256);
        let mut oids: Vec<String> = si
            .signed_attrs
            .as_ref()
            .expect("signed attributes")
            .iter()
            .map(|a| a.oid.to_string())
            .collect();
        oids.sort();
        assert_eq!(
            oids,
            vec![
                "1.2.840.113549.1.9.3", // contentType
                "1.2.840.113549.1.9.4", // messageDigest
                "1.2.840.113549.1.9.5", // signingTime
            ]
        );

        // The wire order: the signer certificate comes first.
        let read = signed_content(&der).expect("signed_content");
        assert_eq!(read.content, TRICKY);
        assert_eq!(
            read.certificates.first().map(Vec::as_slice),
            Some(id.certificate_der())
        );
    }

    #[test]
    fn signature_verifies_and_tampering_is_caught() {
        let id = shared();
        for content in [TRICKY, b"", &[0x42u8; 8][..]] {
            let der = id.sign_challenge(content).expect("sign");
            let verified = verify_attached(&der).expect("verify");
            assert_eq!(verified.content, content);
            assert_eq!(verified.certificates[0], id.certificate_der());
        }
        let mut der = id
            .sign_challenge(b"\x01\x02\x03\x04\x05\x06\x07\x0a")
            .expect("sign");
        // Flip the last content byte (0x0a) in place.
        let pos = der
            .windows(8)
            .position(|w| w == b"\x01\x02\x03\x04\x05\x06\x07\x0a")
            .expect("content in the DER");
        der[pos + 7] = 0x0d;
        let e = verify_attached(&der).expect_err("tampered");
        assert!(e.to_string().contains("messageDigest"), "{e}");
    }

    /// The `openssl` command, or a failure telling how to get it: this test must not pass
    /// silently on a machine without it.
    fn openssl() -> std::process::Command {
        match std::process::Command::new("openssl")
            .arg("version")
            .output()
        {
            Ok(out) if out.status.success() => std::process::Command::new("openssl"),
            _ => panic!(
                "the `openssl` command is needed to check CMS signatures with an independent \
                 verifier: install it (Debian: apt-get install openssl; CI installs it)"
            ),
        }
    }

    #[test]
    fn openssl_verifies_the_signature_and_content_is_intact() {
        let id = shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, id.certificate_pem().expect("pem")).expect("write cert");
        // Random challenges like the device's, plus fixed ones full of LF and CR.
        let mut contents: Vec<Vec<u8>> = vec![TRICKY.to_vec(), b"\n\n\n\n\r\r\r\r".to_vec()];
        for _ in 0..4 {
            let mut c = [0u8; 8];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut c);
            c[3] = 0x0a;
            contents.push(c.to_vec());
        }
        for (i, content) in contents.iter().enumerate() {
            let sig = dir.path().join(format!("sig{i}.der"));
            let out = dir.path().join(format!("content{i}.bin"));
            std::fs::write(&sig, sign_attached(id, content).expect("sign")).expect("write sig");
            let result = openssl()
                .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
                .arg(&sig)
                .arg("-CAfile")
                .arg(&cert)
                .args(["-purpose", "any", "-out"])
                .arg(&out)
                .output()
                .expect("run openssl");
            assert!(
                result.status.success(),
                "openssl cms -verify failed: {}",
                String::from_utf8_lossy(&result.stderr)
            );
            assert_eq!(&std::fs::read(&out).expect("read content"), content);
        }

        // And it rejects a signature made by another key with the same certificate.
        let other = crate::SupervisionIdentity::create("Other").expect("other");
        let sig = dir.path().join("foreign.der");
        std::fs::write(&sig, sign_attached(&other, b"x").expect("sign")).expect("write");
        let result = openssl()
            .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
            .arg(&sig)
            .arg("-CAfile")
            .arg(&cert)
            .args(["-purpose", "any", "-out"])
            .arg(dir.path().join("foreign.bin"))
            .output()
            .expect("run openssl");
        assert!(
            !result.status.success(),
            "openssl accepted a foreign signer"
        );
    }

    #[test]
    fn ber_streamed_openssl_signature_is_read() {
        // OpenSSL's streaming mode writes indefinite lengths and a chunked content: the BER path.
        let id = shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let keybag = dir.path().join("keybag.pem");
        std::fs::write(&keybag, id.to_keybag_pem().expect("keybag").as_bytes()).expect("write");
        let input = dir.path().join("in.bin");
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&input, &content).expect("write");
        let out = dir.path().join("signed.p7");
        let result = openssl()
            .args([
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-stream",
                "-outform",
                "DER",
            ])
            .arg("-signer")
            .arg(&keybag)
            .arg("-in")
            .arg(&input)
            .arg("-out")
            .arg(&out)
            .output()
            .expect("run openssl");
        assert!(
            result.status.success(),
            "openssl cms -sign failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let der = std::fs::read(&out).expect("read");
        assert_eq!(&der[..2], &[0x30, 0x80], "expected indefinite-length BER");
        let read = signed_content(&der).expect("BER SignedData");
        assert_eq!(read.content, content);
        assert_eq!(
            read.certificates.first().map(Vec::as_slice),
            Some(id.certificate_der())
        );
    }

    #[test]
    fn signatures_differ_only_by_time_not_content() {
        let id = shared();
        let a = signed_content(&sign_attached(id, b"abc").expect("a")).expect("read a");
        let b = signed_content(&sign_attached(id, b"abd").expect("b")).expect("read b");
        assert_eq!(a.content, b"abc");
        assert_eq!(b.content, b"abd");
    }

    #[test]
    fn not_cms_is_an_input_error() {
        let e = signed_content(b"\x30\x03\x02\x01\x01").expect_err("not cms");
        assert!(e.is_input_error(), "{e}");
        let e = verify_attached(b"hello").expect_err("not cms");
        assert!(e.is_input_error(), "{e}");
    }
}
