//! The station (the real daemon, `station::daemon::run`) on its own runtime, threads named
//! `station`, preparing iPads the bench plugs; when each one finishes is taken from the board
//! at the daemon's own event (its `stop_when` hook), so watching costs the station nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use station::slots::FixedTopology;
use station::status::{Board, Light};

use crate::measure;
use crate::sim::{Cart, Ipad};

/// Longest a phase may take before the bench gives up on it.
const PATIENCE: Duration = Duration::from_secs(600);

/// The station configuration the bench uses (the demo's, without slots or activation).
pub fn write_config(
    dir: &Path,
    identity: &Path,
    usbmuxd: &str,
    max_concurrent: usize,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    profiles::files::write_private(
        &dir.join("wifi-password"),
        b"correct horse battery staple\n",
    )?;
    let text = format!(
        r#"state_dir = "{state}"
usbmuxd = "{usbmuxd}"
max_concurrent = {max_concurrent}

[organization]
name = "Springfield Elementary"
identity = "{identity}"

[wifi]
ssid = "Springfield-Students"
security = "wpa2"
password_file = "wifi-password"

[mdm]
name = "Bench MDM"
enrollment_url = "https://mdm.example.org/enroll/springfield"
mode = "manual"

[setup]
skip = "all"

[naming]
template = "Bench {{n:04}}"

[erase]
policy = "never"
"#,
        state = dir.display(),
        identity = identity.display(),
    );
    let path = dir.join("station.toml");
    profiles::files::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// CPU the station has used so far: the process's, less the simulator's threads and the
/// bench's own main thread.
pub fn station_cpu_ns() -> u64 {
    measure::process_cpu_ns()
        .saturating_sub(measure::own_threads_cpu_ns("sim"))
        .saturating_sub(measure::main_thread_cpu_ns())
}

/// When each watched iPad finished, and how; the condvar wakes `wait` (no polling: a polling
/// loop took CPU from the station and the simulator it measures).
type Finished = Arc<(Mutex<HashMap<String, (Instant, Light)>>, Condvar)>;

/// A running daemon.
pub struct Station {
    finished: Finished,
    stop: Arc<AtomicBool>,
    nudge: tokio::sync::watch::Sender<()>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    pub opened_in: Duration,
}

impl Station {
    /// Starts the daemon on `config` and waits until it is connected to usbmuxd.
    pub fn start(config: &Path, watched: Vec<String>) -> anyhow::Result<Station> {
        let settings = station::Settings::load(config)
            .map_err(|e| anyhow::anyhow!("the bench's configuration is invalid: {e}"))?;
        let finished: Finished = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // When the daemon's first event-loop turn ran (set once it has: the station is
        // ready), read there: the wait below polls, and its millisecond sleeps would blur a
        // start of a few milliseconds.
        let ready_at: Arc<std::sync::OnceLock<Duration>> = Arc::default();
        let (nudge, nudge_rx) = tokio::sync::watch::channel(());
        let (f, s, at) = (finished.clone(), stop.clone(), ready_at.clone());
        let started = Instant::now();
        let thread = std::thread::Builder::new().name("station".into()).spawn(
            move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .thread_name("station")
                    .enable_all()
                    .build()?;
                rt.block_on(station::daemon::run(station::daemon::DaemonOptions {
                    settings,
                    watch_config: false,
                    board: Board::new(Box::new(std::io::sink()), false),
                    topology: Arc::new(FixedTopology(Vec::new())),
                    stop_when: Some(Box::new(move |board, idle| {
                        at.get_or_init(|| started.elapsed());
                        let (lock, cv) = &*f;
                        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let before = done.len();
                        for udid in &watched {
                            if done.contains_key(udid) {
                                continue;
                            }
                            if let Some(st) = board.get(udid)
                                && matches!(
                                    st.light,
                                    Light::Done | Light::Attention | Light::Failed
                                )
                            {
                                done.insert(udid.clone(), (Instant::now(), st.light));
                            }
                        }
                        if done.len() > before {
                            cv.notify_all();
                        }
                        s.load(Ordering::Acquire) && idle.running == 0
                    })),
                    nudge: Some(nudge_rx),
                }))?;
                Ok(())
            },
        )?;
        let deadline = Instant::now() + PATIENCE;
        // Ready: connected to usbmuxd, and the pairing key made (a station does that once, at
        // start-up, in the background; the first iPad after a start would wait for it).
        while ready_at.get().is_none() || !lockdown::host_key::is_ready() {
            anyhow::ensure!(Instant::now() < deadline, "the station did not start");
            if thread.is_finished() {
                return match thread.join() {
                    Ok(Err(e)) => Err(e.context("the station stopped at start")),
                    _ => Err(anyhow::anyhow!("the station stopped at start")),
                };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Station {
            finished,
            stop,
            nudge,
            thread: Some(thread),
            opened_in: ready_at.get().copied().unwrap_or_default(),
        })
    }

    /// Waits until every iPad in `ipads` has finished; returns when each did.
    pub fn wait(&self, ipads: &[Ipad]) -> anyhow::Result<Vec<Instant>> {
        let deadline = Instant::now() + PATIENCE;
        let (lock, cv) = &*self.finished;
        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if ipads.iter().all(|i| done.contains_key(&i.udid)) {
                let mut out = Vec::new();
                for i in ipads {
                    let (at, light) = done[&i.udid];
                    anyhow::ensure!(
                        light == Light::Done,
                        "iPad in slot {} ended {light:?}, not Done",
                        i.slot
                    );
                    out.push(at);
                }
                return Ok(out);
            }
            let now = Instant::now();
            anyhow::ensure!(now < deadline, "the station did not finish in {PATIENCE:?}");
            done = cv
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let _ = self.nudge.send(());
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("the station panicked"),
            }
        }
        Ok(())
    }
}

/// One iPad's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Job {
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub replies: u64,
    pub connections: u64,
}

/// The station prepares `ipads` one after another, each plugged once the previous is done:
/// per-iPad wall and CPU.
pub fn sequential(cart: &Cart, config: &Path, ipads: &[Ipad]) -> anyhow::Result<Vec<Job>> {
    let station = Station::start(config, ipads.iter().map(|i| i.udid.clone()).collect())?;
    let mut jobs = Vec::new();
    for ipad in ipads {
        let (r0, c0) = ipad.traffic();
        let cpu0 = station_cpu_ns();
        let t0 = Instant::now();
        cart.plug(ipad);
        let at = station.wait(std::slice::from_ref(ipad))?[0];
        let cpu1 = station_cpu_ns();
        let (r1, c1) = ipad.traffic();
        jobs.push(Job {
            wall_ms: at.duration_since(t0).as_secs_f64() * 1e3,
            cpu_ms: cpu1.saturating_sub(cpu0) as f64 / 1e6,
            replies: r1 - r0,
            connections: c1 - c0,
        });
    }
    station.stop()?;
    for ipad in ipads {
        cart.unplug(ipad);
    }
    Ok(jobs)
}

/// A batch: every iPad plugged at once, the station working on up to `max_concurrent` of them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Batch {
    pub latency_ms: u64,
    pub n: usize,
    pub max_concurrent: usize,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    /// Plug to done, per iPad (queueing included).
    pub job_wall_ms: crate::measure::Spread,
    pub ipads_per_s: f64,
    pub replies_per_ipad: f64,
    /// Batch wall time of every round; the figures above are the median round's.
    pub rounds_wall_ms: Vec<f64>,
}

impl Batch {
    /// The round with the median batch wall time, knowing every round's.
    pub fn median(mut runs: Vec<Batch>) -> Batch {
        runs.sort_by(|a, b| a.wall_ms.total_cmp(&b.wall_ms));
        let walls: Vec<f64> = runs.iter().map(|b| b.wall_ms).collect();
        let mut median = runs.swap_remove(runs.len() / 2);
        median.rounds_wall_ms = walls;
        median
    }
}

pub fn batch(
    cart: &Cart,
    config: &Path,
    ipads: &[Ipad],
    max_concurrent: usize,
) -> anyhow::Result<Batch> {
    let station = Station::start(config, ipads.iter().map(|i| i.udid.clone()).collect())
        .context("starting the station")?;
    let r0: u64 = ipads.iter().map(|i| i.traffic().0).sum();
    let cpu0 = station_cpu_ns();
    let t0 = Instant::now();
    for ipad in ipads {
        cart.plug(ipad);
    }
    let ends = station.wait(ipads)?;
    let cpu1 = station_cpu_ns();
    let r1: u64 = ipads.iter().map(|i| i.traffic().0).sum();
    station.stop()?;
    for ipad in ipads {
        cart.unplug(ipad);
    }
    let walls: Vec<f64> = ends
        .iter()
        .map(|e| e.duration_since(t0).as_secs_f64() * 1e3)
        .collect();
    let wall_ms = walls.iter().copied().fold(0.0, f64::max);
    Ok(Batch {
        latency_ms: 0,
        n: ipads.len(),
        max_concurrent,
        wall_ms,
        cpu_ms: cpu1.saturating_sub(cpu0) as f64 / 1e6,
        job_wall_ms: crate::measure::Spread::of(&walls),
        ipads_per_s: ipads.len() as f64 / (wall_ms / 1e3),
        replies_per_ipad: (r1 - r0) as f64 / ipads.len() as f64,
        rounds_wall_ms: vec![wall_ms],
    })
}
