//! The kill storm (issue 10): `cartprep run` is killed with SIGKILL at 30 random moments of a
//! 10-iPad run, and started again each time. In the end every iPad is done, with one record,
//! a name of its own, and every line of the audit log reads.
//!
//! `CARTPREP_KILL_STORM_KILLS` sets the number of kills (the benchmark's longer mode) and
//! `CARTPREP_KILL_STORM_SEED` the seed of the moments (printed, to replay a failure).

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use station::{Ledger, Outcome};

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");
const IPADS: u32 = 10;

/// A small deterministic generator (xorshift64*): the moments only need to be spread, and a
/// seed replays them.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        from + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (to - from)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn(h: &Harness, n: u64) -> Child {
    let log =
        |kind: &str| std::fs::File::create(h.root.path().join(format!("run{n}.{kind}"))).unwrap();
    Command::new(CARTPREP)
        .args(["run", "--config", h.config_path.to_str().unwrap()])
        .env_remove("CARTPREP_LOG")
        .stdin(Stdio::null())
        .stdout(log("out"))
        .stderr(log("err"))
        .spawn()
        .expect("cartprep run starts")
}

fn all_done(h: &Harness) -> bool {
    let records = Ledger::read_only(&h.station_dir).unwrap_or_default();
    (1..=IPADS).all(|s| {
        records
            .iter()
            .any(|r| r.serial == h.serial(s) && r.outcome == Outcome::Done)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_sigkills_during_a_ten_ipad_run_lose_and_duplicate_nothing() {
    let kills = env_number("CARTPREP_KILL_STORM_KILLS", 30);
    let seed = env_number("CARTPREP_KILL_STORM_SEED", 0x5EED_2026_0010) | 1;
    eprintln!("kill storm: {kills} kills, seed {seed}");
    let mut moments = Moments(seed);
    let mut ipad = fresh();
    // Slow enough that kills land inside steps, not only between iPads.
    ipad.latency_ms = 15;
    let h = Harness::new(cart(vec![ipad; IPADS as usize])).await;

    let storm = Instant::now();
    let mut killed_mid_run = 0;
    for n in 0..kills {
        let mut child = spawn(&h, n);
        let wait = moments.next_ms(150, 1_200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "run {n} exited by itself ({status}): {}",
                std::fs::read_to_string(h.root.path().join(format!("run{n}.err"))).unwrap()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !all_done(&h) {
            killed_mid_run += 1;
        }
    }
    eprintln!(
        "kill storm: {kills} kills in {:?}, {killed_mid_run} before the cart was done",
        storm.elapsed()
    );
    assert!(
        killed_mid_run >= kills.min(30),
        "the kills landed during the run, not after it"
    );

    // The last station runs until the cart is done.
    let mut last = spawn(&h, kills);
    let started = Instant::now();
    while !all_done(&h) {
        assert!(
            last.try_wait().unwrap().is_none(),
            "the last station exited"
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the cart was never done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status()
        .unwrap();
    let _ = last.wait();

    let text = std::fs::read_to_string(h.station_dir.join(station::ledger::AUDIT_FILE)).unwrap();
    for (i, line) in text.lines().enumerate() {
        if let Err(e) = station::ledger::parse_audit_line(line.as_bytes()) {
            panic!("audit line {} does not read: {e}: {line:?}", i + 1);
        }
    }
    let records = Ledger::read_only(&h.station_dir).unwrap();
    assert_eq!(
        records.len(),
        IPADS as usize,
        "one record per iPad: {records:?}"
    );
    let mut names = BTreeSet::new();
    for slot in 1..=IPADS {
        let r = h.record(slot);
        assert_eq!(r.outcome, Outcome::Done, "slot {slot}");
        let name = r.name.clone().expect("named");
        assert_eq!(
            h.sim().cart.device(slot).unwrap().state().device_name,
            name,
            "slot {slot}: the iPad carries its recorded name"
        );
        assert!(
            names.insert(name.clone()),
            "slot {slot}: {name} given twice"
        );
    }
    // Nothing was lost either: a rebuild from the log equals the ledger.
    std::fs::remove_dir_all(h.station_dir.join(station::ledger::DB_DIR)).unwrap();
    let (rebuilt, report) = Ledger::open(&h.station_dir).unwrap();
    assert_eq!(report.skipped_lines, 0, "{report:?}");
    let mut rebuilt = rebuilt.list().unwrap();
    let mut live = records;
    rebuilt.sort_by(|a, b| a.serial.cmp(&b.serial));
    live.sort_by(|a, b| a.serial.cmp(&b.serial));
    assert_eq!(rebuilt, live);
}
