//! `cartprep run`, `status`, `ledger` and `slots`: the station's commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use station::StationConfig;
use station::slots::{RusbTopology, SlotLabels, Topology};
use station::status::Board;

use crate::identity_cli::default_state_dir;

#[derive(Args)]
pub struct RunArgs {
    /// The station configuration (see config/station.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides the configuration's state_dir.
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
}

/// Loads a configuration, printing what is wrong; `Err(2)` means "bad input, touched nothing".
pub fn load_config(
    path: &std::path::Path,
    state: Option<PathBuf>,
) -> Result<StationConfig, ExitCode> {
    match StationConfig::load(path) {
        Ok(mut c) => {
            if let Some(s) = state {
                c.state_dir = s;
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match load_config(&args.config, args.state) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Err(e) = station::pipeline::Settings::from_config(Arc::new(config.clone())) {
        eprintln!("error: {}: {e}", args.config.display());
        return Ok(ExitCode::from(2));
    }
    let report = station::daemon::run(station::daemon::DaemonOptions {
        config,
        watch_config: true,
        board: Board::stdout(),
        topology: Arc::new(RusbTopology::open()),
        stop_when: None,
        nudge: None,
    })
    .await?;
    println!("{}", report.summary);
    eprintln!("state in {}", report.state_dir.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    match station::status::fetch_snapshot(&dir.join("status.sock")).await {
        Ok(snapshot) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print!("{}", station::status::render(&snapshot));
                for n in &snapshot.notes {
                    println!("note: {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
    #[arg(long = "state", value_name = "DIR", global = true)]
    pub state: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// One line per iPad: serial, model, name, outcome.
    List,
    /// The full record and step history of one iPad (serial or UDID).
    Show { serial: String },
    /// Export the records.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// With --format asm: also list iPads that are not done.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Serial, name, model, iOS, slot, outcome, time.
    Csv,
    /// Serial numbers for Apple School Manager ("assign to MDM server" upload).
    Asm,
    /// One JSON record per line, with the step history.
    Jsonl,
}

pub async fn ledger(args: LedgerArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let records = match station::Ledger::read_only(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match args.command {
        LedgerCommand::List => {
            if records.is_empty() {
                println!("no iPads recorded in {}", dir.display());
            }
            for r in &records {
                println!(
                    "{:<14} {:<26} {:<20} {:<8} {}",
                    if r.serial.is_empty() {
                        "(not paired)"
                    } else {
                        r.serial.as_str()
                    },
                    r.marketing_name,
                    r.name.as_deref().unwrap_or("-"),
                    r.step.label(),
                    r.outcome.describe()
                );
            }
        }
        LedgerCommand::Show { serial } => {
            let Some(r) = records.iter().find(|r| {
                r.serial.eq_ignore_ascii_case(&serial) || r.udid.eq_ignore_ascii_case(&serial)
            }) else {
                eprintln!(
                    "error: no iPad with serial or UDID {serial} in {}",
                    dir.display()
                );
                return Ok(ExitCode::FAILURE);
            };
            println!(
                "serial   {}\nudid     {}\nmodel    {} ({})\niPadOS   {} ({})\nslot     {}\nname     {}\noutcome  {}\nattempts {}",
                r.serial,
                r.udid,
                r.marketing_name,
                r.product_type,
                r.ios_version,
                r.build,
                r.slot.as_deref().unwrap_or("-"),
                r.name.as_deref().unwrap_or("-"),
                r.outcome.describe(),
                r.attempts
            );
            if let Some(e) = &r.erase_reason {
                println!("erased   {e}");
            }
            println!("history:");
            for h in &r.history {
                let detail = h.error.as_deref().or(h.note.as_deref()).unwrap_or("");
                println!(
                    "  {}  #{} {:<16} {}",
                    station::clock::rfc3339_utc(h.at_ms),
                    h.attempt,
                    h.step.label(),
                    detail
                );
            }
        }
        LedgerCommand::Export { format, out, all } => {
            let mut buf = Vec::new();
            let n = match format {
                ExportFormat::Csv => station::export::full_csv(&records, &mut buf)?,
                ExportFormat::Asm => station::export::asm_csv(&records, all, &mut buf)?,
                ExportFormat::Jsonl => station::export::jsonl(&records, &mut buf)?,
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, &buf)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{n} iPads written to {}", path.display());
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&buf)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct SlotsArgs {
    #[command(subcommand)]
    pub command: SlotsCommand,
    #[arg(long = "state", value_name = "DIR", global = true)]
    pub state: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum SlotsCommand {
    /// Name the cart's slots: plug an iPad into each slot in turn; Ctrl-C when finished.
    Learn {
        /// usbmuxd address (default: $USBMUXD_SOCKET_ADDRESS or /var/run/usbmuxd).
        #[arg(long)]
        usbmuxd: Option<String>,
    },
    /// The slots learnt so far.
    List,
}

pub async fn slots(args: SlotsArgs) -> anyhow::Result<ExitCode> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let mut labels = match SlotLabels::load(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match args.command {
        SlotsCommand::List => {
            for (chain, label) in &labels.slots {
                println!("{label:<8} {chain}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SlotsCommand::Learn { usbmuxd } => {
            let topology = RusbTopology::open();
            if let Some(why) = topology.unavailable() {
                eprintln!("error: {why}: slots cannot be learnt on this machine");
                return Ok(ExitCode::FAILURE);
            }
            let addr: usbmux::UsbmuxAddress = match usbmuxd {
                Some(a) => a.parse()?,
                None => usbmux::UsbmuxAddress::from_env_or_default()?,
            };
            let mut listener = usbmux::UsbmuxClient::connect(&addr).await?.listen().await?;
            let mut next = labels.slots.len() + 1;
            println!("Plug an iPad into slot {next}. (Ctrl-C when every slot is done.)");
            loop {
                let event = tokio::select! {
                    e = listener.next_event() => e?,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let Some(usbmux::DeviceEvent::Attached(p)) = event else {
                    if event.is_none() {
                        break;
                    }
                    continue;
                };
                match station::slots::chain_for(&topology, &p.udid, p.location_id) {
                    Some(chain) if labels.slots.contains_key(&chain) => {
                        println!(
                            "That port is already slot {}. Plug into slot {next}.",
                            labels.label(&chain)
                        );
                    }
                    Some(chain) => {
                        labels.slots.insert(chain.clone(), next.to_string());
                        if let Err(e) = labels.save(&dir) {
                            eprintln!("error: {e}");
                            return Ok(ExitCode::FAILURE);
                        }
                        println!(
                            "Slot {next} is USB port {chain}. Now plug an iPad into slot {}.",
                            next + 1
                        );
                        next += 1;
                    }
                    None => println!(
                        "Could not find that iPad on the USB bus; try another cable or port."
                    ),
                }
            }
            println!(
                "{} slots saved in {}",
                labels.slots.len(),
                SlotLabels::path(&dir).display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
