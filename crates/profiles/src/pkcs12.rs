//! PKCS#12 files on the `p12` crate, which handles the legacy password-based encryption only
//! (pbeWithSHAAnd3-KeyTripleDES-CBC, pbeWithSHAAnd40BitRC2-CBC, SHA-1 MAC): what macOS Keychain,
//! Apple Configurator exports and `openssl pkcs12 -legacy` produce. OpenSSL 3's default
//! (PBES2 with PBKDF2 and AES, SHA-256 MAC) is detected and reported with a conversion hint
//! rather than failing as a "wrong password".

use std::panic::{AssertUnwindSafe, catch_unwind};

use p12::{AlgorithmIdentifier, ContentInfo, PFX, SafeBag, SafeBagKind};
use yasna::models::ObjectIdentifier;
use zeroize::Zeroizing;

use crate::error::{ProfileError, Result};

/// More iterations than this is refused: the count comes from the file and SHA-1 is run that
/// many times per derived block (a crafted file could otherwise hang the import).
const MAX_ITERATIONS: u64 = 5_000_000;

const OID_PBES2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 13];
const OID_KEY_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 1];

/// Certificates (DER) and private keys (PKCS#8 DER) of a PKCS#12 file.
pub(crate) type Contents = (Vec<Vec<u8>>, Vec<Zeroizing<Vec<u8>>>);

/// Reads the certificates and keys of a PKCS#12 file. `what` names the input in errors.
pub(crate) fn read(bytes: &[u8], password: &str, what: &str) -> Result<Contents> {
    let malformed = |reason: String| ProfileError::invalid(what, reason);
    let pfx = guard(what, || PFX::parse(bytes))?
        .map_err(|e| malformed(format!("not a PKCS#12 file ({e})")))?;

    if let Some(mac) = &pfx.mac_data {
        if mac.mac.digest_algorithm != AlgorithmIdentifier::Sha1 {
            return Err(unsupported(
                what,
                format!(
                    "a {} integrity check",
                    describe_algorithm(&mac.mac.digest_algorithm)
                ),
            ));
        }
        check_iterations(u64::from(mac.iterations), what)?;
    }

    // Check the algorithms before the password, so an AES file is not reported as a wrong
    // password.
    let auth_safe = match &pfx.auth_safe {
        ContentInfo::Data(data) => data,
        _ => {
            return Err(unsupported(what, "public-key integrity mode".into()));
        }
    };
    let contents = guard(what, || {
        yasna::parse_der(auth_safe, |r| r.collect_sequence_of(ContentInfo::parse))
    })?
    .map_err(|e| malformed(format!("malformed PKCS#12 contents ({e})")))?;
    for content in &contents {
        match content {
            ContentInfo::EncryptedData(encrypted) => check_pbe(
                &encrypted
                    .encrypted_content_info
                    .content_encryption_algorithm,
                what,
            )?,
            ContentInfo::Data(data) => {
                let bags = guard(what, || {
                    yasna::parse_der(data, |r| r.collect_sequence_of(SafeBag::parse))
                })?
                .map_err(|e| malformed(format!("malformed PKCS#12 bags ({e})")))?;
                for bag in &bags {
                    if let SafeBagKind::Pkcs8ShroudedKeyBag(key) = &bag.bag {
                        check_pbe(&key.encryption_algorithm, what)?;
                    }
                }
            }
            ContentInfo::OtherContext(_) => {
                return Err(unsupported(what, "public-key privacy mode".into()));
            }
        }
    }

    let has_mac = pfx.mac_data.is_some();
    if has_mac && !guard(what, || pfx.verify_mac(password))? {
        return Err(ProfileError::Pkcs12WrongPassword { what: what.into() });
    }
    let wrong_password_or = |reason: &str| {
        if has_mac {
            malformed(reason.to_owned())
        } else {
            // Without a MAC a wrong password shows up as a decryption failure.
            ProfileError::Pkcs12WrongPassword { what: what.into() }
        }
    };

    let bags = guard(what, || pfx.bags(password))?
        .map_err(|_| wrong_password_or("cannot decrypt the PKCS#12 contents"))?;
    let bmp = bmp_password(password);
    let mut certificates = Vec::new();
    let mut keys = Vec::new();
    for bag in &bags {
        match &bag.bag {
            SafeBagKind::CertBag(_) => {
                if let Some(der) = bag.bag.get_x509_cert() {
                    certificates.push(der);
                }
            }
            SafeBagKind::Pkcs8ShroudedKeyBag(key) => {
                check_pbe(&key.encryption_algorithm, what)?;
                let der = guard(what, || key.decrypt(&bmp))?
                    .ok_or_else(|| wrong_password_or("cannot decrypt the private key"))?;
                keys.push(Zeroizing::new(der));
            }
            SafeBagKind::OtherBagKind(other) if other.bag_id.components() == OID_KEY_BAG => {
                // An unencrypted keyBag holds a PKCS#8 PrivateKeyInfo.
                keys.push(Zeroizing::new(other.bag_value.clone()));
            }
            SafeBagKind::OtherBagKind(_) => {}
        }
    }
    Ok((certificates, keys))
}

/// Writes a PKCS#12 file: the key in a pbeWithSHAAnd3-KeyTripleDES-CBC shrouded bag, the
/// certificate in pbeWithSHAAnd40BitRC2-CBC encrypted data, a SHA-1 MAC, both bags carrying the
/// friendly name and the local key id (SHA-1 of the certificate).
pub(crate) fn write(
    certificate_der: &[u8],
    key_pkcs8_der: &[u8],
    password: &str,
    friendly_name: &str,
) -> Result<Vec<u8>> {
    let pfx = guard("PKCS#12 output", || {
        PFX::new(
            certificate_der,
            key_pkcs8_der,
            None,
            password,
            friendly_name,
        )
    })?
    .ok_or_else(|| ProfileError::Crypto("building the PKCS#12 file failed".into()))?;
    Ok(pfx.to_der())
}

/// Runs a `p12` call, turning a panic (the crate has `debug_assert!`s and `unwrap`s on parsed
/// data) into an input error instead of aborting the command.
fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| ProfileError::invalid(what, "malformed PKCS#12 file (parser failure)"))
}

fn check_pbe(algorithm: &AlgorithmIdentifier, what: &str) -> Result<()> {
    match algorithm {
        AlgorithmIdentifier::PbewithSHAAnd40BitRC2CBC(params)
        | AlgorithmIdentifier::PbeWithSHAAnd3KeyTripleDESCBC(params) => {
            check_iterations(params.iterations, what)
        }
        other => Err(unsupported(what, describe_algorithm(other))),
    }
}

fn check_iterations(iterations: u64, what: &str) -> Result<()> {
    if iterations > MAX_ITERATIONS {
        return Err(ProfileError::invalid(
            what,
            format!("PKCS#12 iteration count {iterations} is implausibly large"),
        ));
    }
    Ok(())
}

fn describe_algorithm(algorithm: &AlgorithmIdentifier) -> String {
    match algorithm {
        AlgorithmIdentifier::Sha1 => "SHA-1".into(),
        AlgorithmIdentifier::PbewithSHAAnd40BitRC2CBC(_) => "pbeWithSHAAnd40BitRC2-CBC".into(),
        AlgorithmIdentifier::PbeWithSHAAnd3KeyTripleDESCBC(_) => {
            "pbeWithSHAAnd3-KeyTripleDES-CBC".into()
        }
        AlgorithmIdentifier::OtherAlg(other) => describe_oid(&other.algorithm_type),
    }
}

fn describe_oid(oid: &ObjectIdentifier) -> String {
    let dotted = oid
        .components()
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let name = match dotted.as_str() {
        _ if oid.components() == OID_PBES2 => "PBES2 (PBKDF2 + AES)",
        "2.16.840.1.101.3.4.2.1" => "SHA-256",
        "2.16.840.1.101.3.4.2.2" => "SHA-384",
        "2.16.840.1.101.3.4.2.3" => "SHA-512",
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        _ => "",
    };
    if name.is_empty() {
        format!("algorithm {dotted}")
    } else {
        format!("{name} ({dotted})")
    }
}

fn unsupported(what: &str, algorithm: String) -> ProfileError {
    ProfileError::Pkcs12Unsupported {
        what: what.into(),
        algorithm,
    }
}

/// The password as PKCS#12 wants it: UTF-16BE with a terminating zero.
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password
        .encode_utf16()
        .flat_map(|unit| unit.to_be_bytes())
        .collect();
    out.extend_from_slice(&[0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmp_password_encoding() {
        assert_eq!(bmp_password(""), vec![0, 0]);
        assert_eq!(bmp_password("aé"), vec![0, b'a', 0, 0xe9, 0, 0]);
    }

    #[test]
    fn pbes2_is_named() {
        let oid = ObjectIdentifier::from_slice(OID_PBES2);
        assert!(describe_oid(&oid).starts_with("PBES2"));
        let oid = ObjectIdentifier::from_slice(&[1, 2, 3]);
        assert_eq!(describe_oid(&oid), "algorithm 1.2.3");
    }

    #[test]
    fn garbage_is_an_input_error() {
        for input in [
            &b""[..],
            b"\x30\x03\x02\x01\x03",
            b"not a pkcs12 file at all",
        ] {
            let e = read(input, "pw", "x.p12").expect_err("garbage");
            assert!(e.is_input_error(), "{e}");
            assert!(e.to_string().starts_with("x.p12: "), "{e}");
        }
    }
}
