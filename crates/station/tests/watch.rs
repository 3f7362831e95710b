//! Editing the config file while the daemon runs: a valid edit is picked up and its settings
//! published (made from the files, ready for the next iPad), an invalid one is refused and the
//! previous settings stay in force.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use station::config::Wifi;
use station::{ConfigWatcher, Settings};

/// Longest wait for the watcher to react; it normally takes well under a second.
const PATIENCE: Duration = Duration::from_secs(10);

/// ADE mode on an open network: a valid config that names no other file.
fn config_text(ssid: &str, enrollment_url: &str) -> String {
    format!(
        "[organization]\nname = \"Example School\"\n\n\
         [wifi]\nssid = \"{ssid}\"\nsecurity = \"none\"\n\n\
         [mdm]\nname = \"Example MDM\"\nenrollment_url = \"{enrollment_url}\"\nmode = \"ade\"\n"
    )
}

/// Saves the way editors do: a new file renamed over the old one, so no half-written file is
/// ever read.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

fn ssid(settings: &Settings) -> &str {
    match &settings.config.wifi {
        Wifi::Network(n) => &n.ssid,
        other => panic!("expected a network, got {other:?}"),
    }
}

fn start(dir: &Path) -> (PathBuf, ConfigWatcher) {
    let path = dir.join("station.toml");
    fs::write(
        &path,
        config_text("First", "https://mdm.example.org/enroll"),
    )
    .expect("write");
    let settings = Settings::load(&path).unwrap_or_else(|e| panic!("valid: {e}"));
    let watcher = ConfigWatcher::start(settings).expect("watch");
    (path, watcher)
}

#[tokio::test]
async fn a_valid_edit_is_picked_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, watcher) = start(dir.path());
    let mut rx = watcher.subscribe();
    assert_eq!(ssid(&watcher.current()), "First");

    save(
        &path,
        &config_text("Second", "https://mdm.example.org/enroll"),
    );
    tokio::time::timeout(PATIENCE, rx.changed())
        .await
        .expect("the edit was not picked up in time")
        .expect("watcher alive");
    let published = rx.borrow_and_update().clone();
    assert_eq!(ssid(&published), "Second");
    let profile = String::from_utf8(published.wifi.bytes.clone()).expect("XML");
    assert!(
        profile.contains("<string>Second</string>"),
        "the published settings carry the new network's profile: {profile}"
    );
    assert_eq!(published.wifi.description, "Wi-Fi Second");
    assert_eq!(published.fingerprint, published.config.fingerprint());
    assert_eq!(ssid(&watcher.current()), "Second");
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_the_old_config_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, watcher) = start(dir.path());
    let mut refused = watcher.refused();
    let rx = watcher.subscribe();

    save(
        &path,
        &config_text("Second", "http://mdm.example.org/enroll"),
    );
    tokio::time::timeout(PATIENCE, refused.wait_for(Option::is_some))
        .await
        .expect("the invalid edit was not noticed in time")
        .expect("watcher alive");
    let error = refused.borrow().clone().expect("refusal");
    assert_eq!(error.fields(), ["mdm.enrollment_url"]);
    assert!(
        !rx.has_changed().expect("watcher alive"),
        "nothing new was published"
    );
    assert_eq!(
        ssid(&watcher.current()),
        "First",
        "the previous settings stay in force"
    );

    // Fixing the file is picked up and clears the refusal.
    save(
        &path,
        &config_text("Third", "https://mdm.example.org/enroll"),
    );
    let mut rx = rx;
    tokio::time::timeout(PATIENCE, rx.wait_for(|c| ssid(c) == "Third"))
        .await
        .expect("the fix was not picked up in time")
        .expect("watcher alive");
    tokio::time::timeout(PATIENCE, refused.wait_for(Option::is_none))
        .await
        .expect("the refusal was not cleared in time")
        .expect("watcher alive");
    assert_eq!(ssid(&watcher.current()), "Third");
}

#[tokio::test]
async fn an_edit_naming_a_file_that_cannot_be_read_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, watcher) = start(dir.path());
    let mut refused = watcher.refused();
    let rx = watcher.subscribe();

    // The settings are made when the file is loaded: a password file that is not there is a
    // refusal now, not a failure when the daemon takes the settings in.
    let secured = config_text("Second", "https://mdm.example.org/enroll").replace(
        "security = \"none\"",
        "security = \"wpa2\"\npassword_file = \"missing-password.txt\"",
    );
    save(&path, &secured);
    tokio::time::timeout(PATIENCE, refused.wait_for(Option::is_some))
        .await
        .expect("the invalid edit was not noticed in time")
        .expect("watcher alive");
    let error = refused.borrow().clone().expect("refusal");
    assert_eq!(error.fields(), ["wifi.password_file"]);
    assert_eq!(error.problems()[0].line, Some(7));
    assert!(
        error.to_string().contains("missing-password.txt"),
        "{error}"
    );
    assert!(!rx.has_changed().expect("watcher alive"));
    assert_eq!(ssid(&watcher.current()), "First");
}
