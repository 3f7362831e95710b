//! `cartprep run`, `status`, `ledger` and `slots`: the station's commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use station::Settings;
use station::paths::default_state_dir;
use station::slots::SlotLabels;
use station::status::Board;

use super::bad_input;

#[derive(Args)]
pub struct RunArgs {
    /// The station configuration (see config/station.example.toml).
    #[arg(long, value_name = "FILE", default_value_os_t = station::paths::default_config_path())]
    pub config: PathBuf,
    /// Keep the ledger, audit log and pair records here instead of the configuration's
    /// state_dir.
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Print one line per change even on a terminal, instead of the full-screen board.
    #[arg(long)]
    pub lines: bool,
    /// With the full-screen board: ring the terminal bell when an iPad is done or needs
    /// attention.
    #[arg(long)]
    pub bell: bool,
    /// Read the USB bus (slots, recovery-mode iPads) from this sysfs tree instead of the
    /// machine's: /sys on Linux, else libusb [default: the machine's].
    #[arg(long, value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// Write a transcript of each iPad's traffic (secrets redacted) to this folder, for a bug
    /// report; overrides `[debug] transcript` (README, "Sending a transcript with a bug report").
    #[arg(long, value_name = "DIR")]
    pub transcript: Option<PathBuf>,
}

/// Loads a configuration and the files it names; an invalid one is bad input
/// (`station::ConfigError`), and nothing is touched.
pub fn load_config(path: &std::path::Path, state: Option<PathBuf>) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(path)?;
    if let Some(s) = state {
        Arc::make_mut(&mut settings.config).state_dir = s;
    }
    Ok(settings)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut settings = load_config(&args.config, args.state)?;
    if let Some(dir) = args.transcript {
        Arc::make_mut(&mut settings.config).transcript = Some(dir);
    }
    // Everything the station creates from here on is its own (0700/0600), including files
    // libraries create later, such as sled's segments (README, "Permissions").
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let full_screen = super::board_screen::wanted(args.lines);
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
            args.bell,
        )?)
    } else {
        None
    };
    let report = station::daemon::run(station::daemon::DaemonOptions {
        settings,
        watch_config: true,
        board,
        topology: Arc::from(station::slots::open_host_bus(args.sysfs.as_deref())),
        stop_when: None,
        nudge: None,
    })
    .await;
    if let Some(screen) = screen {
        screen.stop().await;
    }
    let report = report?;
    writeln!(std::io::stdout(), "{}", report.summary)?;
    eprintln!("state in {}", report.state_dir.display());
    Ok(())
}

#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let snapshot = station::status::fetch_snapshot(&dir.join("status.sock"))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout();
    if args.json {
        // Serialised first: an error writing (a closed pipe) stays an I/O error.
        writeln!(out, "{}", serde_json::to_string_pretty(&snapshot)?)?;
    } else {
        write!(out, "{}", station::status::render(&snapshot))?;
        for n in &snapshot.notes {
            writeln!(out, "note: {n}")?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
    #[arg(long = "state", value_name = "DIR", global = true)]
    pub state: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// One line per iPad, under a header: serial, model, name, slot, state.
    List {
        /// Print the records as a JSON array (what the web page's /api/devices serves).
        #[arg(long)]
        json: bool,
    },
    /// The full record and step history of one iPad (serial or UDID).
    Show {
        /// The iPad's serial number or UDID (any case).
        serial: String,
        /// Print the record as JSON (what the web page's /api/devices/SERIAL serves).
        #[arg(long)]
        json: bool,
    },
    /// Export the records.
    Export {
        /// What to write.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// With --format asm: also list iPads that are not done.
        #[arg(long)]
        all: bool,
        /// With --out: replace the file if it exists.
        #[arg(long)]
        force: bool,
        /// With --format asm: serial numbers only, without the "Serial Number" header row
        /// (Apple does not document whether the upload wants one).
        #[arg(long)]
        no_header: bool,
        /// With --format release: only the iPads assigned to this organisation.
        #[arg(long, value_name = "NAME")]
        organization: Option<String>,
    },
    /// Give an iPad a new number (and so a new name) the next time it is prepared; its old
    /// number is not given to anyone else. Stop the station first.
    Renumber {
        /// The iPad's serial number (any case).
        serial: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Serial, name, model, iOS, slot, outcome, time.
    Csv,
    /// Serial numbers for Apple School Manager ("assign to MDM server" upload).
    Asm,
    /// Serial numbers of iPads still assigned in another organisation's Apple School Manager,
    /// for them to release (their "Release devices" upload).
    Release,
    /// One JSON record per line, with the step history.
    Jsonl,
}

pub async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let records = station::Ledger::read_only(&dir)?;
    // Written through a handle, not println!, so a reader that goes away (`| head -1`) is an
    // error to stop at rather than a panic.
    let mut out = std::io::stdout();
    match args.command {
        LedgerCommand::Renumber { serial } => renumber(&dir, &serial, &mut out).await?,
        LedgerCommand::List { json } => {
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
                return Ok(());
            }
            if records.is_empty() {
                writeln!(out, "no iPads recorded in {}", dir.display())?;
                return Ok(());
            }
            writeln!(out, "{}", super::ledger_table::header())?;
            for r in &records {
                writeln!(out, "{}", super::ledger_table::line(r))?;
            }
        }
        LedgerCommand::Show { serial, json } => {
            let Some(r) = station::web::find_record(&records, &serial) else {
                anyhow::bail!("no iPad with serial or UDID {serial} in {}", dir.display());
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
                return Ok(());
            }
            writeln!(
                out,
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
            )?;
            if let Some(e) = &r.enrollment {
                writeln!(out, "mdm      {e}")?;
            }
            if let Some(e) = &r.erase_reason {
                writeln!(out, "erased   {e}")?;
            }
            writeln!(out, "history:")?;
            for h in &r.history {
                let (what, detail) = h.describe();
                writeln!(
                    out,
                    "  {}  #{} {:<16} {}",
                    station::clock::rfc3339_utc(h.at_ms),
                    h.attempt,
                    what,
                    detail
                )?;
            }
        }
        LedgerCommand::Export {
            format,
            out: file,
            all,
            force,
            no_header,
            organization,
        } => {
            if let Some(path) = &file {
                super::identity::refuse_overwrite(path, force)?;
            }
            if organization.is_some() && !matches!(format, ExportFormat::Release) {
                return Err(bad_input("--organization goes with --format release"));
            }
            let mut buf = Vec::new();
            let n = match format {
                ExportFormat::Csv => station::export::full_csv(&records, &mut buf)?,
                ExportFormat::Asm => {
                    station::export::asm_csv_with(&records, all, !no_header, &mut buf)?
                }
                ExportFormat::Release => {
                    station::export::release_csv(&records, organization.as_deref(), &mut buf)?
                }
                ExportFormat::Jsonl => station::export::jsonl(&records, &mut buf)?,
            };
            match file {
                Some(path) => {
                    // 0600 like every file of the station (README, "Permissions").
                    station::private::write_private(&path, &buf)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{n} iPads written to {}", path.display());
                }
                None => out.write_all(&buf)?,
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct SlotsArgs {
    #[command(subcommand)]
    pub command: SlotsCommand,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
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
        /// Read the USB bus from this sysfs tree instead of the machine's (as `run --sysfs`).
        #[arg(long, value_name = "DIR")]
        sysfs: Option<PathBuf>,
        /// Stop once this many slots are named, instead of waiting for Ctrl-C.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
    },
    /// The slots learnt so far.
    List,
}

pub async fn slots(args: SlotsArgs) -> anyhow::Result<()> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    // A slots.toml that cannot be read is a configuration mistake.
    let mut labels = SlotLabels::load(&dir).map_err(bad_input)?;
    let mut out = std::io::stdout();
    match args.command {
        SlotsCommand::List => {
            if labels.slots.is_empty() {
                writeln!(
                    out,
                    "no slots learnt in {} (cartprep slots learn names them; or write them in \
                     the [slots] table of station.toml)",
                    dir.display()
                )?;
            }
            for (chain, label) in &labels.slots {
                writeln!(out, "{label:<8} {chain}")?;
            }
            Ok(())
        }
        SlotsCommand::Learn {
            usbmuxd,
            sysfs,
            count,
        } => {
            let topology = station::slots::open_host_bus(sysfs.as_deref());
            if let Some(why) = topology.unavailable() {
                anyhow::bail!("{why}: slots cannot be learnt on this machine");
            }
            let addr: usbmux::UsbmuxAddress = match usbmuxd {
                Some(a) => a
                    .parse()
                    .map_err(|e| bad_input(format!("--usbmuxd {a}: {e}")))?,
                None => usbmux::UsbmuxAddress::from_env_or_default()?,
            };
            let mut listener = usbmux::UsbmuxClient::connect(&addr).await?.listen().await?;
            let mut next = labels.slots.len() + 1;
            writeln!(
                out,
                "Plug an iPad into slot {next}. (Ctrl-C when every slot is done.)"
            )?;
            while count.is_none_or(|n| labels.slots.len() < n) {
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
                if !p.over_usb() {
                    continue;
                }
                let encoding = topology.location_encoding();
                match station::slots::chain_for(topology.as_ref(), &p.udid, p.location_id, encoding)
                {
                    Some(chain) if labels.slots.contains_key(&chain) => {
                        writeln!(
                            out,
                            "That port is already slot {}. Plug into slot {next}.",
                            labels.label(&chain)
                        )?;
                    }
                    Some(chain) => {
                        labels.slots.insert(chain.clone(), next.to_string());
                        labels.save(&dir).map_err(anyhow::Error::msg)?;
                        writeln!(
                            out,
                            "Slot {next} is USB port {chain}. Now plug an iPad into slot {}.",
                            next + 1
                        )?;
                        next += 1;
                    }
                    None => writeln!(
                        out,
                        "Could not find that iPad on the USB bus; try another cable or port."
                    )?,
                }
            }
            writeln!(
                out,
                "{} slots saved in {}",
                labels.slots.len(),
                SlotLabels::path(&dir).display()
            )?;
            Ok(())
        }
    }
}

/// `cartprep ledger renumber`: the one ledger command that writes, so it opens the database
/// (refused while a station runs on the same folder).
async fn renumber(dir: &Path, serial: &str, out: &mut impl Write) -> anyhow::Result<()> {
    if !dir.join(station::ledger::AUDIT_FILE).is_file() {
        return Err(bad_input(format!(
            "no ledger in {} (see --state)",
            dir.display()
        )));
    }
    let (ledger, _) = station::Ledger::open(dir).with_context(|| {
        format!(
            "opening the ledger in {} (is the station running? stop it first)",
            dir.display()
        )
    })?;
    let serial = serial.trim().to_ascii_uppercase();
    let released = ledger.release_number(&serial).await.map_err(|e| match e {
        station::LedgerError::NotFound { .. } => bad_input(e),
        other => other.into(),
    })?;
    match released {
        Some(old) => writeln!(
            out,
            "{serial}: number {old} released; it gets the next free number when it is next prepared"
        )?,
        None => writeln!(out, "{serial}: has no number yet")?,
    }
    Ok(())
}
