//! The ledger under write failures and its naming counter: a full disk or an I/O error at any
//! audit-log write loses no acknowledged transition and leaves no unreadable line; numbers are
//! allocated once, kept, and never reused.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use station::ledger::{AUDIT_FILE, DB_DIR};
use station::{DeviceRecord, Event, Ledger, Step, WriteFaults};

fn record(serial: &str, first_seen_ms: u64) -> DeviceRecord {
    let mut r = DeviceRecord::new_at(serial, format!("00008030-{serial}"), first_seen_ms);
    r.product_type = "iPad12,1".into();
    r
}

/// How an injected failure hits one append.
#[derive(Clone, Copy, Debug)]
enum Hit {
    /// Half the line lands, then the disk is full.
    HalfThenFull,
    /// Nothing lands: an I/O error.
    NothingThenEio,
    /// The whole line lands but is not synced (fsync reports the error).
    AllThenEio,
}

/// Fails appends number `from` to `from + count - 1` (counting from 0) the way `hit` says.
struct FailAt {
    from: usize,
    count: usize,
    hit: Hit,
    seen: AtomicUsize,
}

impl WriteFaults for FailAt {
    fn on_append(&self, len: usize) -> Option<(usize, io::Error)> {
        let k = self.seen.fetch_add(1, Ordering::SeqCst);
        if k < self.from || k >= self.from + self.count {
            return None;
        }
        Some(match self.hit {
            Hit::HalfThenFull => (len / 2, io::Error::from(io::ErrorKind::StorageFull)),
            Hit::NothingThenEio => (0, io::Error::from_raw_os_error(5)),
            Hit::AllThenEio => (len, io::Error::from_raw_os_error(5)),
        })
    }
}

/// A little run of three iPads: every transition, in order (ten saves).
fn transitions() -> Vec<(DeviceRecord, Event)> {
    let mut out = Vec::new();
    for (i, serial) in ["DMPFAULT0001", "DMPFAULT0002", "DMPFAULT0003"]
        .iter()
        .enumerate()
    {
        let mut r = record(serial, 1_000 * (i as u64 + 1));
        out.push((r.clone(), Event::Detected));
        r.begin_attempt();
        out.push((r.clone(), Event::Attempt));
        r.advance(Step::Paired, None);
        out.push((r.clone(), Event::Advance));
        if i < 2 {
            r.advance(Step::Done, None);
            out.push((r.clone(), Event::Done));
        }
    }
    out
}

/// Saves every transition; a failed save is tried again (as a job's next step or a replug
/// would) until it is acknowledged. Returns the records as last acknowledged.
async fn run_through(ledger: &Ledger, tries: usize) -> Vec<DeviceRecord> {
    let mut acknowledged = std::collections::BTreeMap::new();
    for (record, event) in transitions() {
        let mut ok = false;
        for _ in 0..tries {
            if ledger.save(&record, event).await.is_ok() {
                ok = true;
                break;
            }
            // Not acknowledged: the live ledger must not show it either.
            let live = ledger.get(&record.serial).expect("get");
            assert_eq!(live.as_ref(), acknowledged.get(&record.serial));
        }
        assert!(ok, "the disk had room again: {} saved", record.serial);
        acknowledged.insert(record.serial.clone(), record);
    }
    acknowledged.into_values().collect()
}

fn sorted(mut v: Vec<DeviceRecord>) -> Vec<DeviceRecord> {
    v.sort_by(|a, b| a.serial.cmp(&b.serial));
    v
}

#[tokio::test]
async fn a_failed_write_at_any_point_loses_nothing_and_leaves_every_line_readable() {
    let writes = transitions().len();
    for hit in [Hit::HalfThenFull, Hit::NothingThenEio, Hit::AllThenEio] {
        for from in 0..writes {
            for count in [1, 3] {
                let why = format!("{hit:?} at write {from} for {count} writes");
                let dir = tempfile::tempdir().expect("temp dir");
                let faults = Arc::new(FailAt {
                    from,
                    count,
                    hit,
                    seen: AtomicUsize::new(0),
                });
                let (ledger, _) =
                    Ledger::open_with_faults(dir.path(), Some(faults.clone())).expect("open");
                let acknowledged = run_through(&ledger, count + 1).await;
                assert!(
                    faults.seen.load(Ordering::SeqCst) > from,
                    "{why}: the fault struck"
                );
                let live = sorted(ledger.list().expect("list"));
                assert_eq!(live, sorted(acknowledged), "{why}");
                drop(ledger);
                // Reopened as it was closed (with or without the clean-close note).
                let (reopened, _) = Ledger::open(dir.path()).expect("reopen");
                assert_eq!(
                    sorted(reopened.list().expect("list")),
                    live,
                    "{why}: reopened"
                );
                drop(reopened);

                // Every line of the log reads, and a rebuild from it equals the live ledger.
                let text = fs::read_to_string(dir.path().join(AUDIT_FILE)).expect("log");
                assert!(text.ends_with('\n'), "{why}");
                for line in text.lines() {
                    station::ledger::parse_audit_line(line.as_bytes())
                        .unwrap_or_else(|e| panic!("{why}: unreadable line {line:?}: {e}"));
                }
                fs::remove_dir_all(dir.path().join(DB_DIR)).expect("force a rebuild");
                let (rebuilt, report) = Ledger::open(dir.path()).expect("rebuild");
                assert_eq!(report.skipped_lines, 0, "{why}: {report:?}");
                assert_eq!(report.torn_bytes, 0, "{why}: {report:?}");
                assert_eq!(sorted(rebuilt.list().expect("list")), live, "{why}");
            }
        }
    }
}

#[tokio::test]
async fn a_torn_tail_left_by_a_crash_is_cut_off_at_start_up_and_kept_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, _) = Ledger::open(dir.path()).expect("open");
    let mut a = record("DMPTORN00001", 1_000);
    ledger.save(&a, Event::Detected).await.expect("save");
    drop(ledger);
    let audit = dir.path().join(AUDIT_FILE);
    let good = fs::read(&audit).expect("log");
    // A crash in the middle of the next append.
    a.begin_attempt();
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"at_ms\":1,\"serial\":\"DMPTORN00001\",\"ev");
    fs::write(&audit, &torn).expect("tear");

    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.torn_bytes, (torn.len() - good.len()) as u64);
    assert_eq!(
        fs::read(&audit).expect("log"),
        good,
        "cut back to the last full line"
    );
    let kept: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("audit.jsonl.torn-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the fragment is kept for diagnosis");
    ledger.save(&a, Event::Attempt).await.expect("save");
    drop(ledger);
    let (_, report) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!((report.skipped_lines, report.torn_bytes), (0, 0));
}

#[tokio::test]
async fn numbers_are_taken_once_kept_and_never_given_again_even_after_a_rebuild() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, _) = Ledger::open(dir.path()).expect("open");
    assert_eq!(ledger.peek_next_number(), 0);
    let mut a = record("DMPNUMBER001", 1_000);
    let mut b = record("DMPNUMBER002", 2_000);
    assert_eq!(ledger.allocate_number(&mut b).await.expect("b"), 0);
    assert_eq!(ledger.allocate_number(&mut a).await.expect("a"), 1);
    assert_eq!(ledger.allocate_number(&mut b).await.expect("b again"), 0);
    assert_eq!(ledger.get("DMPNUMBER002").unwrap().unwrap().number, Some(0));

    // A numbered record that another replaces keeps its number taken.
    let mut gone = DeviceRecord::new("", "00008030-GONE");
    gone.number = Some(7);
    ledger.save(&gone, Event::Attention).await.expect("save");
    ledger.forget(&gone).await.expect("forget");
    drop(ledger);

    fs::remove_dir_all(dir.path().join(DB_DIR)).expect("force a rebuild");
    let (ledger, _) = Ledger::open(dir.path()).expect("rebuild");
    assert_eq!(ledger.peek_next_number(), 8, "no number is given twice");
    let mut c = record("DMPNUMBER003", 3_000);
    assert_eq!(ledger.allocate_number(&mut c).await.expect("c"), 8);
    assert_eq!(ledger.get("DMPNUMBER001").unwrap().unwrap().number, Some(1));

    // The operator asks for a new number: the next free one, the old one stays used.
    assert_eq!(
        ledger.release_number("DMPNUMBER001").await.unwrap(),
        Some(1)
    );
    let mut a = ledger.get("DMPNUMBER001").unwrap().unwrap();
    assert_eq!(a.number, None);
    assert_eq!(ledger.allocate_number(&mut a).await.unwrap(), 9);
    assert!(matches!(
        ledger.release_number("DMPUNKNOWN01").await,
        Err(station::LedgerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_number_is_not_given_twice_when_the_audit_log_lost_the_lines_that_took_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        for (i, serial) in ["DMPNUMBER001", "DMPNUMBER002", "DMPNUMBER003"]
            .iter()
            .enumerate()
        {
            let mut r = record(serial, 1_000 * (i as u64 + 1));
            assert_eq!(
                ledger.allocate_number(&mut r).await.expect("number"),
                i as u32
            );
        }
    }
    // An edit against the rules: every line of the iPad that took number 2 removed.
    let audit = dir.path().join(AUDIT_FILE);
    let text = fs::read_to_string(&audit).expect("log");
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("DMPNUMBER003"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(kept.len() < text.len(), "the edit removed lines");
    fs::write(&audit, kept).expect("edit");

    let (ledger, report) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!(report.repaired, 1, "the index lost that iPad: {report:?}");
    assert_eq!(ledger.get("DMPNUMBER003").expect("get"), None);
    let mut d = record("DMPNUMBER004", 4_000);
    assert_eq!(
        ledger.allocate_number(&mut d).await.expect("d"),
        3,
        "number 2 stays taken"
    );
}

#[tokio::test]
async fn an_ipad_first_recorded_by_udid_keeps_its_number_when_it_joins_its_serial() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, _) = Ledger::open(dir.path()).expect("open");
    let udid = "00008030-000D543C1A30C02E";
    let mut provisional = DeviceRecord::new_at("", udid, 500);
    provisional.attention(station::Attention::Locked);
    ledger.save(&provisional, Event::Attention).await.unwrap();
    let mut other = record("DMPEARLIER01", 1_000);
    assert_eq!(ledger.allocate_number(&mut other).await.unwrap(), 0);

    let mut joined = ledger.identify(udid, "DMPLATER0001").unwrap();
    assert_eq!(
        joined.first_seen_ms, 500,
        "first seen before the other iPad"
    );
    assert_eq!(
        joined.number, None,
        "an iPad that never paired has no number"
    );
    ledger.save_identified(&joined).await.unwrap();
    assert_eq!(ledger.allocate_number(&mut joined).await.unwrap(), 1);
    assert_eq!(
        ledger.allocate_number(&mut other).await.unwrap(),
        0,
        "the earlier first-seen time moves nobody's number"
    );
}

#[tokio::test]
async fn the_state_folder_is_0700_and_the_ledger_files_0600() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("station");
    let (ledger, _) = Ledger::open(&state).expect("open");
    ledger
        .save(&record("DMPMODES0001", 1), Event::Detected)
        .await
        .expect("save");
    drop(ledger);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(AUDIT_FILE)), 0o600);
    assert_eq!(mode(&state.join(DB_DIR)), 0o700);
    for entry in fs::read_dir(state.join(DB_DIR)).unwrap() {
        let entry = entry.unwrap();
        let want = if entry.file_type().unwrap().is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode(&entry.path()), want, "{}", entry.path().display());
    }

    // A log made 0644 by an older version is narrowed when the ledger opens.
    fs::set_permissions(state.join(AUDIT_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    let _ = Ledger::open(&state).expect("reopen");
    assert_eq!(mode(&state.join(AUDIT_FILE)), 0o600);
    assert_eq!(mode(&state), 0o700);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` where this machine does not let the test mount one (not root, no
    /// CAP_SYS_ADMIN): the injected failures above cover the same code paths.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_really_full_disk_during_a_run_loses_no_transition() {
    let root = tempfile::tempdir().expect("temp dir");
    let Some(disk) = Tmpfs::mount(&root.path().join("disk"), "16m") else {
        eprintln!("cannot mount a tmpfs here: the injected-failure tests stand in for it");
        return;
    };
    let state = disk.0.join("station");
    let (ledger, _) = Ledger::open(&state).expect("open");
    let mut r = record("DMPFULLDISK1", 1_000);
    ledger.save(&r, Event::Detected).await.expect("save");

    // Fill the disk to the last byte.
    let filler_path = disk.0.join("filler");
    {
        use std::io::Write;
        let mut filler = fs::File::create(&filler_path).expect("filler");
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let mut byte = [0u8; 1];
        while filler.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
        let _ = filler.sync_all();
    }
    r.begin_attempt();
    r.advance(Step::Paired, None);
    // The log's last page may still have room for a few lines; then appends are refused.
    let mut refused = 0;
    for _ in 0..400 {
        match ledger.save(&r, Event::Advance).await {
            Ok(()) => r.advance(Step::Paired, Some("again".into())),
            Err(_) => refused += 1,
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "a full disk refuses the append");
    fs::remove_file(&filler_path).expect("free the disk");
    ledger.save(&r, Event::Advance).await.expect("room again");
    r.advance(Step::Done, None);
    ledger.save(&r, Event::Done).await.expect("save");
    let live = ledger.list().expect("list");
    drop(ledger);

    let text = fs::read_to_string(state.join(AUDIT_FILE)).expect("log");
    for line in text.lines() {
        station::ledger::parse_audit_line(line.as_bytes()).expect("every line reads");
    }
    fs::remove_dir_all(state.join(DB_DIR)).expect("force a rebuild");
    let (rebuilt, report) = Ledger::open(&state).expect("rebuild");
    assert_eq!(
        (report.skipped_lines, report.torn_bytes),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(rebuilt.list().expect("list"), live);
    assert_eq!(live[0].outcome, station::Outcome::Done);
    drop(rebuilt);
    drop(disk);
}

/// Fails one fsync of the audit log: the `n`-th (from 0).
struct FailSync {
    n: usize,
    seen: AtomicUsize,
}

impl WriteFaults for FailSync {
    fn on_append(&self, _len: usize) -> Option<(usize, io::Error)> {
        None
    }

    fn on_sync(&self) -> Option<io::Error> {
        (self.seen.fetch_add(1, Ordering::SeqCst) == self.n)
            .then(|| io::Error::from_raw_os_error(5))
    }
}

/// Saves one `Detected` record per serial from as many tasks at once; returns which saves
/// were acknowledged.
async fn save_at_once(ledger: &Arc<Ledger>, serials: &[String]) -> Vec<(String, bool)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, serial) in serials.iter().enumerate() {
        let (ledger, serial) = (Arc::clone(ledger), serial.clone());
        tasks.spawn(async move {
            let ok = ledger
                .save(&record(&serial, 1_000 + i as u64), Event::Detected)
                .await
                .is_ok();
            (serial, ok)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.expect("task"));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saves_from_many_tasks_share_fsyncs_and_each_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let serials: Vec<String> = (0..64).map(|i| format!("DMPGROUP{i:04}")).collect();
    // Counts the fsyncs (fails none).
    let syncs = Arc::new(FailSync {
        n: usize::MAX,
        seen: AtomicUsize::new(0),
    });
    let ledger = Arc::new(
        Ledger::open_with_faults(dir.path(), Some(syncs.clone()))
            .expect("open")
            .0,
    );
    let saved = save_at_once(&ledger, &serials).await;
    assert!(saved.iter().all(|(_, ok)| *ok), "{saved:?}");
    let fsyncs = syncs.seen.load(Ordering::SeqCst);
    assert!(fsyncs < serials.len(), "64 saves at once, {fsyncs} fsyncs");
    for serial in &serials {
        assert!(
            ledger.get(serial).expect("get").is_some(),
            "{serial} is live"
        );
    }
    // What a kill leaves: no close, no clean-close note. Every acknowledged line is on disk.
    std::mem::forget(Arc::try_unwrap(ledger).expect("the only reference"));
    let text = fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap();
    assert_eq!(text.lines().count(), 64);
    assert!(text.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_fails_every_save_it_covered_and_shows_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FailSync {
        n: 0,
        seen: AtomicUsize::new(0),
    });
    let ledger = Arc::new(
        Ledger::open_with_faults(dir.path(), Some(faults))
            .expect("open")
            .0,
    );
    let serials: Vec<String> = (0..16).map(|i| format!("DMPSYNCF{i:04}")).collect();
    let saved = save_at_once(&ledger, &serials).await;
    let failed: Vec<&String> = saved.iter().filter(|(_, ok)| !ok).map(|(s, _)| s).collect();
    assert!(!failed.is_empty(), "the first fsync failed: {saved:?}");
    for (serial, ok) in &saved {
        // Acknowledged means live and in the log; refused means neither.
        assert_eq!(ledger.get(serial).expect("get").is_some(), *ok, "{serial}");
    }
    // Tried again, as a job's next step would: the disk works again.
    for serial in &failed {
        ledger
            .save(&record(serial, 9), Event::Detected)
            .await
            .expect("saved the second time");
    }
    drop(ledger);
    let text = fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap();
    assert_eq!(
        text.lines().count(),
        16,
        "no line of a refused save is left:\n{text}"
    );
    let (reopened, report) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!((report.skipped_lines, report.torn_bytes), (0, 0));
    assert_eq!(reopened.list().expect("list").len(), 16);
}
