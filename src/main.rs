//! cartprep: the command line. Everything it runs lives in the crates under crates/.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt;

#[path = "cli/demo.rs"]
mod demo;
#[path = "cli/identity.rs"]
mod identity_cli;
#[path = "cli/station.rs"]
mod station_cli;

#[derive(Parser)]
#[command(
    name = "cartprep",
    version,
    about = "Headless iPad preparation station"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated cart: a usbmuxd server hosting virtual iPads that speak lockdownd.
    Sim(SimArgs),
    /// The supervision identity: create, import, export, show.
    Identity(identity_cli::IdentityArgs),
    /// Configuration profiles: write a Wi-Fi profile.
    Profile(identity_cli::ProfileArgs),
    /// Run the station: prepare every iPad plugged in, as the configuration says.
    Run(station_cli::RunArgs),
    /// The station preparing a simulated cart (no iPad needed).
    Demo(DemoArgs),
    /// What a running station is doing.
    Status(station_cli::StatusArgs),
    /// The record of every iPad prepared: list, show, export.
    Ledger(station_cli::LedgerArgs),
    /// Name the cart's USB slots.
    Slots(station_cli::SlotsArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// iPads on the simulated cart (at least 5).
    #[arg(long, default_value_t = 6)]
    devices: usize,
    /// Keep everything here (default: a new temporary folder, kept after the demo).
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimArgs {
    /// Number of fresh iPads on the cart (ignored with --scenario).
    #[arg(long, default_value_t = 3, conflicts_with = "scenario")]
    devices: usize,
    /// A TOML scenario describing the cart (see crates/simulator/src/scenario.rs).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Where to listen: a unix socket path or 127.0.0.1:PORT (repeatable).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Folder for pair records, the SystemBUID and device keys (default: a new temporary folder).
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
    /// Start the iPads activated (still in Setup Assistant), as after an erase and activation.
    #[arg(long)]
    activated: bool,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // idevice prints pair records, private keys included, at debug level: never let it.
    let (filter, idevice_cap) = match EnvFilter::try_from_env("CARTPREP_LOG") {
        Ok(f) => (f, "idevice=info"),
        Err(_) => (EnvFilter::new("warn"), "idevice=warn"),
    };
    let filter = filter.add_directive(idevice_cap.parse().expect("static directive"));
    // Plain under systemd/launchd (stderr is the journal or a file), coloured on a terminal.
    let ansi = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => sim(args).await,
            Command::Identity(args) => identity_cli::identity(args),
            Command::Profile(args) => identity_cli::profile(args),
            Command::Run(args) => station_cli::run(args).await,
            Command::Demo(args) => demo::demo(args.devices, args.state).await,
            Command::Status(args) => station_cli::status(args).await,
            Command::Ledger(args) => station_cli::ledger(args).await,
            Command::Slots(args) => station_cli::slots(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => match simulator::Scenario::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None if args.devices == 0 => {
            eprintln!("error: --devices must be at least 1");
            return Ok(ExitCode::from(2));
        }
        None => simulator::Scenario::uniform(args.devices),
    };
    let listen_args = if args.listen.is_empty() {
        vec!["127.0.0.1:27015".to_owned()]
    } else {
        args.listen.clone()
    };
    let mut listen = Vec::new();
    for a in &listen_args {
        match a.parse::<usbmux::UsbmuxAddress>() {
            Ok(addr) => listen.push(addr),
            Err(e) => {
                eprintln!("error: --listen {a}: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    // Kept until exit so a default state folder is removed when the simulator stops.
    let (state_dir, _temp) = match &args.state {
        Some(dir) => (dir.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("cartprep-sim-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let sim = simulator::Simulator::start(simulator::SimConfig {
        scenario,
        listen,
        state_dir: state_dir.clone(),
        activated: args.activated,
    })
    .await
    .context("starting the simulator")?;

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
        println!("listening on {addr}");
    }
    println!("state folder {}", state_dir.display());
    let ca_path = state_dir.join("activation-ca.pem");
    std::fs::write(&ca_path, sim.activation_ca_pem())
        .with_context(|| format!("writing {}", ca_path.display()))?;
    println!("activation server {}", sim.activation_server_url());
    println!("activation CA {}", ca_path.display());
    println!("control socket {}", control_path.display());
    let first = sim.address();
    println!(
        "try: USBMUXD_SOCKET_ADDRESS={} ideviceinfo -s    or    USBMUXD_SOCKET_ADDRESS={first} pymobiledevice3 usbmux list",
        first.for_libusbmuxd()
    );
    println!("{}", simulator::control::HELP);
    for (ipad, id) in sim.cart.slots() {
        if let Some(device_id) = id {
            println!(
                "{}",
                simulator::Notice::Plugged {
                    slot: ipad.spec.slot,
                    device_id,
                    ipad: ipad.clone()
                }
            );
        }
    }
    let mut notices = sim.cart.notices();
    tokio::spawn(async move {
        while let Ok(n) = notices.recv().await {
            println!("{n}");
        }
    });
    let _timeline = sim.spawn_timeline();
    let cart = sim.cart.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let out = simulator::control::execute(&cart, &line);
            if !out.is_empty() {
                println!("{out}");
            }
        }
    });
    station::daemon::shutdown_signal().await;
    println!("simulator stopped");
    Ok(ExitCode::SUCCESS)
}
