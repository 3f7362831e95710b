//! The daemon: the wiring between usbmuxd, the scheduler, the configuration watcher, the
//! status socket and the ledger. It opens the station's state, follows usbmuxd (reconnecting
//! with backoff), hands every event to the [`Scheduler`], and stops on a signal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use usbmux::{DeviceEvent, UsbmuxAddress, UsbmuxClient};

use crate::config::{ConfigError, StationConfig};
use crate::ledger::{Event, Ledger, LedgerError};
use crate::prepare::Context;
use crate::record::Outcome;
pub use crate::scheduler::Idle;
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::slots::{SlotLabels, Topology};
use crate::status::{Board, Summary};

#[derive(Debug, thiserror::Error)]
///
/// Every variant is a start-up problem: the station cannot begin, and restarting it will not
/// help until someone fixes what the message names (the command line exits 2 for these).
pub enum DaemonError {
    #[error("ledger (in the state folder, state_dir): {0}{hint}", hint = ledger_hint(.0))]
    Ledger(#[from] LedgerError),
    #[error(
        "usbmuxd = {0:?} in the configuration is not a usbmuxd address ({1}): give its socket path (\"/var/run/usbmuxd\") or host:port"
    )]
    Address(String, usbmux::UsbmuxError),
    #[error(
        "state folder {0} (state_dir in the configuration, or --state) cannot be used: {1}; create it as a folder the station can write, or name another"
    )]
    State(PathBuf, std::io::Error),
    #[error("asm: {0}")]
    Asm(#[from] asm::AsmError),
}

/// The next step for a ledger that will not open.
fn ledger_hint(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::Open { source, .. }
            if source.to_string().contains("could not acquire lock") =>
        {
            "; another cartprep is running on this state folder: stop it first (systemctl stop cartprep)"
        }
        LedgerError::StateDir { .. } | LedgerError::AuditOpen { .. } | LedgerError::Open { .. } => {
            "; check that the state folder exists, is a folder, and is writable by the station"
        }
        _ => "",
    }
}

/// When the daemon should stop by itself (the demo); `None` runs until a signal.
pub type StopWhen = Box<dyn Fn(&Board, &Idle) -> bool + Send + Sync>;

pub struct DaemonOptions {
    /// The loaded configuration ([`Settings::load`]).
    pub settings: Settings,
    /// Follow edits of the configuration file.
    pub watch_config: bool,
    pub board: Board,
    pub topology: Arc<dyn Topology>,
    pub stop_when: Option<StopWhen>,
    /// Extra wake-ups for `stop_when` (e.g. the demo's timeline finishing).
    pub nudge: Option<watch::Receiver<()>>,
}

/// What the daemon reports when it stops.
#[derive(Debug, Clone)]
pub struct DaemonReport {
    pub summary: Summary,
    pub state_dir: PathBuf,
}

/// What the usbmuxd listener tells the daemon.
enum MuxEvent {
    Up,
    Device(DeviceEvent),
    Down(String),
}

/// First pause before reconnecting to usbmuxd, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long background Apple School Manager assignments get when the daemon stops by itself.
const ASM_SETTLE: Duration = Duration::from_secs(60);
/// How long jobs finishing their last step get when the station is stopped by a signal.
const STOP_GRACE: Duration = Duration::from_millis(1500);

/// Follows usbmuxd for ever, reconnecting with backoff (reset after a good connection); tells
/// the daemon when the link goes and comes back (Listen then replays the devices present).
fn spawn_listener(addr: UsbmuxAddress, tx: mpsc::Sender<MuxEvent>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = RECONNECT_FIRST;
        loop {
            let mut connected = false;
            let result = async {
                let mut listener = UsbmuxClient::connect(&addr).await?.listen().await?;
                connected = true;
                if tx.send(MuxEvent::Up).await.is_err() {
                    return Ok(());
                }
                while let Some(event) = listener.next_event().await? {
                    if tx.send(MuxEvent::Device(event)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(usbmux::UsbmuxError::Closed)
            }
            .await;
            let Err(e) = result else { return };
            let pause = next_pause(&mut backoff, connected);
            if tx.send(MuxEvent::Down(e.to_string())).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    })
}

/// The pause before reconnecting to usbmuxd, advancing `backoff`: doubling up to
/// [`RECONNECT_MAX`] while connecting fails, back to [`RECONNECT_FIRST`] once a connection was
/// good, so a usbmuxd restarted many times is still re-adopted within a second.
fn next_pause(backoff: &mut Duration, connected: bool) -> Duration {
    if connected {
        *backoff = RECONNECT_FIRST;
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(RECONNECT_MAX);
    pause
}

/// The station's state, opened.
struct Opened {
    addr: UsbmuxAddress,
    settings: Arc<Settings>,
    ctx: Arc<Context>,
    labels: SlotLabels,
}

/// Opens the state folder and the ledger; work a crash or a stop interrupted waits for its
/// iPad to come back.
async fn open(settings: Arc<Settings>, board: &Board) -> Result<Opened, DaemonError> {
    let config = &settings.config;
    let state_dir = &config.state_dir;
    crate::private::create_private_dir(state_dir)
        .map_err(|e| DaemonError::State(state_dir.clone(), e))?;
    let addr: UsbmuxAddress = config
        .usbmuxd
        .parse()
        .map_err(|e| DaemonError::Address(config.usbmuxd.clone(), e))?;
    let (ledger, report) = Ledger::open(state_dir)?;
    if let Some(aside) = &report.moved_aside {
        board.note(format!(
            "the ledger database was damaged: moved to {} and rebuilt from the audit log",
            aside.display()
        ));
    }
    if report.skipped_lines > 0 {
        board.note(format!(
            "{} unreadable audit-log lines were skipped",
            report.skipped_lines
        ));
    }
    // From the index of records in progress, not a scan of every iPad ever prepared.
    for mut r in ledger.working()? {
        if r.outcome == Outcome::Working {
            r.outcome = Outcome::Waiting;
            ledger.save(&r, Event::Update).await?;
        }
    }
    let labels = SlotLabels::load(state_dir).unwrap_or_else(|e| {
        board.note(format!("slot labels not loaded: {e}"));
        SlotLabels::default()
    });
    let ledger = Arc::new(ledger);
    let asm = crate::asm_sync::AsmSync::start(&settings, ledger.clone(), board.clone()).await?;
    if let Some(asm) = &asm {
        let resumed = asm.resume().await?;
        if resumed > 0 {
            board.note(format!(
                "resuming {resumed} Apple School Manager assignment(s) from the ledger"
            ));
        }
    }
    let ctx = Arc::new(Context {
        usbmux: addr.clone(),
        ledger,
        pair_store: lockdown::PairRecordStore::new(state_dir.join("pair-records")),
        asm,
        transcripts: config.transcript.clone(),
    });
    Ok(Opened {
        addr,
        settings,
        ctx,
        labels,
    })
}

/// Runs the station until a signal (or `stop_when`).
pub async fn run(options: DaemonOptions) -> Result<DaemonReport, DaemonError> {
    let DaemonOptions {
        settings,
        watch_config,
        board,
        topology,
        stop_when,
        nudge,
    } = options;
    let config = settings.config.clone();
    let state_dir = config.state_dir.clone();
    // The pairing key is made in the background while the rest starts (lockdown::host_key).
    lockdown::host_key::prepare_in_background();
    let reloads = Reloads::start(watch_config, &settings, &board);
    let opened = open(Arc::new(settings), &board).await?;
    // `[web]` and `[notify]`; stopped when this returns (dropped).
    let _services = crate::services::Services::start(&config, &board, &opened.ctx.ledger).await;
    if let Some(why) = topology.unavailable() {
        board.note(format!("USB slots: {why}"));
    }
    let status_path = state_dir.join("status.sock");
    let status_task = serve_status(board.clone(), status_path.clone());
    let control_path = crate::control::socket_path(&state_dir);
    let (control_tx, control_rx) = mpsc::channel(16);
    let control_task = serve_control(board.clone(), control_path.clone(), control_tx);
    let (tx, rx) = mpsc::channel(256);
    let listener = spawn_listener(opened.addr.clone(), tx);
    notify_ready();
    board.note(banner(&config));

    let asm = opened.ctx.asm.clone();
    let mut scheduler = Scheduler::new(
        opened.ctx,
        opened.settings,
        board.clone(),
        topology.clone(),
        opened.labels,
    );
    let mut events = Events {
        mux: rx,
        addr: opened.addr,
        reloads,
        nudge,
        usb_scan: crate::usb_events::UsbEvents::start(topology.changes_path().as_deref()),
        topology,
        board: board.clone(),
        control: control_rx,
    };
    let signalled = events.run(&mut scheduler, stop_when.as_ref()).await;
    scheduler
        .shut_down(if signalled {
            STOP_GRACE
        } else {
            Duration::ZERO
        })
        .await;
    if let Some(asm) = &asm {
        // Stopped by itself (the demo): let assignments finish; on a signal, they resume from
        // the journal at the next start.
        if signalled {
            asm.stop().await;
        } else {
            asm.settle(ASM_SETTLE).await;
        }
    }
    listener.abort();
    status_task.abort();
    control_task.abort();
    let _ = std::fs::remove_file(&status_path);
    let _ = std::fs::remove_file(&control_path);
    drop(events);
    Ok(DaemonReport {
        summary: board.summary(),
        state_dir,
    })
}

/// The first line a station prints: what it will do, and where its state is.
fn banner(config: &StationConfig) -> String {
    format!(
        "cartprep station: organization {}, MDM {} ({} mode), one iPad at a time{}; state in {}",
        config.organization.name,
        config.mdm.enrollment_url,
        config.mdm.mode.as_str(),
        if config.max_concurrent > 1 {
            format!(" (up to {})", config.max_concurrent)
        } else {
            String::new()
        },
        config.state_dir.display()
    )
}

/// Serves `cartprep status` on a unix socket in the state folder.
fn serve_status(board: Board, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = crate::status::serve_snapshots(board.clone(), &path).await {
            board.note(format!("status socket {}: {e}", path.display()));
        }
    })
}

/// Serves the operator's commands on a unix socket in the state folder.
fn serve_control(
    board: Board,
    path: PathBuf,
    tx: mpsc::Sender<crate::control::Command>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = crate::control::serve(&path, tx).await {
            board.note(format!("control socket {}: {e}", path.display()));
        }
    })
}

/// Edits of the configuration file, accepted or refused.
struct Reloads {
    /// Kept for its Drop, which stops watching.
    _watcher: Option<crate::watch::ConfigWatcher>,
    accepted: Option<watch::Receiver<Arc<Settings>>>,
    refused: Option<watch::Receiver<Option<Arc<ConfigError>>>>,
}

enum Reload {
    Accepted(Arc<Settings>),
    Refused(Arc<ConfigError>),
}

impl Reloads {
    fn start(enabled: bool, settings: &Settings, board: &Board) -> Reloads {
        let watcher = if enabled {
            crate::watch::ConfigWatcher::start(settings.clone())
                .map_err(|e| board.note(format!("configuration edits will not be followed: {e}")))
                .ok()
        } else {
            None
        };
        Reloads {
            accepted: watcher.as_ref().map(|w| w.subscribe()),
            refused: watcher.as_ref().map(|w| w.refused()),
            _watcher: watcher,
        }
    }

    /// The next accepted or refused edit; pending for ever without a watcher.
    async fn next(&mut self) -> Reload {
        loop {
            tokio::select! {
                Some(config) = changed(&mut self.accepted) => return Reload::Accepted(config),
                Some(refusal) = changed(&mut self.refused) => {
                    if let Some(e) = refusal {
                        return Reload::Refused(e);
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }
}

/// The next value of a watch channel; `None` when it has none to give (no channel, or its
/// sender is gone).
async fn changed<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    let rx = rx.as_mut()?;
    rx.changed().await.ok()?;
    Some(rx.borrow_and_update().clone())
}

/// Everything the daemon waits on, besides the jobs.
struct Events {
    mux: mpsc::Receiver<MuxEvent>,
    addr: UsbmuxAddress,
    reloads: Reloads,
    nudge: Option<watch::Receiver<()>>,
    usb_scan: crate::usb_events::UsbEvents,
    topology: Arc<dyn Topology>,
    board: Board,
    /// The operator's commands (`control.sock`).
    control: mpsc::Receiver<crate::control::Command>,
}

impl Events {
    /// Hands events to the scheduler until a signal (returns `true`) or `stop_when`.
    async fn run(&mut self, scheduler: &mut Scheduler, stop_when: Option<&StopWhen>) -> bool {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut before = scheduler.idle();
        loop {
            scheduler.start_ready();
            let now = scheduler.idle();
            if crate::memory::went_idle(before, now) {
                crate::memory::give_back_freed();
            }
            before = now;
            if let Some(stop) = stop_when
                && scheduler.mux_up()
                && stop(&self.board, &now)
            {
                return false;
            }
            let freed = scheduler.room_freed();
            tokio::select! {
                _ = &mut shutdown => {
                    self.board.note("stopping: work in progress resumes when the station starts again");
                    return true;
                }
                event = self.mux.recv() => match event {
                    Some(event) => self.on_mux(scheduler, event).await,
                    None => return false,
                },
                ended = scheduler.next_job_end() => scheduler.on_job_end(ended),
                reload = self.reloads.next() => self.on_reload(scheduler, reload),
                _ = self.usb_scan.next() => scheduler.on_usb_devices(&self.topology.apple_devices()),
                _ = nudged(&mut self.nudge) => {}
                _ = freed.notified() => {}
                Some(command) = self.control.recv() => {
                    let reply = scheduler.on_command(command.request, command.uid).await;
                    let _ = command.reply.send(reply);
                }
            }
        }
    }

    async fn on_mux(&self, scheduler: &mut Scheduler, event: MuxEvent) {
        match event {
            MuxEvent::Up => {
                scheduler.on_mux_up();
                self.board.set_usbmuxd(true);
                self.board.set_waiting_for(None);
                self.board
                    .note(format!("connected to usbmuxd at {}", self.addr));
            }
            MuxEvent::Down(why) => {
                self.board.set_usbmuxd(false);
                if scheduler.mux_up() {
                    self.board
                        .note(format!("lost usbmuxd ({why}); reconnecting"));
                }
                // Said once, and shown by `cartprep status` until usbmuxd answers.
                self.board.set_waiting_for(Some(format!(
                    "waiting for usbmuxd at {} ({why})",
                    self.addr
                )));
                scheduler.on_mux_down().await;
            }
            MuxEvent::Device(DeviceEvent::Attached(props)) => {
                self.usb_scan.poke();
                scheduler.on_attached(props)
            }
            MuxEvent::Device(DeviceEvent::Detached { device_id }) => {
                self.usb_scan.poke();
                scheduler.on_detached(device_id).await
            }
            MuxEvent::Device(DeviceEvent::Paired { .. }) => {}
        }
    }

    fn on_reload(&self, scheduler: &mut Scheduler, reload: Reload) {
        let refused = |e: &dyn std::fmt::Display| {
            self.board.note(format!(
                "configuration edit refused, keeping the previous one: {e}"
            ))
        };
        match reload {
            Reload::Accepted(new) => {
                let what = new.config.changed_sections(&scheduler.settings().config);
                if what.contains(&"asm") {
                    self.board.note(
                        "[asm] changes take effect when the station restarts (the Apple School Manager link is made at start-up)",
                    );
                }
                scheduler.set_settings(new);
                self.board.note(format!(
                    "configuration reloaded ({}): applies to the next iPad",
                    what.join(", ")
                ));
            }
            Reload::Refused(e) => refused(&e),
        }
    }
}

/// Resolves when the nudge channel says so; pending for ever without one.
async fn nudged(nudge: &mut Option<watch::Receiver<()>>) {
    match nudge.as_mut() {
        Some(n) => {
            if n.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves on Ctrl-C or SIGTERM (systemd's and launchd's stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Tells systemd (Type=notify) the station is up; nothing happens outside systemd.
fn notify_ready() {
    #[cfg(target_os = "linux")]
    {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let bytes = path.as_encoded_bytes();
        let message = b"READY=1\nSTATUS=watching usbmuxd";
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
                let _ = sock.send_to_addr(message, &addr);
            }
        } else {
            let _ = sock.send_to(message, PathBuf::from(path));
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn the_reconnect_backoff_grows_while_failing_and_resets_after_a_good_connection() {
        let ms = Duration::from_millis;
        let mut backoff = RECONNECT_FIRST;
        // (connected before this failure, pause taken)
        let sequence = [
            (false, ms(250)),
            (false, ms(500)),
            (false, ms(1_000)),
            (false, ms(2_000)),
            (false, ms(4_000)),
            (false, ms(5_000)),
            (false, ms(5_000)),
            // usbmuxd came back, then went away again: start over.
            (true, ms(250)),
            (false, ms(500)),
            (true, ms(250)),
            (true, ms(250)),
        ];
        for (i, (connected, pause)) in sequence.into_iter().enumerate() {
            assert_eq!(next_pause(&mut backoff, connected), pause, "failure {i}");
        }
    }
}
