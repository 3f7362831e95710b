//! `cartprep demo`: the station preparing a simulated cart, in one process, on a fresh machine.
//!
//! The cart: new iPads plugged one after another, one already set up by a teacher (erase is not
//! allowed, so it needs attention), one activation-locked, and one pulled out in the middle of
//! its preparation and plugged back in. Each prepared iPad is then taken through Setup
//! Assistant, where it enrolls in the MDM from the enrollment URL the station gave it, and
//! plugged back in: the station finds it prepared and records it enrolled. Apple School Manager
//! does not hold one iPad (it needs attention but is prepared), and every prepared iPad it
//! holds is assigned to the MDM server there. The daemon is the real one; only usbmuxd, the
//! iPads, Apple's activation server, the MDM and Apple School Manager are simulated, on
//! loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use simulator::scenario::{Action, DeviceEntry, Scenario, TimelineEntry};
use station::slots::{AppleUsbDevice, FixedTopology, UsbMode};
use station::status::{Board, Light};

use super::bad_input;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// iPads on the simulated cart (at least 5).
    #[arg(long, default_value_t = 6)]
    devices: usize,
    /// Keep everything here (default: a new temporary folder, kept after the demo).
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
    /// Also serve the live web page here (e.g. 127.0.0.1:8080; port 0 picks a free one). The
    /// page stays up after the cart is finished, until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    web: Option<std::net::SocketAddr>,
    /// Print one line per change even on a terminal, instead of the full-screen board.
    #[arg(long)]
    lines: bool,
    /// With the full-screen board: ring the terminal bell when an iPad is done or needs
    /// attention.
    #[arg(long)]
    bell: bool,
    /// Write each simulated iPad's transcript here, as `cartprep run --transcript` does.
    #[arg(long, value_name = "DIR")]
    transcript: Option<PathBuf>,
}

const MODELS: &[(&str, &str)] = &[
    ("iPad12,1", "17.6.1"),
    ("iPad13,18", "18.5"),
    ("iPad11,6", "18.3.2"),
    ("iPad7,11", "17.6.1"),
    ("iPad14,1", "18.3.2"),
];

/// Slot (1-based) of the iPad pulled out mid-preparation and of the special cases.
const SET_UP_SLOT: u32 = 3;
const LOCKED_SLOT: u32 = 4;
const PULLED_SLOT: u32 = 5;
/// Slot of the iPad Apple School Manager does not hold (shown as needing attention, prepared
/// anyway), and of the one assigned to another organization's server before.
const NOT_IN_ASM_SLOT: u32 = 2;
const ASSIGNED_ELSEWHERE_SLOT: u32 = 1;
/// The demo's MDM server as Apple School Manager lists it, and its ID there.
const DEMO_MDM: &str = "Demo MDM";
const DEMO_MDM_ID: &str = "1F97349736CF4614A94F624E705841AD";
const DEMO_CLIENT_ID: &str = "SCHOOLAPI.7a2c9e4b-demo";
const DEMO_KEY_ID: &str = "5c0d1e2f-demo";

/// The simulated Apple School Manager: every iPad of the cart but one, one of them still
/// assigned to a previous owner's server; the API account's key is registered with it.
async fn start_asm(
    sim: &simulator::Simulator,
    key: &asm::PrivateKey,
) -> anyhow::Result<simulator::asm_server::AsmServer> {
    use simulator::asm_server::{AsmDevice, AsmScenario, AsmService};
    let mut scenario = AsmScenario::new(DEMO_CLIENT_ID, DEMO_KEY_ID, &key.public_key_pem()?);
    scenario.services = vec![
        AsmService {
            id: DEMO_MDM_ID.into(),
            name: DEMO_MDM.into(),
        },
        AsmService {
            id: "9C5E11D0B3A84F0F8E6A2B7D4C1F0A99".into(),
            name: "Previous owner MDM".into(),
        },
    ];
    for (i, d) in sim.cart.devices().iter().enumerate() {
        let slot = i as u32 + 1;
        if slot == NOT_IN_ASM_SLOT {
            continue;
        }
        scenario.devices.push(AsmDevice {
            serial: d.spec.identity.serial_number.clone(),
            product_type: d.spec.model.product_type.to_owned(),
            assigned_to: (slot == ASSIGNED_ELSEWHERE_SLOT)
                .then(|| "9C5E11D0B3A84F0F8E6A2B7D4C1F0A99".to_owned()),
        });
    }
    Ok(simulator::asm_server::start(&sim.cart.authority, scenario).await?)
}

pub fn scenario(devices: usize) -> Scenario {
    let mut s = Scenario {
        seed: 2026,
        ..Scenario::default()
    };
    for i in 0..devices {
        let slot = i as u32 + 1;
        let (model, ios) = MODELS[i % MODELS.len()];
        let mut d = DeviceEntry {
            model: Some(model.into()),
            ios: Some(ios.into()),
            latency_ms: 15,
            plugged: Some(false),
            ..DeviceEntry::default()
        };
        if slot == SET_UP_SLOT {
            d.setup_done = true;
            d.activated = Some(true);
            d.name = Some("Ms Lovelace’s iPad".into());
            d.pairing = simulator::scenario::PairingKind::Dialog;
            d.dialog_attempts = Some(1);
        }
        if slot == LOCKED_SLOT {
            d.activation_lock = true;
        }
        s.devices.push(d);
        // Plugged one after another, as a person works down the cart.
        s.timeline.push(TimelineEntry {
            at_ms: u64::from(slot - 1) * 1500,
            slot,
            action: Action::Plug,
        });
    }
    s
}

/// Where a prepared iPad is in "finish Setup Assistant, plug it back in, let the station look".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enrolling {
    /// Not prepared yet (or never will be).
    Pending,
    /// Set up and plugged back in at `at_ms`; the station has not picked it up yet.
    Replugged { at_ms: u64 },
    /// The station is looking at it again.
    Seen,
    /// The station has finished with it again.
    Checked,
}

/// The person who takes each prepared iPad off the cart, goes through Setup Assistant on it
/// (it enrolls in the MDM) and plugs it back in.
fn spawn_enroller(
    cart: Arc<simulator::Cart>,
    board: Board,
    udids: Vec<String>,
    phases: Arc<Mutex<Vec<Enrolling>>>,
    nudge: tokio::sync::watch::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (i, udid) in udids.iter().enumerate() {
                let slot = i as u32 + 1;
                let status = board.get(udid);
                let light = status.as_ref().map(|s| s.light);
                // A status that began after the replug: the station's answer to it, even when
                // its whole job fell between two looks (a busy machine).
                let since_ms = status.as_ref().map_or(0, |s| s.since_ms);
                let phase = phases.lock().unwrap_or_else(|p| p.into_inner())[i];
                let next = match (phase, light) {
                    (Enrolling::Pending, Some(Light::Done)) => {
                        let Some(ipad) = cart.device(slot).cloned() else {
                            continue;
                        };
                        let _ = cart.unplug(slot);
                        let outcome = simulator::enrollment::finish_setup_assistant(&ipad).await;
                        // Through the board, never stdout: the full-screen board owns the
                        // terminal, and a bare line would be drawn over its header.
                        board.note(format!(
                            ">>> demo: slot {slot} through Setup Assistant: {outcome}; plugged back in"
                        ));
                        let at_ms = station::clock::now_ms();
                        let _ = cart.plug(slot);
                        Enrolling::Replugged { at_ms }
                    }
                    (
                        Enrolling::Replugged { .. },
                        Some(Light::Ready | Light::Waiting | Light::Working),
                    ) => Enrolling::Seen,
                    (
                        Enrolling::Replugged { at_ms },
                        Some(Light::Done | Light::Attention | Light::Failed),
                    ) if since_ms >= at_ms => Enrolling::Checked,
                    (Enrolling::Seen, Some(Light::Done | Light::Attention | Light::Failed)) => {
                        Enrolling::Checked
                    }
                    (same, _) => same,
                };
                // Publish, then wake the daemon: woken first, it could look at the old phase
                // and, finding nothing to stop for, sleep through the last change.
                phases.lock().unwrap_or_else(|p| p.into_inner())[i] = next;
                if next != phase {
                    let _ = nudge.send(());
                }
            }
        }
    })
}

/// The virtual cart's USB bus, as the simulator lays it out (`simulator::bus`).
fn topology(sim: &simulator::Simulator) -> FixedTopology {
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

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    profiles::files::write_private(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {
        devices,
        state,
        web,
        lines,
        bell,
        transcript,
    } = args;
    if devices < PULLED_SLOT as usize {
        return Err(bad_input(format!(
            "the demo cart needs at least {PULLED_SLOT} iPads (--devices {PULLED_SLOT} or more)"
        )));
    }
    let root = match state {
        Some(dir) => dir,
        // Kept after the demo: the CSV and the ledger are there to look at.
        None => tempfile::Builder::new()
            .prefix("cartprep-demo-")
            .tempdir()?
            .keep(),
    };
    let station_dir = root.join("station");
    station::private::create_private_dir(&station_dir)?;
    writeln!(
        std::io::stdout(),
        "cartprep demo: a simulated cart of {devices} iPads; everything is kept in {}",
        root.display()
    )?;

    let sim = simulator::Simulator::start(simulator::SimConfig {
        scenario: scenario(devices),
        listen: vec!["127.0.0.1:0".parse()?],
        state_dir: root.join("simulator"),
        activated: false,
    })
    .await
    .context("starting the simulated cart")?;

    // What an IT person sets up once: the organisation's identity, Wi-Fi, the MDM.
    let identity_dir = station_dir.join("identity");
    if !profiles::SupervisionIdentity::exists_in(&identity_dir) {
        profiles::SupervisionIdentity::create("Springfield Elementary")?.save(&identity_dir)?;
    }
    write(
        &station_dir.join("wifi-password"),
        b"correct horse battery staple\n",
    )?;
    write(
        &station_dir.join("activation-ca.pem"),
        &sim.activation_ca_pem(),
    )?;
    // The Apple School Manager API account: its key stays in the station folder (0600).
    let asm_key = asm::PrivateKey::generate();
    let asm_server = start_asm(&sim, &asm_key)
        .await
        .context("starting the simulated Apple School Manager")?;
    write(
        &station_dir.join("asm-key.pem"),
        asm_key.to_pem()?.as_bytes(),
    )?;
    write(&station_dir.join("asm-ca.pem"), &asm_server.ca_pem)?;
    // The MDM's TLS certificate comes from its own CA: the iPads trust it as an anchor.
    write(&station_dir.join("mdm-ca.pem"), &sim.mdm_ca_pem())?;
    let slots: String = (1..=devices as u32)
        .map(|k| format!("\"{}\" = \"{k}\"\n", simulator::bus::port_chain(k)))
        .collect();
    let config_text = format!(
        r#"# Written by `cartprep demo`: the station configuration for the simulated cart.
state_dir = "{state}"
usbmuxd = "{usbmuxd}"
max_concurrent = 1

[organization]
name = "Springfield Elementary"
department = "IT"
identity = "identity"

[wifi]
ssid = "Springfield-Students"
security = "wpa2"
password_file = "wifi-password"

[mdm]
name = "{mdm_name}"
enrollment_url = "{mdm_url}"
mode = "manual"
anchor_certificates = ["mdm-ca.pem"]

[setup]
skip = "all"
language = "en"
locale = "en_US"
time_zone = "America/Chicago"

[naming]
template = "Cart A - {{n:02}}"

[erase]
policy = "never"

[activation]
server_url = "{activation}"
extra_ca_file = "activation-ca.pem"

[asm]
kind = "school"
client_id = "{asm_client}"
key_id = "{asm_key_id}"
private_key_file = "asm-key.pem"
mdm_server = "{asm_mdm}"
assign = true
api_url = "{asm_api}"
token_url = "{asm_token}"
extra_ca_file = "asm-ca.pem"

{web}
[slots]
{slots}"#,
        state = station_dir.display(),
        usbmuxd = sim.address(),
        activation = sim.activation_server_url(),
        asm_client = DEMO_CLIENT_ID,
        asm_key_id = DEMO_KEY_ID,
        asm_mdm = DEMO_MDM,
        asm_api = asm_server.api_url,
        asm_token = asm_server.token_url,
        web = super::demo_web::config_section(web),
        mdm_name = simulator::MDM_NAME,
        mdm_url = sim.mdm_enrollment_url(),
    );
    let config_path = station_dir.join("station.toml");
    write(&config_path, config_text.as_bytes())?;
    let mut settings = match station::Settings::load(&config_path) {
        Ok(s) => s,
        Err(e) => anyhow::bail!("the demo's own configuration is invalid: {e}"),
    };
    if transcript.is_some() {
        std::sync::Arc::make_mut(&mut settings.config).transcript = transcript;
    }

    let full_screen = super::board_screen::wanted(lines);
    let board = if full_screen {
        Board::new(Box::new(std::io::sink()), false)
    } else {
        Board::stdout()
    };
    let screen = if full_screen {
        let header = super::board_screen::header(&settings);
        Some(super::board_screen::BoardScreen::start(
            board.clone(),
            header,
            bell,
        )?)
    } else {
        None
    };
    let _timeline = sim.spawn_timeline();
    let (nudge_tx, nudge_rx) = tokio::sync::watch::channel(());
    // The enroller's progress decides when the demo ends: it wakes the daemon to look again.
    let enroller_nudge = nudge_tx.clone();
    let udids: Vec<String> = sim
        .cart
        .devices()
        .iter()
        .map(|d| d.udid().to_owned())
        .collect();
    // The volunteer who pulls slot 5 out while it is being worked on, and plugs it back in.
    let puller = {
        let (cart, board) = (sim.cart.clone(), board.clone());
        let udid = udids[PULLED_SLOT as usize - 1].clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let working = board.get(&udid).is_some_and(|s| {
                    s.light == Light::Working
                        && s.current.is_some_and(|st| st >= station::Step::Activated)
                });
                if working {
                    break;
                }
            }
            // A board note: a line in the log, the header's last note on the full screen.
            board.note(format!(
                ">>> demo: pulling slot {PULLED_SLOT} out in the middle of its preparation"
            ));
            let _ = cart.unplug(PULLED_SLOT);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            board.note(format!(">>> demo: plugging slot {PULLED_SLOT} back in"));
            let _ = cart.plug(PULLED_SLOT);
            let _ = nudge_tx.send(());
            // Keep the channel open until the end.
            std::future::pending::<()>().await;
        })
    };
    let phases = Arc::new(Mutex::new(vec![Enrolling::Pending; udids.len()]));
    let enroller = spawn_enroller(
        sim.cart.clone(),
        board.clone(),
        udids.clone(),
        phases.clone(),
        enroller_nudge,
    );
    let stop_udids = udids.clone();
    // With the page, the demo stays up when the cart is finished, for people to look at it.
    let lingering = web.map(|_| super::demo_web::announce_finish(board.clone(), udids.clone()));
    let report = station::daemon::run(station::daemon::DaemonOptions {
        settings,
        watch_config: false,
        board: board.clone(),
        topology: Arc::new(topology(&sim)),
        stop_when: Some(Box::new(move |board, idle| {
            let phases = phases.lock().unwrap_or_else(|p| p.into_inner());
            web.is_none()
                && idle.running == 0
                && idle.queued == 0
                && stop_udids.iter().enumerate().all(|(i, u)| {
                    board.get(u).is_some_and(|s| match s.light {
                        // A prepared iPad is done once it has come back enrolled and been seen.
                        Light::Done => phases[i] == Enrolling::Checked,
                        Light::Attention | Light::Failed => true,
                        _ => false,
                    })
                })
        })),
        nudge: Some(nudge_rx),
    })
    .await;
    puller.abort();
    enroller.abort();
    let assigned = asm_server.stats().activities.len();
    asm_server.task.abort();
    if let Some(l) = lingering {
        l.abort();
    }
    if let Some(screen) = screen {
        // Long enough to read the last frame.
        tokio::time::sleep(Duration::from_secs(2)).await;
        screen.stop().await;
    }
    let report = report?;

    let records = station::Ledger::read_only(&station_dir)?;
    let export_dir = station_dir.join("export");
    station::private::create_private_dir(&export_dir)?;
    let asm = export_dir.join("apple-school-manager-serials.csv");
    let full = export_dir.join("devices.csv");
    let mut buf = Vec::new();
    station::export::asm_csv(&records, false, &mut buf)?;
    station::private::write_private(&asm, &buf)?;
    buf.clear();
    station::export::full_csv(&records, &mut buf)?;
    station::private::write_private(&full, &buf)?;
    writeln!(std::io::stdout())?;
    for r in records
        .iter()
        .filter(|r| r.outcome == station::Outcome::Done)
    {
        writeln!(
            std::io::stdout(),
            "{} {}: {}",
            r.serial,
            r.name.as_deref().unwrap_or("-"),
            r.enrollment.as_deref().unwrap_or("enrollment not read")
        )?;
    }
    writeln!(std::io::stdout(), "demo finished: {}", report.summary)?;
    writeln!(
        std::io::stdout(),
        "Apple School Manager (simulated): {assigned} assignment activit{} to \"{DEMO_MDM}\"; the ledger records each",
        if assigned == 1 { "y" } else { "ies" }
    )?;
    writeln!(
        std::io::stdout(),
        "serial numbers for Apple School Manager: {}",
        asm.display()
    )?;
    writeln!(
        std::io::stdout(),
        "every iPad, for the MDM and the school's records: {}",
        full.display()
    )?;
    writeln!(
        std::io::stdout(),
        "ledger: cartprep ledger list --state {}    status while running: cartprep status --state {}",
        station_dir.display(),
        station_dir.display()
    )?;
    Ok(())
}
