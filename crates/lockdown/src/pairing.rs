//! Pairing: one `Pair` request, generated once and sent again while the iPad shows "Trust This
//! Computer?", up to a deadline (and kept for the next call while the prompt is pending); the record is then saved through usbmuxd
//! (SavePairRecord, so other tools and Linux usbmuxd see it) and in our own state folder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use idevice::pairing_file::PairingFile;
use plist::Value;
use usbmux::UsbmuxClient;

use crate::error::LockdownError;
use crate::pair_records::{self, PairRecordStore};
use crate::pending_pair;
use crate::session::DeviceSession;
use crate::supervised_pairing::{PairReply, complete_record, options, pair_exchange, pair_request};

/// How long to wait for someone to tap "Trust" by default.
pub const DEFAULT_TRUST_WAIT: Duration = Duration::from_secs(120);
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A random uppercase UUID for a new HostID.
pub fn new_host_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Pairs, sending the same request again while the trust prompt is pending, until
/// `trust_wait` has passed. A request left pending by an earlier call for this iPad (same
/// `DevicePublicKey`) is sent again as it was, HostID included, instead of a new one
/// (`pending_pair`); `host_id` and `system_buid` only go into a new request.
pub async fn pair(
    session: &mut DeviceSession,
    host_id: &str,
    system_buid: &str,
    host_name: Option<&str>,
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
    let udid = session.device.udid.clone();
    let record = match pending_pair::reuse(&udid, &device_key) {
        Some(record) => record,
        None => {
            let wifi_mac = match session.get_value(Some("WiFiAddress"), None).await? {
                Value::String(s) => s,
                _ => {
                    return Err(LockdownError::MalformedReply(
                        "WiFiAddress is not a string".into(),
                    ));
                }
            };
            // The station's shared key (`crate::host_key`); the certificates are signed on a
            // blocking thread.
            let record =
                crate::supervised_pairing::new_record(&device_key, host_id, system_buid, &wifi_mac)
                    .await?;
            Arc::new(record)
        }
    };
    let request = pair_request(
        &record,
        host_name,
        options([("ExtendedPairingErrors", Value::Boolean(true))]),
    );
    let started = Instant::now();
    loop {
        match pair_exchange(session, &request).await {
            Ok(PairReply::Escrow(bag)) => {
                pending_pair::forget(&udid);
                return complete_record(&record, bag, &udid);
            }
            Ok(PairReply::Challenge(_)) => {
                pending_pair::forget(&udid);
                return Err(LockdownError::Device {
                    request: "Pair",
                    name: "MCChallengeRequired".into(),
                });
            }
            Err(LockdownError::Device { name, .. }) if name == "PairingDialogResponsePending" => {
                if started.elapsed() + RETRY_EVERY > trust_wait {
                    pending_pair::keep(&udid, record);
                    return Err(LockdownError::TrustPromptUnanswered(trust_wait));
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => {
                pending_pair::forget(&udid);
                return Err(e);
            }
        }
    }
}

/// Pairs and stores the record: usbmuxd SavePairRecord (with DeviceID, so listeners hear
/// `Paired`) and our own folder when given.
pub async fn pair_and_save(
    session: &mut DeviceSession,
    store: Option<&PairRecordStore>,
    host_name: Option<&str>,
    trust_wait: Duration,
) -> Result<PairingFile, LockdownError> {
    let addr = session.device.addr.clone();
    let system_buid = UsbmuxClient::connect(&addr)
        .await?
        .recorded(&session.device.transcript)
        .read_buid()
        .await?;
    let host_id = new_host_id();
    let record = pair(session, &host_id, &system_buid, host_name, trust_wait).await?;
    save_record(session, store, &record).await?;
    Ok(record)
}

/// Stores a new pair record where other tools look for it (usbmuxd SavePairRecord, with the
/// DeviceID so listeners hear `Paired`) and in our own folder when given.
pub async fn save_record(
    session: &DeviceSession,
    store: Option<&PairRecordStore>,
    record: &PairingFile,
) -> Result<(), LockdownError> {
    let bytes = pair_records::serialize(record)?;
    let udid = &session.device.udid;
    UsbmuxClient::connect(&session.device.addr)
        .await?
        .recorded(&session.device.transcript)
        .save_pair_record(udid, bytes.clone(), Some(session.device.device_id))
        .await?;
    if let Some(store) = store {
        store.save(udid, &bytes)?;
    }
    Ok(())
}

/// A session with TLS: uses an existing pair record, or pairs when there is none or the device
/// no longer knows it (InvalidHostID), then starts the session.
pub async fn trusted_session(
    device: crate::session::DeviceRef,
    store: Option<&PairRecordStore>,
    trust_wait: Duration,
) -> Result<(DeviceSession, PairingFile), LockdownError> {
    let mut session = DeviceSession::connect(device.clone()).await?;
    if let Some(record) =
        pair_records::find(&device.addr, store, &device.udid, &device.transcript).await?
    {
        match session.start_session(&record).await {
            Ok(()) => return Ok((session, record)),
            Err(LockdownError::InvalidHostId) => {
                tracing::info!(udid = %device.udid, "device forgot us; pairing again");
            }
            Err(e) => return Err(e),
        }
    }
    let record = pair_and_save(&mut session, store, Some("cartprep"), trust_wait).await?;
    session.start_session(&record).await?;
    Ok((session, record))
}
