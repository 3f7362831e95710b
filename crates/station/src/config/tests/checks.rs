//! The checks of each setting: what is accepted, and what is refused naming the setting, its
//! line and why.

use super::*;

#[test]
fn the_documented_example_is_a_valid_config() {
    let f = Fixture::new();
    let text = example_text();
    let config = f
        .load(&text)
        .unwrap_or_else(|e| panic!("the example must validate: {e}"));

    assert_eq!(config.organization.name, "Example Primary School");
    assert_eq!(
        config.organization.identity.as_deref(),
        Some(f.path("identity").as_path())
    );
    assert_eq!(config.mdm.mode, MdmMode::Manual);
    assert_eq!(config.max_concurrent, 1);
    assert_eq!(config.setup.skip, SkipPanes::All);
    assert_eq!(config.slots.get("1-1.2").map(String::as_str), Some("2"));
    match &config.wifi {
        Wifi::Network(n) => {
            assert_eq!(
                n.password.as_ref().map(Secret::expose),
                Some(PASSWORD),
                "read from the file, newline dropped"
            );
            assert!(n.auto_join);
        }
        other => panic!("expected a network, got {other:?}"),
    }
    let name = config
        .naming
        .as_ref()
        .expect("naming")
        .template
        .render(&NameVars {
            serial: "DMPXX0000001",
            slot: Some("2"),
            n: 7,
            model: "iPad (9th generation)",
        });
    assert_eq!(name, "Cart A - 07");
}

#[test]
fn debug_output_never_contains_the_wifi_password() {
    let f = Fixture::new();
    let from_file = f.load(MINIMAL).expect("valid");
    let inline = f
        .load(&MINIMAL.replace(
            "password_file = \"wifi-password.txt\"",
            &format!("password = \"{PASSWORD}\""),
        ))
        .expect("valid");
    for config in [from_file, inline] {
        let debug = format!("{config:?}");
        assert!(!debug.contains(PASSWORD), "password leaked: {debug}");
        assert!(
            !debug.contains("horse"),
            "part of the password leaked: {debug}"
        );
        assert!(
            debug.contains("***"),
            "the password's place shows ***: {debug}"
        );
    }
    assert_eq!(Secret::new(PASSWORD).to_string(), "***");
}

#[test]
fn a_plain_http_enrollment_url_is_refused_naming_the_field_and_the_file() {
    let f = Fixture::new();
    let err = f
        .load(&MINIMAL.replace("https://mdm.example.org", "http://mdm.example.org"))
        .expect_err("refused");
    assert_eq!(err.fields(), ["mdm.enrollment_url"]);
    assert_eq!(err.problems()[0].line, Some(15), "the line of the setting");
    let message = err.to_string();
    assert!(message.contains("station.toml"), "{message}");
    assert!(message.contains("mdm.enrollment_url"), "{message}");
    assert!(message.contains("https://"), "{message}");
}

#[test]
fn activation_server_must_be_https_too() {
    let f = Fixture::new();
    let text = format!("{MINIMAL}\n[activation]\nserver_url = \"ftp://albert.example\"\n");
    assert_eq!(problem_fields(f.load(&text)), ["activation.server_url"]);
}

#[test]
fn a_misspelt_setting_is_named_with_its_section() {
    let f = Fixture::new();
    let p = only_problem(f.load(&MINIMAL.replace("ssid = ", "sid = ")));
    assert_eq!(p.field, "wifi.sid");
    assert!(
        p.reason.contains("ssid"),
        "lists the known settings: {}",
        p.reason
    );
    assert_eq!(p.line, Some(9));
}

#[test]
fn a_missing_required_setting_is_named() {
    let f = Fixture::new();
    let p = only_problem(
        f.load(&MINIMAL.replace("enrollment_url = \"https://mdm.example.org/enroll\"\n", "")),
    );
    assert_eq!(p.field, "mdm.enrollment_url");
    assert_eq!(p.reason, "is missing");
}

#[test]
fn a_value_of_the_wrong_kind_is_named() {
    let f = Fixture::new();
    let p = only_problem(f.load(&format!("max_concurrent = \"two\"\n{MINIMAL}")));
    assert_eq!(p.field, "max_concurrent");
    assert_eq!(p.line, Some(1));

    let p = only_problem(f.load(&MINIMAL.replace("security = \"wpa2\"", "security = \"wpa4\"")));
    assert_eq!(p.field, "wifi.security");
    assert!(p.reason.contains("wpa3"), "{}", p.reason);
}

#[test]
fn max_concurrent_is_one_by_default_and_bounded() {
    let f = Fixture::new();
    assert_eq!(f.load(MINIMAL).expect("valid").max_concurrent, 1);
    assert_eq!(
        f.load(&format!("max_concurrent = 64\n{MINIMAL}"))
            .expect("valid")
            .max_concurrent,
        64
    );
    for bad in ["0", "65", "-1"] {
        assert_eq!(
            problem_fields(f.load(&format!("max_concurrent = {bad}\n{MINIMAL}"))),
            ["max_concurrent"],
            "{bad}"
        );
    }
    let p = only_problem(f.load(&format!("max_concurrent = 65\n{MINIMAL}")));
    assert!(p.reason.contains("between 1 and 64"), "{}", p.reason);
}

#[test]
fn the_board_forgets_unplugged_ipads_after_ten_minutes_unless_told_otherwise() {
    let f = Fixture::new();
    let minutes = |text: &str| f.load(text).expect("valid").board.forget_after.as_secs() / 60;
    assert_eq!(minutes(MINIMAL), 10);
    assert_eq!(
        minutes(&format!("{MINIMAL}\n[board]\nforget_after_minutes = 0\n")),
        0
    );
    assert_eq!(
        minutes(&format!(
            "{MINIMAL}\n[board]\nforget_after_minutes = 1440\n"
        )),
        1440
    );
    for bad in ["-1", "1441"] {
        let p = only_problem(f.load(&format!(
            "{MINIMAL}\n[board]\nforget_after_minutes = {bad}\n"
        )));
        assert_eq!(p.field, "board.forget_after_minutes");
        assert!(p.reason.contains("between 0 and 1440"), "{}", p.reason);
    }
}

#[test]
fn a_secured_network_needs_a_password_and_an_open_one_refuses_it() {
    let f = Fixture::new();
    let no_password = MINIMAL.replace("password_file = \"wifi-password.txt\"\n", "");
    assert_eq!(problem_fields(f.load(&no_password)), ["wifi.password"]);

    let open_with_password = MINIMAL.replace("security = \"wpa2\"", "security = \"none\"");
    assert_eq!(
        problem_fields(f.load(&open_with_password)),
        ["wifi.password_file"]
    );

    let open = no_password.replace("security = \"wpa2\"", "security = \"none\"");
    f.load(&open).expect("an open network needs no password");

    let short = MINIMAL.replace(
        "password_file = \"wifi-password.txt\"",
        "password = \"short\"",
    );
    let p = only_problem(f.load(&short));
    assert_eq!(p.field, "wifi.password");
    assert!(p.reason.contains("8 to 63"), "{}", p.reason);
    assert!(
        !p.reason.contains("short"),
        "the password itself is not echoed: {}",
        p.reason
    );
}

#[test]
fn files_the_config_names_must_exist() {
    let f = Fixture::new();
    fs::remove_file(f.path("wifi-password.txt")).expect("remove");
    let p = only_problem(f.load(MINIMAL));
    assert_eq!(p.field, "wifi.password_file");
    assert!(p.reason.contains("does not exist"), "{}", p.reason);
    assert!(p.reason.contains("wifi-password.txt"), "{}", p.reason);

    let f = Fixture::new();
    let text = MINIMAL.replace(
        "[mdm]\n",
        "[mdm]\nanchor_certificates = [\"mdm-anchor.pem\", \"missing.pem\"]\n",
    );
    assert_eq!(
        problem_fields(f.load(&text)),
        ["mdm.anchor_certificates[1]"]
    );
}

#[test]
fn manual_mode_needs_a_supervision_identity_and_ade_mode_does_not() {
    let f = Fixture::new();
    let without = MINIMAL.replace("identity = \"identity\"\n", "");
    assert_eq!(problem_fields(f.load(&without)), ["organization.identity"]);
    let ade = without.replace("[mdm]\n", "[mdm]\nmode = \"ade\"\n");
    assert_eq!(f.load(&ade).expect("valid").mdm.mode, MdmMode::Ade);

    fs::remove_file(f.path("identity").join(IDENTITY_CERTIFICATE_FILE)).expect("remove");
    let p = only_problem(f.load(MINIMAL));
    assert_eq!(p.field, "organization.identity");
    assert!(p.reason.contains(IDENTITY_CERTIFICATE_FILE), "{}", p.reason);
}

#[test]
fn naming_templates_accept_known_placeholders_only() {
    let t = NameTemplate::parse("{model} {slot}/{n:03} {serial} {{x}}").expect("valid");
    let vars = NameVars {
        serial: "SER1",
        slot: None,
        n: 5,
        model: "iPad",
    };
    assert_eq!(t.render(&vars), "iPad /005 SER1 {x}");
    assert!(t.uses_slot());

    for (bad, hint) in [
        ("Cart {nn}", "unknown placeholder {nn}"),
        ("Cart {n", "not closed"),
        ("Cart }", "no {"),
        ("{n:x}", "width"),
        ("", "empty"),
    ] {
        let reason = NameTemplate::parse(bad).expect_err(bad).to_string();
        assert!(reason.contains(hint), "{bad:?}: {reason}");
    }

    let f = Fixture::new();
    let text = format!("{MINIMAL}\n[naming]\ntemplate = \"Cart {{seriall}}\"\n");
    let p = only_problem(f.load(&text));
    assert_eq!(p.field, "naming.template");
    assert!(
        p.reason.contains("{serial}"),
        "suggests the known ones: {}",
        p.reason
    );
}

#[test]
fn a_mobileconfig_replaces_the_network_settings() {
    let f = Fixture::new();
    fs::write(f.path("wifi.mobileconfig"), MOBILECONFIG).expect("profile");
    let only_profile = MINIMAL.replace(
        "ssid = \"School-iPads\"\nsecurity = \"wpa2\"\npassword_file = \"wifi-password.txt\"\n",
        "mobileconfig = \"wifi.mobileconfig\"\n",
    );
    match f.load(&only_profile).expect("valid").wifi {
        Wifi::Mobileconfig { path, sha256 } => {
            assert_eq!(path, f.path("wifi.mobileconfig"));
            assert_eq!(sha256.len(), 64);
        }
        other => panic!("expected a profile, got {other:?}"),
    }

    let both = MINIMAL.replace("[wifi]\n", "[wifi]\nmobileconfig = \"wifi.mobileconfig\"\n");
    assert_eq!(
        problem_fields(f.load(&both)),
        ["wifi.ssid", "wifi.security", "wifi.password_file"]
    );

    fs::write(f.path("wifi.mobileconfig"), "not a profile").expect("profile");
    assert_eq!(problem_fields(f.load(&only_profile)), ["wifi.mobileconfig"]);
}

#[test]
fn a_mobileconfig_nested_ten_thousand_levels_is_a_problem_not_a_crash() {
    use usbmux::test_support::{Format, dict_with_deep_array};
    let f = Fixture::new();
    let only_profile = MINIMAL.replace(
        "ssid = \"School-iPads\"\nsecurity = \"wpa2\"\npassword_file = \"wifi-password.txt\"\n",
        "mobileconfig = \"wifi.mobileconfig\"\n",
    );
    for format in [Format::Binary, Format::Xml] {
        let profile = dict_with_deep_array(format, &[("PayloadType", "Configuration")], 10_000);
        fs::write(f.path("wifi.mobileconfig"), profile).expect("profile");
        let p = only_problem(f.load(&only_profile));
        assert_eq!(p.field, "wifi.mobileconfig", "{format:?}");
        assert!(
            p.reason.contains("nests deeper"),
            "{format:?}: {}",
            p.reason
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let f = Fixture::new();
    let text = MINIMAL
        .replace("https://mdm.example.org", "http://mdm.example.org")
        .replace("password_file = \"wifi-password.txt\"\n", "")
        .replace("name = \"Example School\"", "name = \"\"");
    let err = f.load(&text).expect_err("refused");
    assert_eq!(
        err.fields(),
        ["organization.name", "wifi.password", "mdm.enrollment_url"],
        "in file order"
    );
    assert!(err.to_string().contains("has 3 problems"), "{err}");
}

#[test]
fn an_erase_policy_of_rules_needs_a_rule() {
    let f = Fixture::new();
    let text = format!("{MINIMAL}\n[erase]\npolicy = \"rules\"\n");
    assert_eq!(problem_fields(f.load(&text)), ["erase.policy"]);

    let text =
        format!("{MINIMAL}\n[erase]\npolicy = \"rules\"\nallow_serials = [\"dmpaaaaaaaa1\"]\n");
    let erase = f.load(&text).expect("valid").erase;
    assert!(erase.allows("DMPAAAAAAAA1", false).is_some());
    assert!(
        erase.allows("DMPBBBBBBBB2", true).is_none(),
        "supervised-by-us is not a rule here"
    );

    let never = f.load(MINIMAL).expect("valid").erase;
    assert_eq!(never.mode, EraseMode::Never);
    assert!(never.allows("DMPAAAAAAAA1", true).is_none());
}

#[test]
fn relative_paths_are_relative_to_the_config_folder() {
    let f = Fixture::new();
    let config = f.load(MINIMAL).expect("valid");
    assert_eq!(config.state_dir, f.path("state"));
    match &config.wifi {
        Wifi::Network(n) => assert_eq!(
            n.password_file.as_deref(),
            Some(f.path("wifi-password.txt").as_path())
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_fingerprint_follows_what_the_ipad_gets_and_nothing_else() {
    let f = Fixture::new();
    let base = f.load(MINIMAL).expect("valid").fingerprint();
    assert_eq!(base.len(), 64);
    assert_eq!(
        f.load(MINIMAL).expect("valid").fingerprint(),
        base,
        "stable across loads"
    );

    let unrelated = f
        .load(&format!(
            "max_concurrent = 4\nusbmuxd = \"127.0.0.1:27015\"\n{MINIMAL}"
        ))
        .expect("valid");
    assert_eq!(
        unrelated.fingerprint(),
        base,
        "concurrency and usbmuxd do not change the iPad"
    );

    fs::write(f.path("wifi-password.txt"), "another password\n").expect("write");
    assert_ne!(
        f.load(MINIMAL).expect("valid").fingerprint(),
        base,
        "a new Wi-Fi password does"
    );
    fs::write(f.path("wifi-password.txt"), format!("{PASSWORD}\n")).expect("write");

    let other_url = MINIMAL.replace("/enroll", "/enroll2");
    assert_ne!(f.load(&other_url).expect("valid").fingerprint(), base);

    f.use_identity(1);
    assert_ne!(
        f.load(MINIMAL).expect("valid").fingerprint(),
        base,
        "another supervision certificate does"
    );
}

#[test]
fn usbmuxd_takes_a_path_or_host_and_port() {
    let f = Fixture::new();
    for ok in [
        "/var/run/usbmuxd",
        "UNIX:/tmp/sock",
        "127.0.0.1:27015",
        "[::1]:27015",
    ] {
        assert_eq!(
            f.load(&format!("usbmuxd = \"{ok}\"\n{MINIMAL}"))
                .expect(ok)
                .usbmuxd,
            ok
        );
    }
    assert_eq!(
        problem_fields(f.load(&format!("usbmuxd = \"localhost:x\"\n{MINIMAL}"))),
        ["usbmuxd"]
    );
}

#[test]
fn a_toml_syntax_error_gives_the_line() {
    let f = Fixture::new();
    let p =
        only_problem(f.load(&MINIMAL.replace("name = \"Example MDM\"", "name = \"Example MDM")));
    assert_eq!(p.line, Some(14));
}

#[test]
fn an_unreadable_config_file_is_a_read_error_naming_it() {
    let missing = Path::new("/nonexistent/cartprep/station.toml");
    let err = Settings::load(missing).err().expect("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .contains("/nonexistent/cartprep/station.toml"),
        "{err}"
    );
}

#[test]
fn changed_sections_name_what_an_edit_touched() {
    let f = Fixture::new();
    let a = f.load(MINIMAL).expect("valid");
    let b = f
        .load(&MINIMAL.replace("School-iPads", "School-iPads-2"))
        .expect("valid");
    assert_eq!(b.changed_sections(&a), ["wifi"]);
    assert!(a.changed_sections(&a).is_empty());
}

#[test]
fn a_time_zone_must_be_an_iana_name_written_as_the_ipad_expects() {
    let f = Fixture::new();
    let with = |tz: &str| format!("{MINIMAL}\n[setup]\ntime_zone = \"{tz}\"\n");
    let p = only_problem(f.load(&with("Europe/Londn")));
    assert_eq!((p.field.as_str(), p.line), ("setup.time_zone", Some(18)));
    assert!(p.reason.contains("IANA"), "{}", p.reason);
    let p = only_problem(f.load(&with("europe/london")));
    assert!(p.reason.contains("\"Europe/London\""), "{}", p.reason);
    let setup = f.load(&with("Europe/London")).expect("valid").setup;
    assert_eq!(setup.time_zone.as_deref(), Some("Europe/London"));
}

#[test]
fn erase_rules_with_policy_never_are_refused_as_misleading() {
    let f = Fixture::new();
    let text =
        format!("{MINIMAL}\n[erase]\npolicy = \"never\"\nallow_serials = [\"DMPAAAAAAAA1\"]\n");
    let p = only_problem(f.load(&text));
    assert_eq!(
        (p.field.as_str(), p.line),
        ("erase.allow_serials", Some(19))
    );
    assert!(p.reason.contains("policy = \"rules\""), "{}", p.reason);
    // No policy means "never" too.
    let text = format!("{MINIMAL}\n[erase]\nallow_supervised_by_us = true\n");
    assert_eq!(
        problem_fields(f.load(&text)),
        ["erase.allow_supervised_by_us"]
    );
    let text = format!("{MINIMAL}\n[erase]\npolicy = \"never\"\nallow_serials = []\n");
    f.load(&text).expect("an empty list says nothing");
}

#[test]
fn a_duplicate_key_is_named_with_its_line() {
    let f = Fixture::new();
    let text = format!("{MINIMAL}max_concurrent = 2\n").replace(
        "ssid = \"School-iPads\"\n",
        "ssid = \"School-iPads\"\nssid = \"Other\"\n",
    );
    let p = only_problem(f.load(&text));
    assert_eq!((p.field.as_str(), p.line), ("wifi.ssid", Some(10)), "{p}");
    assert!(p.reason.contains("duplicate"), "{p}");
}

#[test]
fn a_file_that_is_not_utf8_is_named_with_the_line_and_setting() {
    let f = Fixture::new();
    let mut bytes = MINIMAL.replace("Example MDM", "Exampl\u{1}").into_bytes();
    let at = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[at] = 0xff;
    let path = f.path("station.toml");
    fs::write(&path, &bytes).unwrap();
    let err = Settings::load(&path).err().expect("refused");
    let p = &err.problems()[0];
    assert_eq!((p.field.as_str(), p.line), ("mdm.name", Some(14)), "{p}");
    assert!(err.to_string().contains("station.toml"), "{err}");
}

#[test]
fn transcripts_are_off_unless_debug_names_a_folder_relative_to_the_config() {
    let f = Fixture::new();
    assert_eq!(f.load(MINIMAL).expect("valid").transcript, None);
    let on = f
        .load(&format!(
            "{MINIMAL}\n[debug]\ntranscript = \"transcripts\"\n"
        ))
        .expect("valid");
    assert_eq!(on.transcript, Some(f.path("transcripts")));
    let p = only_problem(f.load(&format!("{MINIMAL}\n[debug]\ntranscripts = \"t\"\n")));
    assert_eq!(p.field, "debug.transcripts");
}
