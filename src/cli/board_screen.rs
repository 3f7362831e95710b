//! The full-screen board's loop: chosen only when standard output is a terminal (journald,
//! pipes and files get the line log). It redraws from the board's snapshot a few times a
//! second on the terminal's alternate screen, and gives the terminal back as it was when it
//! stops. No raw mode: Ctrl-C still stops the station.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use station::status::{Board, Light, Snapshot};

use super::board_view::{Header, Screen, draw};

/// How often the board is redrawn.
const FRAME: Duration = Duration::from_millis(250);

/// Whether to show the full-screen board: a terminal that can draw it, and not `--lines`.
pub fn wanted(lines: bool) -> bool {
    !lines
        && std::io::stdout().is_terminal()
        && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(false)
}

/// The header's facts from the settings.
pub fn header(settings: &station::Settings) -> Header {
    Header {
        organization: settings.config.organization.name.clone(),
        mdm: settings.config.mdm.enrollment_url.clone(),
        wifi: settings.wifi_name(),
    }
}

/// The board on screen; [`BoardScreen::stop`] gives the terminal back.
pub struct BoardScreen {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BoardScreen {
    pub fn start(board: Board, header: Header, bell: bool) -> std::io::Result<BoardScreen> {
        let mut out = std::io::stdout();
        execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        let running = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let running = running.clone();
            async move {
                let _restore = Restore;
                let Ok(mut term) = Terminal::new(CrosstermBackend::new(std::io::stdout())) else {
                    return;
                };
                let mut times = Times::default();
                let mut rung = Rung::default();
                while running.load(Ordering::SeqCst) {
                    let snapshot = board.snapshot();
                    times.see(&snapshot);
                    if bell && rung.changed(&snapshot) {
                        let _ = write!(std::io::stdout(), "\x07");
                    }
                    let screen = Screen {
                        header: header.clone(),
                        clock: clock_now(),
                        per_ipad_s: times.average_s(),
                        snapshot,
                    };
                    let _ = term.draw(|f| draw(f, &screen));
                    tokio::time::sleep(FRAME).await;
                }
            }
        });
        Ok(BoardScreen { running, task })
    }

    /// Stops drawing and restores the terminal.
    pub async fn stop(self) {
        self.running.store(false, Ordering::SeqCst);
        let _ = self.task.await;
    }
}

/// Leaves the alternate screen and shows the cursor again, however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

fn clock_now() -> String {
    let t = station::clock::rfc3339_utc(station::clock::now_ms());
    format!("{} UTC", t.get(11..19).unwrap_or(""))
}

/// Time from the first WORKING to DONE, per iPad.
#[derive(Default)]
struct Times {
    started: HashMap<String, u64>,
    done: HashMap<String, u64>,
}

impl Times {
    fn see(&mut self, snapshot: &Snapshot) {
        for d in &snapshot.devices {
            match d.light {
                Light::Working => {
                    self.started.entry(d.udid.clone()).or_insert(d.since_ms);
                }
                Light::Done => {
                    if let Some(start) = self.started.get(&d.udid) {
                        self.done
                            .entry(d.udid.clone())
                            .or_insert(d.since_ms.saturating_sub(*start));
                    }
                }
                _ => {}
            }
        }
    }

    fn average_s(&self) -> Option<u64> {
        if self.done.is_empty() {
            return None;
        }
        Some(self.done.values().sum::<u64>() / self.done.len() as u64 / 1000)
    }
}

/// Rings when another iPad is done or needs attention.
#[derive(Default)]
struct Rung {
    done: usize,
    attention: usize,
}

impl Rung {
    fn changed(&mut self, snapshot: &Snapshot) -> bool {
        let s = snapshot.summary;
        let ring = s.done > self.done || s.attention > self.attention;
        self.done = s.done;
        self.attention = s.attention;
        ring
    }
}
