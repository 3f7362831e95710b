//! One pairing request per iPad while its "Trust This Computer?" prompt is pending.
//!
//! Proven clients generate the host key, certificates and HostID once and send the same `Pair`
//! request again until the user answers (idevice's `LockdownClient::pair`, pymobiledevice3's
//! `LockdownClient._request_pair` loop). A caller that gives up waiting and asks again later
//! (the station re-checks every few seconds to show "tap Trust") gets the request it sent
//! before, kept here in memory, as long as the iPad still has the same `DevicePublicKey` (an
//! erase gives it a new one). Private keys stay in memory and are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use plist::Value;

use crate::supervised_pairing::NewRecord;

fn requests() -> std::sync::MutexGuard<'static, HashMap<String, Arc<NewRecord>>> {
    static PENDING: OnceLock<Mutex<HashMap<String, Arc<NewRecord>>>> = OnceLock::new();
    PENDING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The request still pending for `udid`, if it was made for this `device_key`.
pub(crate) fn reuse(udid: &str, device_key: &[u8]) -> Option<Arc<NewRecord>> {
    let mut pending = requests();
    let record = pending.get(udid)?.clone();
    if made_for(&record, device_key) {
        Some(record)
    } else {
        pending.remove(udid);
        None
    }
}

/// Keeps the request for the next attempt: the prompt is still showing.
pub(crate) fn keep(udid: &str, record: Arc<NewRecord>) {
    requests().insert(udid.to_owned(), record);
}

/// The device answered (paired or refused): the next pairing starts from a new request.
pub(crate) fn forget(udid: &str) {
    requests().remove(udid);
}

fn made_for(record: &NewRecord, device_key: &[u8]) -> bool {
    record.sent.get("DevicePublicKey").and_then(Value::as_data) == Some(device_key)
}
