//! `cartprep demo`: the station preparing a simulated cart, in one process, on a fresh machine.
//!
//! The cart: new iPads plugged one after another, one already set up by a teacher (erase is not
//! allowed, so it needs attention), one activation-locked, and one pulled out in the middle of
//! its preparation and plugged back in. The daemon is the real one; only usbmuxd, the iPads and
//! Apple's activation server are simulated, on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    let DemoArgs { devices, state } = args;
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
name = "Demo MDM"
enrollment_url = "https://mdm.example.org/enroll/springfield"
mode = "manual"

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

[slots]
{slots}"#,
        state = station_dir.display(),
        usbmuxd = sim.address(),
        activation = sim.activation_server_url(),
    );
    let config_path = station_dir.join("station.toml");
    write(&config_path, config_text.as_bytes())?;
    let settings = match station::Settings::load(&config_path) {
        Ok(s) => s,
        Err(e) => anyhow::bail!("the demo's own configuration is invalid: {e}"),
    };

    let board = Board::stdout();
    let _timeline = sim.spawn_timeline();
    let (nudge_tx, nudge_rx) = tokio::sync::watch::channel(());
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
            let _ = writeln!(
                std::io::stdout(),
                ">>> demo: pulling slot {PULLED_SLOT} out in the middle of its preparation"
            );
            let _ = cart.unplug(PULLED_SLOT);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let _ = writeln!(
                std::io::stdout(),
                ">>> demo: plugging slot {PULLED_SLOT} back in"
            );
            let _ = cart.plug(PULLED_SLOT);
            let _ = nudge_tx.send(());
            // Keep the channel open until the end.
            std::future::pending::<()>().await;
        })
    };
    let stop_udids = udids.clone();
    let report = station::daemon::run(station::daemon::DaemonOptions {
        settings,
        watch_config: false,
        board: board.clone(),
        topology: Arc::new(topology(&sim)),
        stop_when: Some(Box::new(move |board, idle| {
            idle.running == 0
                && idle.queued == 0
                && stop_udids.iter().all(|u| {
                    board.get(u).is_some_and(|s| {
                        matches!(s.light, Light::Done | Light::Attention | Light::Failed)
                    })
                })
        })),
        nudge: Some(nudge_rx),
    })
    .await?;
    puller.abort();

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
    writeln!(std::io::stdout(), "demo finished: {}", report.summary)?;
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
