//! The `cartprep` binary: refusing bad configurations, resuming after `cartprep run` is killed
//! with SIGKILL, and a full `cartprep demo` run whose logs, at every level, hold no secret.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use station::{Ledger, Outcome, Step};

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");

/// Waits for a child process, killing it (and failing) after `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{CARTPREP} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cartprep ARGS`, returning its exit status and its standard error.
fn cartprep(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(CARTPREP)
        .args(args)
        .env_remove("CARTPREP_LOG")
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cartprep starts");
    let status = wait_at_most(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn a_bad_configuration_is_refused_with_status_2_naming_the_field_and_touching_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let identity = profiles::SupervisionIdentity::create(ORGANIZATION).unwrap();
    identity.save(&root.join("identity")).unwrap();
    // 0600, as the README installs it (a password file others can read is refused).
    profiles::files::write_private(
        &root.join("wifi-password"),
        format!("{WIFI_PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    std::fs::write(
        root.join("activation-ca.pem"),
        identity.certificate_pem().unwrap(),
    )
    .unwrap();
    let state = root.join("state");
    let good = config_text(
        &ConfigSpec::default(),
        &state,
        "127.0.0.1:9",
        "https://127.0.0.1:9/deviceservices/",
        2,
    );
    // The baseline is good: each case below is wrong in one way only.
    let path = root.join("station.toml");
    std::fs::write(&path, &good).unwrap();
    if let Err(e) = station::Settings::load(&path) {
        panic!("the baseline config is valid and usable: {e}");
    }

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an http:// enrollment URL",
            good.replace(ENROLLMENT_URL, "http://mdm.example.org/enroll"),
            "mdm.enrollment_url",
        ),
        (
            "a key cartprep does not know",
            good.replace("[wifi]\n", "[wifi]\ncolour = \"blue\"\n"),
            "wifi.colour",
        ),
        (
            "a WPA2 network without a password",
            good.replace("password_file = \"wifi-password\"\n", ""),
            "wifi.password",
        ),
        (
            "an unknown placeholder in the naming template",
            good.replace("Cart A - {n:02}", "Cart A - {number}"),
            "naming.template",
        ),
        (
            "an identity folder that does not exist",
            good.replace("identity = \"identity\"", "identity = \"no-such-folder\""),
            "organization.identity",
        ),
        (
            "a Setup Assistant pane that does not exist",
            good.replace("skip = \"all\"", "skip = [\"Siri\", \"Sirri\"]"),
            "setup.skip",
        ),
        (
            "no identity in manual mode",
            good.replace("identity = \"identity\"\n", ""),
            "organization.identity",
        ),
        (
            "a time zone that is not in the IANA database",
            good.replace("America/Chicago", "Europe/Londn"),
            "setup.time_zone",
        ),
        (
            "serials allowed to be erased under policy = \"never\"",
            good.replace(
                "policy = \"never\"",
                "policy = \"never\"\nallow_serials = [\"DMPAAAAAAAA1\"]",
            ),
            "erase.allow_serials",
        ),
        (
            "the same key twice",
            good.replace("[wifi]\n", "[wifi]\nhidden = false\nhidden = true\n"),
            "wifi.hidden",
        ),
    ];
    for (what, text, field) in cases {
        assert_ne!(text, good, "{what}: the case changes the file");
        let bad = root.join("bad.toml");
        std::fs::write(&bad, &text).unwrap();
        let before = files_under(root);
        let (status, stdout, stderr) = cartprep(&["run", "--config", bad.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{what}: exit status\n{stderr}");
        assert!(
            stderr.contains(&format!("{field}:")),
            "{what}: the error names {field}:\n{stderr}"
        );
        assert!(
            stderr.contains("bad.toml"),
            "{what}: names the file:\n{stderr}"
        );
        assert!(
            stdout.is_empty(),
            "{what}: nothing else is printed:\n{stdout}"
        );
        assert!(!state.exists(), "{what}: the state folder is not created");
        assert_eq!(files_under(root), before, "{what}: no file written");
    }
}

#[test]
fn a_state_folder_the_station_cannot_use_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let identity = profiles::SupervisionIdentity::create(ORGANIZATION).unwrap();
    identity.save(&root.join("identity")).unwrap();
    profiles::files::write_private(
        &root.join("wifi-password"),
        format!("{WIFI_PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    std::fs::write(
        root.join("activation-ca.pem"),
        identity.certificate_pem().unwrap(),
    )
    .unwrap();
    // A file where the state folder should be.
    let state = root.join("state");
    std::fs::write(&state, b"not a folder").unwrap();
    let text = config_text(
        &ConfigSpec::default(),
        &state,
        "127.0.0.1:9",
        "https://127.0.0.1:9/deviceservices/",
        1,
    );
    let path = root.join("station.toml");
    std::fs::write(&path, text).unwrap();
    let (status, _stdout, stderr) = cartprep(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "not restarted in a loop:\n{stderr}");
    assert!(stderr.contains("state_dir"), "names the setting:\n{stderr}");
    assert!(
        stderr.contains(state.to_str().unwrap()),
        "names the folder:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_station_resumes_the_ipad_when_it_is_started_again() {
    within(async {
        let mut ipad = fresh();
        ipad.latency_ms = 40;
        let h = Harness::new(cart(vec![ipad])).await;
        let serial = h.serial(1);
        let spawn = |log: &str| {
            Command::new(CARTPREP)
                .args(["run", "--config", h.config_path.to_str().unwrap()])
                .env_remove("CARTPREP_LOG")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(h.station_dir.join(format!("{log}.out"))).unwrap())
                .stderr(std::fs::File::create(h.station_dir.join(format!("{log}.err"))).unwrap())
                .spawn()
                .expect("cartprep run starts")
        };
        let record = |state: &Path| {
            Ledger::read_only(state)
                .unwrap()
                .into_iter()
                .find(|r| r.serial == serial)
        };

        // First station: killed (SIGKILL) once the iPad is activated, mid-way.
        let mut first = spawn("first");
        let started = Instant::now();
        loop {
            if record(&h.station_dir)
                .is_some_and(|r| r.completed >= Step::Activated && r.outcome == Outcome::Working)
            {
                break;
            }
            assert!(
                first.try_wait().unwrap().is_none(),
                "the station exited early: {}",
                std::fs::read_to_string(h.station_dir.join("first.err")).unwrap()
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never got to activation"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.kill().unwrap(); // SIGKILL: no chance to tidy up
        first.wait().unwrap();
        let killed = record(&h.station_dir).unwrap();
        assert_eq!(
            killed.outcome,
            Outcome::Working,
            "a killed station leaves no note"
        );
        assert!(killed.completed >= Step::Activated && killed.completed < Step::Done);
        assert_eq!(h.sim().cart.device(1).unwrap().state().device_name, "iPad");

        // Second station, same state folder.
        let mut second = spawn("second");
        let started = Instant::now();
        while !record(&h.station_dir).is_some_and(|r| r.outcome == Outcome::Done) {
            assert!(
                second.try_wait().unwrap().is_none(),
                "the second station exited: {}",
                std::fs::read_to_string(h.station_dir.join("second.err")).unwrap()
            );
            assert!(started.elapsed() < Duration::from_secs(60), "never done");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Stop it as systemd does (SIGTERM) and check it says so.
        Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .unwrap();
        let status = wait_at_most(&mut second, Duration::from_secs(20));
        assert!(
            status.success(),
            "a SIGTERM stops the station cleanly: {status}"
        );
        let board = std::fs::read_to_string(h.station_dir.join("second.out")).unwrap();
        assert!(board.contains("✔ DONE — UNPLUG"), "{board}");
        assert!(board.contains("“Cart A - 01”"), "{board}");
        assert!(
            board.contains("stopping: work in progress resumes"),
            "{board}"
        );
        let second_err = std::fs::read_to_string(h.station_dir.join("second.err")).unwrap();
        assert!(
            !board.contains("damaged") && !second_err.contains("damaged"),
            "the ledger survived the kill:\n{board}\n{second_err}"
        );

        // `cartprep ledger list` agrees.
        let (status, list, _) =
            cartprep(&["ledger", "list", "--state", h.station_dir.to_str().unwrap()]);
        assert!(status.success());
        let line = list.lines().find(|l| l.starts_with(&serial)).expect(&list);
        assert!(
            line.contains("Cart A - 01") && line.ends_with("done"),
            "{line}"
        );

        let records = Ledger::read_only(&h.station_dir).unwrap();
        assert_eq!(records.len(), 1, "no duplicate record");
        let r = &records[0];
        assert_eq!(r.attempts, 2);
        let first_steps: Vec<Step> = r
            .history
            .iter()
            .filter(|e| e.attempt == 1)
            .map(|e| e.step)
            .collect();
        assert!(first_steps.contains(&Step::Activated), "{first_steps:?}");
        assert!(!first_steps.contains(&Step::Done));
        assert_eq!(
            r.history.last().map(|e| (e.step, e.attempt)),
            Some((Step::Done, 2))
        );

        // The audit log shows the restart reconciling the interrupted record before work resumed.
        let audit = std::fs::read_to_string(h.station_dir.join("audit.jsonl")).unwrap();
        let events: Vec<(String, String)> = audit
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["event"].as_str().unwrap().to_owned(),
                    serde_json::to_string(&v["record"]["outcome"]).unwrap(),
                )
            })
            .collect();
        let second_attempt = events.iter().rposition(|(e, _)| e == "attempt").unwrap();
        assert_eq!(
            events[second_attempt - 1],
            ("update".to_owned(), "\"waiting\"".to_owned()),
            "{events:?}"
        );

        // And the iPad is prepared.
        let state = h.sim().cart.device(1).unwrap().state();
        assert!(state.is_supervisor(&h.our_certificate()));
        assert_eq!(state.profiles.len(), 1);
        assert_eq!(state.device_name, "Cart A - 01");
    })
    .await;
}

#[test]
fn a_full_demo_at_trace_level_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let mut child = Command::new(CARTPREP)
        .args(["demo", "--state", state.to_str().unwrap()])
        .env("CARTPREP_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .expect("cartprep demo starts");
    let status = wait_at_most(&mut child, Duration::from_secs(300));
    let stdout = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("TRACE") && stderr.contains("DEBUG"),
        "the logs really are at trace level"
    );
    let logs = format!("{stdout}\n{stderr}");

    // What must never be printed, in the forms a log might print it.
    let mut secrets: Vec<(String, String)> = Vec::new();
    let forms = |secrets: &mut Vec<(String, String)>, what: &str, bytes: &[u8]| {
        secrets.push((what.to_owned(), String::from_utf8_lossy(bytes).into_owned()));
        secrets.push((format!("{what} (hex)"), hex(bytes)));
        secrets.push((format!("{what} (byte list)"), byte_list(bytes)));
        secrets.push((format!("{what} (base64)"), base64(bytes)));
    };
    forms(&mut secrets, "the Wi-Fi password", WIFI_PASSWORD.as_bytes());
    let station = state.join("station");
    let key = std::fs::read_to_string(station.join("identity/supervision.key.pem")).unwrap();
    for (i, line) in key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .enumerate()
        .take(3)
    {
        secrets.push((
            format!("line {} of the identity key", i + 2),
            line.to_owned(),
        ));
    }
    // The Apple School Manager API account's key.
    let asm_key = std::fs::read_to_string(station.join("asm-key.pem")).unwrap();
    for (i, line) in asm_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .enumerate()
    {
        secrets.push((
            format!("line {} of the ASM API key", i + 2),
            line.to_owned(),
        ));
    }
    let mut pair_records = 0;
    for entry in std::fs::read_dir(station.join("pair-records")).unwrap() {
        let record: plist::Dictionary = plist::from_file(entry.unwrap().path()).unwrap();
        pair_records += 1;
        for name in ["HostPrivateKey", "RootPrivateKey"] {
            let pem = record.get(name).and_then(plist::Value::as_data).unwrap();
            let pem = String::from_utf8_lossy(pem);
            let line = pem.lines().nth(3).unwrap().to_owned();
            secrets.push((format!("a line of a pair record's {name}"), line));
            forms(
                &mut secrets,
                &format!("a pair record's {name} (start)"),
                &pem.as_bytes()[40..80],
            );
        }
        let bag = record
            .get("EscrowBag")
            .and_then(plist::Value::as_data)
            .unwrap();
        forms(&mut secrets, "a pair record's EscrowBag", bag);
    }
    assert!(pair_records >= 4, "the demo paired its iPads");
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} is distinctive");
        assert!(
            !logs.contains(secret.as_str()),
            "{what} appears in the logs"
        );
    }
    for word in ["PRIVATE KEY", "HostPrivateKey", "RootPrivateKey"] {
        assert!(!logs.contains(word), "{word} appears in the logs");
    }

    // The demo's ending: the summary, the CSV, and the CSV holds the prepared iPads' serials.
    assert!(
        stdout.contains(
            "demo finished: cart: 4 done · 0 working · 0 waiting · 2 attention · 0 failed"
        ),
        "{stdout}"
    );
    let csv_path = station.join("export/apple-school-manager-serials.csv");
    assert!(
        stdout.contains(&format!(
            "serial numbers for Apple School Manager: {}",
            csv_path.display()
        )),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut listed: Vec<&str> = csv.lines().collect();
    assert_eq!(listed.remove(0), "Serial Number");
    let mut done: Vec<String> = Ledger::read_only(&station)
        .unwrap()
        .into_iter()
        .filter(|r| r.outcome == Outcome::Done)
        .map(|r| r.serial)
        .collect();
    listed.sort();
    done.sort();
    assert_eq!(listed, done);
    assert_eq!(done.len(), 4);

    // Each prepared iPad went through Setup Assistant, enrolled in the simulated MDM, and was
    // recorded so when it came back.
    for r in Ledger::read_only(&station)
        .unwrap()
        .into_iter()
        .filter(|r| r.outcome == Outcome::Done)
    {
        let enrolled = "enrolled in Simulated MDM (profile “Simulated MDM enrollment”)";
        assert_eq!(r.enrollment.as_deref(), Some(enrolled), "{}", r.serial);
        assert!(
            stdout.contains(&format!("{} {}: {enrolled}", r.serial, r.name.unwrap())),
            "{stdout}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How `{:?}` prints a byte slice or Vec<u8>: `[99, 111, 114, …]`.
fn byte_list(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    // Only whole groups: the last one depends on what follows the secret.
    out.truncate(out.len() / 4 * 4);
    out
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_output_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    {
        let (ledger, _) = Ledger::open(&state).unwrap();
        for n in 0..3 {
            let record = station::DeviceRecord::new(format!("DMPX0000000{n}"), format!("udid-{n}"));
            ledger
                .save(&record, station::Event::Detected)
                .await
                .unwrap();
        }
    }
    let state = state.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["ledger", "list", "--state", state],
        &["ledger", "show", "DMPX00000001", "--state", state],
        &["ledger", "export", "--format", "jsonl", "--state", state],
        &["slots", "list", "--state", state],
        &["--help"],
    ];
    for args in cases {
        // The reading end is closed before cartprep writes a byte: every write fails, as
        // after `| head -1` has read its line.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = Command::new(CARTPREP)
            .args(args)
            .env_remove("CARTPREP_LOG")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("cartprep starts");
        let status = wait_at_most(&mut child, Duration::from_secs(30));
        let stderr =
            String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
        assert_eq!(status.code(), Some(0), "{args:?}: exit status\n{stderr}");
        assert!(
            stderr.is_empty(),
            "{args:?}: nothing on standard error:\n{stderr}"
        );
    }
}
