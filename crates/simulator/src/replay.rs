//! `cartprep sim --replay FILE`: a field transcript (`docs/protocol.md` §9) served back as one
//! virtual iPad behind a usbmuxd socket, so the station can be run against what a real iPad
//! said.
//!
//! The replayer plays the iPad, not the host: lockdownd and every service answer each request
//! with the reply recorded for it, while usbmuxd (the host's daemon: device list, Listen,
//! Connect, BUID, pair records) is served live, because its answers depend on the host doing
//! the replay, not on the iPad. How requests are matched, and what is made up where the
//! transcript cannot be followed literally, is in `docs/fidelity.md` ("Replayed transcripts").

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plist::{Dictionary, Value};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use usbmux::frame::{self, Frame, MAX_REQUEST_LEN, message_type};
use usbmux::message::{self as msg, Request, ResultCode};
use usbmux::redact;
use usbmux::transcript::{self, Direction, Entry, Header};
use usbmux::{DeviceEvent, DeviceProperties, UsbmuxAddress, plist_service};

use crate::error::SimError;
use crate::tls::BoxStream;

/// How long a replayed connection waits for the host's next request.
const IDLE: Duration = Duration::from_secs(120);
/// TLS handshakes, as the simulated iPads bound them.
const HANDSHAKE: Duration = Duration::from_secs(15);
/// Where the ports StartService hands out start (anything but lockdownd's).
const FIRST_SERVICE_PORT: u16 = 49152;

/// What a request is matched by: lockdownd's `Request` with its `Key`, `Domain` and `Service`
/// (a GetValue of one key is not a GetValue of another); a service's `RequestType` (MCInstall)
/// or `Command` (mobileactivationd).
pub fn request_key(channel: &str, request: &Dictionary) -> String {
    let s = |k: &str| request.get(k).and_then(Value::as_string).unwrap_or("");
    if channel == transcript::LOCKDOWND {
        format!(
            "{}|{}|{}|{}",
            s("Request"),
            s("Key"),
            s("Domain"),
            s("Service")
        )
    } else {
        let kind = ["RequestType", "Command", "Request"]
            .iter()
            .map(|k| s(k))
            .find(|v| !v.is_empty())
            .unwrap_or("");
        kind.to_owned()
    }
}

/// One recorded request's key and the reply the iPad gave it.
#[derive(Debug, Clone, PartialEq)]
struct Exchange {
    key: String,
    reply: Dictionary,
}

/// The recorded exchanges of every device channel, in order, and how far each was played.
#[derive(Debug, Default)]
pub struct Script {
    channels: HashMap<String, Vec<Exchange>>,
    cursors: HashMap<String, usize>,
}

impl Script {
    /// Pairs each request with the next reply on the same connection; usbmuxd's are left out
    /// (served live). A request the iPad never answered (the connection dropped) is left out.
    pub fn from_entries(entries: &[Entry]) -> Script {
        let mut open: HashMap<u64, (String, String)> = HashMap::new();
        let mut channels: HashMap<String, Vec<Exchange>> = HashMap::new();
        for e in entries.iter().filter(|e| e.channel != transcript::USBMUXD) {
            match e.direction {
                Direction::Request => {
                    open.insert(
                        e.connection,
                        (e.channel.clone(), request_key(&e.channel, &e.message)),
                    );
                }
                Direction::Reply => {
                    if let Some((channel, key)) = open.remove(&e.connection) {
                        channels.entry(channel).or_default().push(Exchange {
                            key,
                            reply: e.message.clone(),
                        });
                    }
                }
            }
        }
        Script {
            channels,
            cursors: HashMap::new(),
        }
    }

    /// The reply to a request with `key` on `channel`: the next recorded exchange with that key
    /// (skipping ones the host did not ask again); once they are used up, the last one (the
    /// same question gets the same answer). `None`: the iPad was never asked this.
    pub fn answer(&mut self, channel: &str, key: &str) -> Option<Dictionary> {
        let list = self.channels.get(channel)?;
        let cursor = self.cursors.entry(channel.to_owned()).or_insert(0);
        if let Some(i) = (*cursor..list.len()).find(|&i| list[i].key == key) {
            *cursor = i + 1;
            return Some(list[i].reply.clone());
        }
        (0..*cursor)
            .rev()
            .find(|&i| list[i].key == key)
            .map(|i| list[i].reply.clone())
    }
}

/// A recorded reply made usable: every redacted value becomes fresh random data (an escrow
/// bag, a key blob: the host stores it and never looks inside).
pub fn synthesise(reply: &Dictionary) -> Dictionary {
    fn value(v: &Value) -> Value {
        match v {
            v if redact::is_redacted(v) => Value::Data(crate::rng::random_bytes::<32>().to_vec()),
            Value::Dictionary(d) => Value::Dictionary(synthesise(d)),
            Value::Array(a) => Value::Array(a.iter().map(value).collect()),
            other => other.clone(),
        }
    }
    reply.iter().map(|(k, v)| (k.clone(), value(v))).collect()
}

/// The serial number the iPad told (a `GetValue` of `SerialNumber`, or of every value).
pub fn serial_number(entries: &[Entry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.channel == transcript::LOCKDOWND && e.direction == Direction::Reply)
        .find_map(|e| {
            let value = e.message.get("Value")?;
            match e.message.get("Key").and_then(Value::as_string) {
                Some("SerialNumber") => value.as_string(),
                Some(_) => None,
                None => value.as_dictionary()?.get("SerialNumber")?.as_string(),
            }
            .map(str::to_owned)
        })
}

/// A transcript being served.
pub struct Replay {
    pub header: Header,
    pub device: DeviceProperties,
    /// The iPad's serial number, when the transcript holds it.
    pub serial: Option<String>,
    script: Mutex<Script>,
    pair_records: Mutex<HashMap<String, Vec<u8>>>,
    services: Mutex<HashMap<u16, (String, bool)>>,
    next_port: AtomicU16,
    buid: String,
    tls: Arc<rustls::ServerConfig>,
    misses: AtomicU64,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("udid", &self.header.udid)
            .finish()
    }
}

impl Replay {
    /// Reads a transcript and makes the TLS identity the replayed iPad answers with.
    pub fn load(path: &Path) -> Result<Replay, SimError> {
        let (header, entries) = transcript::read(path).map_err(|e| SimError::Scenario {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut attached = Dictionary::new();
        attached.insert(
            "Properties".into(),
            Value::Dictionary(header.device.clone()),
        );
        let device =
            DeviceProperties::from_attached(&attached).map_err(|e| SimError::Scenario {
                path: path.display().to_string(),
                reason: format!("the transcript's device: {e}"),
            })?;
        // The recorded iPad's key is not in the transcript: the replayed one has its own, and a
        // certificate for it (clients do not check the device's certificate: `fidelity.md`).
        let key = crate::ipad::create_key(None, &header.udid)?;
        let (_, leaf, _) = crate::activation_server::loopback_certificates(
            &key,
            "CN=cartprep replayed iPad,O=cartprep simulator",
        )?;
        let pkcs8 = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
            .map_err(|e| SimError::Key(e.to_string()))?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec())),
        )
        .map_err(|e| SimError::Tls(e.to_string()))?;
        Ok(Replay {
            serial: serial_number(&entries),
            script: Mutex::new(Script::from_entries(&entries)),
            header,
            device,
            pair_records: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
            next_port: AtomicU16::new(FIRST_SERVICE_PORT),
            buid: "7A3B1C2D-0000-4000-8000-REPLAYREPLAY".into(),
            tls: Arc::new(tls),
            misses: AtomicU64::new(0),
        })
    }

    /// A cart holding the replayed iPad, unplugged: its fake activation server knows the
    /// iPad (by UDID and serial number), so a transcript of an unactivated iPad can be
    /// replayed through activation (`cartprep sim --replay` starts it alongside).
    pub fn companion_scenario(&self) -> crate::Scenario {
        crate::Scenario {
            devices: vec![crate::scenario::DeviceEntry {
                udid: Some(self.header.udid.clone()),
                serial: self.serial.clone(),
                plugged: Some(false),
                ..Default::default()
            }],
            ..crate::Scenario::uniform(0)
        }
    }

    /// Requests that had no recorded reply (each closed its connection, as a dropped link).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn answer(&self, channel: &str, request: &Dictionary) -> Option<Dictionary> {
        let key = request_key(channel, request);
        let reply = self
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answer(channel, &key);
        if reply.is_none() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel, key, "replay: the transcript has no reply to this");
        }
        reply.map(|r| synthesise(&r))
    }

    fn open_service(&self, name: &str, ssl: bool) -> u16 {
        let port = self.next_port.fetch_add(1, Ordering::Relaxed);
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, (name.to_owned(), ssl));
        port
    }
}

/// Binds `addr` and serves the replayed iPad there; returns the bound address.
pub async fn start(
    replay: Arc<Replay>,
    addr: &UsbmuxAddress,
) -> Result<(UsbmuxAddress, JoinHandle<()>), SimError> {
    match addr {
        UsbmuxAddress::Tcp(a) => {
            let listener = tokio::net::TcpListener::bind(a).await?;
            let bound = UsbmuxAddress::Tcp(listener.local_addr()?);
            let task = tokio::spawn(async move {
                let mut clients = tokio::task::JoinSet::new();
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    while clients.try_join_next().is_some() {}
                    clients.spawn(serve_client(replay.clone(), Box::new(s)));
                }
            });
            Ok((bound, task))
        }
        UsbmuxAddress::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            let task = tokio::spawn(async move {
                let mut clients = tokio::task::JoinSet::new();
                while let Ok((s, _)) = listener.accept().await {
                    while clients.try_join_next().is_some() {}
                    clients.spawn(serve_client(replay.clone(), Box::new(s)));
                }
            });
            Ok((addr.clone(), task))
        }
    }
}

async fn reply(stream: &mut BoxStream, tag: u32, dict: &Dictionary) -> bool {
    match Frame::plist(tag, dict) {
        Ok(f) => frame::write_frame(stream, &f).await.is_ok(),
        Err(_) => false,
    }
}

/// One usbmuxd client (plist protocol), served live for the one replayed iPad.
async fn serve_client(replay: Arc<Replay>, mut stream: BoxStream) {
    loop {
        let Ok(Ok(Some(frame))) =
            tokio::time::timeout(IDLE, frame::read_frame(&mut stream, MAX_REQUEST_LEN)).await
        else {
            return;
        };
        let tag = frame.header.tag;
        if frame.header.message != message_type::PLIST {
            // Only the plist protocol is replayed; the binary one is refused as Linux usbmuxd
            // refuses a version it does not speak.
            let _ = reply(
                &mut stream,
                tag,
                &msg::result_reply(ResultCode::BAD_VERSION),
            )
            .await;
            return;
        }
        let Ok(dict) = frame.plist_dict() else { return };
        let request = match Request::from_dict(&dict) {
            Ok(r) => r,
            Err(code) => {
                if !reply(&mut stream, tag, &msg::result_reply(code)).await {
                    return;
                }
                continue;
            }
        };
        let ok = msg::result_reply(ResultCode::OK);
        let answer = match request {
            Request::ListDevices => msg::device_list_reply(std::slice::from_ref(&replay.device)),
            Request::ListListeners => msg::listener_list_reply(Vec::new()),
            Request::ReadBuid => msg::buid_reply(&replay.buid),
            Request::ReadPairRecord { udid } => {
                match replay
                    .pair_records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&udid)
                {
                    Some(data) => msg::pair_record_reply(data.clone()),
                    None => msg::result_reply(ResultCode::ENOENT),
                }
            }
            Request::SavePairRecord { udid, data, .. } => {
                replay
                    .pair_records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(udid, data);
                ok
            }
            Request::DeletePairRecord { udid } => {
                replay
                    .pair_records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&udid);
                ok
            }
            Request::Listen => {
                let attached = DeviceEvent::Attached(replay.device.clone()).to_dict();
                if reply(&mut stream, tag, &ok).await && reply(&mut stream, 0, &attached).await {
                    // Held open until the client leaves: the iPad stays plugged in.
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
                return;
            }
            Request::Connect { device_id, port } => {
                let service = if device_id != replay.device.device_id {
                    Err(ResultCode::BAD_DEVICE)
                } else if port == usbmux::LOCKDOWN_PORT {
                    Ok(None)
                } else {
                    replay
                        .services
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&port)
                        .map(Some)
                        .ok_or(ResultCode::CONNECTION_REFUSED)
                };
                match service {
                    Err(code) => msg::result_reply(code),
                    Ok(service) => {
                        if !reply(&mut stream, tag, &ok).await {
                            return;
                        }
                        match service {
                            None => serve_lockdownd(&replay, stream).await,
                            Some((name, ssl)) => serve_service(&replay, &name, ssl, stream).await,
                        }
                        return;
                    }
                }
            }
        };
        if !reply(&mut stream, tag, &answer).await {
            return;
        }
    }
}

async fn accept_tls(replay: &Replay, stream: BoxStream) -> Option<BoxStream> {
    let accept = TlsAcceptor::from(replay.tls.clone()).accept(stream);
    match tokio::time::timeout(HANDSHAKE, accept).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        _ => None,
    }
}

async fn next_request(stream: &mut BoxStream) -> Option<Dictionary> {
    match tokio::time::timeout(IDLE, plist_service::read(stream)).await {
        Ok(Ok(Some(d))) => Some(d),
        _ => None,
    }
}

/// lockdownd on one connection: recorded replies, with TLS after a StartSession that turned it
/// on and this replayer's own ports in StartService replies.
async fn serve_lockdownd(replay: &Replay, mut stream: BoxStream) {
    while let Some(request) = next_request(&mut stream).await {
        let Some(mut answer) = replay.answer(transcript::LOCKDOWND, &request) else {
            return;
        };
        let name = request.get("Request").and_then(Value::as_string);
        if name == Some("StartService") && answer.contains_key("Port") {
            let service = request
                .get("Service")
                .and_then(Value::as_string)
                .unwrap_or("");
            let ssl = answer
                .get("EnableServiceSSL")
                .and_then(Value::as_boolean)
                .unwrap_or(false);
            let port = replay.open_service(service, ssl);
            answer.insert("Port".into(), u64::from(port).into());
        }
        if plist_service::write(&mut stream, &answer).await.is_err() {
            return;
        }
        if name == Some("StartSession") && usbmux::plist_guard::lockdown_session_starts(&answer) {
            match accept_tls(replay, stream).await {
                Some(tls) => stream = tls,
                None => return,
            }
        }
    }
}

async fn serve_service(replay: &Replay, name: &str, ssl: bool, stream: BoxStream) {
    let mut stream = if ssl {
        match accept_tls(replay, stream).await {
            Some(tls) => tls,
            None => return,
        }
    } else {
        stream
    };
    while let Some(request) = next_request(&mut stream).await {
        let Some(answer) = replay.answer(name, &request) else {
            return;
        };
        if plist_service::write(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn entry(channel: &str, connection: u64, direction: Direction, message: Dictionary) -> Entry {
        Entry {
            at: 0.0,
            channel: channel.into(),
            connection,
            direction,
            message,
        }
    }

    fn get(key: &str) -> Dictionary {
        dict(&[("Request", "GetValue".into()), ("Key", key.into())])
    }

    fn value(v: &str) -> Dictionary {
        dict(&[("Value", v.into())])
    }

    #[test]
    fn requests_are_matched_by_channel_and_kind_in_order() {
        use Direction::*;
        const L: &str = transcript::LOCKDOWND;
        const MC: &str = "com.apple.mobile.MCInstall";
        let entries = vec![
            entry(
                "usbmuxd",
                1,
                Request,
                dict(&[("MessageType", "Connect".into())]),
            ),
            entry("usbmuxd", 1, Reply, dict(&[("Number", 0u64.into())])),
            entry(L, 2, Request, get("ActivationState")),
            entry(L, 2, Reply, value("Unactivated")),
            entry(L, 2, Request, get("DeviceName")),
            entry(L, 2, Reply, value("iPad")),
            entry(MC, 3, Request, dict(&[("RequestType", "Flush".into())])),
            entry(MC, 3, Reply, value("flushed")),
            entry(L, 4, Request, get("ActivationState")),
            entry(L, 4, Reply, value("Activated")),
            // Never answered: the link dropped.
            entry(L, 5, Request, get("ProductType")),
        ];
        let mut script = Script::from_entries(&entries);
        let k = |d: &Dictionary| request_key(L, d);
        // (channel, request key, expected reply value)
        let cases = [
            (L, k(&get("ActivationState")), Some("Unactivated")),
            (MC, "Flush".to_owned(), Some("flushed")),
            // Skips DeviceName, which the host did not ask again.
            (L, k(&get("ActivationState")), Some("Activated")),
            // Asked again: the last answer.
            (L, k(&get("ActivationState")), Some("Activated")),
            // Asked late: the recorded one before the cursor.
            (L, k(&get("DeviceName")), Some("iPad")),
            (L, k(&get("ProductType")), None),
            ("usbmuxd", "Connect".to_owned(), None),
            ("com.apple.other", "X".to_owned(), None),
        ];
        for (channel, key, expected) in cases {
            let got = script.answer(channel, &key);
            assert_eq!(
                got.as_ref()
                    .and_then(|d| d.get("Value"))
                    .and_then(Value::as_string),
                expected,
                "{channel} {key}"
            );
        }
    }

    #[test]
    fn request_keys_tell_values_and_services_apart() {
        let l = transcript::LOCKDOWND;
        let cases = [
            (l, get("A"), get("B"), false),
            (l, get("A"), get("A"), true),
            (
                l,
                dict(&[("Request", "StartService".into()), ("Service", "x".into())]),
                dict(&[("Request", "StartService".into()), ("Service", "y".into())]),
                false,
            ),
            (
                "com.apple.mobile.MCInstall",
                dict(&[("RequestType", "Flush".into())]),
                dict(&[("RequestType", "Flush".into()), ("Extra", 1u64.into())]),
                true,
            ),
            (
                "com.apple.mobileactivationd",
                dict(&[("Command", "A".into())]),
                dict(&[("Command", "B".into())]),
                false,
            ),
        ];
        for (channel, a, b, same) in cases {
            assert_eq!(
                request_key(channel, &a) == request_key(channel, &b),
                same,
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn redacted_values_are_made_up_and_the_rest_kept() {
        let recorded = dict(&[
            ("Request", "Pair".into()),
            ("EscrowBag", redact::marker("EscrowBag")),
            (
                "Nested",
                Value::Dictionary(dict(&[("K", redact::marker("K"))])),
            ),
        ]);
        let out = synthesise(&recorded);
        assert_eq!(out["Request"].as_string(), Some("Pair"));
        assert_eq!(out["EscrowBag"].as_data().map(<[u8]>::len), Some(32));
        assert!(
            out["Nested"].as_dictionary().unwrap()["K"]
                .as_data()
                .is_some()
        );
        assert_ne!(
            synthesise(&recorded)["EscrowBag"],
            out["EscrowBag"],
            "fresh each time"
        );
    }
}
