//! One virtual iPad: what it is (model, release, identity, key) and what it remembers (name,
//! language, activation, trusted hosts).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPublicKey, LineEnding};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use crate::bus::UsbPort;
use crate::catalogue::{Identity, Model, Release};
use crate::error::SimError;

/// How the iPad answers a Pair request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingBehavior {
    /// Pairs without asking (a device still in Setup Assistant does this).
    Accept,
    /// Shows "Trust This Computer?": answers PairingDialogResponsePending `attempts` times,
    /// then the user taps Trust.
    Dialog { attempts: u32 },
    /// The user taps "Don't Trust" the first time the prompt shows; after a replug the prompt
    /// waits for someone to tap (`Cart::tap_trust_prompt`).
    Deny,
    /// A passcode is set and the screen is locked: PasswordProtected until someone unlocks it
    /// ([`DeviceState::screen_locked`]); then it asks "Trust This Computer?" like `Dialog`.
    Locked { attempts: u32 },
}

/// Everything fixed about a device for the length of a run.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// 1-based position on the cart; the operator's "slot".
    pub slot: u32,
    pub model: &'static Model,
    pub release: Release,
    pub identity: Identity,
    pub pairing: PairingBehavior,
    /// Added before every lockdownd and service reply.
    pub latency: Duration,
    /// Where it is plugged on the cart's USB bus (its LocationID comes from there).
    pub usb: UsbPort,
    /// Assigned to an MDM server for Automated Device Enrollment in Apple School Manager.
    pub ade: Option<AdeAssignment>,
    /// Still assigned in another organisation's Apple School Manager (its name): at activation
    /// the iPad gets that organisation's cloud configuration.
    pub other_organization: Option<String>,
    /// Find My is on with someone's Apple ID: the activation server answers with a login form.
    pub activation_lock: bool,
    /// How long an erased iPad takes to come back on USB.
    pub erase_reattach: Duration,
    /// Device rules a scenario may switch or tune (`crate::device_rules`).
    pub rules: crate::device_rules::DeviceRules,
    /// On the cart's USB bus, or reached over Wi-Fi only.
    pub connection: crate::scenario::Connection,
    /// A USB iPad also paired for Wi-Fi sync: listed over the network too (macOS flavour).
    pub also_network: bool,
}

/// What Apple's servers hand an ADE-assigned iPad (its DEP profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdeAssignment {
    pub organization: String,
    pub configuration_url: String,
}

/// A configuration profile the device holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub identifier: String,
    pub uuid: String,
    pub display_name: String,
    pub description: String,
    pub organization: Option<String>,
    pub version: u64,
    pub removal_disallowed: bool,
    /// The payload types inside (com.apple.wifi.managed, com.apple.mdm…).
    pub payload_types: Vec<String>,
    /// The bytes as the host sent them (signed or not).
    pub bytes: Vec<u8>,
}

/// A host the device trusts, from its Pair request.
#[derive(Debug, Clone)]
pub struct PairedHost {
    pub system_buid: String,
    pub host_cert_der: Vec<u8>,
    pub root_cert_der: Vec<u8>,
    pub device_cert_der: Vec<u8>,
    pub escrow_bag: Vec<u8>,
}

/// What changes while the device runs.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub device_name: String,
    pub language: String,
    pub locale: String,
    pub time_zone: String,
    pub uses_24h_clock: bool,
    pub activated: bool,
    pub setup_done: bool,
    pub passcode: bool,
    pub untrusted_host_buid: Option<String>,
    pub hosts: BTreeMap<String, PairedHost>,
    /// "Trust This Computer?": showing, answered, or refused until a replug.
    pub trust_prompt: crate::trust_prompt::TrustPrompt,
    /// The screen is locked behind a passcode (pairing [`PairingBehavior::Locked`]) and nobody
    /// has unlocked it yet.
    pub screen_locked: bool,
    /// Values in writable domains other than the default and international ones.
    pub extra_domains: BTreeMap<String, plist::Dictionary>,
    /// CloudConfigurationDetails: absent on a fresh device.
    pub cloud_config: Option<plist::Dictionary>,
    /// Installed profiles, in installation order.
    pub profiles: Vec<Profile>,
    /// Profiles "downloaded" for the user to approve in Settings (not installed).
    pub downloaded: Vec<Profile>,
    /// StoreProfile with purpose PostSetupInstallation.
    pub stored_profile: Option<Vec<u8>>,
    pub wifi_power: bool,
    /// The challenge of a supervised Pair in progress: (supervisor certificate, challenge).
    pub pairing_challenge: Option<(Vec<u8>, Vec<u8>)>,
    /// The nonce of the activation session in progress (mobileactivationd).
    pub activation_session: Option<Vec<u8>>,
    /// The MDM enrollment at the end of Setup Assistant: done, or why it failed.
    pub enrollment: Option<crate::enrollment::Enrollment>,
    /// MCInstall requests still to be answered "wait" (a data migration pending since boot).
    pub migration_waits_left: u32,
    /// The HostID of every Pair request received, in order (for tests of host behaviour).
    pub pair_request_host_ids: Vec<String>,
    /// Rebooted into recovery mode (lockdownd `EnterRecovery`): off usbmuxd, on the USB bus with
    /// the recovery product ID.
    pub in_recovery: bool,
    /// The device clock minus the host's, in seconds (set by `SetValue TimeIntervalSince1970`).
    pub clock_offset: f64,
}

impl DeviceState {
    pub fn new(name: String, activated: bool, setup_done: bool, passcode: bool) -> Self {
        DeviceState {
            device_name: name,
            language: "en".into(),
            locale: "en_US".into(),
            time_zone: "America/New_York".into(),
            uses_24h_clock: false,
            activated,
            setup_done,
            passcode,
            untrusted_host_buid: None,
            hosts: BTreeMap::new(),
            trust_prompt: Default::default(),
            screen_locked: false,
            extra_domains: BTreeMap::new(),
            cloud_config: None,
            profiles: Vec::new(),
            downloaded: Vec::new(),
            stored_profile: None,
            wifi_power: true,
            pairing_challenge: None,
            activation_session: None,
            enrollment: None,
            migration_waits_left: 0,
            pair_request_host_ids: Vec::new(),
            in_recovery: false,
            clock_offset: 0.0,
        }
    }

    /// A device that finished Setup Assistant has a cloud configuration saying so.
    pub fn with_setup_done(mut self) -> Self {
        self.setup_done = true;
        let mut cc = plist::Dictionary::new();
        cc.insert("CloudConfigurationUIComplete".into(), true.into());
        cc.insert("IsSupervised".into(), false.into());
        self.cloud_config = Some(cc);
        self
    }

    /// What an erase leaves: a new iPad in Setup Assistant, unactivated, trusting nobody. The
    /// person holding it is the same: a scripted "Don't Trust" already given is not given again.
    pub fn erased(&self) -> Self {
        let mut erased = DeviceState::new("iPad".into(), false, false, false);
        erased.trust_prompt = self.trust_prompt.clone();
        erased.trust_prompt.reconnected();
        erased
    }

    pub fn is_supervised(&self) -> bool {
        self.cloud_config
            .as_ref()
            .and_then(|c| c.get("IsSupervised"))
            .and_then(flag)
            .unwrap_or(false)
    }

    /// Whether `cert` is one of the cloud configuration's SupervisorHostCertificates.
    pub fn is_supervisor(&self, cert: &[u8]) -> bool {
        self.cloud_config
            .as_ref()
            .and_then(|c| c.get("SupervisorHostCertificates"))
            .and_then(plist::Value::as_array)
            .is_some_and(|certs| certs.iter().any(|c| c.as_data() == Some(cert)))
    }

    /// AllowPairing=false in the cloud configuration.
    pub fn pairing_disallowed(&self) -> bool {
        self.cloud_config
            .as_ref()
            .and_then(|c| c.get("AllowPairing"))
            .and_then(flag)
            == Some(false)
    }
}

/// The cloud configuration Apple hands an iPad assigned in `organization`'s Apple School
/// Manager, as the device stores it once applied (`ConfigurationSource` 1: from ADE; see
/// `docs/protocol.md` §5.3).
pub fn other_organization_configuration(organization: &str) -> plist::Dictionary {
    let mut cc = plist::Dictionary::new();
    cc.insert("AllowPairing".into(), true.into());
    cc.insert("ConfigurationSource".into(), 1u64.into());
    cc.insert(
        "ConfigurationURL".into(),
        "https://mdm.previous-owner.example/enroll".into(),
    );
    cc.insert("IsMandatory".into(), true.into());
    cc.insert("IsMDMUnremovable".into(), false.into());
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("OrganizationName".into(), organization.into());
    cc.insert("SkipSetup".into(), plist::Value::Array(vec![]));
    cc
}

/// A cloud configuration flag as profiled reads it: an NSNumber, so a plist boolean or an
/// integer (0 is false). A device stored and reported `AllowPairing: 1` sent by go-ios
/// (danielpaulus/go-ios#655, #657; `docs/fidelity.md` §6).
pub fn flag(v: &plist::Value) -> Option<bool> {
    match v {
        plist::Value::Boolean(b) => Some(*b),
        plist::Value::Integer(i) => i
            .as_signed()
            .map(|n| n != 0)
            .or_else(|| i.as_unsigned().map(|n| n != 0)),
        _ => None,
    }
}

/// A service port handed out by StartService, waiting for its one usbmuxd Connect.
#[derive(Debug, Clone)]
pub struct PendingService {
    pub service: String,
    pub host_id: String,
    pub ssl: bool,
}

/// The device's key pair in the forms lockdownd needs.
#[derive(Debug, Clone, Default)]
struct DeviceKeys {
    /// DevicePublicKey: PKCS#1 PEM, the only form idevice and go-ios accept.
    public_pem: Vec<u8>,
    /// The same key as a PKCS#1 RSAPublicKey DER, to compare with a certificate's key.
    public_der: Vec<u8>,
    private_pkcs8_der: Vec<u8>,
}

impl DeviceKeys {
    fn new(key: &RsaPrivateKey) -> Result<Self, SimError> {
        let err = |e: &dyn std::fmt::Display| SimError::Key(e.to_string());
        let public = key.to_public_key();
        Ok(DeviceKeys {
            public_pem: public
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(|e| err(&e))?
                .into_bytes(),
            public_der: public
                .to_pkcs1_der()
                .map_err(|e| err(&e))?
                .as_bytes()
                .to_vec(),
            private_pkcs8_der: key.to_pkcs8_der().map_err(|e| err(&e))?.as_bytes().to_vec(),
        })
    }

    /// The key cached in `dir` for `udid`, or a new one saved there (blocking: a new key takes
    /// ~100 ms).
    fn load(dir: Option<&Path>, udid: &str) -> Result<Self, SimError> {
        DeviceKeys::new(&load_or_create_key(dir, udid)?)
    }
}

#[derive(Debug)]
pub struct VirtualIpad {
    pub spec: DeviceSpec,
    /// Replaced by an erase: lockdownd's key pair lives in the data partition. `None` until
    /// the first connection asks for it ([`VirtualIpad::keys_ready`]): a 2048-bit key takes
    /// ~100 ms to make, so a cart of 1,000 iPads starts without making any.
    keys: Mutex<Option<DeviceKeys>>,
    /// Where the key is cached between runs (`<udid>.key`), for a lazily made key.
    key_dir: Option<PathBuf>,
    /// Held while the key is loaded or made, so two first connections make one key.
    key_init: tokio::sync::Mutex<()>,
    pub state: Mutex<DeviceState>,
    pub services: Mutex<HashMap<u16, PendingService>>,
    /// What a client cost this iPad (for the benchmark): counted, never acted on.
    pub traffic: Traffic,
}

/// Replies the device sent (each one a round trip a client waited on, with the scenario's
/// latency) and usbmux connections made to it.
#[derive(Debug, Default)]
pub struct Traffic {
    replies: std::sync::atomic::AtomicU64,
    connections: std::sync::atomic::AtomicU64,
    /// Of `connections`, those made through its Wi-Fi listing (macOS flavour).
    wifi_connections: std::sync::atomic::AtomicU64,
}

impl Traffic {
    pub fn reply(&self) {
        self.replies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn connection(&self) {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn wifi_connection(&self) {
        self.wifi_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections made to it over Wi-Fi so far.
    pub fn wifi_connections(&self) -> u64 {
        self.wifi_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (replies, connections) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.replies.load(Relaxed), self.connections.load(Relaxed))
    }
}

impl VirtualIpad {
    pub fn new(spec: DeviceSpec, key: RsaPrivateKey, state: DeviceState) -> Result<Self, SimError> {
        let ipad = VirtualIpad::with_lazy_key(spec, state, None);
        ipad.rekey(&key)?;
        Ok(ipad)
    }

    /// An iPad whose key is loaded from `key_dir` (or made and saved there) on its first
    /// connection, off the async runtime.
    pub fn with_lazy_key(spec: DeviceSpec, state: DeviceState, key_dir: Option<PathBuf>) -> Self {
        VirtualIpad {
            spec,
            keys: Mutex::new(None),
            key_dir,
            key_init: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            services: Mutex::new(HashMap::new()),
            traffic: Traffic::default(),
        }
    }

    fn loaded_keys(&self) -> Option<DeviceKeys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads or makes the device key on a blocking thread if it is not there yet. Called before
    /// a connection reaches lockdownd or a service, and before anything else uses the key.
    pub async fn keys_ready(&self) -> Result<(), SimError> {
        if self.loaded_keys().is_some() {
            return Ok(());
        }
        let _one_at_a_time = self.key_init.lock().await;
        if self.loaded_keys().is_some() {
            return Ok(());
        }
        let (dir, udid) = (self.key_dir.clone(), self.udid().to_owned());
        let keys = tokio::task::spawn_blocking(move || DeviceKeys::load(dir.as_deref(), &udid))
            .await
            .map_err(|e| SimError::Key(e.to_string()))??;
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(keys);
        Ok(())
    }

    /// The key pair. Every connection has awaited [`VirtualIpad::keys_ready`] first; a caller
    /// that did not (a test reading the key) has it loaded or made here, blocking.
    fn keys(&self) -> DeviceKeys {
        if let Some(keys) = self.loaded_keys() {
            return keys;
        }
        match DeviceKeys::load(self.key_dir.as_deref(), self.udid()) {
            Ok(keys) => {
                let mut slot = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(keys).clone()
            }
            Err(e) => {
                // Only a full disk or a broken RNG gets here; the handshake that needs the key
                // then fails as a device with a broken key would.
                tracing::error!(udid = self.udid(), "the virtual iPad has no key: {e}");
                DeviceKeys::default()
            }
        }
    }

    /// DevicePublicKey (PKCS#1 PEM).
    pub fn public_key_pem(&self) -> Vec<u8> {
        self.keys().public_pem
    }

    /// DevicePublicKey as PKCS#1 DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.keys().public_der
    }

    /// The private half of DevicePublicKey, for the TLS server.
    pub fn key_pkcs8_der(&self) -> Vec<u8> {
        self.keys().private_pkcs8_der
    }

    /// Gives the device a new key pair (an erase wipes the old one).
    pub fn rekey(&self, key: &RsaPrivateKey) -> Result<(), SimError> {
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(DeviceKeys::new(key)?);
        Ok(())
    }

    pub fn udid(&self) -> &str {
        &self.spec.identity.udid
    }

    /// Locks the state; a poisoned lock (a panicked handler) still yields the data.
    pub fn state(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pending_services(&self) -> std::sync::MutexGuard<'_, HashMap<u16, PendingService>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The device's RSA key: loaded from `dir/<udid>.key` when a previous run made it, else
/// generated (2048 bits, as current devices) and saved there with mode 0600.
pub fn load_or_create_key(dir: Option<&Path>, udid: &str) -> Result<RsaPrivateKey, SimError> {
    let path = dir.map(|d| d.join(format!("{udid}.key")));
    if let Some(path) = &path
        && let Ok(der) = std::fs::read(path)
        && let Ok(key) = RsaPrivateKey::from_pkcs8_der(&der)
    {
        return Ok(key);
    }
    create_key(dir, udid)
}

/// A new 2048-bit key, saved (0600) as `dir/<udid>.key` when a folder is given.
pub fn create_key(dir: Option<&Path>, udid: &str) -> Result<RsaPrivateKey, SimError> {
    let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
        .map_err(|e| SimError::Key(e.to_string()))?;
    if let Some(dir) = dir {
        let der = key
            .to_pkcs8_der()
            .map_err(|e| SimError::Key(e.to_string()))?;
        crate::files::write_private(&dir.join(format!("{udid}.key")), der.as_bytes())?;
    }
    Ok(key)
}
