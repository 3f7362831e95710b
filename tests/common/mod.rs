//! Shared harness for the station's end-to-end tests: a simulated cart on loopback, a state
//! folder with an identity, a Wi-Fi password file and a station.toml written as `cartprep demo`
//! writes it, a status board whose lines are captured, and the daemon run in-process with a
//! global timeout.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simulator::scenario::{DeviceEntry, Scenario};
use simulator::{SimConfig, Simulator};
use station::daemon::{DaemonError, DaemonOptions, DaemonReport, Idle, StopWhen};
use station::slots::{AppleUsbDevice, FixedTopology, UsbMode};
use station::status::{Board, DeviceStatus, Light};
use station::{DeviceRecord, Ledger, Settings, StationConfig};

/// Every test's ceiling: a bug fails the test instead of hanging it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub const ORGANIZATION: &str = "Springfield Elementary";
pub const SSID: &str = "Springfield-Students";
pub const WIFI_PASSWORD: &str = "correct horse battery staple";
pub const WIFI_PROFILE_ID: &str = "org.cartprep.wifi.Springfield-Students";
pub const ENROLLMENT_URL: &str = "https://mdm.example.org/enroll/springfield";

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn within<F: std::future::Future<Output = T>, T>(body: F) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(v) => v,
        Err(_) => panic!("the test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// A writer whose bytes the test can read back (the board's output).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

/// A fresh iPad that waits in its slot until the test plugs it.
pub fn unplugged() -> DeviceEntry {
    DeviceEntry {
        plugged: Some(false),
        ..DeviceEntry::default()
    }
}

/// A fresh iPad plugged in when the simulator starts.
pub fn fresh() -> DeviceEntry {
    DeviceEntry {
        plugged: Some(true),
        ..DeviceEntry::default()
    }
}

pub fn cart(devices: Vec<DeviceEntry>) -> Scenario {
    Scenario {
        seed: 2026,
        devices,
        ..Scenario::default()
    }
}

/// What goes in station.toml; the defaults are the demo's configuration.
#[derive(Clone, Debug)]
pub struct ConfigSpec {
    pub mode: &'static str,
    /// Write `identity = "identity"` in [organization].
    pub identity: bool,
    pub template: Option<String>,
    /// The body of the [erase] table.
    pub erase: String,
    pub max_concurrent: u32,
    /// `[board] forget_after_minutes`, when set.
    pub forget_after_minutes: Option<u32>,
}

impl Default for ConfigSpec {
    fn default() -> Self {
        ConfigSpec {
            mode: "manual",
            identity: true,
            template: Some("Cart A - {n:02}".into()),
            erase: "policy = \"never\"".into(),
            max_concurrent: 1,
            forget_after_minutes: None,
        }
    }
}

/// One test's world: the simulated cart and the station's state folder.
pub struct Harness {
    pub root: tempfile::TempDir,
    /// `None` only while usbmuxd is being restarted.
    sim: Option<Simulator>,
    pub scenario: Scenario,
    /// By slot - 1 (they survive a simulator restart).
    udids: Vec<String>,
    serials: Vec<String>,
    pub station_dir: PathBuf,
    pub config_path: PathBuf,
    pub out: Captured,
    pub board: Board,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Starts a simulator for `scenario` listening on `listen` with its state in `state_dir`.
pub async fn start_sim(scenario: Scenario, listen: &str, state_dir: &Path) -> Simulator {
    install_crypto();
    Simulator::start(SimConfig {
        scenario,
        listen: vec![listen.parse().expect("listen address")],
        state_dir: state_dir.to_owned(),
        activated: false,
    })
    .await
    .expect("the simulator starts")
}

impl Harness {
    pub async fn new(scenario: Scenario) -> Harness {
        Harness::listening(scenario, "127.0.0.1:0").await
    }

    pub async fn listening(scenario: Scenario, listen: &str) -> Harness {
        let root = tempfile::Builder::new()
            .prefix("cartprep-e2e-")
            .tempdir()
            .expect("temp dir");
        let sim = start_sim(scenario.clone(), listen, &root.path().join("simulator")).await;
        let station_dir = root.path().join("station");
        std::fs::create_dir_all(&station_dir).unwrap();
        let identity_dir = station_dir.join("identity");
        let identity = tokio::task::spawn_blocking(|| {
            profiles::SupervisionIdentity::create(ORGANIZATION).expect("identity")
        })
        .await
        .unwrap();
        identity.save(&identity_dir).expect("identity saved");
        profiles::files::write_private(
            &station_dir.join("wifi-password"),
            format!("{WIFI_PASSWORD}\n").as_bytes(),
        )
        .unwrap();
        profiles::files::write_private(
            &station_dir.join("activation-ca.pem"),
            &sim.activation_ca_pem(),
        )
        .unwrap();
        let out = Captured::default();
        let board = Board::new(Box::new(out.clone()), false);
        let h = Harness {
            config_path: station_dir.join("station.toml"),
            root,
            udids: sim
                .cart
                .devices()
                .iter()
                .map(|d| d.udid().to_owned())
                .collect(),
            serials: sim
                .cart
                .devices()
                .iter()
                .map(|d| d.spec.identity.serial_number.clone())
                .collect(),
            sim: Some(sim),
            scenario,
            station_dir,
            out,
            board,
        };
        h.write_config(&ConfigSpec::default());
        h
    }

    pub fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("the simulator is running")
    }

    /// Stops the simulated usbmuxd by dropping the simulator; returns its address.
    pub fn stop_usbmuxd(&mut self) -> String {
        let old = self.sim.take().expect("running");
        let addr = old.address().to_string();
        drop(old);
        addr
    }

    /// Starts a new simulator on `addr` with the same state folder, as `systemctl restart
    /// usbmuxd` would bring usbmuxd back. Its iPads are the same devices (same identities and
    /// keys) but start from their initial state, as the scenario describes them; its activation
    /// server listens on a new port.
    pub async fn start_usbmuxd(&mut self, addr: &str) {
        let state = self.root.path().join("simulator");
        self.sim = Some(start_sim(self.scenario.clone(), addr, &state).await);
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.station_dir.join("identity")
    }

    /// Our supervision certificate (DER).
    pub fn our_certificate(&self) -> Vec<u8> {
        profiles::SupervisionIdentity::load(&self.identity_dir())
            .expect("identity loads")
            .certificate_der()
            .to_vec()
    }

    pub fn config_text(&self, spec: &ConfigSpec) -> String {
        config_text(
            spec,
            &self.station_dir,
            &self.sim().address().to_string(),
            &self.sim().activation_server_url(),
            self.sim().cart.devices().len(),
        )
    }

    pub fn write_config(&self, spec: &ConfigSpec) {
        write_atomically(&self.config_path, self.config_text(spec).as_bytes());
    }

    /// The settings loaded from the test's config file.
    pub fn settings(&self) -> Settings {
        Settings::load(&self.config_path)
            .unwrap_or_else(|e| panic!("the test's config is valid: {e}"))
    }

    pub fn config(&self) -> StationConfig {
        StationConfig::clone(&self.settings().config)
    }

    pub fn udid(&self, slot: u32) -> String {
        self.udids[slot as usize - 1].clone()
    }

    pub fn serial(&self, slot: u32) -> String {
        self.serials[slot as usize - 1].clone()
    }

    pub fn status(&self, slot: u32) -> Option<DeviceStatus> {
        self.board.get(&self.udid(slot))
    }

    pub fn light(&self, slot: u32) -> Option<Light> {
        self.status(slot).map(|s| s.light)
    }

    pub fn topology(&self) -> FixedTopology {
        topology(self.sim())
    }

    /// The ledger as `cartprep ledger` reads it (the audit log), by serial.
    pub fn record(&self, slot: u32) -> DeviceRecord {
        let serial = self.serial(slot);
        self.records()
            .into_iter()
            .find(|r| r.serial == serial)
            .unwrap_or_else(|| panic!("no ledger record for slot {slot} ({serial})"))
    }

    pub fn records(&self) -> Vec<DeviceRecord> {
        Ledger::read_only(&self.station_dir).expect("the audit log reads")
    }

    /// Starts the daemon on this harness's board and config; it stops when `stop_when` says
    /// so (re-checked every 20 ms, not only on usbmuxd events).
    pub fn spawn_daemon(
        &self,
        watch_config: bool,
        stop_when: StopWhen,
    ) -> tokio::task::JoinHandle<Result<DaemonReport, DaemonError>> {
        spawn_daemon(
            self.settings(),
            self.board.clone(),
            Arc::new(self.topology()),
            watch_config,
            stop_when,
        )
    }

    /// Polls the board until `what` holds.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Harness) -> bool) {
        let started = Instant::now();
        while !pred(self) {
            if started.elapsed() > Duration::from_secs(90) {
                panic!(
                    "waited 90 s for: {what}\nboard output:\n{}",
                    self.out.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lines the board printed about the device in `slot` (by its slot label).
    pub fn lines_of(&self, slot: u32) -> Vec<String> {
        self.out
            .lines()
            .into_iter()
            .filter(|l| slot_of_line(l) == Some(slot.to_string()))
            .collect()
    }
}

/// The slot label of a device status line (`12:00:00 slot 2      ◐ WORKING 3/11 …`).
pub fn slot_of_line(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    let _clock = words.next()?;
    if words.next()? != "slot" {
        return None;
    }
    words.next().map(str::to_owned)
}

pub fn spawn_daemon(
    settings: Settings,
    board: Board,
    topology: Arc<dyn station::slots::Topology>,
    watch_config: bool,
    stop_when: StopWhen,
) -> tokio::task::JoinHandle<Result<DaemonReport, DaemonError>> {
    // The daemon looks at `stop_when` when something happens; a steady nudge makes it look
    // often, so a test can stop it in the middle of a device's work.
    let (nudge_tx, nudge_rx) = tokio::sync::watch::channel(());
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if nudge_tx.send(()).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let report = station::daemon::run(DaemonOptions {
            settings,
            watch_config,
            board,
            topology,
            stop_when: Some(stop_when),
            nudge: Some(nudge_rx),
        })
        .await;
        ticker.abort();
        report
    })
}

/// Stops when every listed device shows one of `lights` and nothing is running or queued.
pub fn when_all(udids: Vec<String>, lights: &'static [Light]) -> StopWhen {
    Box::new(move |board: &Board, idle: &Idle| {
        idle.running == 0
            && idle.queued == 0
            && udids
                .iter()
                .all(|u| board.get(u).is_some_and(|s| lights.contains(&s.light)))
    })
}

/// Stops once the replugged iPad `udid` has been recognised as already prepared.
pub fn when_recognised(udid: String) -> StopWhen {
    Box::new(move |board: &Board, idle: &Idle| {
        idle.running == 0
            && idle.queued == 0
            && board
                .get(&udid)
                .is_some_and(|s| s.light == Light::Done && s.message.contains("already prepared"))
    })
}

/// Stops when the test raises the flag.
pub fn when_flag(flag: Arc<AtomicBool>) -> StopWhen {
    Box::new(move |_: &Board, _: &Idle| flag.load(Ordering::SeqCst))
}

/// The virtual cart's USB bus, as the simulator lays it out (`simulator::bus`).
pub fn topology(sim: &Simulator) -> FixedTopology {
    FixedTopology(
        sim.cart
            .devices()
            .iter()
            .map(|d| AppleUsbDevice {
                chain: d.spec.usb.chain.clone(),
                bus: d.spec.usb.bus,
                address: d.spec.usb.address,
                product_id: d.spec.model.usb_product_id,
                mode: UsbMode::Normal,
                serial: Some(d.spec.identity.usb_serial()),
            })
            .collect(),
    )
}

pub fn config_text(
    spec: &ConfigSpec,
    station_dir: &Path,
    usbmuxd: &str,
    activation_url: &str,
    slots: usize,
) -> String {
    let slots: String = (1..=slots as u32)
        .map(|k| format!("\"{}\" = \"{k}\"\n", simulator::bus::port_chain(k)))
        .collect();
    let identity = if spec.identity {
        "identity = \"identity\"\n"
    } else {
        ""
    };
    let board = match spec.forget_after_minutes {
        Some(m) => format!("[board]\nforget_after_minutes = {m}\n"),
        None => String::new(),
    };
    let naming = match &spec.template {
        Some(t) => format!("[naming]\ntemplate = \"{t}\"\n"),
        None => String::new(),
    };
    format!(
        r#"# Written by the end-to-end tests, as `cartprep demo` writes its configuration.
state_dir = "{state}"
usbmuxd = "{usbmuxd}"
max_concurrent = {max_concurrent}

[organization]
name = "{ORGANIZATION}"
department = "IT"
{identity}
[wifi]
ssid = "{SSID}"
security = "wpa2"
password_file = "wifi-password"

[mdm]
name = "Test MDM"
enrollment_url = "{ENROLLMENT_URL}"
mode = "{mode}"

[setup]
skip = "all"
language = "en"
locale = "en_US"
time_zone = "America/Chicago"

{naming}
{board}
[erase]
{erase}

[activation]
server_url = "{activation_url}"
extra_ca_file = "activation-ca.pem"

[slots]
{slots}"#,
        state = station_dir.display(),
        max_concurrent = spec.max_concurrent,
        mode = spec.mode,
        erase = spec.erase,
    )
}

/// Writes a file the way editors save: a new file renamed over the old one.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The steps of a record's history, in the order they were recorded.
pub fn steps(record: &DeviceRecord) -> Vec<station::Step> {
    record.history.iter().map(|e| e.step).collect()
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The virtual cart's USB bus as it is now (`simulator::bus::devices`): plugged iPads in normal
/// mode, iPads that rebooted into recovery with their recovery product ID.
pub struct SimBus(pub Arc<simulator::Cart>);

impl station::slots::Topology for SimBus {
    fn unavailable(&self) -> Option<&str> {
        None
    }

    fn apple_devices(&self) -> Vec<AppleUsbDevice> {
        simulator::bus::devices(&self.0)
            .into_iter()
            .filter_map(|d| {
                Some(AppleUsbDevice {
                    chain: d.port.chain,
                    bus: d.port.bus,
                    address: d.port.address,
                    product_id: d.product_id,
                    mode: UsbMode::from_product_id(d.product_id)?,
                    serial: Some(d.serial),
                })
            })
            .collect()
    }
}
