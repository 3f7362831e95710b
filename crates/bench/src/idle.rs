//! `cartprep run` as a child process: its wake-ups and CPU while idle (before and after
//! work), its memory after a few and after many iPads; and the simulator's own start-up.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::measure;
use crate::sim::{Cart, Ipad};
use crate::station as st;

/// iPads prepared before the first memory reading, and how many are plugged together after
/// (a cart's worth at a time, as a station is used).
const FEW: usize = 10;

/// How long the measured station keeps an unplugged iPad's line (`[board]`): 0, so the board
/// holds the cart being worked on and the memory reading after 1,000 iPads shows what else
/// grows. With the default (10 minutes) it also holds the iPads unplugged in those minutes.
const FORGET_AFTER_MINUTES: u32 = 0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    pub secs: f64,
    pub wakeups: u64,
    pub wakeups_per_s: f64,
    pub cpu_ms_per_min: f64,
    /// Wake-ups in the window per thread name (only names that woke).
    pub by_thread: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Idle {
    pub at_start: Window,
    pub after_work: Window,
    pub few: usize,
    pub many: usize,
    pub rss_few: measure::Resident,
    /// iPads done at the half-way reading, and the reading.
    pub half: usize,
    pub rss_half: measure::Resident,
    pub rss_many: measure::Resident,
    /// `[board] forget_after_minutes` of the measured station.
    pub forget_after_minutes: u32,
    pub threads: Vec<String>,
}

/// Stops the child however the phase ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Watches `pid` for `secs`. Counted per thread, over the threads alive at both ends and the
/// ones born in between (a thread that ended takes its counters with it, so a plain sum of
/// the process's threads can go down).
fn watch(pid: u32, secs: u64) -> Window {
    let before = measure::thread_activity(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = measure::thread_activity(pid);
    let secs = t.elapsed().as_secs_f64();
    let mut by_thread = std::collections::BTreeMap::new();
    let (mut wakeups, mut cpu) = (0, 0);
    for (tid, (name, s1, c1)) in &after {
        let (s0, c0) = before.get(tid).map(|(_, s, c)| (*s, *c)).unwrap_or((0, 0));
        let (ds, dc) = (s1.saturating_sub(s0), c1.saturating_sub(c0));
        wakeups += ds;
        cpu += dc;
        if ds > 0 {
            *by_thread.entry(name.clone()).or_insert(0) += ds;
        }
    }
    Window {
        secs,
        wakeups,
        wakeups_per_s: wakeups as f64 / secs,
        cpu_ms_per_min: cpu as f64 / 1e6 * 60.0 / secs,
        by_thread,
    }
}

fn done_count(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join(station::ledger::AUDIT_FILE))
        .map(|s| s.matches("\"event\":\"done\"").count())
        .unwrap_or(0)
}

/// Plugs `ipads`, waits until the station has recorded them done, unplugs them (as a person
/// does when the line says DONE — UNPLUG).
fn prepare(cart: &Cart, dir: &Path, ipads: &[Ipad], child: &mut Child) -> anyhow::Result<()> {
    let target = done_count(dir) + ipads.len();
    for i in ipads {
        cart.plug(i);
    }
    let deadline = Instant::now() + Duration::from_secs(30 + ipads.len() as u64 * 2);
    while done_count(dir) < target {
        anyhow::ensure!(child.try_wait()?.is_none(), "cartprep run exited");
        anyhow::ensure!(
            Instant::now() < deadline,
            "cartprep run did not finish the iPads"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in ipads {
        cart.unplug(i);
    }
    Ok(())
}

pub fn run(
    cartprep: &Path,
    identity: &Path,
    dir: &Path,
    keys: &Path,
    secs: u64,
    many: usize,
) -> anyhow::Result<Idle> {
    let cart = Cart::start(FEW + many, 0, 0, &dir.join("sim"), keys)?;
    let station_dir = dir.join("station");
    let cfg = st::write_config(&station_dir, identity, &cart.address(), 8)?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cfg)?
        .write_all(
            format!("\n[board]\nforget_after_minutes = {FORGET_AFTER_MINUTES}\n").as_bytes(),
        )?;
    let child = Command::new(cartprep)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("run.stdout"))?)
        .stderr(std::fs::File::create(dir.join("run.stderr"))?)
        .spawn()
        .with_context(|| format!("starting {} run", cartprep.display()))?;
    let mut child = Guard(child);
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !station_dir.join("status.sock").exists() {
        anyhow::ensure!(
            child.0.try_wait()?.is_none(),
            "cartprep run exited at start (see {})",
            dir.join("run.stderr").display()
        );
        anyhow::ensure!(Instant::now() < deadline, "cartprep run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let start-up finish (the pairing key is made in the background).
    std::thread::sleep(Duration::from_secs(2));
    let at_start = watch(pid, secs);

    let ipads = cart.take(FEW + many, 0)?;
    prepare(&cart, &station_dir, &ipads[..FEW], &mut child.0)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_few = measure::resident(pid);
    // A reading half-way too: growth that stops (the allocator reaching the high-water mark
    // of a cart at a time) is told from growth that goes on (a leak).
    let half = (FEW + many) / 2;
    let mut rss_half = None;
    for cart_load in ipads[FEW..].chunks(FEW) {
        prepare(&cart, &station_dir, cart_load, &mut child.0)?;
        if rss_half.is_none() && done_count(&station_dir) >= half {
            std::thread::sleep(Duration::from_secs(1));
            rss_half = Some((done_count(&station_dir), measure::resident(pid)));
        }
    }
    let (half, rss_half) = rss_half.unwrap_or((FEW, rss_few));
    std::thread::sleep(Duration::from_secs(1));
    let rss_many = measure::resident(pid);
    std::thread::sleep(Duration::from_secs(1));
    let after_work = watch(pid, secs);
    let threads = measure::thread_names(pid);
    drop(child);
    Ok(Idle {
        at_start,
        after_work,
        few: FEW,
        many: FEW + many,
        rss_few,
        half,
        rss_half,
        rss_many,
        forget_after_minutes: FORGET_AFTER_MINUTES,
        threads,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimStart {
    pub ipads: usize,
    pub start_ms: f64,
    pub list_ms: f64,
}

/// The simulator with `n` iPads plugged: time to start, time for one ListDevices.
pub fn sim_start(dir: &Path, keys: &Path, n: usize) -> anyhow::Result<SimStart> {
    let t = Instant::now();
    // All plugged at start: the timed part includes plugging them.
    let cart = Cart::start_plugged(n, &dir.join("sim"), keys)?;
    let start_ms = t.elapsed().as_secs_f64() * 1e3;
    let addr: usbmux::UsbmuxAddress = cart.address().parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let list_ms = cart.rt.block_on(async {
        let mut c = usbmux::UsbmuxClient::connect(&addr).await?;
        let t = Instant::now();
        let listed = c.list_devices().await?;
        anyhow::ensure!(listed.len() == n, "listed {} of {n} iPads", listed.len());
        Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1e3)
    })?;
    Ok(SimStart {
        ipads: n,
        start_ms,
        list_ms,
    })
}
