//! Supervised lockdown pairing (`docs/protocol.md` §2.5): needed to pair with a supervised
//! iPad whose cloud configuration says `AllowPairing = false`, or from a new host.
//!
//! 1. `Pair` with `PairingOptions{SupervisorCertificate: DER, ExtendedPairingErrors: true}`;
//! 2. the device answers `Error: "MCChallengeRequired"` with `ExtendedResponse.PairingChallenge`;
//! 3. the challenge is signed (CMS SignedData, attached, signer certificate first) by a
//!    [`ChallengeSigner`];
//! 4. `Pair` again with `PairingOptions{ChallengeResponse: DER, ExtendedPairingErrors: true}`;
//! 5. the device answers with `EscrowBag`.
//!
//! idevice cannot do this (it drops `ExtendedResponse` and keeps its certificate generator
//! private), so the pair record is generated here with the layout idevice uses (one RSA-2048
//! key for root and host; the host certificate is the self-signed root; a device certificate
//! for `DevicePublicKey` signed with the same key) and the requests go as raw frames on the
//! lockdown connection, each read with a timeout. Private keys are never sent to the device
//! (as libimobiledevice) and never logged.

use std::str::FromStr;
use std::time::{Duration, Instant};

use idevice::Idevice;
use idevice::pairing_file::PairingFile;
use plist::{Dictionary, Value};
use profiles::rsa_signer::RsaSigner;
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use usbmux::UsbmuxClient;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::EncodePem;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use crate::error::LockdownError;
use crate::host_key::HostKey;
use crate::pair_records::{self, PairRecordStore};
use crate::pairing::{DEFAULT_TRUST_WAIT, new_host_id};
use crate::session::{DeviceSession, LABEL};
use crate::signer::ChallengeSigner;

const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Validity of the generated root, host and device certificates.
const CERT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

// ---------------------------------------------------------------------------------------------
// Raw framing on an idevice connection (lockdownd and plist services), with timeouts.

/// Writes one length-prefixed XML plist.
pub(crate) async fn send_plist(
    idevice: &mut Idevice,
    operation: &'static str,
    dict: &Dictionary,
    after: Duration,
) -> Result<(), LockdownError> {
    let frame = usbmux::plist_service::encode(dict)?;
    match tokio::time::timeout(after, idevice.send_raw(&frame)).await {
        Ok(r) => r.map_err(|e| LockdownError::from_idevice(operation, e)),
        Err(_) => Err(LockdownError::Timeout { operation, after }),
    }
}

/// Reads one length-prefixed plist (XML or binary); the length is checked before allocating
/// (0 and more than 16 MiB are refused). The whole read shares one deadline.
pub(crate) async fn read_plist(
    idevice: &mut Idevice,
    operation: &'static str,
    after: Duration,
) -> Result<Dictionary, LockdownError> {
    let read = async {
        let len = idevice.read_raw(4).await?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len == 0 || len > usbmux::plist_service::MAX_MESSAGE_LEN {
            return Ok(Err(LockdownError::MalformedReply(format!(
                "{operation}: reply length {len} out of range"
            ))));
        }
        let body = idevice.read_raw(len as usize).await?;
        Ok::<_, idevice::IdeviceError>(
            usbmux::plist_service::decode_body(&body)
                .map_err(|e| LockdownError::MalformedReply(format!("{operation}: {e}"))),
        )
    };
    match tokio::time::timeout(after, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(LockdownError::from_idevice(operation, e)),
        Err(_) => Err(LockdownError::Timeout { operation, after }),
    }
}

/// Maps a lockdownd `Error` name to the typed error callers act on.
pub(crate) fn lockdown_error(request: &'static str, name: &str) -> LockdownError {
    match name {
        "UserDeniedPairing" => LockdownError::UserDeniedPairing,
        "PasswordProtected" => LockdownError::PasswordProtected,
        "InvalidHostID" => LockdownError::InvalidHostId,
        other => LockdownError::Device {
            request,
            name: other.to_owned(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Pair record generation.

/// A freshly generated pair record, before the device has accepted it.
pub(crate) struct NewRecord {
    /// What goes into the `Pair` request's `PairRecord` (no private key).
    pub(crate) sent: Dictionary,
    /// The host (= root) private key, PKCS#8 PEM.
    private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("NewRecord")
            .field("host_id", &self.sent.get("HostID"))
            .finish_non_exhaustive()
    }
}

fn cert_pem(signer: &RsaSigner, subject_key: &RsaPublicKey, name: Name) -> Result<Vec<u8>, String> {
    let spki =
        SubjectPublicKeyInfoOwned::from_key(subject_key.clone()).map_err(|e| e.to_string())?;
    let validity = Validity::from_now(CERT_LIFETIME).map_err(|e| e.to_string())?;
    let serial = SerialNumber::new(&[1]).map_err(|e| e.to_string())?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, name, spki, signer)
        .map_err(|e| e.to_string())?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| e.to_string())?;
    cert.to_pem(LineEnding::LF)
        .map(String::into_bytes)
        .map_err(|e| e.to_string())
}

/// The certificates for a new record, signed with `host` (two RSA signatures by ring: about a
/// millisecond; the key itself comes from [`crate::host_key`]).
pub(crate) fn generate_record(
    host: &HostKey,
    device_public_key_pem: &[u8],
    host_id: &str,
    system_buid: &str,
    wifi_mac: &str,
) -> Result<NewRecord, LockdownError> {
    let bad = |what: &str, e: String| LockdownError::PairRecord(format!("{what}: {e}"));
    let pem = std::str::from_utf8(device_public_key_pem)
        .map_err(|_| LockdownError::MalformedReply("DevicePublicKey is not PEM text".into()))?;
    let device_key = RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| {
        LockdownError::MalformedReply(format!("DevicePublicKey is not a PKCS#1 RSA key: {e}"))
    })?;
    let signer = &host.signer;
    let root = cert_pem(signer, signer.public_key(), Name::default())
        .map_err(|e| bad("root certificate", e))?;
    let device_name = Name::from_str("CN=Device").map_err(|e| bad("name", e.to_string()))?;
    let device =
        cert_pem(signer, &device_key, device_name).map_err(|e| bad("device certificate", e))?;
    let private_key_pem = host
        .key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| bad("private key", e.to_string()))?
        .as_bytes()
        .to_vec();
    let mut sent = Dictionary::new();
    sent.insert(
        "DevicePublicKey".into(),
        Value::Data(device_public_key_pem.to_vec()),
    );
    sent.insert("DeviceCertificate".into(), Value::Data(device));
    sent.insert("HostCertificate".into(), Value::Data(root.clone()));
    sent.insert("HostID".into(), host_id.into());
    sent.insert("RootCertificate".into(), Value::Data(root));
    sent.insert("SystemBUID".into(), system_buid.into());
    sent.insert("WiFiMACAddress".into(), wifi_mac.into());
    Ok(NewRecord {
        sent,
        private_key_pem,
    })
}

/// The stored record: what was sent plus the private keys, the escrow bag and the UDID.
pub(crate) fn complete_record(
    record: &NewRecord,
    escrow_bag: Vec<u8>,
    udid: &str,
) -> Result<PairingFile, LockdownError> {
    let mut full = record.sent.clone();
    full.insert(
        "HostPrivateKey".into(),
        Value::Data(record.private_key_pem.clone()),
    );
    full.insert(
        "RootPrivateKey".into(),
        Value::Data(record.private_key_pem.clone()),
    );
    full.insert("EscrowBag".into(), Value::Data(escrow_bag));
    full.insert("UDID".into(), udid.into());
    let mut bytes = Vec::new();
    plist::to_writer_xml(&mut bytes, &Value::Dictionary(full))
        .map_err(|e| LockdownError::PairRecord(e.to_string()))?;
    pair_records::parse(&bytes)
}

/// A new record with the station's shared key; the signatures run on a blocking thread too.
pub(crate) async fn new_record(
    device_public_key_pem: &[u8],
    host_id: &str,
    system_buid: &str,
    wifi_mac: &str,
) -> Result<NewRecord, LockdownError> {
    let key = crate::host_key::shared().await?;
    let (device_key, host_id, buid, wifi_mac) = (
        device_public_key_pem.to_vec(),
        host_id.to_owned(),
        system_buid.to_owned(),
        wifi_mac.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        generate_record(&key, &device_key, &host_id, &buid, &wifi_mac)
    })
    .await
    .map_err(|e| LockdownError::PairRecord(format!("certificate task: {e}")))?
}

pub(crate) fn pair_request(
    record: &NewRecord,
    host_name: Option<&str>,
    options: Dictionary,
) -> Dictionary {
    let mut req = Dictionary::new();
    req.insert("Label".into(), LABEL.into());
    req.insert("Request".into(), "Pair".into());
    if let Some(name) = host_name {
        req.insert("HostName".into(), name.into());
    }
    req.insert("PairRecord".into(), Value::Dictionary(record.sent.clone()));
    req.insert("ProtocolVersion".into(), "2".into());
    req.insert("PairingOptions".into(), Value::Dictionary(options));
    req
}

/// What one `Pair` exchange came to.
pub(crate) enum PairReply {
    Escrow(Vec<u8>),
    Challenge(Vec<u8>),
}

pub(crate) async fn pair_exchange(
    session: &mut DeviceSession,
    request: &Dictionary,
) -> Result<PairReply, LockdownError> {
    let timeout = session.timeout();
    let idevice = &mut session.client().idevice;
    send_plist(idevice, "Pair", request, timeout).await?;
    let reply = read_plist(idevice, "Pair", timeout).await?;
    if let Some(err) = reply.get("Error") {
        let name = match err {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let challenge = reply
            .get("ExtendedResponse")
            .and_then(Value::as_dictionary)
            .and_then(|d| d.get("PairingChallenge"))
            .and_then(Value::as_data)
            .filter(|c| !c.is_empty());
        // Without a challenge, MCChallengeRequired is a refusal (e.g. of our signature), kept
        // by name like any other.
        if name == "MCChallengeRequired"
            && let Some(challenge) = challenge
        {
            return Ok(PairReply::Challenge(challenge.to_vec()));
        }
        return Err(lockdown_error("Pair", &name));
    }
    if let Some(request) = reply.get("Request").and_then(Value::as_string)
        && request != "Pair"
    {
        return Err(LockdownError::MalformedReply(format!(
            "Pair answered as {request}"
        )));
    }
    match reply.get("EscrowBag") {
        Some(Value::Data(bag)) if !bag.is_empty() => Ok(PairReply::Escrow(bag.clone())),
        // go-ios: no EscrowBag means the device is locked and the pairing was deferred; the
        // record would not work, so it is not returned (nor saved).
        _ => Err(LockdownError::PasswordProtected),
    }
}

pub(crate) fn options<const N: usize>(entries: [(&str, Value); N]) -> Dictionary {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Supervised pairing on a lockdown connection without a session. Retries while the device
/// answers `PairingDialogResponsePending`, up to `trust_wait` (each retry starts over with a
/// fresh challenge). The returned record has `HostPrivateKey`, `EscrowBag` and `UDID`; it is
/// not saved (see [`pair_supervised_and_save`]).
pub async fn pair_supervised(
    session: &mut DeviceSession,
    host_id: &str,
    system_buid: &str,
    host_name: Option<&str>,
    signer: &dyn ChallengeSigner,
    trust_wait: Duration,
) -> Result<PairingFile, LockdownError> {
    let device_key = match session.get_value(Some("DevicePublicKey"), None).await? {
        Value::Data(d) => d,
        _ => {
            return Err(LockdownError::MalformedReply(
                "DevicePublicKey is not data".into(),
            ));
        }
    };
    let wifi_mac = match session.get_value(Some("WiFiAddress"), None).await? {
        Value::String(s) => s,
        _ => {
            return Err(LockdownError::MalformedReply(
                "WiFiAddress is not a string".into(),
            ));
        }
    };
    let record = new_record(&device_key, host_id, system_buid, &wifi_mac).await?;

    let certificate = signer.certificate_der().to_vec();
    let started = Instant::now();
    loop {
        let first = pair_request(
            &record,
            host_name,
            options([
                ("SupervisorCertificate", Value::Data(certificate.clone())),
                ("ExtendedPairingErrors", Value::Boolean(true)),
            ]),
        );
        let attempt = match pair_exchange(session, &first).await {
            Ok(PairReply::Escrow(bag)) => Ok(bag),
            Ok(PairReply::Challenge(challenge)) => {
                let response = signer.sign(&challenge).map_err(|e| {
                    LockdownError::PairRecord(format!("could not sign the pairing challenge: {e}"))
                })?;
                let second = pair_request(
                    &record,
                    host_name,
                    options([
                        ("ChallengeResponse", Value::Data(response)),
                        ("ExtendedPairingErrors", Value::Boolean(true)),
                    ]),
                );
                match pair_exchange(session, &second).await {
                    Ok(PairReply::Escrow(bag)) => Ok(bag),
                    Ok(PairReply::Challenge(_)) => Err(LockdownError::Device {
                        request: "Pair",
                        name: "MCChallengeRequired".into(),
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(bag) => {
                let udid = session.device.udid.clone();
                return complete_record(&record, bag, &udid);
            }
            Err(LockdownError::Device { name, .. }) if name == "PairingDialogResponsePending" => {
                if started.elapsed() + RETRY_EVERY > trust_wait {
                    return Err(LockdownError::TrustPromptUnanswered(trust_wait));
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Supervised pairing, then the record is stored like [`crate::pair_and_save`] does:
/// usbmuxd `SavePairRecord` with the DeviceID (listeners hear `Paired`) and our own folder.
pub async fn pair_supervised_and_save(
    session: &mut DeviceSession,
    store: Option<&PairRecordStore>,
    host_name: Option<&str>,
    signer: &dyn ChallengeSigner,
) -> Result<PairingFile, LockdownError> {
    pair_supervised_and_save_with_wait(session, store, host_name, signer, DEFAULT_TRUST_WAIT).await
}

/// [`pair_supervised_and_save`] with an explicit wait for a pending trust prompt.
pub async fn pair_supervised_and_save_with_wait(
    session: &mut DeviceSession,
    store: Option<&PairRecordStore>,
    host_name: Option<&str>,
    signer: &dyn ChallengeSigner,
    trust_wait: Duration,
) -> Result<PairingFile, LockdownError> {
    let addr = session.device.addr.clone();
    let system_buid = UsbmuxClient::connect(&addr)
        .await?
        .recorded(&session.device.transcript)
        .read_buid()
        .await?;
    let host_id = new_host_id();
    let record = pair_supervised(
        session,
        &host_id,
        &system_buid,
        host_name,
        signer,
        trust_wait,
    )
    .await?;
    crate::pairing::save_record(session, store, &record).await?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use rsa::pkcs1::EncodeRsaPublicKey;

    #[test]
    fn generated_record_parses_with_idevice_and_keeps_keys_out_of_the_request() {
        let device = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let host = HostKey::new(RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap());
        let device_pem = RsaPublicKey::from(&device)
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap();
        let record = generate_record(
            &host,
            device_pem.as_bytes(),
            "00000000-0000-4000-8000-000000000000",
            "BUID",
            "aa:bb:cc:dd:ee:ff",
        )
        .unwrap();
        assert!(!record.sent.contains_key("RootPrivateKey"));
        assert!(!record.sent.contains_key("HostPrivateKey"));
        assert_eq!(
            record.sent["HostCertificate"],
            record.sent["RootCertificate"]
        );
        let file = complete_record(&record, vec![1; 32], "UDID-1").unwrap();
        assert_eq!(file.host_id, "00000000-0000-4000-8000-000000000000");
        assert_eq!(file.system_buid, "BUID");
        assert_eq!(file.escrow_bag.as_deref(), Some(&[1u8; 32][..]));
        assert_eq!(file.udid.as_deref(), Some("UDID-1"));
        // The device certificate certifies the device key.
        use x509_cert::der::{Decode, Encode};
        let cert = x509_cert::Certificate::from_der(file.device_certificate.as_ref()).unwrap();
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        use rsa::pkcs8::EncodePublicKey;
        assert_eq!(
            spki,
            RsaPublicKey::from(&device)
                .to_public_key_der()
                .unwrap()
                .as_bytes()
        );
    }

    #[test]
    fn a_malformed_device_key_is_an_error_not_a_panic() {
        let host = HostKey::new(RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap());
        let e = generate_record(&host, b"not a key", "H", "B", "aa:bb:cc:dd:ee:ff");
        assert!(matches!(e, Err(LockdownError::MalformedReply(_))), "{e:?}");
    }

    #[test]
    fn lockdown_error_names_map_to_typed_errors() {
        assert!(matches!(
            lockdown_error("Pair", "UserDeniedPairing"),
            LockdownError::UserDeniedPairing
        ));
        assert!(matches!(
            lockdown_error("Pair", "MCProtected"),
            LockdownError::Device { name, .. } if name == "MCProtected"
        ));
    }
}
