//! Loading configurations from a folder holding the files they name.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use profiles::SupervisionIdentity;

use super::*;
use crate::settings::Settings;

mod checks;
mod files;
mod messages;
mod web;

const PASSWORD: &str = "correct horse battery staple";

/// A small valid config; tests edit it with `replace`.
const MINIMAL: &str = r#"
state_dir = "state"

[organization]
name = "Example School"
identity = "identity"

[wifi]
ssid = "School-iPads"
security = "wpa2"
password_file = "wifi-password.txt"

[mdm]
name = "Example MDM"
enrollment_url = "https://mdm.example.org/enroll"
"#;

/// A configuration profile with what `profiles::wifi::parse_mobileconfig` requires.
const MOBILECONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadIdentifier</key><string>org.example.wifi</string>
<key>PayloadUUID</key><string>6E1D3C52-4D0A-4C57-9F35-0F2B5C1E7A11</string>
<key>PayloadDisplayName</key><string>School Wi-Fi</string>
<key>PayloadContent</key><array/>
</dict></plist>"#;

/// Two supervision identities (certificate DER, key PEM), made once for all tests: key
/// generation is the slow part.
fn identities() -> &'static [(Vec<u8>, Vec<u8>); 2] {
    static IDENTITIES: OnceLock<[(Vec<u8>, Vec<u8>); 2]> = OnceLock::new();
    IDENTITIES.get_or_init(|| {
        let make = |org: &str| {
            let dir = tempfile::tempdir().expect("temp dir");
            SupervisionIdentity::create(org)
                .expect("identity")
                .save(dir.path())
                .expect("save");
            (
                fs::read(dir.path().join(IDENTITY_CERTIFICATE_FILE)).expect("cert"),
                fs::read(dir.path().join(IDENTITY_KEY_FILE)).expect("key"),
            )
        };
        [make("Example School"), make("Another School")]
    })
}

/// A folder holding the files a config names: an identity, a password file, an MDM anchor.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = Fixture { dir };
        f.use_identity(0);
        fs::write(f.path("wifi-password.txt"), format!("{PASSWORD}\n")).expect("password");
        // As the README installs it: only root reads the password.
        fs::set_permissions(
            f.path("wifi-password.txt"),
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .expect("password mode");
        fs::write(
            f.path("mdm-anchor.pem"),
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("anchor");
        f
    }

    /// Puts identity `which` (0 or 1) in the `identity` folder.
    fn use_identity(&self, which: usize) {
        let dir = self.path("identity");
        fs::create_dir_all(&dir).expect("identity dir");
        let (cert, key) = &identities()[which];
        fs::write(dir.join(IDENTITY_CERTIFICATE_FILE), cert).expect("cert");
        fs::write(dir.join(IDENTITY_KEY_FILE), key).expect("key");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` as station.toml in the fixture folder; returns its path.
    fn write(&self, text: &str) -> PathBuf {
        let path = self.path("station.toml");
        fs::write(&path, text).expect("write config");
        path
    }

    /// Writes `text` as station.toml in the fixture folder and loads it.
    fn settings(&self, text: &str) -> Result<Settings, ConfigError> {
        Settings::load(&self.write(text))
    }

    /// The checked configuration of [`Fixture::settings`].
    fn load(&self, text: &str) -> Result<StationConfig, ConfigError> {
        self.settings(text).map(|s| Arc::unwrap_or_clone(s.config))
    }
}

fn problem_fields<T>(result: Result<T, ConfigError>) -> Vec<String> {
    match result {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => e.fields().into_iter().map(str::to_owned).collect(),
    }
}

fn only_problem<T>(result: Result<T, ConfigError>) -> Problem {
    match result {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => match e.problems() {
            [one] => one.clone(),
            many => panic!("expected one problem, got {many:?}"),
        },
    }
}

/// The config in `config/station.example.toml`.
fn example_text() -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/station.example.toml"),
    )
    .expect("config/station.example.toml")
}
