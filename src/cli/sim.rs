//! `cartprep sim`: a simulated cart, a usbmuxd server hosting virtual iPads.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tokio::io::AsyncBufReadExt;

use super::bad_input;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Number of fresh iPads on the cart (ignored with --scenario).
    #[arg(long, default_value_t = 3, conflicts_with = "scenario")]
    devices: usize,
    /// A TOML scenario describing the cart (see crates/simulator/src/scenario.rs).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Where to listen: a unix socket path or 127.0.0.1:PORT (repeatable) [default:
    /// 127.0.0.1:27015].
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Folder for pair records, the SystemBUID and device keys (default: a new temporary folder).
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
    /// Start the iPads activated (still in Setup Assistant), as after an erase and activation.
    #[arg(long)]
    activated: bool,
    /// Let lockdownd start MCInstall on unactivated iPads (the simulator refuses it by default,
    /// see docs/fidelity.md); for clients that read profiles before activating.
    #[arg(long)]
    mcinstall_before_activation: bool,
    /// Also write the cart's USB bus as a Linux sysfs tree under DIR (DIR/bus/usb/devices),
    /// kept current as iPads come and go; a station or `cartprep slots learn` started with
    /// `--sysfs DIR` reads it as it reads /sys.
    #[arg(long, value_name = "DIR")]
    sysfs: Option<PathBuf>,
    /// Whose usbmuxd to imitate: linux (libimobiledevice's) or macos (Apple's: USBSerialNumber,
    /// IOKit LocationIDs, iPads on Wi-Fi listed as Network; see docs/fidelity.md) [default: the
    /// scenario's `flavour`, else linux].
    #[arg(long, value_name = "linux|macos")]
    flavour: Option<String>,
    /// Serve a field transcript (`cartprep run --transcript`) back as one virtual iPad, with an
    /// activation server that knows it (docs/protocol.md §9).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scenario", "activated", "mcinstall_before_activation"])]
    replay: Option<PathBuf>,
}

/// One line on standard output; an error (the reader went away) ends the caller's printing.
fn say(line: impl Display) -> std::io::Result<()> {
    writeln!(std::io::stdout(), "{line}")
}

pub async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let replay = match &args.replay {
        Some(path) => {
            let path = path.clone();
            let loaded =
                tokio::task::spawn_blocking(move || simulator::replay::Replay::load(&path))
                    .await?
                    .map_err(bad_input)?;
            Some(std::sync::Arc::new(loaded))
        }
        None => None,
    };
    let scenario = match (&args.scenario, &replay) {
        (_, Some(r)) => r.companion_scenario(),
        (Some(path), None) => simulator::Scenario::load(path).map_err(bad_input)?,
        (None, None) if args.devices == 0 => {
            return Err(bad_input("--devices must be at least 1"));
        }
        (None, None) => simulator::Scenario::uniform(args.devices),
    };
    let mut scenario = scenario;
    if let Some(f) = &args.flavour {
        scenario.flavour = f
            .parse()
            .map_err(|e| bad_input(format!("--flavour: {e}")))?;
        scenario.validate().map_err(bad_input)?;
    }
    if args.mcinstall_before_activation {
        for d in &mut scenario.devices {
            d.mcinstall_before_activation = true;
        }
    }
    let listen_args = if args.listen.is_empty() {
        vec!["127.0.0.1:27015".to_owned()]
    } else {
        args.listen.clone()
    };
    let mut listen = Vec::new();
    for a in &listen_args {
        let addr = a
            .parse::<usbmux::UsbmuxAddress>()
            .map_err(|e| bad_input(format!("--listen {a}: {e}")))?;
        listen.push(addr);
    }
    // Kept until exit so a default state folder is removed when the simulator stops.
    let (state_dir, _temp) = match &args.state {
        Some(dir) => (dir.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("cartprep-sim-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    // With --replay the listen addresses are the replayed iPad's; the cart that carries the
    // activation server listens on a free port of its own, with no iPad plugged in.
    let (sim_listen, replay_listen) = match &replay {
        Some(_) => (vec!["127.0.0.1:0".parse()?], listen),
        None => (listen, Vec::new()),
    };
    let sim = simulator::Simulator::start(simulator::SimConfig {
        scenario,
        listen: sim_listen,
        state_dir: state_dir.clone(),
        activated: args.activated,
    })
    .await
    .context("starting the simulator")?;
    let mut _replay_tasks = Vec::new();
    if let Some(r) = &replay {
        for addr in &replay_listen {
            let (bound, task) = simulator::replay::start(r.clone(), addr)
                .await
                .with_context(|| format!("serving the transcript on {addr}"))?;
            _replay_tasks.push(task);
            say(format_args!(
                "replaying {} (serial {}) on {bound}",
                r.header.udid,
                r.serial.as_deref().unwrap_or("unknown")
            ))?;
        }
    }

    let control_path = state_dir.join("control.sock");
    {
        let cart = sim.cart.clone();
        let path = control_path.clone();
        tokio::spawn(async move {
            if let Err(e) = simulator::control::serve_socket(cart, &path).await {
                eprintln!("warning: control socket {}: {e}", path.display());
            }
        });
    }
    for addr in sim.addresses() {
        say(format_args!("listening on {addr}"))?;
    }
    say(format_args!("state folder {}", state_dir.display()))?;
    let ca_path = state_dir.join("activation-ca.pem");
    std::fs::write(&ca_path, sim.activation_ca_pem())
        .with_context(|| format!("writing {}", ca_path.display()))?;
    say(format_args!(
        "activation server {}",
        sim.activation_server_url()
    ))?;
    say(format_args!("activation CA {}", ca_path.display()))?;
    let mdm_ca_path = state_dir.join("mdm-ca.pem");
    std::fs::write(&mdm_ca_path, sim.mdm_ca_pem())
        .with_context(|| format!("writing {}", mdm_ca_path.display()))?;
    say(format_args!(
        "MDM enrollment URL {}    (its CA, for mdm.anchor_certificates: {})",
        sim.mdm_enrollment_url(),
        mdm_ca_path.display()
    ))?;
    say(format_args!("control socket {}", control_path.display()))?;
    if let Some(root) = &args.sysfs {
        // Written before the line is printed, so whoever reads it finds the tree.
        sim.cart
            .write_sysfs_to(root)
            .with_context(|| format!("writing the USB bus under {}", root.display()))?;
        say(format_args!("USB bus (sysfs) {}", root.display()))?;
    }
    let first = sim.address();
    say(format_args!(
        "try: USBMUXD_SOCKET_ADDRESS={} ideviceinfo -s    or    USBMUXD_SOCKET_ADDRESS={first} pymobiledevice3 usbmux list",
        first.for_libusbmuxd()
    ))?;
    say(simulator::control::HELP)?;
    for (ipad, id) in sim.cart.slots() {
        if let Some(device_id) = id {
            say(simulator::Notice::Plugged {
                slot: ipad.spec.slot,
                device_id,
                ipad: ipad.clone(),
            })?;
        }
        if let Some(device_id) = sim.cart.network_id(ipad.spec.slot) {
            say(simulator::Notice::OnNetwork {
                slot: ipad.spec.slot,
                device_id,
                udid: ipad.udid().to_owned(),
            })?;
        }
    }
    let mut notices = sim.cart.notices();
    tokio::spawn(async move {
        while let Ok(n) = notices.recv().await {
            if say(n).is_err() {
                break;
            }
        }
    });
    let _timeline = sim.spawn_timeline();
    let cart = sim.cart.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let out = simulator::control::execute(&cart, &line).await;
            if !out.is_empty() && say(out).is_err() {
                break;
            }
        }
    });
    station::daemon::shutdown_signal().await;
    say("simulator stopped")?;
    Ok(())
}
