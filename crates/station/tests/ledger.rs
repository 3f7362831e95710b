//! The ledger keeps every acknowledged transition: across reopen, a killed process, a damaged
//! database, and a damaged audit log.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use station::ledger::{AUDIT_FILE, DB_DIR};
use station::{Attention, DeviceRecord, Event, Ledger, LedgerError, Outcome, Step};

fn record(serial: &str, first_seen_ms: u64) -> DeviceRecord {
    let mut r = DeviceRecord::new_at(serial, format!("00008030-{serial}"), first_seen_ms);
    r.product_type = "iPad12,1".into();
    r.marketing_name = "iPad (9th generation)".into();
    r.ios_version = "18.5".into();
    r
}

/// Saves three devices in different states and returns them as saved.
async fn save_three(ledger: &Ledger) -> Vec<DeviceRecord> {
    let mut done = record("DMPDONE00001", 3_000);
    ledger.save(&done, Event::Detected).await.expect("save");
    done.begin_attempt();
    done.advance(Step::Identified, None);
    ledger.save(&done, Event::Advance).await.expect("save");
    done.advance(Step::Done, None);
    done.settings_fingerprint = Some("f".repeat(64));
    ledger.save(&done, Event::Done).await.expect("save");

    let mut locked = record("DMPLOCKED001", 1_000);
    locked.begin_attempt();
    locked.attention(Attention::ActivationLocked);
    ledger.save(&locked, Event::Attention).await.expect("save");

    let mut failed = record("DMPFAILED001", 2_000);
    failed.begin_attempt();
    failed.advance(Step::Paired, None);
    failed.fail("lockdownd closed the connection");
    ledger.save(&failed, Event::Fail).await.expect("save");

    vec![locked, failed, done]
}

#[tokio::test]
async fn records_survive_a_reopen_and_list_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, report) = Ledger::open(dir.path()).expect("open");
        assert_eq!(report, Default::default(), "a new ledger needs no repair");
        save_three(&ledger).await
    };

    let (ledger, report) = Ledger::open(dir.path()).expect("reopen");
    assert!(
        !report.rebuilt && report.moved_aside.is_none() && report.repaired == 0,
        "{report:?}"
    );
    assert_eq!(
        ledger.list().expect("list"),
        saved,
        "oldest first_seen first"
    );
    assert_eq!(
        ledger.get("DMPDONE00001").expect("get").map(|r| r.outcome),
        Some(Outcome::Done)
    );
    assert_eq!(ledger.get("NOSUCHSERIAL").expect("get"), None);
    let by_udid = ledger
        .by_udid("00008030-DMPFAILED001")
        .expect("by udid")
        .expect("found");
    assert_eq!(by_udid.serial, "DMPFAILED001");
    assert_eq!(ledger.by_udid("unknown").expect("by udid"), None);
}

#[tokio::test]
async fn every_transition_is_one_line_of_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, _) = Ledger::open(dir.path()).expect("open");
    save_three(&ledger).await;
    let log = fs::read_to_string(dir.path().join(AUDIT_FILE)).expect("audit log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 5);
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["detected", "advance", "done", "attention", "fail"]);
    assert_eq!(lines[2]["serial"], "DMPDONE00001");
    assert_eq!(lines[2]["record"]["serial"], "DMPDONE00001");
    assert!(lines[2]["at_ms"].as_u64().expect("at_ms") > 0);
}

/// Environment variable that turns [`child_writer_for_the_kill_test`] into the writer.
const CHILD_DIR: &str = "STATION_LEDGER_KILL_TEST_DIR";

/// Not a test on its own: run by `a_killed_process_loses_nothing_acknowledged` in a child
/// process, it saves records forever and prints `ACK <serial>` after each save returns.
#[test]
fn child_writer_for_the_kill_test() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (ledger, _) = Ledger::open(Path::new(&dir)).expect("open");
        let mut stdout = std::io::stdout();
        for i in 0u64.. {
            let serial = format!("KILL{i:08}");
            let mut r = record(&serial, i);
            ledger.save(&r, Event::Detected).await.expect("save");
            r.begin_attempt();
            r.advance(Step::Identified, Some(format!("attempt {i}")));
            ledger.save(&r, Event::Advance).await.expect("save");
            writeln!(stdout, "ACK {serial}").expect("stdout");
            stdout.flush().expect("stdout");
        }
    });
}

#[tokio::test]
async fn a_killed_process_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_writer_for_the_kill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(serial) = line.strip_prefix("ACK ") {
                let _ = tx.send(serial.to_owned());
            }
        }
    });

    // Let it acknowledge a good number of records, then kill it mid-write (SIGKILL: no
    // destructors, no final flush).
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 60 && Instant::now() < deadline {
        if let Ok(serial) = rx.recv_timeout(Duration::from_millis(200)) {
            acked.push(serial);
        }
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    reader.join().expect("reader");
    // Lines printed before the kill are acknowledgements too.
    acked.extend(rx.try_iter());
    assert!(
        acked.len() >= 60,
        "the writer acknowledged only {} records in 60 s",
        acked.len()
    );

    let (ledger, report) = Ledger::open(dir.path()).expect("reopen after the kill");
    for serial in &acked {
        let r = ledger
            .get(serial)
            .expect("get")
            .unwrap_or_else(|| panic!("{serial} was acknowledged but lost ({report:?})"));
        assert_eq!(
            r.completed,
            Step::Identified,
            "{serial}: the acknowledged state, not an earlier one"
        );
    }
}

#[tokio::test]
async fn a_database_that_will_not_open_is_moved_aside_and_rebuilt_from_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await
    };
    // Damage sled's files the way a crash mid-write can: garbage over its settings and data.
    let db = dir.path().join(DB_DIR);
    fs::write(db.join("conf"), vec![0xA5; 64]).expect("damage conf");
    fs::write(db.join("db"), vec![0x5A; 4096]).expect("damage db");

    let (ledger, report) = Ledger::open(dir.path()).expect("open recovers");
    assert!(report.rebuilt, "{report:?}");
    let aside = report.moved_aside.expect("moved aside");
    assert!(
        aside.is_dir(),
        "the damaged database is kept for diagnosis at {}",
        aside.display()
    );
    let name = aside
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("ledger.sled.corrupt-"), "{name}");
    assert_eq!(report.skipped_lines, 0);
    assert_eq!(
        ledger.list().expect("list"),
        saved,
        "same records as before the damage"
    );

    // The rebuilt database is a normal one: it takes writes and reopens without repair.
    let mut more = record("DMPAFTER0001", 9_000);
    more.begin_attempt();
    ledger.save(&more, Event::Attempt).await.expect("save");
    drop(ledger);
    let (ledger, report) = Ledger::open(dir.path()).expect("reopen");
    assert!(
        !report.rebuilt && report.moved_aside.is_none(),
        "{report:?}"
    );
    assert_eq!(ledger.list().expect("list").len(), 4);
}

#[tokio::test]
async fn a_database_that_opens_but_lost_its_records_is_repaired_from_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await
    };
    // Garbage over sled's data file alone: sled 0.34.7 opens it without an error, empty.
    fs::write(dir.path().join(DB_DIR).join("db"), vec![0x5A; 4096]).expect("damage db");

    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.repaired, 3, "{report:?}");
    assert_eq!(ledger.list().expect("list"), saved);
}

#[tokio::test]
async fn a_deleted_database_is_rebuilt_from_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await
    };
    fs::remove_dir_all(dir.path().join(DB_DIR)).expect("delete");
    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert!(report.rebuilt && report.moved_aside.is_none(), "{report:?}");
    assert_eq!(ledger.list().expect("list"), saved);
}

#[tokio::test]
async fn malformed_audit_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await
    };
    let audit = dir.path().join(AUDIT_FILE);
    let mut log = OpenOptions::new().append(true).open(&audit).expect("audit");
    log.write_all(b"this is not json\n").expect("append");
    log.write_all(b"\xff\xfe not even utf-8\n").expect("append");
    // A line whose serial does not match its record is not trusted either.
    let mut mismatched = serde_json::to_value(&saved[0]).expect("json");
    mismatched["serial"] = "SOMEONEELSE1".into();
    writeln!(
        log,
        "{{\"at_ms\":1,\"serial\":\"DMPLOCKED001\",\"event\":\"update\",\"record\":{mismatched}}}"
    )
    .expect("append");
    // And a line torn by a crash: no closing brace, no newline.
    log.write_all(b"{\"at_ms\":17734833").expect("append");
    drop(log);
    fs::remove_dir_all(dir.path().join(DB_DIR)).expect("force a rebuild");

    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert!(report.rebuilt, "{report:?}");
    assert_eq!(report.skipped_lines, 3, "{report:?}");
    assert_eq!(
        report.torn_bytes,
        b"{\"at_ms\":17734833".len() as u64,
        "the torn tail (never acknowledged) is cut off, not counted as a line: {report:?}"
    );
    assert_eq!(
        ledger.list().expect("list"),
        saved,
        "good lines still count, last one per serial wins"
    );

    // The torn line was cut off, so the next transition is a line of its own.
    let mut more = record("DMPAFTER0001", 9_000);
    more.begin_attempt();
    ledger.save(&more, Event::Attempt).await.expect("save");
    drop(ledger);
    fs::remove_dir_all(dir.path().join(DB_DIR)).expect("force a rebuild");
    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.skipped_lines, 3, "no new damage: {report:?}");
    assert_eq!(report.torn_bytes, 0, "{report:?}");
    assert!(ledger.get("DMPAFTER0001").expect("get").is_some());
}

#[tokio::test]
async fn a_ledger_in_use_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, _) = Ledger::open(dir.path()).expect("open");
    save_three(&first).await;

    // A second daemon on the same state folder must not "recover" the live database.
    match Ledger::open(dir.path()) {
        Err(LedgerError::Open { .. }) => {}
        Err(other) => panic!("expected a refusal to open, got {other}"),
        Ok((_, report)) => panic!("opened a database already in use: {report:?}"),
    }
    let entries: Vec<_> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|n| n.contains("corrupt")),
        "nothing moved aside: {entries:?}"
    );
    assert_eq!(first.list().expect("the first ledger still works").len(), 3);
}

#[tokio::test]
async fn an_ipad_known_only_by_udid_is_replaced_by_its_serial_record_even_after_a_rebuild() {
    let dir = tempfile::tempdir().expect("temp dir");
    let udid = "00008030-000D543C1A30C02E";
    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        let mut provisional = DeviceRecord::new("", udid);
        provisional.attention(station::Attention::Locked);
        ledger
            .save(&provisional, Event::Attention)
            .await
            .expect("save by UDID");
        assert_eq!(
            station::ledger::key_of(&provisional),
            format!("udid:{udid}")
        );
        assert_eq!(ledger.list().unwrap().len(), 1);

        let mut real = DeviceRecord::new("DMPXK1234567", udid);
        real.advance(Step::Paired, None);
        ledger
            .save(&real, Event::Advance)
            .await
            .expect("save by serial");
        ledger.forget(&provisional).await.expect("forget");
        let all = ledger.list().unwrap();
        assert_eq!(all.len(), 1, "one record per iPad");
        assert_eq!(all[0].serial, "DMPXK1234567");
    }
    // The audit log agrees: a rebuild does not bring the UDID record back.
    let records = Ledger::read_only(dir.path()).expect("read the log");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].serial, "DMPXK1234567");
    std::fs::remove_dir_all(dir.path().join(station::ledger::DB_DIR)).unwrap();
    let (ledger, report) = Ledger::open(dir.path()).expect("rebuild");
    assert!(report.rebuilt);
    assert_eq!(ledger.list().unwrap().len(), 1);
}

#[tokio::test]
async fn the_clean_close_note_exists_only_while_the_ledger_is_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let note = dir.path().join(station::clean_close::CLEAN_FILE);
    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await;
        assert!(!note.exists(), "a crash now must leave no note");
    }
    assert!(note.exists(), "a close in good order leaves one");
    let (_ledger, _) = Ledger::open(dir.path()).expect("open");
    assert!(!note.exists(), "the open takes it");
}

#[tokio::test]
async fn a_ledger_that_was_not_closed_replays_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await
    };
    // What a kill leaves: no note. A line the database lacks (unreadable here) is then found.
    fs::remove_file(dir.path().join(station::clean_close::CLEAN_FILE)).expect("note");
    OpenOptions::new()
        .append(true)
        .open(dir.path().join(AUDIT_FILE))
        .and_then(|mut f| f.write_all(b"not a record\n"))
        .expect("append");
    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.skipped_lines, 1, "{report:?}");
    assert_eq!(ledger.list().expect("list"), saved);
}

/// A ledger holding `save_three`'s records, closed in good order.
async fn closed_ledger_of_three(state: &Path) -> Vec<DeviceRecord> {
    let (ledger, _) = Ledger::open(state).expect("open");
    save_three(&ledger).await
}

/// Overwrites the first or the last line of the audit log with `#`s, keeping its length (an
/// edit a clean-close note cannot see).
fn blank_audit_line(state: &Path, last: bool) {
    let audit = state.join(AUDIT_FILE);
    let mut text = fs::read(&audit).expect("audit");
    let end = text.len() - 1;
    let (from, to) = if last {
        let from = text[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        (from, end)
    } else {
        (0, text.iter().position(|&b| b == b'\n').expect("a line"))
    };
    text[from..to].fill(b'#');
    fs::write(&audit, text).expect("overwrite");
}

#[tokio::test]
async fn a_healthy_database_opens_without_replaying_the_audit_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = closed_ledger_of_three(dir.path()).await;
    // The first line (DMPDONE00001 detected; later lines hold its record) made unreadable:
    // only a replay would notice (and count a skipped line).
    blank_audit_line(dir.path(), false);

    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.skipped_lines, 0, "{report:?}");
    assert_eq!(report.repaired, 0, "{report:?}");
    assert_eq!(ledger.list().expect("list"), saved);
}

/// What the database held before it held locations: each key's whole record, as JSON.
fn rewrite_as_whole_records(state: &Path, records: &[DeviceRecord]) {
    let db = sled::open(state.join(DB_DIR)).expect("sled");
    db.clear().expect("clear");
    for r in records {
        db.insert(r.serial.as_bytes(), serde_json::to_vec(r).expect("json"))
            .expect("insert");
    }
    db.flush().expect("flush");
}

#[tokio::test]
async fn a_database_of_whole_records_is_rewritten_as_locations_at_the_first_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = closed_ledger_of_three(dir.path()).await;
    rewrite_as_whole_records(dir.path(), &saved);
    // The clean-close note such a ledger left: no index format.
    let note = dir.path().join(station::clean_close::CLEAN_FILE);
    let mut old: serde_json::Value =
        serde_json::from_slice(&fs::read(&note).expect("note")).expect("note json");
    old.as_object_mut().expect("object").remove("index");
    fs::write(&note, serde_json::to_vec(&old).expect("json")).expect("old note");

    {
        let (ledger, report) = Ledger::open(dir.path()).expect("open");
        assert_eq!(report.repaired, 3, "every entry rewritten: {report:?}");
        assert_eq!(ledger.list().expect("list"), saved);
    }
    let (ledger, report) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!(report.repaired, 0, "{report:?}");
    assert_eq!(ledger.list().expect("list"), saved);
}

#[tokio::test]
async fn an_index_that_does_not_lead_to_its_record_is_reported_and_rebuilt_at_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = closed_ledger_of_three(dir.path()).await;
    // The log edited under a closed station, its length kept: the last line (DMPFAILED001's
    // only record) no longer says what the index expects.
    blank_audit_line(dir.path(), true);

    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        match ledger.get("DMPFAILED001") {
            Err(e @ LedgerError::Index { .. }) => {
                assert!(e.to_string().contains("restart cartprep"), "{e}")
            }
            other => panic!("expected an index error, got {other:?}"),
        }
        assert!(ledger.list().is_err(), "listing meets the same entry");
        assert_eq!(
            ledger.get("DMPDONE00001").expect("get"),
            Some(saved[2].clone())
        );
    }
    // No clean-close note was left: the open replays, and the log no longer has that record.
    let (ledger, report) = Ledger::open(dir.path()).expect("reopen");
    assert_eq!(report.skipped_lines, 1, "{report:?}");
    assert_eq!(ledger.get("DMPFAILED001").expect("get"), None);
    assert_eq!(
        ledger.list().expect("list"),
        vec![saved[0].clone(), saved[2].clone()]
    );
}

#[tokio::test]
async fn a_log_longer_than_the_database_knows_is_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await;
        // What a crash between the log append and the sled write leaves: one more line.
        let other = tempfile::tempdir().expect("temp dir");
        let (scratch, _) = Ledger::open(other.path()).expect("open");
        scratch
            .save(&record("DMPLATE00001", 4_000), Event::Detected)
            .await
            .expect("save");
        fs::read(other.path().join(AUDIT_FILE)).expect("scratch log")
    };
    OpenOptions::new()
        .append(true)
        .open(dir.path().join(AUDIT_FILE))
        .and_then(|mut f| f.write_all(&line))
        .expect("append");

    let (ledger, report) = Ledger::open(dir.path()).expect("open");
    assert_eq!(report.repaired, 1, "{report:?}");
    assert_eq!(ledger.list().expect("list").len(), 4);
}

#[tokio::test]
async fn the_records_being_worked_on_are_found_without_a_scan_after_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (ledger, _) = Ledger::open(dir.path()).expect("open");
        save_three(&ledger).await;
        let mut busy = record("DMPBUSY00001", 5_000);
        busy.begin_attempt();
        busy.advance(Step::Paired, None);
        ledger.save(&busy, Event::Advance).await.expect("save");
    }
    let (ledger, _) = Ledger::open(dir.path()).expect("open");
    let working: Vec<_> = ledger
        .working()
        .expect("working")
        .into_iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(working, ["DMPBUSY00001"]);

    let mut busy = ledger.get("DMPBUSY00001").expect("get").expect("saved");
    busy.outcome = Outcome::Waiting;
    ledger.save(&busy, Event::Update).await.expect("save");
    assert!(ledger.working().expect("working").is_empty());
}
