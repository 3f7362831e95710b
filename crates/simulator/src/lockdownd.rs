//! lockdownd of a virtual iPad (device port 62078): plaintext plist requests, pairing, and a
//! TLS session after StartSession, with the error names and state rules of real iOS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plist::{Dictionary, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use usbmux::plist_service;

use crate::faults::{self, FaultAction, FaultBook};
use crate::ipad::{PairedHost, PendingService, VirtualIpad};
use crate::services;
use crate::tls::{self, BoxStream, Prefixed, RecordBounded, TrustedHost};
use crate::trust_prompt::Consent;
use crate::value_rules;
use crate::values;

pub const PORT: u16 = usbmux::LOCKDOWN_PORT;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// What a connection to a plugged device can reach.
#[derive(Clone)]
pub struct Link {
    pub ipad: Arc<VirtualIpad>,
    /// Becomes `true` when the device is unplugged: every tunnel then drops.
    pub unplugged: watch::Receiver<bool>,
    pub faults: Arc<Mutex<FaultBook>>,
    /// The simulated Apple whose activation records the device trusts.
    pub authority: Arc<crate::activation::ActivationAuthority>,
    /// Where EraseDevice and EnterRecovery ask the cart to reset this slot.
    pub erase: tokio::sync::mpsc::UnboundedSender<(u32, crate::cart::Reset)>,
    /// Reached over Wi-Fi (a macOS `Network` listing), not the USB cable.
    pub over_network: bool,
}

impl Link {
    /// Asks the cart to erase this device: it drops off USB, is wiped, and comes back.
    pub fn request_erase(&self) {
        let _ = self
            .erase
            .send((self.ipad.spec.slot, crate::cart::Reset::Erase));
    }

    /// Asks the cart to reboot this device into recovery mode.
    pub fn request_recovery(&self) {
        let _ = self
            .erase
            .send((self.ipad.spec.slot, crate::cart::Reset::Recovery));
    }

    pub fn fault(&self, request: &str) -> Option<FaultAction> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(self.ipad.spec.slot, request)
    }

    /// Whether the device has been unplugged since this link was made.
    pub fn is_unplugged(&self) -> bool {
        *self.unplugged.borrow()
    }

    /// Resolves when the device is unplugged (or the cart shut down).
    pub async fn gone(&mut self) {
        while !*self.unplugged.borrow() {
            if self.unplugged.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The socket in its current protocol state.
enum Conn {
    Plain(BoxStream),
    Tls(Box<TlsStream<RecordBounded<BoxStream>>>),
}

impl Conn {
    async fn read(&mut self) -> Result<Option<Dictionary>, usbmux::UsbmuxError> {
        match self {
            Conn::Plain(s) => plist_service::read(s).await,
            Conn::Tls(s) => plist_service::read(s).await,
        }
    }

    async fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn write(&mut self, dict: &Dictionary) -> Result<(), usbmux::UsbmuxError> {
        let bytes = plist_service::encode(dict)?;
        self.write_bytes(&bytes).await?;
        Ok(())
    }
}

struct Session {
    id: String,
    host_id: String,
}

/// What to do after the reply is written.
enum Then {
    Continue,
    StartTls(String),
    StopTls,
    Close,
    /// EnterRecovery: the reply goes out, then the device reboots into recovery mode.
    Recovery,
}

fn reply(request: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Request".into(), request.into());
    d
}

fn error(request: &str, name: &str) -> Dictionary {
    let mut d = reply(request);
    d.insert("Error".into(), name.into());
    d
}

/// A complete frame whose body is not a property list.
pub const MALFORMED: &[u8] = b"\x00\x00\x00\x1bthis is not a property list";

/// Serves one lockdownd connection until the client leaves or the device is unplugged.
pub async fn serve(mut link: Link, stream: BoxStream) {
    let slot = link.ipad.spec.slot;
    let mut conn = Conn::Plain(stream);
    let mut session: Option<Session> = None;
    let mut after_tls = false;
    loop {
        let request = tokio::select! {
            biased;
            _ = link.gone() => return,
            r = read_next(&mut conn, &mut after_tls) => r,
        };
        // A request that raced with the unplug finds the cable gone.
        if link.is_unplugged() {
            return;
        }
        let request = match request {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(slot, "lockdownd: dropping connection: {e}");
                return;
            }
        };
        let name = request
            .get("Request")
            .and_then(Value::as_string)
            .unwrap_or("")
            .to_owned();
        let mut forced_error = None;
        let mut deep = false;
        match link.fault(&name) {
            Some(FaultAction::Drop) => return,
            Some(FaultAction::Malformed) => {
                let _ = conn.write_bytes(MALFORMED).await;
                continue;
            }
            Some(FaultAction::Deep) => deep = true,
            Some(FaultAction::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Some(FaultAction::Error { name: e }) => forced_error = Some(e),
            Some(FaultAction::ErrorAfter { name: e }) => {
                let _ = handle(&link.ipad, link.over_network, &mut session, &name, &request);
                forced_error = Some(e);
            }
            None => {}
        }
        link.ipad.traffic.reply();
        if !link.ipad.spec.latency.is_zero() {
            tokio::time::sleep(link.ipad.spec.latency).await;
        }
        let (answer, then) = match forced_error {
            Some(e) => (error(&name, &e), Then::Continue),
            None => handle(&link.ipad, link.over_network, &mut session, &name, &request),
        };
        if deep {
            // The answer's effects stand; the client just cannot read it.
            if conn
                .write_bytes(&faults::deep_message(&answer))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if conn.write(&answer).await.is_err() {
            return;
        }
        conn = match (then, conn) {
            (Then::Continue, c) => c,
            (Then::Close, _) => return,
            (Then::Recovery, _) => {
                link.request_recovery();
                return;
            }
            (Then::StartTls(host_id), Conn::Plain(s)) => {
                match start_tls(&link.ipad, &host_id, s).await {
                    Some(tls) => Conn::Tls(Box::new(tls)),
                    None => return,
                }
            }
            (Then::StopTls, Conn::Tls(tls)) => {
                let (bounded, _) = tls.into_inner();
                after_tls = true;
                Conn::Plain(bounded.into_inner())
            }
            (_, c) => c,
        };
    }
}

/// Reads the next request. Right after TLS was stopped, the client's close_notify (an
/// encrypted alert record) may come first: it is skipped, and plaintext follows.
async fn read_next(
    conn: &mut Conn,
    after_tls: &mut bool,
) -> Result<Option<Dictionary>, usbmux::UsbmuxError> {
    if *after_tls && let Conn::Plain(s) = conn {
        *after_tls = false;
        let mut first = [0u8; 1];
        if s.read(&mut first).await? == 0 {
            return Ok(None);
        }
        if first[0] == 0x15 {
            let mut rest = [0u8; 4];
            s.read_exact(&mut rest).await?;
            let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await?;
        } else {
            let inner = std::mem::replace(
                s,
                Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
            );
            *s = Box::new(Prefixed::new(first.to_vec(), inner));
        }
    }
    conn.read().await
}

async fn start_tls(
    ipad: &VirtualIpad,
    host_id: &str,
    stream: BoxStream,
) -> Option<TlsStream<RecordBounded<BoxStream>>> {
    let host = ipad.state().hosts.get(host_id).cloned()?;
    let config = tls::server_config(
        host.device_cert_der.clone(),
        ipad.key_pkcs8_der(),
        TrustedHost {
            host_cert_der: host.host_cert_der,
            root_cert_der: host.root_cert_der,
        },
    )
    .map_err(|e| tracing::warn!(slot = ipad.spec.slot, "lockdownd: TLS setup failed: {e}"))
    .ok()?;
    let accept = TlsAcceptor::from(config).accept(RecordBounded::new(stream));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(
                slot = ipad.spec.slot,
                "lockdownd: TLS handshake refused: {e}"
            );
            None
        }
        Err(_) => None,
    }
}

fn handle(
    ipad: &VirtualIpad,
    over_network: bool,
    session: &mut Option<Session>,
    name: &str,
    req: &Dictionary,
) -> (Dictionary, Then) {
    let cont = |d| (d, Then::Continue);
    match name {
        "" => cont(error("", "MalformedCommand")),
        "QueryType" => {
            let mut d = reply(name);
            d.insert("Type".into(), "com.apple.mobile.lockdown".into());
            cont(d)
        }
        "GetValue" => cont(get_value(ipad, session.is_some(), req)),
        "SetValue" => cont(set_value(ipad, session.is_some(), req)),
        "RemoveValue" => cont(remove_value(ipad, session.is_some(), req)),
        // Pairing needs the cable: a Wi-Fi link can only use a pairing made over USB.
        "Pair" if over_network => cont(error(name, "PairingProhibitedOverThisConnection")),
        "Pair" => cont(pair(ipad, req)),
        "ValidatePair" => cont(match host_id_of(req) {
            None => error(name, "MissingHostID"),
            Some(id) if ipad.state().hosts.contains_key(&id) => reply(name),
            Some(_) => error(name, "InvalidHostID"),
        }),
        "Unpair" => cont(match host_id_of(req) {
            None => error(name, "MissingHostID"),
            Some(id) => {
                if ipad.state().hosts.remove(&id).is_some() {
                    reply(name)
                } else {
                    error(name, "InvalidHostID")
                }
            }
        }),
        "StartSession" => start_session(ipad, session, req),
        "StopSession" => {
            let Some(active) = session.as_ref() else {
                return cont(error(name, "SessionInactive"));
            };
            match req.get("SessionID").and_then(Value::as_string) {
                None => cont(error(name, "MissingSessionID")),
                Some(id) if id != active.id => cont(error(name, "InvalidSessionID")),
                Some(_) => {
                    *session = None;
                    let mut d = reply(name);
                    // pymobiledevice3 insists on it, though iOS >= 5 otherwise omits Result.
                    d.insert("Result".into(), "Success".into());
                    (d, Then::StopTls)
                }
            }
        }
        "StartService" => cont(start_service(ipad, session.as_ref(), req)),
        // pymobiledevice3 and idevice send it in a paired session and expect the plain reply;
        // the device then reboots into recovery (docs/fidelity.md §3).
        "EnterRecovery" if session.is_some() => (reply(name), Then::Recovery),
        "EnterRecovery" => cont(error(name, "SessionInactive")),
        "Goodbye" => (reply(name), Then::Close),
        _ => cont(error(name, "InvalidRequest")),
    }
}

fn host_id_of(req: &Dictionary) -> Option<String> {
    req.get("PairRecord")
        .and_then(Value::as_dictionary)
        .and_then(|r| r.get("HostID"))
        .or_else(|| req.get("HostID"))
        .and_then(Value::as_string)
        .map(str::to_owned)
}

fn echo_key_domain(d: &mut Dictionary, req: &Dictionary) {
    for k in ["Key", "Domain"] {
        if let Some(v) = req.get(k) {
            d.insert(k.into(), v.clone());
        }
    }
}

fn get_value(ipad: &VirtualIpad, trusted: bool, req: &Dictionary) -> Dictionary {
    // A Key or Domain that is there but not a string names nothing: refused rather than read as
    // absent (which would answer the whole domain).
    if ["Key", "Domain"]
        .iter()
        .any(|k| req.get(k).is_some_and(|v| v.as_string().is_none()))
    {
        return with_echo(error("GetValue", "InvalidRequest"), req);
    }
    let key = req.get("Key").and_then(Value::as_string);
    let domain = req.get("Domain").and_then(Value::as_string);
    let state = ipad.state();
    let value = match (domain, key, trusted) {
        (None, None, false) => Some(Value::Dictionary(values::public_subset(ipad, &state))),
        (None, Some(k), false) if values::readable_untrusted(k) => {
            values::default_domain(ipad, &state).remove(k)
        }
        (_, _, false) => return with_echo(error("GetValue", "GetProhibited"), req),
        (None, None, true) => Some(Value::Dictionary(values::default_domain(ipad, &state))),
        (None, Some(k), true) => values::default_domain(ipad, &state).remove(k),
        (Some(dom), k, true) => values::domain(ipad, &state, dom).and_then(|mut d| match k {
            None => Some(Value::Dictionary(d)),
            Some(k) => d.remove(k),
        }),
    };
    match value {
        Some(v) => {
            let mut d = with_echo(reply("GetValue"), req);
            d.insert("Value".into(), v);
            d
        }
        None => with_echo(error("GetValue", "MissingValue"), req),
    }
}

fn with_echo(mut d: Dictionary, req: &Dictionary) -> Dictionary {
    echo_key_domain(&mut d, req);
    d
}

fn set_value(ipad: &VirtualIpad, trusted: bool, req: &Dictionary) -> Dictionary {
    const NAME: &str = "SetValue";
    let Some(key) = req.get("Key").and_then(Value::as_string) else {
        return with_echo(error(NAME, "MissingKey"), req);
    };
    let Some(value) = req.get("Value") else {
        return with_echo(error(NAME, "MissingValue"), req);
    };
    let domain = req.get("Domain").and_then(Value::as_string);
    let mut state = ipad.state();
    let ok = match (domain, key, trusted) {
        // usbmuxd's preflight tells an untrusted device who is asking.
        (None, "UntrustedHostBUID", _) => value
            .as_string()
            .map(|v| state.untrusted_host_buid = Some(v.into())),
        (_, _, false) => return with_echo(error(NAME, "SetProhibited"), req),
        (None, "DeviceName", true) => value
            .as_string()
            .filter(|v| !v.is_empty())
            .map(|v| state.device_name = v.into()),
        // An IANA zone name only; the offset lockdownd reports follows it (values.rs).
        (None, "TimeZone", true) => value
            .as_string()
            .filter(|v| value_rules::is_time_zone(v))
            .map(|v| state.time_zone = v.into()),
        // go-ios sets the clock this way before activation (`docs/fidelity.md` §3).
        (None, "TimeIntervalSince1970", true) => {
            value_rules::time_interval(value).map(|t| state.clock_offset = t - values::now())
        }
        (None, "Uses24HourClock", true) => value.as_boolean().map(|v| state.uses_24h_clock = v),
        // Hosts confirm activation with it (pymobiledevice3, libideviceactivation).
        (None, "ActivationStateAcknowledged", true) => value.as_boolean().map(|_| ()),
        (Some(values::INTERNATIONAL), "Language", true) => value
            .as_string()
            .filter(|v| value_rules::is_language(v))
            .map(|v| state.language = v.into()),
        (Some(values::INTERNATIONAL), "Locale", true) => value
            .as_string()
            .filter(|v| value_rules::is_locale(v))
            .map(|v| state.locale = v.into()),
        (Some(dom), k, true) if values::WRITABLE_DOMAINS.contains(&dom) => {
            state
                .extra_domains
                .entry(dom.into())
                .or_default()
                .insert(k.into(), value.clone());
            Some(())
        }
        (None, k, true) if values::default_domain(ipad, &state).contains_key(k) => {
            return with_echo(error(NAME, "ImmutableValue"), req);
        }
        _ => return with_echo(error(NAME, "SetProhibited"), req),
    };
    match ok {
        Some(()) => with_echo(reply(NAME), req),
        // Right key, wrong plist type or a value the device does not take.
        None => with_echo(error(NAME, "SetProhibited"), req),
    }
}

fn remove_value(ipad: &VirtualIpad, trusted: bool, req: &Dictionary) -> Dictionary {
    const NAME: &str = "RemoveValue";
    let Some(key) = req.get("Key").and_then(Value::as_string) else {
        return with_echo(error(NAME, "MissingKey"), req);
    };
    if !trusted {
        return with_echo(error(NAME, "RemoveProhibited"), req);
    }
    let domain = req.get("Domain").and_then(Value::as_string);
    let mut state = ipad.state();
    let removed = match (domain, key) {
        (None, "DeviceName") => {
            state.device_name = "iPad".into();
            true
        }
        (None, "TimeZone") => {
            state.time_zone = "America/New_York".into();
            true
        }
        (Some(dom), k) if values::WRITABLE_DOMAINS.contains(&dom) => state
            .extra_domains
            .get_mut(dom)
            .is_some_and(|d| d.remove(k).is_some()),
        _ => false,
    };
    if removed {
        with_echo(reply(NAME), req)
    } else {
        with_echo(error(NAME, "RemoveProhibited"), req)
    }
}

fn pair(ipad: &VirtualIpad, req: &Dictionary) -> Dictionary {
    const NAME: &str = "Pair";
    let Some(record) = req.get("PairRecord").and_then(Value::as_dictionary) else {
        return error(NAME, "MissingPairRecord");
    };
    let Some(host_id) = record.get("HostID").and_then(Value::as_string) else {
        return error(NAME, "MissingHostID");
    };
    ipad.state().pair_request_host_ids.push(host_id.to_owned());
    let pem = |k: &str| {
        record
            .get(k)
            .and_then(Value::as_data)
            .map(tls::cert_pem_to_der)
    };
    let (Some(Ok(host)), Some(Ok(root)), Some(Ok(device))) = (
        pem("HostCertificate"),
        pem("RootCertificate"),
        pem("DeviceCertificate"),
    ) else {
        return error(NAME, "InvalidPairRecord");
    };
    // The DeviceCertificate must certify this device's own key, or TLS could never work.
    if tls::certificate_public_key(&device).as_deref() != Some(ipad.public_key_der().as_slice()) {
        return error(NAME, "InvalidPairRecord");
    }
    let mut state = ipad.state();
    let options = req.get("PairingOptions").and_then(Value::as_dictionary);
    let option_data = |k: &str| options.and_then(|o| o.get(k)).and_then(Value::as_data);
    if let Some(response) = option_data("ChallengeResponse") {
        // Second step of a supervised Pair: the signed challenge replaces the user's consent.
        let Some((cert, challenge)) = state.pairing_challenge.take() else {
            return error(NAME, "MCChallengeRequired");
        };
        match crate::cms_verify::verify_attached(response, &cert) {
            Ok(content) if content == challenge => {}
            Ok(_) | Err(_) => return error(NAME, "MCChallengeRequired"),
        }
    } else if let Some(cert) =
        option_data("SupervisorCertificate").filter(|c| state.is_supervisor(c))
    {
        let challenge = crate::rng::random_bytes::<32>().to_vec();
        state.pairing_challenge = Some((cert.to_vec(), challenge.clone()));
        let mut extended = Dictionary::new();
        extended.insert("PairingChallenge".into(), Value::Data(challenge));
        let mut d = error(NAME, "MCChallengeRequired");
        d.insert("ExtendedResponse".into(), Value::Dictionary(extended));
        return d;
    } else if state.pairing_disallowed() {
        // AllowPairing=false: only a supervisor (above) may pair.
        return error(NAME, "MCProtected");
    } else if (!state.is_supervised() || state.setup_done)
        && let Some(refusal) = pairing_consent(ipad, &mut state)
    {
        // (A supervised iPad in Setup Assistant pairs without a prompt.)
        return refusal;
    }
    let escrow_bag = crate::rng::random_bytes::<32>().to_vec();
    state.hosts.insert(
        host_id.into(),
        PairedHost {
            system_buid: record
                .get("SystemBUID")
                .and_then(Value::as_string)
                .unwrap_or_default()
                .into(),
            host_cert_der: host,
            root_cert_der: root,
            device_cert_der: device,
            escrow_bag: escrow_bag.clone(),
        },
    );
    let mut d = reply(NAME);
    d.insert("EscrowBag".into(), Value::Data(escrow_bag));
    d
}

/// The device's own answer to an ordinary Pair: silent, prompt, refusal or locked
/// (`crate::trust_prompt`).
fn pairing_consent(ipad: &VirtualIpad, state: &mut crate::ipad::DeviceState) -> Option<Dictionary> {
    // Refused while locked (`docs/fidelity.md` §2); once unlocked, the Trust prompt.
    if state.screen_locked {
        return Some(error("Pair", "PasswordProtected"));
    }
    match state.trust_prompt.on_pair(ipad.spec.pairing) {
        Consent::Paired => None,
        Consent::Refused(name) => Some(error("Pair", name)),
    }
}

fn start_session(
    ipad: &VirtualIpad,
    session: &mut Option<Session>,
    req: &Dictionary,
) -> (Dictionary, Then) {
    const NAME: &str = "StartSession";
    if session.is_some() {
        return (error(NAME, "SessionActive"), Then::Continue);
    }
    let Some(host_id) = req.get("HostID").and_then(Value::as_string) else {
        return (error(NAME, "MissingHostID"), Then::Continue);
    };
    if !ipad.state().hosts.contains_key(host_id) {
        return (error(NAME, "InvalidHostID"), Then::Continue);
    }
    let id = crate::rng::uuid_upper();
    *session = Some(Session {
        id: id.clone(),
        host_id: host_id.into(),
    });
    let mut d = reply(NAME);
    d.insert("EnableSessionSSL".into(), true.into());
    d.insert("SessionID".into(), id.into());
    (d, Then::StartTls(host_id.into()))
}

fn start_service(ipad: &VirtualIpad, session: Option<&Session>, req: &Dictionary) -> Dictionary {
    const NAME: &str = "StartService";
    let Some(name) = req.get("Service").and_then(Value::as_string) else {
        return error(NAME, "MissingService");
    };
    let Some(info) = services::lookup(name) else {
        let mut d = error(NAME, "InvalidService");
        d.insert("Service".into(), name.into());
        return d;
    };
    let Some(session) = session else {
        return error(NAME, "SessionInactive");
    };
    if refused_before_activation(ipad, name) {
        let mut d = error(NAME, "InvalidService");
        d.insert("Service".into(), name.into());
        return d;
    }
    let mut pending = ipad.pending_services();
    let port = loop {
        let candidate = 49152 + (u16::from_be_bytes(crate::rng::random_bytes::<2>()) % 16000);
        if !pending.contains_key(&candidate) {
            break candidate;
        }
    };
    pending.insert(
        port,
        PendingService {
            service: name.into(),
            host_id: session.host_id.clone(),
            ssl: info.ssl,
        },
    );
    let mut d = reply(NAME);
    d.insert("EnableServiceSSL".into(), info.ssl.into());
    d.insert("Port".into(), u64::from(port).into());
    d.insert("Service".into(), name.into());
    d
}

/// lockdownd starts some services only on an activated device; whether MCInstall is one is not
/// shown anywhere, so the simulator takes the stricter answer (`docs/fidelity.md` §4).
fn refused_before_activation(ipad: &VirtualIpad, service: &str) -> bool {
    service == services::MCINSTALL
        && ipad.spec.rules.mcinstall_needs_activation
        && !ipad.state().activated
}
