//! An idle ledger keeps its threads asleep: once the store's own I/O threads exist (they start
//! at the first write of a buffer, or at an open that recovers data), none of them wakes
//! without work. Upstream sled 0.34.7 woke each of its seven `sled-io` threads every second for
//! the life of the process; vendor/sled/PATCH.md is the fix this test guards.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::time::Duration;

use station::{DeviceRecord, Event, Ledger, Step};

/// Context switches so far of each of this process's threads whose name starts with `prefix`,
/// by thread id.
fn switches_of_threads(prefix: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("task entry").path();
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread has exited since the listing
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.join("status")) else {
            continue;
        };
        let switches: u64 = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse::<u64>().expect("a count"))
            .sum();
        let tid = task
            .file_name()
            .expect("tid")
            .to_string_lossy()
            .into_owned();
        out.insert(tid, switches);
    }
    out
}

#[tokio::test]
async fn the_stores_io_threads_sleep_until_there_is_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        for i in 0..20u64 {
            let serial = format!("DMPIDLE{i:05}");
            let mut r = DeviceRecord::new_at(&serial, format!("00008030-{serial}"), 1_000 + i);
            r.advance(Step::Done, None);
            ledger.save(&r, Event::Done).await.expect("save");
        }
        // A close in good order flushes the store: its I/O threads start here if not before.
    }
    // Reopening a ledger with data recovers it on the same threads.
    let (ledger, _) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!(ledger.list().expect("list").len(), 20);

    // Let the flush and recovery finish, then watch the threads do nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = switches_of_threads("sled-io");
    assert!(
        !before.is_empty(),
        "the store's I/O threads were started (otherwise this test proves nothing)"
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let after = switches_of_threads("sled-io");
    let woke: Vec<_> = before
        .iter()
        .filter(|(tid, n)| after.get(*tid).is_some_and(|m| m != *n))
        .map(|(tid, n)| format!("thread {tid}: {n} → {}", after[tid]))
        .collect();
    assert!(
        woke.is_empty(),
        "idle I/O threads woke without work in 3.5 s: {woke:?}"
    );
}
