//! The daemon: follows usbmuxd (Listen, every property), reconnects with backoff when usbmuxd
//! goes away, queues iPads one at a time (or `max_concurrent`), runs the prepare pipeline for
//! each, and keeps the status board, the ledger and the configuration current.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use usbmux::{DeviceEvent, DeviceProperties, UsbmuxAddress, UsbmuxClient};

use crate::config::StationConfig;
use crate::ledger::{Event, Ledger, LedgerError};
use crate::pipeline::{Context, Job, JobEnd, Settings};
use crate::record::{Outcome, Step};
use crate::slots::{SlotLabels, Topology, UsbMode};
use crate::status::{Board, DeviceStatus, Light, Summary};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("bad usbmuxd address {0:?}: {1}")]
    Address(String, usbmux::UsbmuxError),
    #[error("state folder {0}: {1}")]
    State(PathBuf, std::io::Error),
}

/// When the daemon should stop by itself (the demo); `None` runs until a signal.
pub type StopWhen = Box<dyn Fn(&Board, &Idle) -> bool + Send + Sync>;

/// What the scheduler is doing, for [`StopWhen`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Idle {
    pub running: usize,
    pub queued: usize,
    pub erasing: usize,
}

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

enum MuxEvent {
    Up,
    Device(DeviceEvent),
    Down(String),
}

/// Follows usbmuxd for ever, reconnecting with backoff; tells the scheduler when the link
/// goes and comes back (Listen then replays the devices present).
fn spawn_listener(addr: UsbmuxAddress, tx: mpsc::Sender<MuxEvent>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = async {
                let mut listener = UsbmuxClient::connect(&addr).await?.listen().await?;
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
            match result {
                Ok(()) => return,
                Err(e) => {
                    if tx.send(MuxEvent::Down(e.to_string())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

struct Running {
    device_id: u32,
    abort: AbortHandle,
}

/// Runs the station until a signal (or `stop_when`).
pub async fn run(options: DaemonOptions) -> Result<DaemonReport, DaemonError> {
    let DaemonOptions {
        settings,
        watch_config,
        board,
        topology,
        stop_when,
        mut nudge,
    } = options;
    let config = settings.config.clone();
    let state_dir = config.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|e| DaemonError::State(state_dir.clone(), e))?;
    let addr: UsbmuxAddress = config
        .usbmuxd
        .parse()
        .map_err(|e| DaemonError::Address(config.usbmuxd.clone(), e))?;
    let (ledger, report) = Ledger::open(&state_dir)?;
    let ledger = Arc::new(ledger);
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
    // Work interrupted by a crash or a stop is waiting for its iPad to come back.
    for mut r in ledger.list()? {
        if r.outcome == Outcome::Working {
            r.outcome = Outcome::Waiting;
            ledger.save(&r, Event::Update).await?;
        }
    }
    if let Some(why) = topology.unavailable() {
        board.note(format!("USB slots: {why}"));
    }
    let labels = SlotLabels::load(&state_dir).unwrap_or_else(|e| {
        board.note(format!("slot labels not loaded: {e}"));
        SlotLabels::default()
    });

    let ctx = Arc::new(Context {
        usbmux: addr.clone(),
        ledger: ledger.clone(),
        board: board.clone(),
        pair_store: lockdown::PairRecordStore::new(state_dir.join("pair-records")),
    });

    let status_path = state_dir.join("status.sock");
    let status_task = {
        let (board, path) = (board.clone(), status_path.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::status::serve_snapshots(board.clone(), &path).await {
                board.note(format!("status socket {}: {e}", path.display()));
            }
        })
    };

    let watcher = if watch_config {
        match crate::watch::ConfigWatcher::start(settings.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                board.note(format!("configuration edits will not be followed: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut settings = Arc::new(settings);
    let mut config_rx = watcher.as_ref().map(|w| w.subscribe());
    let mut refused_rx = watcher.as_ref().map(|w| w.refused());

    let (tx, mut rx) = mpsc::channel(256);
    let listener = spawn_listener(addr.clone(), tx);
    notify_ready();
    board.note(format!(
        "cartprep station: organization {}, MDM {} ({} mode), one iPad at a time{}; state in {}",
        config.organization.name,
        config.mdm.enrollment_url,
        config.mdm.mode.as_str(),
        if config.max_concurrent > 1 {
            format!(" (up to {})", config.max_concurrent)
        } else {
            String::new()
        },
        state_dir.display()
    ));

    let mut attached: HashMap<u32, DeviceProperties> = HashMap::new();
    let mut queue: VecDeque<u32> = VecDeque::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut erasing: HashSet<String> = HashSet::new();
    let mut jobs: JoinSet<(String, JobEnd)> = JoinSet::new();
    let mut mux_up = false;
    let mut recovery_seen: HashSet<String> = HashSet::new();
    let mut usb_tick = tokio::time::interval(Duration::from_secs(5));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut signalled = false;

    loop {
        // Start what may start.
        while running.len() < settings.config.max_concurrent.max(1) {
            let Some(id) = queue.pop_front() else { break };
            let Some(props) = attached.get(&id).cloned() else {
                continue;
            };
            let udid = props.udid.clone();
            if running.contains_key(&udid) {
                continue;
            }
            erasing.remove(&udid);
            let slot = slot_of(
                topology.as_ref(),
                &labels,
                &settings.config,
                &udid,
                props.location_id,
            );
            let previous = board.get(&udid);
            let (ctx, job_settings) = (ctx.clone(), settings.clone());
            let key = udid.clone();
            let abort = jobs.spawn(async move {
                let end = Job::new(&ctx, &job_settings, props, slot, previous)
                    .run()
                    .await;
                (key, end)
            });
            running.insert(
                udid,
                Running {
                    device_id: id,
                    abort,
                },
            );
        }
        for (i, id) in queue.iter().enumerate() {
            if let Some(p) = attached.get(id) {
                let mut s = DeviceStatus::new(
                    p.udid.clone(),
                    Light::Waiting,
                    format!(
                        "waiting — {} ahead of it (one iPad at a time)",
                        i + running.len()
                    ),
                );
                if let Some(old) = board.get(&p.udid) {
                    s.serial = old.serial;
                    s.model = old.model;
                    s.name = old.name;
                    s.slot = old.slot;
                }
                board.update(s);
            }
        }
        if let Some(stop) = &stop_when {
            let idle = Idle {
                running: running.len(),
                queued: queue.len(),
                erasing: erasing.len(),
            };
            if mux_up && stop(&board, &idle) {
                break;
            }
        }

        tokio::select! {
            _ = &mut shutdown => {
                board.note("stopping: work in progress resumes when the station starts again");
                signalled = true;
                break;
            }
            event = rx.recv() => match event {
                None => break,
                Some(MuxEvent::Up) => {
                    mux_up = true;
                    board.note(format!("connected to usbmuxd at {addr}"));
                }
                Some(MuxEvent::Down(why)) => {
                    if mux_up {
                        board.note(format!("lost usbmuxd ({why}); reconnecting"));
                    }
                    mux_up = false;
                    // Device ids die with usbmuxd: stop everything; Listen will re-adopt.
                    for (udid, r) in running.drain() {
                        r.abort.abort();
                        mark_interrupted(&ledger, &board, &udid, "usbmuxd went away").await;
                    }
                    for id in queue.drain(..) {
                        if let Some(p) = attached.get(&id)
                            && let Some(old) = board.get(&p.udid)
                        {
                            board.update(DeviceStatus {
                                light: Light::Unplugged,
                                message: "usbmuxd went away — waiting for it to come back".into(),
                                since_ms: crate::clock::now_ms(),
                                ..old
                            });
                        }
                    }
                    attached.clear();
                }
                Some(MuxEvent::Device(DeviceEvent::Attached(props))) => {
                    let udid = props.udid.clone();
                    let id = props.device_id;
                    attached.insert(id, props);
                    if !running.contains_key(&udid) && !queue.contains(&id) {
                        let message = if erasing.contains(&udid) { "back after the erase" } else { "plugged in" };
                        let mut s = DeviceStatus::new(udid.clone(), Light::Ready, message);
                        s.slot = slot_of(topology.as_ref(), &labels, &settings.config, &udid, attached.get(&id).and_then(|p| p.location_id));
                        if let Some(old) = board.get(&udid) {
                            s.serial = old.serial;
                            s.model = old.model;
                            s.name = old.name;
                        }
                        board.update(s);
                        queue.push_back(id);
                    }
                }
                Some(MuxEvent::Device(DeviceEvent::Detached { device_id })) => {
                    queue.retain(|q| *q != device_id);
                    if let Some(props) = attached.remove(&device_id) {
                        let udid = props.udid;
                        if running.get(&udid).is_some_and(|r| r.device_id == device_id) {
                            if let Some(r) = running.remove(&udid) {
                                r.abort.abort();
                            }
                            // An erased iPad restarts as soon as it has acknowledged, often
                            // before its job has ended (the erase is journaled before it is
                            // sent): it is expected back, not interrupted.
                            if board.get(&udid).is_some_and(|s| s.step == Some(Step::Erased)) {
                                erasing.insert(udid);
                            } else {
                                mark_interrupted(&ledger, &board, &udid, "unplugged").await;
                            }
                        } else if erasing.contains(&udid) {
                            // Expected: it restarts after the erase.
                        } else if let Some(old) = board.get(&udid)
                            && matches!(old.light, Light::Ready | Light::Waiting)
                        {
                            board.update(DeviceStatus { light: Light::Unplugged, message: "unplugged before it started".into(), since_ms: crate::clock::now_ms(), ..old });
                        }
                    }
                }
                Some(MuxEvent::Device(DeviceEvent::Paired { .. })) => {}
            },
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                if let Ok((udid, end)) = done {
                    let still_ours = running.contains_key(&udid);
                    running.remove(&udid);
                    if still_ours && end == JobEnd::Erasing {
                        erasing.insert(udid);
                    }
                    if still_ours && matches!(end, JobEnd::Done { .. } | JobEnd::Attention(_) | JobEnd::Failed(_)) {
                        board.print_summary();
                    }
                }
            }
            changed = async { match config_rx.as_mut() { Some(rx) => rx.changed().await.is_ok(), None => std::future::pending().await } } => {
                if changed
                    && let Some(rx) = config_rx.as_mut()
                {
                    let new = rx.borrow_and_update().clone();
                    let what = new.config.changed_sections(&settings.config);
                    settings = new;
                    board.note(format!("configuration reloaded ({}): applies to the next iPad", what.join(", ")));
                }
            }
            refused = async { match refused_rx.as_mut() { Some(rx) => rx.changed().await.is_ok(), None => std::future::pending().await } } => {
                if refused
                    && let Some(rx) = refused_rx.as_mut()
                    && let Some(e) = rx.borrow_and_update().clone()
                {
                    board.note(format!("configuration edit refused, keeping the previous one: {e}"));
                }
            }
            _ = usb_tick.tick() => {
                for d in topology.apple_devices() {
                    if matches!(d.mode, UsbMode::Normal) {
                        continue;
                    }
                    let key = format!("usb:{}", d.chain);
                    if recovery_seen.insert(key.clone()) {
                        let mut s = DeviceStatus::new(key, Light::Attention, d.mode.describe());
                        s.slot = Some(settings.config.slots.get(&d.chain).cloned().unwrap_or_else(|| labels.label(&d.chain)));
                        s.attention = Some(crate::record::Attention::RecoveryMode);
                        board.update(s);
                    }
                }
            }
            _ = async { match nudge.as_mut() { Some(n) => { let _ = n.changed().await; } None => std::future::pending().await } } => {}
        }
    }

    // A job that is just finishing (its last step already in the ledger) gets a moment to say
    // so; the rest stop here and resume next time.
    let grace = tokio::time::sleep(Duration::from_millis(if signalled { 1500 } else { 0 }));
    tokio::pin!(grace);
    while signalled && !running.is_empty() {
        tokio::select! {
            _ = &mut grace => break,
            done = jobs.join_next() => match done {
                Some(Ok((udid, _))) => {
                    running.remove(&udid);
                }
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    for (udid, r) in running.drain() {
        r.abort.abort();
        mark_interrupted(&ledger, &board, &udid, "the station stopped").await;
    }
    listener.abort();
    status_task.abort();
    let _ = std::fs::remove_file(&status_path);
    drop(watcher);
    Ok(DaemonReport {
        summary: board.summary(),
        state_dir,
    })
}

/// The operator's name for the slot a device is in: the configuration's `[slots]`, else a
/// label learnt with `cartprep slots learn`, else the port chain.
fn slot_of(
    topology: &dyn Topology,
    labels: &SlotLabels,
    config: &StationConfig,
    udid: &str,
    location: Option<u64>,
) -> Option<String> {
    let chain = crate::slots::chain_for(topology, udid, location)?;
    Some(
        config
            .slots
            .get(&chain)
            .cloned()
            .unwrap_or_else(|| labels.label(&chain)),
    )
}

/// A job stopped from outside (unplug, usbmuxd gone, shutdown): its record waits for the iPad.
async fn mark_interrupted(ledger: &Ledger, board: &Board, udid: &str, why: &str) {
    let step = board.get(udid).and_then(|s| s.step);
    if let Ok(Some(mut r)) = ledger.by_udid(udid)
        && r.outcome == Outcome::Working
    {
        r.outcome = Outcome::Waiting;
        let now = crate::clock::now_ms();
        r.history.push(crate::record::StepEvent {
            step: r.attempted_step(),
            at_ms: now,
            attempt: r.attempts,
            note: Some(format!("interrupted: {why}")),
            error: None,
        });
        r.updated_ms = now;
        let _ = ledger.save(&r, Event::Update).await;
    }
    if let Some(old) = board.get(udid) {
        let at = step
            .map(|s: Step| format!(" during “{}”", s.label()))
            .unwrap_or_default();
        board.update(DeviceStatus {
            light: Light::Unplugged,
            message: format!("{why}{at} — plug it back in to continue"),
            since_ms: crate::clock::now_ms(),
            ..old
        });
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
