//! What the device does with a signed challenge (MCInstall EscalateResponse, supervised Pair):
//! a CMS SignedData with the content attached, whose first certificate must be the expected
//! supervisor certificate and whose signature (SHA-1 or SHA-256, RSA PKCS#1 v1.5) must verify.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::OctetString;
use der::{Decode, Encode};
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier;
use sha2::Digest;

const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const ID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const ID_SHA1: &str = "1.3.14.3.2.26";
const ID_SHA256: &str = "2.16.840.1.101.3.4.2.1";

/// Why a signed request was rejected (for the simulator's own log).
pub type Rejection = String;

/// Checks `der` and returns the signed content when it is valid and signed by `expected_cert`.
pub fn verify_attached(der: &[u8], expected_cert: &[u8]) -> Result<Vec<u8>, Rejection> {
    verify(der, Some(expected_cert)).map(|(content, _)| content)
}

/// Checks `der` as a signed profile is checked: the signature verifies with the first included
/// certificate, whoever it belongs to. Returns the content and that certificate (DER).
pub fn verify_attached_by_included(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Rejection> {
    verify(der, None)
}

fn verify(der: &[u8], expected_cert: Option<&[u8]>) -> Result<(Vec<u8>, Vec<u8>), Rejection> {
    let info = ContentInfo::from_der(der).map_err(|e| format!("not a CMS ContentInfo: {e}"))?;
    if info.content_type.to_string() != ID_SIGNED_DATA {
        return Err("not SignedData".into());
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| format!("bad SignedData: {e}"))?;
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("content is detached")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("content is not an OCTET STRING: {e}"))?
        .as_bytes()
        .to_vec();
    let first = match signed
        .certificates
        .as_ref()
        .and_then(|set| set.0.iter().next())
    {
        Some(CertificateChoices::Certificate(c)) => c.to_der().map_err(|e| e.to_string())?,
        _ => return Err("no signer certificate included".into()),
    };
    if expected_cert.is_some_and(|e| first != e) {
        return Err("the first certificate is not the supervisor certificate".into());
    }
    let cert = x509_cert::Certificate::from_der(&first).map_err(|e| e.to_string())?;
    let key = RsaPublicKey::from_pkcs1_der(
        cert.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|e| format!("signer key is not RSA: {e}"))?;
    let signer = signed.signer_infos.0.iter().next().ok_or("no SignerInfo")?;
    let digest_oid = signer.digest_alg.oid.to_string();
    let digest = |bytes: &[u8]| -> Result<Vec<u8>, Rejection> {
        match digest_oid.as_str() {
            ID_SHA256 => Ok(sha2::Sha256::digest(bytes).to_vec()),
            ID_SHA1 => Ok(sha1::Sha1::digest(bytes).to_vec()),
            other => Err(format!("unsupported digest {other}")),
        }
    };
    // With signed attributes, the signature covers their DER (as a SET) and the
    // messageDigest attribute must be the content's digest.
    let signed_bytes = match &signer.signed_attrs {
        Some(attrs) => {
            let md = attrs
                .iter()
                .find(|a| a.oid.to_string() == ID_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .ok_or("signed attributes lack messageDigest")?
                .decode_as::<OctetString>()
                .map_err(|e| format!("bad messageDigest: {e}"))?;
            if md.as_bytes() != digest(&content)?.as_slice() {
                return Err("messageDigest does not match the content".into());
            }
            attrs.to_der().map_err(|e| e.to_string())?
        }
        None => content.clone(),
    };
    let signature = rsa::pkcs1v15::Signature::try_from(signer.signature.as_bytes())
        .map_err(|e| e.to_string())?;
    let ok = match digest_oid.as_str() {
        ID_SHA256 => {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(&signed_bytes, &signature)
        }
        _ => rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key).verify(&signed_bytes, &signature),
    };
    ok.map_err(|_| "signature does not verify".to_string())?;
    Ok((content, first))
}
