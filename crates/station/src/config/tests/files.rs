//! The files a config names: read once per load, made into the settings, and every problem
//! with them reported on the setting that names them, with the file.

use super::*;

/// MINIMAL with an anchor certificate and an activation CA, so it names every kind of file.
fn naming_every_file() -> String {
    MINIMAL.replace(
        "[mdm]\n",
        "[mdm]\nanchor_certificates = [\"mdm-anchor.pem\"]\n",
    ) + "\n[activation]\nserver_url = \"https://activation.example.org/\"\nextra_ca_file = \"activation-ca.pem\"\n"
}

fn write_activation_ca(f: &Fixture) {
    let pem = SupervisionIdentity::load(&f.path("identity"))
        .expect("identity")
        .certificate_pem()
        .expect("pem");
    fs::write(f.path("activation-ca.pem"), pem).expect("ca");
}

#[test]
fn the_settings_are_made_from_the_files_the_config_names() {
    let f = Fixture::new();
    write_activation_ca(&f);
    let settings = f.settings(&naming_every_file()).expect("valid");

    let identity = settings
        .identity
        .as_ref()
        .expect("manual mode has an identity");
    assert_eq!(identity.certificate_der(), identities()[0].0.as_slice());
    assert_eq!(
        settings.config.organization.identity_certificate_sha256,
        Some(crate::config::files::sha256_hex(&identities()[0].0)),
        "the fingerprint's certificate digest is of the certificate loaded"
    );

    let profile = String::from_utf8(settings.wifi.bytes.clone()).expect("XML");
    assert!(
        profile.contains("<string>School-iPads</string>"),
        "{profile}"
    );
    assert!(profile.contains(PASSWORD), "the password file's password");
    assert!(profile.contains("<string>Example School</string>"));
    assert_eq!(settings.wifi.identifier, "org.cartprep.wifi.School-iPads");
    assert_eq!(settings.wifi.description, "Wi-Fi School-iPads");

    // The PEM anchor "MIIB" is not valid base64 DER: it is kept as written.
    assert_eq!(settings.anchors.len(), 1);
    assert_eq!(
        settings.activation.base_url.as_str(),
        "https://activation.example.org/"
    );
    assert_eq!(
        settings.activation.extra_root_certificates,
        [fs::read(f.path("activation-ca.pem")).expect("ca")]
    );
    assert_eq!(settings.fingerprint, settings.config.fingerprint());
}

#[test]
fn a_mobileconfig_is_installed_as_it_is() {
    let f = Fixture::new();
    fs::write(f.path("wifi.mobileconfig"), MOBILECONFIG).expect("profile");
    let text = MINIMAL.replace(
        "ssid = \"School-iPads\"\nsecurity = \"wpa2\"\npassword_file = \"wifi-password.txt\"\n",
        "mobileconfig = \"wifi.mobileconfig\"\n",
    );
    let settings = f.settings(&text).expect("valid");
    assert_eq!(settings.wifi.bytes, MOBILECONFIG.as_bytes());
    assert_eq!(settings.wifi.identifier, "org.example.wifi");
    assert_eq!(settings.wifi.description, "School Wi-Fi");
}

#[test]
fn ade_mode_without_an_identity_has_none() {
    let f = Fixture::new();
    let text = MINIMAL
        .replace("identity = \"identity\"\n", "")
        .replace("[mdm]\n", "[mdm]\nmode = \"ade\"\n");
    let settings = f.settings(&text).expect("valid");
    assert!(settings.identity.is_none());
    assert_eq!(
        settings.config.organization.identity_certificate_sha256,
        None
    );
}

#[test]
fn a_missing_or_unreadable_password_file_is_named_with_its_setting_and_line() {
    let f = Fixture::new();
    fs::remove_file(f.path("wifi-password.txt")).expect("remove");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "wifi.password_file");
    assert_eq!(p.line, Some(11));
    assert!(p.reason.contains("wifi-password.txt"), "{}", p.reason);
    assert!(p.reason.contains("does not exist"), "{}", p.reason);

    // A folder where the file should be cannot be read as one (root reads any file, so a
    // mode-000 file would not do here).
    fs::create_dir(f.path("wifi-password.txt")).expect("folder");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "wifi.password_file");
    assert_eq!(p.line, Some(11));
    assert!(p.reason.contains("wifi-password.txt"), "{}", p.reason);
    assert!(p.reason.contains("folder"), "{}", p.reason);

    fs::remove_dir(f.path("wifi-password.txt")).expect("remove");
    fs::write(f.path("wifi-password.txt"), b"\xff\xfe password").expect("write");
    fs::set_permissions(
        f.path("wifi-password.txt"),
        <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("mode");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "wifi.password_file");
    assert!(p.reason.contains("not UTF-8"), "{}", p.reason);
}

#[test]
fn a_missing_or_broken_identity_is_named_with_its_setting_and_line() {
    let f = Fixture::new();
    fs::remove_dir_all(f.path("identity")).expect("remove");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "organization.identity");
    assert_eq!(p.line, Some(6));
    assert!(
        p.reason.contains(&*f.path("identity").to_string_lossy()),
        "{}",
        p.reason
    );

    fs::create_dir(f.path("identity")).expect("empty folder");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "organization.identity");
    assert!(p.reason.contains(IDENTITY_CERTIFICATE_FILE), "{}", p.reason);
    assert!(
        p.reason.contains("cartprep identity create"),
        "says how to make one: {}",
        p.reason
    );

    // One identity's certificate with another's key.
    f.use_identity(0);
    fs::write(
        f.path("identity").join(IDENTITY_KEY_FILE),
        &identities()[1].1,
    )
    .expect("key");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "organization.identity");
    assert_eq!(p.line, Some(6));
    assert!(p.reason.contains("does not match"), "{}", p.reason);
    assert!(p.reason.contains(IDENTITY_KEY_FILE), "{}", p.reason);
}

#[test]
fn an_invalid_mobileconfig_is_named_with_its_setting_line_and_file() {
    let f = Fixture::new();
    let text = MINIMAL.replace(
        "ssid = \"School-iPads\"\nsecurity = \"wpa2\"\npassword_file = \"wifi-password.txt\"\n",
        "mobileconfig = \"wifi.mobileconfig\"\n",
    );
    // A property list, but not a profile: no identifier, no content.
    fs::write(
        f.path("wifi.mobileconfig"),
        MOBILECONFIG.replace(
            "<key>PayloadIdentifier</key><string>org.example.wifi</string>",
            "",
        ),
    )
    .expect("profile");
    let p = only_problem(f.settings(&text));
    assert_eq!(p.field, "wifi.mobileconfig");
    assert_eq!(p.line, Some(9));
    assert!(p.reason.contains("wifi.mobileconfig"), "{}", p.reason);
    assert!(p.reason.contains("PayloadIdentifier"), "{}", p.reason);

    fs::remove_file(f.path("wifi.mobileconfig")).expect("remove");
    let p = only_problem(f.settings(&text));
    assert_eq!(p.field, "wifi.mobileconfig");
    assert!(p.reason.contains("does not exist"), "{}", p.reason);
}

#[test]
fn unknown_skip_keys_are_named_with_the_setting_and_line() {
    let f = Fixture::new();
    let text = format!("{MINIMAL}\n[setup]\nskip = [\"Siri\", \"Sirri\"]\n");
    let p = only_problem(f.settings(&text));
    assert_eq!(p.field, "setup.skip");
    assert_eq!(p.line, Some(18));
    assert!(p.reason.contains("Sirri"), "{}", p.reason);

    let known = format!("{MINIMAL}\n[setup]\nskip = [\"Siri\", \"Privacy\"]\n");
    let settings = f.settings(&known).expect("known keys");
    assert_eq!(
        settings.config.setup.skip,
        SkipPanes::Keys(vec!["Privacy".into(), "Siri".into()])
    );
}

#[test]
fn a_password_the_profile_cannot_carry_is_refused_at_load() {
    let f = Fixture::new();
    fs::write(f.path("wifi-password.txt"), "tab\there password\n").expect("write");
    let p = only_problem(f.settings(MINIMAL));
    assert_eq!(p.field, "wifi.password_file");
    assert!(p.reason.contains("control characters"), "{}", p.reason);
    assert!(
        !p.reason.contains("here"),
        "the password is not echoed: {}",
        p.reason
    );
}

/// Every file a load opens, counted with inotify (Linux): each named file once, and nothing
/// else.
#[cfg(target_os = "linux")]
#[test]
fn each_named_file_is_read_once_per_load() {
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use notify::event::AccessKind;
    use notify::{EventKind, RecursiveMode, Watcher};

    let f = Fixture::new();
    write_activation_ca(&f);
    fs::write(f.path("wifi.mobileconfig"), MOBILECONFIG).expect("profile");
    let network = naming_every_file();
    let profile = network.replace(
        "ssid = \"School-iPads\"\nsecurity = \"wpa2\"\npassword_file = \"wifi-password.txt\"\n",
        "mobileconfig = \"wifi.mobileconfig\"\n",
    );
    let sentinel = f.path("sentinel");
    fs::write(&sentinel, b"").expect("sentinel");

    for (text, named) in [
        (&network, "wifi-password.txt"),
        (&profile, "wifi.mobileconfig"),
    ] {
        let config = f.write(text);
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).expect("inotify");
        watcher
            .watch(f.dir.path(), RecursiveMode::Recursive)
            .expect("watch");

        let settings = Settings::load(&config);
        assert!(settings.is_ok(), "{:?}", settings.err());
        // inotify keeps order: once the sentinel's open is seen, every open before it is too.
        fs::read(&sentinel).expect("sentinel");
        let mut opened: BTreeMap<PathBuf, usize> = BTreeMap::new();
        let started = Instant::now();
        while !opened.contains_key(&sentinel) {
            let left = Duration::from_secs(10).saturating_sub(started.elapsed());
            let event = rx.recv_timeout(left).expect("inotify events");
            let event = event.expect("event");
            if matches!(event.kind, EventKind::Access(AccessKind::Open(_))) {
                // Folders are opened by the watcher itself as it sets up (and are no file).
                for path in event.paths.into_iter().filter(|p| !p.is_dir()) {
                    *opened.entry(path).or_default() += 1;
                }
            }
        }
        opened.remove(&sentinel);
        let expected: BTreeMap<PathBuf, usize> = [
            config.clone(),
            f.path("identity").join(IDENTITY_CERTIFICATE_FILE),
            f.path("identity").join(IDENTITY_KEY_FILE),
            f.path(named),
            f.path("mdm-anchor.pem"),
            f.path("activation-ca.pem"),
        ]
        .into_iter()
        .map(|p| (p, 1))
        .collect();
        assert_eq!(opened, expected, "files opened by one load of {named}");
    }
}

#[test]
fn a_password_file_everyone_can_read_is_refused_unless_the_config_allows_it() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let file = f.path("wifi-password.txt");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let p = only_problem(f.load(MINIMAL));
    assert_eq!((p.field.as_str(), p.line), ("wifi.password_file", Some(11)));
    assert!(p.reason.contains("chmod 600"), "{}", p.reason);
    assert!(!p.reason.contains(PASSWORD), "never the password itself");

    let allowed = MINIMAL.replace(
        "password_file = \"wifi-password.txt\"\n",
        "password_file = \"wifi-password.txt\"\nallow_readable_password_file = true\n",
    );
    f.load(&allowed).expect("the config says so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    f.load(MINIMAL).expect("its group may read it");
}
