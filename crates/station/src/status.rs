//! The LED-style status log: one line per change that a person across the room can read —
//! ready / waiting / working (step k of n) / done, unplug / needs attention (and what to do) /
//! failed — with slot, serial, model and name; coloured on a terminal, plain under systemd or
//! launchd; a summary line; and a snapshot for `cartprep status`, served on a unix socket.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::record::{Attention, Step};

/// The "LED" of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    /// Plugged in, seen, not started.
    Ready,
    /// Queued behind another iPad.
    Waiting,
    Working,
    /// Prepared: unplug it.
    Done,
    Attention,
    Failed,
    /// Pulled out before it was done; plugging it back in resumes.
    Unplugged,
    /// A prepared iPad was unplugged: its slot is free for the next one.
    Free,
}

impl Light {
    fn badge(self) -> &'static str {
        match self {
            Light::Ready => "● READY",
            Light::Waiting => "◌ WAITING",
            Light::Working => "◐ WORKING",
            Light::Done => "✔ DONE — UNPLUG",
            Light::Attention => "▲ ATTENTION",
            Light::Failed => "✖ FAILED",
            Light::Unplugged => "○ UNPLUGGED",
            Light::Free => "○ FREE",
        }
    }

    /// ANSI colour: blue, dim, yellow, green, magenta, red, dim.
    fn colour(self) -> &'static str {
        match self {
            Light::Ready => "\x1b[1;34m",
            Light::Waiting => "\x1b[2m",
            Light::Working => "\x1b[1;33m",
            Light::Done => "\x1b[1;32m",
            Light::Attention => "\x1b[1;35m",
            Light::Failed => "\x1b[1;31m",
            Light::Unplugged => "\x1b[2m",
            Light::Free => "\x1b[32m",
        }
    }
}

/// What the station shows for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub udid: String,
    pub serial: Option<String>,
    pub slot: Option<String>,
    /// Marketing name or ProductType.
    pub model: Option<String>,
    pub name: Option<String>,
    pub light: Light,
    /// The step being worked on now (for "step k of n"). Shown as `step` in JSON.
    #[serde(rename = "step")]
    pub current: Option<Step>,
    pub attention: Option<Attention>,
    /// Free text: what happened, or what to do.
    pub message: String,
    /// For an attention: the command that moves the iPad on ("to erase it: cartprep erase
    /// F9FZ…").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub since_ms: u64,
}

/// What is known of an iPad to show beside its light: carried from one status to the next
/// (a replug, a queue position, the end of a job) so the line keeps naming the same iPad.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Label {
    pub serial: Option<String>,
    pub slot: Option<String>,
    /// Marketing name or ProductType.
    pub model: Option<String>,
    pub name: Option<String>,
}

impl Label {
    /// Keeps what `newer` knows and `self` does not lose: a field `newer` lacks stays.
    pub fn merge(&mut self, newer: &Label) {
        for (mine, theirs) in [
            (&mut self.serial, &newer.serial),
            (&mut self.slot, &newer.slot),
            (&mut self.model, &newer.model),
            (&mut self.name, &newer.name),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

impl DeviceStatus {
    /// A status for an iPad of which `label` is known.
    pub fn labelled(
        udid: impl Into<String>,
        label: &Label,
        light: Light,
        message: impl Into<String>,
    ) -> Self {
        DeviceStatus {
            serial: label.serial.clone(),
            slot: label.slot.clone(),
            model: label.model.clone(),
            name: label.name.clone(),
            ..DeviceStatus::new(udid, light, message)
        }
    }

    /// What this status says of the iPad.
    pub fn label(&self) -> Label {
        Label {
            serial: self.serial.clone(),
            slot: self.slot.clone(),
            model: self.model.clone(),
            name: self.name.clone(),
        }
    }

    pub fn new(udid: impl Into<String>, light: Light, message: impl Into<String>) -> Self {
        DeviceStatus {
            udid: udid.into(),
            serial: None,
            slot: None,
            model: None,
            name: None,
            light,
            current: None,
            attention: None,
            message: message.into(),
            action: None,
            since_ms: crate::clock::now_ms(),
        }
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub done: usize,
    pub working: usize,
    pub waiting: usize,
    pub attention: usize,
    pub failed: usize,
    pub unplugged: usize,
}

impl Summary {
    /// Adds `by` (1 or -1) to the count `light` is shown under.
    fn count(&mut self, light: Light, by: isize) {
        let n = match light {
            // Prepared, then unplugged: still one done.
            Light::Done | Light::Free => &mut self.done,
            Light::Working => &mut self.working,
            Light::Waiting | Light::Ready => &mut self.waiting,
            Light::Attention => &mut self.attention,
            Light::Failed => &mut self.failed,
            Light::Unplugged => &mut self.unplugged,
        };
        *n = n.saturating_add_signed(by);
    }
}

/// The key a forgotten iPad is remembered by: a fixed-key hash of its UDID (the same in
/// every run; two UDIDs of one station sharing 64 bits is not a worry).
fn udid_key(udid: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    udid.hash(&mut h);
    h.finish()
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cart: {} done · {} working · {} waiting · {} attention · {} failed",
            self.done, self.working, self.waiting, self.attention, self.failed
        )?;
        if self.unplugged > 0 {
            write!(f, " · {} unplugged before done", self.unplugged)?;
        }
        Ok(())
    }
}

/// What `cartprep status --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub devices: Vec<DeviceStatus>,
    pub summary: Summary,
    /// Notes the station wants seen (no USB slots, config reloaded…).
    pub notes: Vec<String>,
    /// While the station cannot reach usbmuxd: "waiting for usbmuxd at … (why)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// Formats one status line.
pub fn format_line(s: &DeviceStatus, colour: bool) -> String {
    let badge = match (s.light, s.current) {
        (Light::Working, Some(step)) => match step.shown() {
            Some(k) => format!("{} {k}/{}", s.light.badge(), Step::SHOWN_TOTAL),
            None => s.light.badge().to_owned(),
        },
        _ => s.light.badge().to_owned(),
    };
    let badge = if colour {
        format!("{}{badge:<16}\x1b[0m", s.light.colour())
    } else {
        format!("{badge:<16}")
    };
    let slot = s
        .slot
        .as_deref()
        .map(|x| format!("slot {x}"))
        .unwrap_or_else(|| "slot ?".into());
    let who = [
        s.serial.clone().unwrap_or_else(|| short_udid(&s.udid)),
        s.model.clone().unwrap_or_default(),
        s.name
            .as_ref()
            .map(|n| format!("“{n}”"))
            .unwrap_or_default(),
    ]
    .into_iter()
    .filter(|x| !x.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let time = crate::clock::rfc3339_utc(s.since_ms);
    let clock = time.get(11..19).unwrap_or("");
    match &s.action {
        Some(action) => format!(
            "{clock} {slot:<10} {badge} {who} — {} — {action}",
            s.message
        ),
        None => format!("{clock} {slot:<10} {badge} {who} — {}", s.message),
    }
}

fn short_udid(udid: &str) -> String {
    let tail: String = udid
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// Whether to colour: a terminal, and no NO_COLOR.
pub fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true)
}

type Sink = Box<dyn Write + Send>;

/// What the board tells its subscribers (the web page, metrics, notifications): it publishes,
/// nothing decides from it. Sent only when someone subscribed, so an idle station without
/// `[web]` or `[notify]` wakes nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardChange {
    /// A device's line changed: what it showed before (if anything) and what it shows now.
    Device {
        before: Option<Box<DeviceStatus>>,
        now: Box<DeviceStatus>,
    },
    /// A note that is not about one device.
    Note(String),
    /// The link to usbmuxd came up (`true`) or went down.
    Usbmuxd(bool),
    /// An unplugged iPad's line left the board (the summary still counts it).
    Forgot(String),
}

/// Changes a slow subscriber may fall behind by before it is told it lagged (it then reads a
/// fresh snapshot instead).
const CHANGES_BUFFERED: usize = 256;

/// The board: the latest status of every device, printed as it changes.
#[derive(Clone)]
pub struct Board {
    inner: Arc<Mutex<BoardInner>>,
}

struct BoardInner {
    devices: BTreeMap<String, DeviceStatus>,
    notes: Vec<String>,
    waiting_for: Option<String>,
    out: Sink,
    colour: bool,
    changes: tokio::sync::broadcast::Sender<BoardChange>,
    usbmuxd_up: bool,
    /// What the forgotten lines said, still counted in the summary.
    forgotten: Summary,
    /// The light each forgotten iPad was counted under, by a hash of its UDID (8 bytes an
    /// iPad instead of its whole line), so an iPad that comes back is not counted twice.
    forgotten_lights: HashMap<u64, Light>,
}

impl BoardInner {
    /// Sends a change to the subscribers, building it only when there are any.
    fn publish(&self, change: impl FnOnce() -> BoardChange) {
        if self.changes.receiver_count() > 0 {
            // An error only means every subscriber has gone since the count.
            let _ = self.changes.send(change());
        }
    }
}

impl Board {
    pub fn new(out: Sink, colour: bool) -> Self {
        Board {
            inner: Arc::new(Mutex::new(BoardInner {
                devices: BTreeMap::new(),
                notes: Vec::new(),
                waiting_for: None,
                out,
                colour,
                changes: tokio::sync::broadcast::channel(CHANGES_BUFFERED).0,
                usbmuxd_up: false,
                forgotten: Summary::default(),
                forgotten_lights: HashMap::new(),
            })),
        }
    }

    /// A board printing to stdout, coloured when it is a terminal.
    pub fn stdout() -> Self {
        Board::new(Box::new(std::io::stdout()), colour_wanted())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records and prints a device's new status (nothing is printed if nothing changed).
    pub fn update(&self, mut status: DeviceStatus) {
        let mut inner = self.lock();
        if !inner.devices.contains_key(&status.udid)
            && let Some(light) = inner.forgotten_lights.remove(&udid_key(&status.udid))
        {
            // Back after its line was forgotten: counted from its line again.
            inner.forgotten.count(light, -1);
        }
        let same = inner.devices.get(&status.udid).is_some_and(|old| {
            old.light == status.light
                && old.current == status.current
                && old.message == status.message
                && old.action == status.action
        });
        if same {
            // Not a new line, but the other fields (attention, name, model…) still count.
            if let Some(old) = inner.devices.get(&status.udid) {
                status.since_ms = old.since_ms;
            }
            inner.devices.insert(status.udid.clone(), status);
            return;
        }
        let line = format_line(&status, inner.colour);
        let _ = writeln!(inner.out, "{line}");
        let _ = inner.out.flush();
        let before = inner.devices.insert(status.udid.clone(), status.clone());
        inner.publish(|| BoardChange::Device {
            before: before.map(Box::new),
            now: Box::new(status),
        });
    }

    /// Subscribes to the board's changes (see [`BoardChange`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BoardChange> {
        self.lock().changes.subscribe()
    }

    /// How many subscribers follow the board (none unless `[web]` or `[notify]` is on).
    pub fn subscribers(&self) -> usize {
        self.lock().changes.receiver_count()
    }

    /// Records whether the station is connected to usbmuxd (for `/metrics`).
    pub fn set_usbmuxd(&self, up: bool) {
        let mut inner = self.lock();
        if inner.usbmuxd_up != up {
            inner.usbmuxd_up = up;
            inner.publish(|| BoardChange::Usbmuxd(up));
        }
    }

    /// Whether the station is connected to usbmuxd now.
    pub fn usbmuxd_up(&self) -> bool {
        self.lock().usbmuxd_up
    }

    /// The current status of a device.
    pub fn get(&self, udid: &str) -> Option<DeviceStatus> {
        self.lock().devices.get(udid).cloned()
    }

    /// Prints a line that is not about one device (and keeps it for `status`).
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        let mut inner = self.lock();
        let _ = writeln!(inner.out, "{}", text);
        let _ = inner.out.flush();
        inner.notes.push(text.clone());
        inner.publish(|| BoardChange::Note(text));
        let excess = inner.notes.len().saturating_sub(20);
        inner.notes.drain(..excess);
    }

    /// What the station waits for before it can work (usbmuxd), printed once when it starts
    /// waiting; `None` when it no longer waits.
    pub fn set_waiting_for(&self, what: Option<String>) {
        let mut inner = self.lock();
        if let Some(text) = &what
            && inner.waiting_for.is_none()
        {
            let _ = writeln!(inner.out, "{text}");
            let _ = inner.out.flush();
        }
        inner.waiting_for = what;
    }

    /// Takes an unplugged iPad's line off the board (see `forget.rs`); the summary goes on
    /// counting it. A line that is not an unplugged iPad's stays.
    pub fn forget(&self, udid: &str) -> bool {
        let mut inner = self.lock();
        let light = match inner.devices.get(udid) {
            Some(d) if matches!(d.light, Light::Free | Light::Unplugged) => d.light,
            _ => return false,
        };
        inner.devices.remove(udid);
        inner.forgotten.count(light, 1);
        inner.forgotten_lights.insert(udid_key(udid), light);
        inner.publish(|| BoardChange::Forgot(udid.to_owned()));
        true
    }

    /// Lines on the board now.
    pub fn len(&self) -> usize {
        self.lock().devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn summary(&self) -> Summary {
        let inner = self.lock();
        let mut s = inner.forgotten;
        for d in inner.devices.values() {
            s.count(d.light, 1);
        }
        s
    }

    /// Prints the summary line.
    pub fn print_summary(&self) {
        let summary = self.summary();
        let mut inner = self.lock();
        let _ = writeln!(inner.out, "{summary}");
        let _ = inner.out.flush();
    }

    pub fn snapshot(&self) -> Snapshot {
        let summary = self.summary();
        let inner = self.lock();
        let mut devices: Vec<_> = inner.devices.values().cloned().collect();
        devices.sort_by(|a, b| a.slot.cmp(&b.slot).then(a.since_ms.cmp(&b.since_ms)));
        Snapshot {
            devices,
            summary,
            notes: inner.notes.clone(),
            waiting_for: inner.waiting_for.clone(),
        }
    }
}

/// Serves snapshots on a unix socket: each connection gets one JSON document and is closed.
pub async fn serve_snapshots(board: Board, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let snapshot = board.snapshot();
        tokio::spawn(async move {
            if let Ok(mut json) = serde_json::to_vec(&snapshot) {
                json.push(b'\n');
                let _ = stream.write_all(&json).await;
            }
        });
    }
}

/// Why `cartprep status` could not get a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no station is running with state folder {folder} ({source})")]
    NotRunning {
        folder: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the station did not answer within 5 s")]
    Timeout,
    #[error("reading the station's status: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable status from the station: {0}")]
    Unreadable(#[from] serde_json::Error),
}

/// Largest snapshot read from the socket (thousands of devices fit well within it).
const MAX_SNAPSHOT: u64 = 16 * 1024 * 1024;

/// Reads a snapshot from a running daemon's socket.
pub async fn fetch_snapshot(path: &Path) -> Result<Snapshot, StatusError> {
    use tokio::io::AsyncReadExt;
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| StatusError::NotRunning {
            folder: path.parent().unwrap_or(path).to_owned(),
            source,
        })?;
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.take(MAX_SNAPSHOT).read_to_end(&mut buf),
    )
    .await
    .map_err(|_| StatusError::Timeout)??;
    Ok(serde_json::from_slice(&buf)?)
}

/// The plain-text view of a snapshot, as `cartprep status` prints it.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(w) = &snapshot.waiting_for {
        out.push_str(w);
        out.push('\n');
    }
    for d in &snapshot.devices {
        out.push_str(&format_line(d, false));
        out.push('\n');
    }
    out.push_str(&snapshot.summary.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn status(udid: &str, light: Light, step: Option<Step>, msg: &str) -> DeviceStatus {
        DeviceStatus {
            serial: Some("DMPXK1234567".into()),
            slot: Some("3".into()),
            model: Some("iPad (9th generation)".into()),
            name: Some("Cart A 03".into()),
            current: step,
            ..DeviceStatus::new(udid, light, msg)
        }
    }

    #[test]
    fn a_working_line_says_which_step_of_how_many() {
        let line = format_line(
            &status("U1", Light::Working, Some(Step::Activated), "activating"),
            false,
        );
        assert!(line.contains("slot 3"), "{line}");
        assert!(
            line.contains(&format!(
                "WORKING {}/{}",
                Step::Activated.shown().unwrap(),
                Step::SHOWN_TOTAL
            )),
            "{line}"
        );
        assert!(
            line.contains("DMPXK1234567 iPad (9th generation) “Cart A 03” — activating"),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "plain when not a terminal");
    }

    #[test]
    fn colour_only_when_asked() {
        let line = format_line(&status("U1", Light::Done, None, "unplug"), true);
        assert!(line.contains("\x1b[1;32m✔ DONE — UNPLUG"), "{line}");
    }

    #[test]
    fn the_board_prints_changes_once_and_counts_the_cart() {
        let out = Captured::default();
        let board = Board::new(Box::new(out.clone()), false);
        board.update(status("U1", Light::Working, Some(Step::Paired), "pairing"));
        board.update(status("U1", Light::Working, Some(Step::Paired), "pairing"));
        board.update(status(
            "U2",
            Light::Waiting,
            None,
            "another iPad is being prepared",
        ));
        board.update(status(
            "U3",
            Light::Attention,
            None,
            "tap Trust on the iPad",
        ));
        board.update(status("U1", Light::Done, None, "unplug"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.lines().count(),
            4,
            "the repeated line is not printed twice:\n{text}"
        );
        let s = board.summary();
        assert_eq!(
            (s.done, s.working, s.waiting, s.attention, s.failed),
            (1, 0, 1, 1, 0)
        );
        assert_eq!(
            s.to_string(),
            "cart: 1 done · 0 working · 1 waiting · 1 attention · 0 failed"
        );
    }

    #[test]
    fn a_forgotten_line_leaves_the_board_but_not_the_summary() {
        let board = Board::new(Box::new(std::io::sink()), false);
        board.update(status("U1", Light::Free, None, "free"));
        board.update(status("U2", Light::Unplugged, None, "plug it back in"));
        board.update(status("U3", Light::Working, Some(Step::Paired), "pairing"));
        let before = board.summary();
        let mut changes = board.subscribe();

        assert!(board.forget("U1") && board.forget("U2"));
        assert!(!board.forget("U3"), "a working iPad's line stays");
        assert!(!board.forget("U9"), "nothing to forget");
        assert_eq!(board.len(), 1);
        assert_eq!(board.summary(), before);
        assert_eq!(
            board.summary().to_string(),
            "cart: 1 done · 1 working · 0 waiting · 0 attention · 0 failed · 1 unplugged before done"
        );
        assert_eq!(
            changes.try_recv().ok(),
            Some(BoardChange::Forgot("U1".into()))
        );

        // Back on the cable: counted from its line, not twice.
        board.update(status("U1", Light::Done, None, "already prepared"));
        board.update(status("U2", Light::Working, Some(Step::Paired), "pairing"));
        let s = board.summary();
        assert_eq!((s.done, s.working, s.unplugged), (1, 2, 0));
        assert_eq!(board.len(), 3);
    }

    #[test]
    fn subscribers_hear_each_new_line_with_what_it_replaced() {
        let board = Board::new(Box::new(std::io::sink()), false);
        board.update(status("U1", Light::Working, Some(Step::Paired), "pairing"));
        let mut changes = board.subscribe();
        board.update(status("U1", Light::Working, Some(Step::Paired), "pairing"));
        board.update(status("U1", Light::Done, None, "unplug"));
        board.set_usbmuxd(true);
        board.set_usbmuxd(true);
        board.note("configuration reloaded");
        let Ok(BoardChange::Device { before, now }) = changes.try_recv() else {
            panic!("the new line is published, the repeated one is not");
        };
        assert_eq!(before.map(|b| b.light), Some(Light::Working));
        assert_eq!(now.light, Light::Done);
        assert_eq!(changes.try_recv().ok(), Some(BoardChange::Usbmuxd(true)));
        assert_eq!(
            changes.try_recv().ok(),
            Some(BoardChange::Note("configuration reloaded".into()))
        );
        assert!(changes.try_recv().is_err(), "nothing else was published");
        assert!(board.usbmuxd_up());
    }

    #[tokio::test]
    async fn status_is_served_on_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board::new(Box::new(std::io::sink()), false);
        board.update(status("U1", Light::Done, None, "unplug"));
        let path = dir.path().join("status.sock");
        let serving = tokio::spawn({
            let (board, path) = (board.clone(), path.clone());
            async move { serve_snapshots(board, &path).await }
        });
        let mut snapshot = None;
        for _ in 0..100 {
            if let Ok(s) = fetch_snapshot(&path).await {
                snapshot = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let snapshot = snapshot.expect("the socket answers");
        assert_eq!(snapshot.summary.done, 1);
        assert_eq!(snapshot.devices[0].serial.as_deref(), Some("DMPXK1234567"));
        assert!(render(&snapshot).contains("DONE — UNPLUG"));
        serving.abort();
    }

    #[test]
    fn waiting_for_usbmuxd_is_said_once_and_shown_until_it_answers() {
        let out = Captured::default();
        let board = Board::new(Box::new(out.clone()), false);
        let waiting = "waiting for usbmuxd at /var/run/usbmuxd (connection refused)";
        board.set_waiting_for(Some(waiting.into()));
        board.set_waiting_for(Some(waiting.into()));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, format!("{waiting}\n"), "printed once");
        let snapshot = board.snapshot();
        assert_eq!(snapshot.waiting_for.as_deref(), Some(waiting));
        assert!(render(&snapshot).starts_with(waiting));
        board.set_waiting_for(None);
        assert_eq!(board.snapshot().waiting_for, None);
        assert!(!render(&board.snapshot()).contains("waiting for usbmuxd"));
    }
}
