//! Logging at trace level into the config file's own folder must not feed the config watcher:
//! the file-watching library describes every change in the folder at trace level, so each log
//! line written there made another (100% CPU, megabytes a second). `cartprep run -vvv` with its
//! log beside station.toml must go quiet when nothing happens.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");

const CONFIG: &str = "[organization]\nname = \"Example School\"\n\n\
     [wifi]\nssid = \"First\"\nsecurity = \"none\"\n\n\
     [mdm]\nname = \"Example MDM\"\nenrollment_url = \"https://mdm.example.org/enroll\"\nmode = \"ade\"\n";

/// A few lines a second at most (the wait for usbmuxd retries with backoff); the loop this
/// guards against wrote megabytes a second.
const QUIET_BYTES: u64 = 16 * 1024;

#[test]
fn a_trace_level_log_beside_the_config_does_not_feed_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("station.toml");
    fs::write(&config, CONFIG).expect("config");
    let log_path = dir.path().join("cartprep.log");
    let log = fs::File::create(&log_path).expect("log file");
    let mut station = Command::new(CARTPREP)
        .args(["run", "--lines", "-vvv", "--config"])
        .arg(&config)
        .arg("--state")
        .arg(dir.path().join("state"))
        .env("USBMUXD_SOCKET_ADDRESS", dir.path().join("no-usbmuxd"))
        .env_remove("CARTPREP_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cartprep run starts");

    std::thread::sleep(Duration::from_secs(2));
    // Something else changes in the folder, as a log line does.
    fs::write(dir.path().join("notes.txt"), "unrelated").expect("write");
    std::thread::sleep(Duration::from_millis(500));
    let settled = fs::metadata(&log_path).expect("log").len();
    std::thread::sleep(Duration::from_secs(2));
    let later = fs::metadata(&log_path).expect("log").len();
    let still_running = station.try_wait().expect("wait").is_none();
    let _ = station.kill();
    let _ = station.wait();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(still_running, "the station exited early; its log:\n{text}");
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "-vvv logs at trace level:\n{text}"
    );
    assert!(
        later - settled < QUIET_BYTES,
        "the log grew by {} bytes in 2 s with nothing happening; its end:\n{}",
        later - settled,
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}
