//! The supervision identity: an RSA key and a self-signed certificate.
//!
//! The certificate's DER bytes go into the cloud configuration's `SupervisorHostCertificates`
//! and into `Escalate.SupervisorCertificate`; the device compares them **byte for byte**, so the
//! DER read from a file or a PKCS#12 is kept exactly as it was and never re-encoded. The key signs
//! the escalation and supervised-pairing challenges (see [`crate::cms`]).
//!
//! Storage in a state folder: `supervision.crt.der` (the certificate, DER) and
//! `supervision.key.pem` (the key, unencrypted PKCS#8 PEM, mode 0600 from creation).

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime};
use der::oid::AssociatedOid;
use der::oid::db::{rfc4519, rfc5280};
use der::pem::LineEnding;
use der::referenced::OwnedToRef;
use der::{Any, DateTime, Decode, Encode, Tag, Tagged};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use crate::error::{ProfileError, Result, crypto};
use crate::files;

/// File name of the certificate (DER) in a state folder.
pub const CERTIFICATE_FILE: &str = "supervision.crt.der";
/// File name of the private key (PKCS#8 PEM, mode 0600) in a state folder.
pub const KEY_FILE: &str = "supervision.key.pem";

/// Largest certificate, key or PKCS#12 file read (they are a few kilobytes).
const MAX_INPUT: u64 = 1 << 20;
/// RSA modulus size of a new identity, as Apple Configurator makes it.
const KEY_BITS: usize = 2048;
/// Validity of a new identity: from 10 minutes ago (clock skew) to 20 years ahead.
const BACKDATE: Duration = Duration::from_secs(10 * 60);
const VALID_YEARS: u16 = 20;

/// A supervision identity: certificate (exact DER bytes) and matching RSA private key.
///
/// `Debug` never prints the key.
#[derive(Clone)]
pub struct SupervisionIdentity {
    certificate_der: Vec<u8>,
    certificate: Certificate,
    key: RsaPrivateKey,
    /// The key, ready for signing (converted once; see `rsa_signer.rs`).
    signer: std::sync::Arc<crate::rsa_signer::RsaSigner>,
}

impl std::fmt::Debug for SupervisionIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisionIdentity")
            .field("subject", &self.subject())
            .field("sha256", &self.fingerprint_sha256())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SupervisionIdentity {
    /// Makes a new identity the way Apple Configurator does: RSA-2048, self-signed with
    /// sha256WithRSAEncryption, subject = issuer =
    /// `CN=Apple Configurator: <org> (<random UUID>), O=<org>` (CN first in the DER, as
    /// `openssl x509 -subject` prints it), a random positive 64-bit serial, valid from 10 minutes
    /// ago for 20 years, KeyUsage (critical) digitalSignature + keyEncipherment,
    /// ExtendedKeyUsage (critical) codeSigning, and a SubjectKeyIdentifier.
    pub fn create(organization: &str) -> Result<Self> {
        validate_organization(organization)?;
        let key = RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(crypto("RSA key generation"))?;
        let common_name = format!("Apple Configurator: {organization} ({})", random_uuid());
        let name = name_cn_o(&common_name, organization)?;

        let now = SystemTime::now();
        let validity = Validity {
            not_before: x509_time(
                DateTime::from_system_time(now - BACKDATE)
                    .map_err(crypto("certificate validity"))?,
            )?,
            not_after: x509_time(add_years(
                DateTime::from_system_time(now).map_err(crypto("certificate validity"))?,
                VALID_YEARS,
            )?)?,
        };

        let public_key = key.to_public_key();
        let spki = SubjectPublicKeyInfoOwned::from_key(public_key)
            .map_err(crypto("encoding the public key"))?;
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref())
            .map_err(crypto("subject key identifier"))?;
        let extensions = vec![
            extension(
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
                true,
            )?,
            extension(&ExtendedKeyUsage(vec![rfc5280::ID_KP_CODE_SIGNING]), true)?,
            extension(&ski, false)?,
        ];

        let signer = SigningKey::<Sha256>::new(key.clone());
        let signature_algorithm = signer
            .signature_algorithm_identifier()
            .map_err(crypto("signature algorithm"))?;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: random_serial()?,
            signature: signature_algorithm.clone(),
            issuer: name.clone(),
            validity,
            subject: name,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        let tbs_der = tbs.to_der().map_err(crypto("encoding the certificate"))?;
        let signature = signer
            .try_sign(&tbs_der)
            .map_err(crypto("signing the certificate"))?;
        let certificate = Certificate {
            tbs_certificate: tbs,
            signature_algorithm,
            signature: BitString::from_bytes(&signature.to_bytes())
                .map_err(crypto("encoding the signature"))?,
        };
        let der = certificate
            .to_der()
            .map_err(crypto("encoding the certificate"))?;
        Self::from_parts(der, key)
    }

    /// Builds an identity from certificate DER bytes (kept exactly) and a key, checking that the
    /// key belongs to the certificate.
    pub fn from_parts(certificate_der: Vec<u8>, key: RsaPrivateKey) -> Result<Self> {
        let certificate = parse_certificate(&certificate_der, "certificate")?;
        if certificate_public_key(&certificate, "certificate")? != key.to_public_key() {
            return Err(ProfileError::KeyMismatch {
                what: "identity".into(),
            });
        }
        Ok(SupervisionIdentity {
            certificate_der,
            certificate,
            signer: std::sync::Arc::new(crate::rsa_signer::RsaSigner::new(&key)),
            key,
        })
    }

    /// Imports the DER certificate and key files that `cfgutil -C/-K` take. The key may be
    /// PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 DER; PEM files are accepted too.
    pub fn from_der_files(cert: &Path, key: &Path) -> Result<Self> {
        let cert_bytes = files::read_limited(cert, MAX_INPUT)?;
        let key_bytes = files::read_limited(key, MAX_INPUT)?;
        let certificate_der = if looks_like_pem(&cert_bytes) {
            let blocks = pem_blocks(&cert_bytes, "certificate").map_err(|e| e.in_file(cert))?;
            match blocks.into_iter().find(|(label, _)| label == "CERTIFICATE") {
                Some((_, der)) => der,
                None => {
                    return Err(ProfileError::invalid(
                        cert.display().to_string(),
                        "no CERTIFICATE block in the PEM file",
                    ));
                }
            }
        } else {
            cert_bytes
        };
        let private_key = if looks_like_pem(&key_bytes) {
            let blocks = pem_blocks(&key_bytes, "key").map_err(|e| e.in_file(key))?;
            let mut found = None;
            for (label, der) in blocks {
                if let Some(k) =
                    key_from_pem_block(&label, &der, "key").map_err(|e| e.in_file(key))?
                {
                    found = Some(k);
                    break;
                }
            }
            found.ok_or_else(|| {
                ProfileError::invalid(key.display().to_string(), "no private key in the PEM file")
            })?
        } else {
            private_key_from_der(&key_bytes, "key").map_err(|e| e.in_file(key))?
        };
        parse_certificate(&certificate_der, "certificate").map_err(|e| e.in_file(cert))?;
        Self::from_parts(certificate_der, private_key).map_err(|e| match e {
            ProfileError::KeyMismatch { .. } => ProfileError::KeyMismatch {
                what: format!("{} and {}", cert.display(), key.display()),
            },
            other => other,
        })
    }

    /// Imports PEM text: one file or several concatenated, holding a certificate and an RSA key
    /// (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) in any order. This also reads
    /// pymobiledevice3's "keybag" file (key first, then certificate). With several certificates,
    /// the one matching the key is taken.
    pub fn from_pem(bytes: &[u8]) -> Result<Self> {
        let what = "PEM input";
        let blocks = pem_blocks(bytes, what)?;
        if blocks.is_empty() {
            return Err(ProfileError::invalid(what, "no PEM block found"));
        }
        let mut certificates = Vec::new();
        let mut keys = Vec::new();
        for (label, der) in blocks {
            if label == "CERTIFICATE" {
                certificates.push(der);
            } else if let Some(key) = key_from_pem_block(&label, &der, what)? {
                keys.push(key);
            }
        }
        let key = match keys.len() {
            0 => return Err(ProfileError::invalid(what, "no private key found")),
            1 => keys.remove(0),
            n => {
                return Err(ProfileError::invalid(
                    what,
                    format!("{n} private keys found; give exactly one"),
                ));
            }
        };
        if certificates.is_empty() {
            return Err(ProfileError::invalid(what, "no CERTIFICATE found"));
        }
        let public_key = key.to_public_key();
        for der in certificates {
            let cert = parse_certificate(&der, what)?;
            if certificate_public_key(&cert, what)? == public_key {
                return Self::from_parts(der, key);
            }
        }
        Err(ProfileError::KeyMismatch { what: what.into() })
    }

    /// Imports a PKCS#12 file (legacy PBE: 3DES / RC2 with a SHA-1 MAC, as macOS Keychain and
    /// `openssl pkcs12 -legacy` write it). PBES2/AES files give
    /// [`ProfileError::Pkcs12Unsupported`] explaining how to convert them.
    pub fn from_pkcs12(bytes: &[u8], password: &str) -> Result<Self> {
        let (certificates, keys) = crate::pkcs12::read(bytes, password, "PKCS#12 input")?;
        let what = "PKCS#12 input";
        let mut parsed_keys = Vec::new();
        for der in &keys {
            parsed_keys.push(private_key_from_der(der, what)?);
        }
        let key = match parsed_keys.len() {
            0 => return Err(ProfileError::invalid(what, "no private key in the file")),
            1 => parsed_keys.remove(0),
            n => {
                return Err(ProfileError::invalid(
                    what,
                    format!("{n} private keys in the file; export a single identity"),
                ));
            }
        };
        if certificates.is_empty() {
            return Err(ProfileError::invalid(what, "no certificate in the file"));
        }
        let public_key = key.to_public_key();
        for der in certificates {
            let cert = parse_certificate(&der, what)?;
            if certificate_public_key(&cert, what)? == public_key {
                return Self::from_parts(der, key);
            }
        }
        Err(ProfileError::KeyMismatch { what: what.into() })
    }

    /// Reads `supervision.crt.der` and `supervision.key.pem` from a state folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CERTIFICATE_FILE);
        let key_path = dir.join(KEY_FILE);
        let certificate_der = files::read_limited(&cert_path, MAX_INPUT)?;
        let key_pem = Zeroizing::new(files::read_limited(&key_path, MAX_INPUT)?);
        let mut key = None;
        for (label, der) in pem_blocks(&key_pem, "key").map_err(|e| e.in_file(&key_path))? {
            if let Some(k) =
                key_from_pem_block(&label, &der, "key").map_err(|e| e.in_file(&key_path))?
            {
                key = Some(k);
                break;
            }
        }
        let key = key.ok_or_else(|| {
            ProfileError::invalid(key_path.display().to_string(), "no private key in the file")
        })?;
        parse_certificate(&certificate_der, "certificate").map_err(|e| e.in_file(&cert_path))?;
        Self::from_parts(certificate_der, key).map_err(|e| match e {
            ProfileError::KeyMismatch { .. } => ProfileError::KeyMismatch {
                what: format!("{} and {}", cert_path.display(), key_path.display()),
            },
            other => other,
        })
    }

    /// True when a state folder holds an identity (either of its files).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(CERTIFICATE_FILE).exists() || dir.join(KEY_FILE).exists()
    }

    /// Writes `supervision.key.pem` (PKCS#8, mode 0600 from creation) and then
    /// `supervision.crt.der` into `dir` (created with mode 0700 if missing), each through a
    /// temporary file and a rename.
    pub fn save(&self, dir: &Path) -> Result<()> {
        files::create_private_dir(dir)?;
        let key_pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(crypto("encoding the private key"))?;
        files::write_private(&dir.join(KEY_FILE), key_pem.as_bytes())?;
        files::write_public(&dir.join(CERTIFICATE_FILE), &self.certificate_der)
    }

    /// The certificate's DER bytes, exactly as created or imported.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The parsed certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The private key.
    pub fn private_key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// The key as a signer for the certificate and CMS builders.
    pub fn signer(&self) -> &crate::rsa_signer::RsaSigner {
        &self.signer
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn certificate_pem(&self) -> Result<String> {
        der::pem::encode_string("CERTIFICATE", LineEnding::LF, &self.certificate_der)
            .map_err(crypto("encoding the certificate as PEM"))
    }

    /// A PKCS#12 file with the certificate and the key (key: pbeWithSHAAnd3-KeyTripleDES-CBC,
    /// certificate: pbeWithSHAAnd40BitRC2-CBC, SHA-1 MAC — the layout macOS Keychain reads;
    /// OpenSSL 3 needs `-legacy` to read it).
    pub fn to_pkcs12(&self, password: &str, friendly_name: &str) -> Result<Vec<u8>> {
        let key_der = self
            .key
            .to_pkcs8_der()
            .map_err(crypto("encoding the private key"))?;
        crate::pkcs12::write(
            &self.certificate_der,
            key_der.as_bytes(),
            password,
            friendly_name,
        )
    }

    /// pymobiledevice3's `--keybag` format: the PKCS#1 key PEM (`RSA PRIVATE KEY`) followed by
    /// the certificate PEM.
    pub fn to_keybag_pem(&self) -> Result<Zeroizing<String>> {
        let key = self
            .key
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(crypto("encoding the private key"))?;
        let cert = self.certificate_pem()?;
        let mut out = Zeroizing::new(String::with_capacity(key.len() + cert.len()));
        out.push_str(&key);
        out.push_str(&cert);
        Ok(out)
    }

    /// The organisation (the subject's first `O` attribute), if the certificate has one.
    pub fn organization(&self) -> Option<String> {
        name_attribute(&self.certificate.tbs_certificate.subject, rfc4519::O)
    }

    /// The subject's common name, if any.
    pub fn common_name(&self) -> Option<String> {
        name_attribute(&self.certificate.tbs_certificate.subject, rfc4519::CN)
    }

    /// The subject in DER order, as `openssl x509 -subject` prints it (`CN=…, O=…`).
    pub fn subject(&self) -> String {
        name_in_der_order(&self.certificate.tbs_certificate.subject)
    }

    /// The issuer in DER order.
    pub fn issuer(&self) -> String {
        name_in_der_order(&self.certificate.tbs_certificate.issuer)
    }

    /// The serial number as upper-case hex.
    pub fn serial_hex(&self) -> String {
        hex_upper(self.certificate.tbs_certificate.serial_number.as_bytes())
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.certificate
            .tbs_certificate
            .validity
            .not_before
            .to_system_time()
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.certificate
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    /// Start of validity, formatted `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn not_before_string(&self) -> String {
        self.certificate
            .tbs_certificate
            .validity
            .not_before
            .to_date_time()
            .to_string()
    }

    /// End of validity, formatted `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn not_after_string(&self) -> String {
        self.certificate
            .tbs_certificate
            .validity
            .not_after
            .to_date_time()
            .to_string()
    }

    /// SHA-256 of the certificate DER as lower-case hex, the same as `sha256sum
    /// supervision.crt.der`.
    pub fn fingerprint_sha256(&self) -> String {
        hex_lower(&Sha256::digest(&self.certificate_der))
    }
}

/// Organisation names: non-empty, no control characters, at most 200 characters.
fn validate_organization(organization: &str) -> Result<()> {
    if organization.trim().is_empty() {
        return Err(ProfileError::validation(
            "organization",
            "must not be empty",
        ));
    }
    if organization.chars().any(char::is_control) {
        return Err(ProfileError::validation(
            "organization",
            "must not contain control characters",
        ));
    }
    if organization.chars().count() > 200 {
        return Err(ProfileError::validation(
            "organization",
            "longer than 200 characters",
        ));
    }
    Ok(())
}

/// `CN=<cn>, O=<o>` with CN first in the DER (UTF8String values), one attribute per RDN.
fn name_cn_o(common_name: &str, organization: &str) -> Result<Name> {
    let rdn = |oid, value: &str| -> Result<RelativeDistinguishedName> {
        let atv = AttributeTypeAndValue {
            oid,
            value: Any::new(Tag::Utf8String, value.as_bytes()).map_err(crypto("name"))?,
        };
        let set = SetOfVec::try_from(vec![atv]).map_err(crypto("name"))?;
        Ok(RelativeDistinguishedName::from(set))
    };
    Ok(RdnSequence::from(vec![
        rdn(rfc4519::CN, common_name)?,
        rdn(rfc4519::O, organization)?,
    ]))
}

fn extension<E: AssociatedOid + Encode>(value: &E, critical: bool) -> Result<Extension> {
    Ok(Extension {
        extn_id: E::OID,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(crypto("extension"))?)
            .map_err(crypto("extension"))?,
    })
}

/// A random positive serial of 8 bytes (first byte 0x01..=0x7f, so the DER is minimal).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    SerialNumber::new(&bytes).map_err(crypto("serial number"))
}

/// A random (version 4) UUID, upper case 8-4-4-4-12.
pub(crate) fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format_uuid(&bytes)
}

/// Formats 16 bytes as an upper-case 8-4-4-4-12 UUID.
pub(crate) fn format_uuid(bytes: &[u8; 16]) -> String {
    let h = hex_upper(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
fn x509_time(dt: DateTime) -> Result<Time> {
    if dt.year() < 2050 {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(dt).map_err(crypto("certificate validity"))?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// The same calendar date and time `years` later (29 February becomes 28 February).
fn add_years(dt: DateTime, years: u16) -> Result<DateTime> {
    let year = dt.year() + years;
    let day = if dt.month() == 2 && dt.day() == 29 {
        28
    } else {
        dt.day()
    };
    DateTime::new(year, dt.month(), day, dt.hour(), dt.minutes(), dt.seconds())
        .map_err(crypto("certificate validity"))
}

fn parse_certificate(der: &[u8], what: &str) -> Result<Certificate> {
    Certificate::from_der(der)
        .map_err(|e| ProfileError::invalid(what, format!("not a DER X.509 certificate: {e}")))
}

fn certificate_public_key(cert: &Certificate, what: &str) -> Result<RsaPublicKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki
        .to_der()
        .map_err(|e| ProfileError::invalid(what, format!("certificate public key: {e}")))?;
    RsaPublicKey::from_public_key_der(&spki_der).map_err(|_| {
        ProfileError::invalid(
            what,
            format!(
                "the certificate's key is not RSA (algorithm {}); supervision identities are RSA",
                spki.algorithm.oid
            ),
        )
    })
}

/// An RSA private key from DER: PKCS#1 or PKCS#8.
pub(crate) fn private_key_from_der(der: &[u8], what: &str) -> Result<RsaPrivateKey> {
    if let Ok(key) = RsaPrivateKey::from_pkcs1_der(der) {
        return Ok(key);
    }
    match RsaPrivateKey::from_pkcs8_der(der) {
        Ok(key) => Ok(key),
        Err(rsa::pkcs8::Error::KeyMalformed) | Err(rsa::pkcs8::Error::PublicKey(_)) => {
            Err(ProfileError::invalid(
                what,
                "the private key is not an RSA key; supervision identities are RSA",
            ))
        }
        Err(_) if Certificate::from_der(der).is_ok() => Err(ProfileError::invalid(
            what,
            "this is a certificate, not a private key (are the certificate and key swapped?)",
        )),
        Err(_) if looks_like_encrypted_pkcs8(der) => Err(ProfileError::invalid(
            what,
            "the private key is encrypted; decrypt it first: `openssl pkey -in KEY -out key.pem`",
        )),
        Err(e) => Err(ProfileError::invalid(
            what,
            format!("not an RSA private key in PKCS#1 or PKCS#8 DER ({e})"),
        )),
    }
}

/// An EncryptedPrivateKeyInfo starts `SEQUENCE { SEQUENCE { OID (algorithm) …`, where a
/// PrivateKeyInfo starts `SEQUENCE { INTEGER (version) …` and a certificate
/// `SEQUENCE { SEQUENCE { [0] or INTEGER …`.
fn looks_like_encrypted_pkcs8(der: &[u8]) -> bool {
    fn header_len(bytes: &[u8]) -> Option<usize> {
        match *bytes.get(1)? {
            l if l < 0x80 => Some(2),
            l if (0x81..=0x84).contains(&l) => Some(2 + usize::from(l & 0x7f)),
            _ => None,
        }
    }
    if der.first() != Some(&0x30) {
        return false;
    }
    let Some(outer) = header_len(der) else {
        return false;
    };
    let inner = &der[outer.min(der.len())..];
    if inner.first() != Some(&0x30) {
        return false;
    }
    header_len(inner).and_then(|h| inner.get(h)) == Some(&0x06)
}

/// A key from one PEM block; `None` for blocks that are not keys (certificates, parameters).
fn key_from_pem_block(label: &str, der: &[u8], what: &str) -> Result<Option<RsaPrivateKey>> {
    match label {
        "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(der).map(Some).map_err(|e| {
            ProfileError::invalid(what, format!("RSA PRIVATE KEY: not a PKCS#1 RSA key ({e})"))
        }),
        "PRIVATE KEY" => private_key_from_der(der, what).map(Some),
        "ENCRYPTED PRIVATE KEY" => Err(ProfileError::invalid(
            what,
            "the private key is encrypted; decrypt it first: `openssl pkey -in KEY -out key.pem`",
        )),
        "EC PRIVATE KEY" | "DSA PRIVATE KEY" | "OPENSSH PRIVATE KEY" => Err(ProfileError::invalid(
            what,
            format!("{label}: supervision identities need an RSA key"),
        )),
        _ => Ok(None),
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Splits PEM text into its blocks `(label, DER)`; text between blocks is ignored (as OpenSSL
/// does with `Bag Attributes` lines).
pub(crate) fn pem_blocks(bytes: &[u8], what: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ProfileError::invalid(what, "not PEM text (invalid UTF-8)"))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| ProfileError::invalid(what, "unterminated PEM BEGIN line"))?;
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block.find(&end_marker).ok_or_else(|| {
            ProfileError::invalid(what, format!("PEM block {label} has no END line"))
        })? + end_marker.len();
        let pem = &block[..end];
        if pem.contains("Proc-Type:") {
            return Err(ProfileError::invalid(
                what,
                format!(
                    "{label} is encrypted (Proc-Type header); decrypt it first: \
                     `openssl pkey -in KEY -out key.pem`"
                ),
            ));
        }
        let normalised = normalise_pem(pem);
        let (decoded_label, der) = der::pem::decode_vec(normalised.as_bytes())
            .map_err(|e| ProfileError::invalid(what, format!("PEM block {label}: {e}")))?;
        blocks.push((decoded_label.to_owned(), der));
        rest = &block[end..];
    }
    Ok(blocks)
}

/// Re-wraps a PEM block's base64 in 64-column LF lines, so files with CRLF, other line widths
/// or trailing spaces decode with the strict RFC 7468 decoder.
fn normalise_pem(pem: &str) -> String {
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    let begin = lines.next().unwrap_or_default();
    let body: Vec<&str> = lines.collect();
    let (end, base64) = match body.split_last() {
        Some((end, b)) => (*end, b.concat()),
        None => ("", String::new()),
    };
    let mut out = String::with_capacity(pem.len() + 8);
    out.push_str(begin);
    out.push('\n');
    let chars: Vec<char> = base64.chars().filter(|c| !c.is_whitespace()).collect();
    for chunk in chars.chunks(64) {
        out.extend(chunk);
        out.push('\n');
    }
    out.push_str(end);
    out.push('\n');
    out
}

fn name_attribute(name: &Name, oid: der::oid::ObjectIdentifier) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == oid)
        .map(attribute_string)
}

fn attribute_string(atv: &AttributeTypeAndValue) -> String {
    let value = &atv.value;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            String::from_utf8_lossy(value.value()).into_owned()
        }
        Tag::BmpString => {
            let units: Vec<u16> = value
                .value()
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => atv.to_string(),
    }
}

fn name_in_der_order(name: &Name) -> String {
    name.0
        .iter()
        .map(|rdn| {
            rdn.0
                .iter()
                .map(|atv| {
                    let label = match atv.oid {
                        o if o == rfc4519::CN => "CN".to_owned(),
                        o if o == rfc4519::O => "O".to_owned(),
                        o if o == rfc4519::OU => "OU".to_owned(),
                        o if o == rfc4519::C => "C".to_owned(),
                        o if o == rfc4519::L => "L".to_owned(),
                        o if o == rfc4519::ST => "ST".to_owned(),
                        o => o.to_string(),
                    };
                    format!("{label}={}", attribute_string(atv))
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Key generation costs about half a second: share one identity between the tests.
    pub(crate) fn shared() -> &'static SupervisionIdentity {
        static ID: OnceLock<SupervisionIdentity> = OnceLock::new();
        ID.get_or_init(|| SupervisionIdentity::create("Lycée Test & Co").expect("create"))
    }

    #[test]
    fn created_certificate_has_the_configurator_fields() {
        let id = shared();
        let cert = id.certificate();
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.version, Version::V3);
        assert_eq!(tbs.subject, tbs.issuer, "self-signed");
        assert_eq!(id.organization().as_deref(), Some("Lycée Test & Co"));
        let cn = id.common_name().expect("CN");
        let prefix = "Apple Configurator: Lycée Test & Co (";
        assert!(cn.starts_with(prefix) && cn.ends_with(')'), "{cn}");
        let uuid = &cn[prefix.len()..cn.len() - 1];
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert_eq!(uuid.matches('-').count(), 4);
        // CN first in the DER, then O.
        assert_eq!(tbs.subject.0.len(), 2);
        assert_eq!(tbs.subject.0[0].0.get(0).expect("atv").oid, rfc4519::CN);
        assert_eq!(tbs.subject.0[1].0.get(0).expect("atv").oid, rfc4519::O);
        assert!(id.subject().starts_with("CN=Apple Configurator: "));
        assert!(id.subject().ends_with(", O=Lycée Test & Co"));

        // sha256WithRSAEncryption, RSA-2048.
        assert_eq!(
            cert.signature_algorithm.oid,
            der::oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION
        );
        use rsa::traits::PublicKeyParts;
        assert_eq!(id.private_key().size() * 8, 2048);

        // Serial positive, non-zero.
        let serial = tbs.serial_number.as_bytes();
        assert!(!serial.is_empty() && serial[0] & 0x80 == 0 && serial.iter().any(|&b| b != 0));

        // Validity: about 10 minutes back, 20 years ahead.
        let now = SystemTime::now();
        let back = now
            .duration_since(id.not_before())
            .expect("not_before in the past");
        assert!(
            back >= Duration::from_secs(590) && back <= Duration::from_secs(700),
            "{back:?}"
        );
        let ahead = id.not_after().duration_since(now).expect("not_after ahead");
        let years = ahead.as_secs() as f64 / (365.2425 * 86400.0);
        assert!((19.99..20.01).contains(&years), "{years}");
        assert!(matches!(tbs.validity.not_after, Time::UtcTime(_)));

        // Extensions: KeyUsage and EKU critical, SKI present.
        let exts = tbs.extensions.as_ref().expect("extensions");
        let ku = exts
            .iter()
            .find(|e| e.extn_id == KeyUsage::OID)
            .expect("KeyUsage");
        assert!(ku.critical);
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).expect("decode KeyUsage");
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign());
        let eku = exts
            .iter()
            .find(|e| e.extn_id == ExtendedKeyUsage::OID)
            .expect("EKU");
        assert!(eku.critical);
        let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).expect("decode EKU");
        assert_eq!(eku.0, vec![rfc5280::ID_KP_CODE_SIGNING]);
        assert!(
            exts.iter()
                .any(|e| e.extn_id == SubjectKeyIdentifier::OID && !e.critical)
        );
    }

    #[test]
    fn certificate_signature_verifies_with_its_own_key() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::signature::Verifier;
        let id = shared();
        let cert = id.certificate();
        let tbs = cert.tbs_certificate.to_der().expect("tbs");
        let sig = Signature::try_from(cert.signature.raw_bytes()).expect("signature");
        VerifyingKey::<Sha256>::new(id.private_key().to_public_key())
            .verify(&tbs, &sig)
            .expect("self-signature verifies");
    }

    #[test]
    fn two_identities_differ() {
        let a = shared();
        let b = SupervisionIdentity::create("Lycée Test & Co").expect("create");
        assert_ne!(a.certificate_der(), b.certificate_der());
        assert_ne!(a.serial_hex(), b.serial_hex());
        assert_ne!(a.common_name(), b.common_name(), "random UUID in the CN");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        use rsa::traits::PrivateKeyParts;
        let id = shared();
        let text = format!("{id:?}");
        assert!(text.contains("redacted"), "{text}");
        let d = id.private_key().d().to_string();
        assert!(!text.contains(&d[..20]), "private exponent leaked");
        assert!(!text.to_lowercase().contains("private key"));
    }

    #[test]
    fn organization_is_validated() {
        for bad in ["", "   ", "a\nb", &"x".repeat(201)] {
            let e = SupervisionIdentity::create(bad).expect_err(bad);
            assert!(
                matches!(
                    e,
                    ProfileError::Validation {
                        field: "organization",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn pem_and_keybag_round_trip() {
        let id = shared();
        let keybag = id.to_keybag_pem().expect("keybag");
        assert!(keybag.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(keybag.trim_end().ends_with("-----END CERTIFICATE-----"));
        let back = SupervisionIdentity::from_pem(keybag.as_bytes()).expect("from_pem");
        assert_eq!(back.certificate_der(), id.certificate_der());
        assert_eq!(back.private_key(), id.private_key());

        // Certificate first, PKCS#8 key second, CRLF line endings and noise between blocks.
        let key8 = id
            .private_key()
            .to_pkcs8_pem(LineEnding::CRLF)
            .expect("pkcs8");
        let text = format!(
            "Bag Attributes\r\n{}\r\nsome text\r\n{}",
            id.certificate_pem().expect("pem").replace('\n', "\r\n"),
            &*key8
        );
        let back = SupervisionIdentity::from_pem(text.as_bytes()).expect("from_pem crlf");
        assert_eq!(back.certificate_der(), id.certificate_der());
    }

    #[test]
    fn pem_errors_are_clear() {
        let id = shared();
        let cert_only = id.certificate_pem().expect("pem");
        let e = SupervisionIdentity::from_pem(cert_only.as_bytes()).expect_err("no key");
        assert!(e.to_string().contains("no private key"), "{e}");
        let key_only = id
            .private_key()
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pkcs8");
        let e = SupervisionIdentity::from_pem(key_only.as_bytes()).expect_err("no cert");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = SupervisionIdentity::from_pem(b"hello").expect_err("no pem");
        assert!(e.to_string().contains("no PEM block"), "{e}");
        let e = SupervisionIdentity::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
            .expect_err("no end");
        assert!(e.to_string().contains("no END line"), "{e}");
        let enc = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let e = SupervisionIdentity::from_pem(enc.as_bytes()).expect_err("encrypted");
        assert!(e.to_string().contains("encrypted"), "{e}");
    }

    #[test]
    fn key_parsing_explains_what_it_got() {
        let id = shared();
        let e = private_key_from_der(id.certificate_der(), "k").expect_err("a certificate");
        assert!(
            e.to_string().contains("certificate, not a private key"),
            "{e}"
        );
        // EncryptedPrivateKeyInfo { { PBES2, NULL }, OCTET STRING }
        let encrypted = [
            0x30, 0x13, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05,
            0x0d, 0x05, 0x00, 0x04, 0x02, 0xab, 0xcd,
        ];
        let e = private_key_from_der(&encrypted, "k").expect_err("encrypted");
        assert!(e.to_string().contains("encrypted"), "{e}");
        let e = private_key_from_der(b"\x30\x03\x02\x01\x00", "k").expect_err("junk");
        assert!(e.to_string().contains("not an RSA private key"), "{e}");
        let pkcs1 = id.private_key().to_pkcs1_der().expect("pkcs1");
        let pkcs8 = id.private_key().to_pkcs8_der().expect("pkcs8");
        assert!(!looks_like_encrypted_pkcs8(pkcs1.as_bytes()));
        assert!(!looks_like_encrypted_pkcs8(pkcs8.as_bytes()));
        assert_eq!(
            &private_key_from_der(pkcs1.as_bytes(), "k").expect("pkcs1"),
            id.private_key()
        );
        assert_eq!(
            &private_key_from_der(pkcs8.as_bytes(), "k").expect("pkcs8"),
            id.private_key()
        );
    }

    #[test]
    fn from_parts_rejects_a_foreign_key() {
        let id = shared();
        let other = RsaPrivateKey::new(&mut OsRng, 1024).expect("small key");
        let e = SupervisionIdentity::from_parts(id.certificate_der().to_vec(), other)
            .expect_err("mismatch");
        assert!(matches!(e, ProfileError::KeyMismatch { .. }), "{e}");
        let e = SupervisionIdentity::from_parts(b"not der".to_vec(), id.private_key().clone())
            .expect_err("garbage");
        assert!(e.to_string().contains("not a DER X.509 certificate"), "{e}");
    }

    #[test]
    fn add_years_handles_leap_day() {
        let d = DateTime::new(2028, 2, 29, 12, 0, 0).expect("date");
        let later = add_years(d, 20).expect("add");
        assert_eq!((later.year(), later.month(), later.day()), (2048, 2, 28));
        assert!(matches!(x509_time(later).expect("time"), Time::UtcTime(_)));
        let d = DateTime::new(2050, 1, 1, 0, 0, 0).expect("date");
        assert!(matches!(x509_time(d).expect("time"), Time::GeneralTime(_)));
    }

    #[test]
    fn uuid_format() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(
            u.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_ne!(random_uuid(), u);
    }
}
