//! Issue 10: every message the loader gives names the file, the line and the dotted setting,
//! whatever kind of problem it is. One case per kind of problem; each loads a config in a
//! fresh folder and reads the message a person would see.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// Replaced by a byte that is not UTF-8 when the config is written.
const BAD_BYTE: &str = "<0xFF>";

/// An `[asm]` section whose key file the case writes (see [`Case::asm_key`]).
const ASM: &str = "\n[asm]\nclient_id = \"SCHOOLAPI.x\"\nkey_id = \"k\"\nprivate_key_file = \"asm-key.pem\"\nmdm_server = \"Mosyle\"\n";

struct Case {
    what: &'static str,
    /// MINIMAL with this text replaced by the second (the first must occur in MINIMAL).
    replace: (&'static str, &'static str),
    /// Appended after MINIMAL (new sections).
    append: &'static str,
    /// The dotted setting the message must name.
    field: &'static str,
    /// Text on the line the message must give (the first line holding it).
    line_holding: &'static str,
    /// Files the case needs besides the fixture's: (name, contents, mode).
    files: &'static [(&'static str, &'static str, u32)],
}

const NO_FILES: &[(&str, &str, u32)] = &[];
const PW_LINE: &str = "password_file = \"wifi-password.txt\"";

fn case(
    what: &'static str,
    replace: (&'static str, &'static str),
    field: &'static str,
    line_holding: &'static str,
) -> Case {
    Case {
        what,
        replace,
        append: "",
        field,
        line_holding,
        files: NO_FILES,
    }
}

fn appended(
    what: &'static str,
    append: &'static str,
    field: &'static str,
    line_holding: &'static str,
) -> Case {
    Case {
        what,
        replace: ("", ""),
        append,
        field,
        line_holding,
        files: NO_FILES,
    }
}

fn with_files(mut c: Case, files: &'static [(&'static str, &'static str, u32)]) -> Case {
    c.files = files;
    c
}

fn cases() -> Vec<Case> {
    let top = "state_dir = \"state\"";
    let ssid = "ssid = \"School-iPads\"";
    vec![
        // The file as TOML.
        case(
            "wrong type",
            (top, "state_dir = \"state\"\nmax_concurrent = \"two\""),
            "max_concurrent",
            "max_concurrent",
        ),
        case(
            "wrong type in a table",
            (ssid, "ssid = \"School-iPads\"\nhidden = \"yes\""),
            "wifi.hidden",
            "hidden",
        ),
        case(
            "unknown key",
            (top, "state_dir = \"state\"\ncolour = \"red\""),
            "colour",
            "colour",
        ),
        case(
            "unknown key in a table",
            (ssid, "ssid = \"School-iPads\"\ncolour = \"red\""),
            "wifi.colour",
            "colour",
        ),
        case(
            "unknown choice",
            ("security = \"wpa2\"", "security = \"wpa9\""),
            "wifi.security",
            "wpa9",
        ),
        case(
            "missing setting",
            ("name = \"Example MDM\"\n", ""),
            "mdm.name",
            "[mdm]",
        ),
        case(
            "duplicate key",
            (ssid, "ssid = \"School-iPads\"\nssid = \"Other\""),
            "wifi.ssid",
            "Other",
        ),
        case(
            "not UTF-8",
            (
                "name = \"Example School\"",
                "name = \"Example School\"\ndepartment = \"Sch<0xFF>ol\"",
            ),
            "organization.department",
            "department",
        ),
        // [organization]
        case(
            "syntax error",
            (ssid, "ssid = \"School-iPads"),
            "wifi.ssid",
            "ssid",
        ),
        // A section that is not there at all is reported at the top of the file.
        case(
            "missing section",
            (
                "[mdm]\nname = \"Example MDM\"\nenrollment_url = \"https://mdm.example.org/enroll\"\n",
                "",
            ),
            "mdm",
            "",
        ),
        case(
            "empty organization",
            ("name = \"Example School\"", "name = \" \""),
            "organization.name",
            "name = \" \"",
        ),
        case(
            "identity folder missing",
            ("identity = \"identity\"", "identity = \"nowhere\""),
            "organization.identity",
            "nowhere",
        ),
        with_files(
            case(
                "identity unreadable",
                ("identity = \"identity\"", "identity = \"bad-identity\""),
                "organization.identity",
                "bad-identity",
            ),
            &[
                ("bad-identity/", "", 0o700),
                ("bad-identity/supervision.crt.der", "junk", 0o600),
                ("bad-identity/supervision.key.pem", "junk", 0o600),
            ],
        ),
        // [wifi]
        case(
            "SSID too long",
            (ssid, "ssid = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""),
            "wifi.ssid",
            "aaaa",
        ),
        case(
            "password file missing",
            (PW_LINE, "password_file = \"nowhere.txt\""),
            "wifi.password_file",
            "nowhere",
        ),
        with_files(
            case(
                "password file readable by others",
                (PW_LINE, "password_file = \"open.txt\""),
                "wifi.password_file",
                "open.txt",
            ),
            &[("open.txt", "correct horse battery staple\n", 0o644)],
        ),
        with_files(
            case(
                "password file unreadable (a folder)",
                (PW_LINE, "password_file = \"pw-folder\""),
                "wifi.password_file",
                "pw-folder",
            ),
            &[("pw-folder/", "", 0o700)],
        ),
        with_files(
            case(
                "password file not UTF-8",
                (PW_LINE, "password_file = \"latin1.txt\""),
                "wifi.password_file",
                "latin1.txt",
            ),
            &[("latin1.txt", "<0xFF>", 0o600)],
        ),
        case(
            "password too short",
            (PW_LINE, "password = \"short\""),
            "wifi.password",
            "short",
        ),
        case(
            "password on an open network",
            ("security = \"wpa2\"", "security = \"none\""),
            "wifi.password_file",
            PW_LINE,
        ),
        case(
            "mobileconfig missing",
            (ssid, "mobileconfig = \"nowhere.mobileconfig\""),
            "wifi.mobileconfig",
            "nowhere",
        ),
        // [mdm]
        case(
            "empty MDM name",
            ("name = \"Example MDM\"", "name = \"\""),
            "mdm.name",
            "name = \"\"",
        ),
        case(
            "enrollment URL not https",
            (
                "https://mdm.example.org/enroll",
                "http://mdm.example.org/enroll",
            ),
            "mdm.enrollment_url",
            "http://",
        ),
        case(
            "anchor missing",
            (
                "enrollment_url = \"https://mdm.example.org/enroll\"",
                "enrollment_url = \"https://mdm.example.org/enroll\"\nanchor_certificates = [\"mdm-anchor.pem\",\n  \"nowhere.pem\"]",
            ),
            "mdm.anchor_certificates[1]",
            "nowhere.pem",
        ),
        case(
            "anchor not a certificate",
            (
                "enrollment_url = \"https://mdm.example.org/enroll\"",
                "enrollment_url = \"https://mdm.example.org/enroll\"\nanchor_certificates = [\"wifi-password.txt\"]",
            ),
            "mdm.anchor_certificates[0]",
            "anchor_certificates",
        ),
        case(
            "unknown mode",
            (
                "enrollment_url = \"https://mdm.example.org/enroll\"",
                "enrollment_url = \"https://mdm.example.org/enroll\"\nmode = \"automatic\"",
            ),
            "mdm.mode",
            "automatic",
        ),
        // [setup]
        appended(
            "skip neither all nor a list",
            "\n[setup]\nskip = \"some\"\n",
            "setup.skip",
            "skip",
        ),
        appended(
            "skip key of the wrong shape",
            "\n[setup]\nskip = [\"Privacy\",\n  \"Pri vacy\"]\n",
            "setup.skip[1]",
            "Pri vacy",
        ),
        appended(
            "unknown skip key",
            "\n[setup]\nskip = [\"Bogus\"]\n",
            "setup.skip",
            "Bogus",
        ),
        appended(
            "bad language",
            "\n[setup]\nlanguage = \"english!\"\n",
            "setup.language",
            "english",
        ),
        appended(
            "bad locale",
            "\n[setup]\nlocale = \"en-GB-x\"\n",
            "setup.locale",
            "en-GB-x",
        ),
        appended(
            "bad time zone",
            "\n[setup]\ntime_zone = \"Europe/Londn\"\n",
            "setup.time_zone",
            "Londn",
        ),
        // [naming], [erase], top level
        appended(
            "bad name template",
            "\n[naming]\ntemplate = \"Cart {x}\"\n",
            "naming.template",
            "Cart {x}",
        ),
        appended(
            "serial of the wrong shape",
            "\n[erase]\npolicy = \"rules\"\nallow_serials = [\"AB-12\"]\n",
            "erase.allow_serials[0]",
            "AB-12",
        ),
        appended(
            "serials with policy never",
            "\n[erase]\nallow_serials = [\"ABC123\"]\n",
            "erase.allow_serials",
            "ABC123",
        ),
        appended(
            "supervised-by-us with policy never",
            "\n[erase]\nallow_supervised_by_us = true\n",
            "erase.allow_supervised_by_us",
            "allow_supervised_by_us",
        ),
        appended(
            "rules that allow nothing",
            "\n[erase]\npolicy = \"rules\"\n",
            "erase.policy",
            "rules",
        ),
        case(
            "max_concurrent out of range",
            (top, "state_dir = \"state\"\nmax_concurrent = 0"),
            "max_concurrent",
            "max_concurrent",
        ),
        case(
            "state_dir a file",
            (top, "state_dir = \"wifi-password.txt\""),
            "state_dir",
            "state_dir",
        ),
        case(
            "usbmuxd address",
            (top, "state_dir = \"state\"\nusbmuxd = \"host:port\""),
            "usbmuxd",
            "usbmuxd",
        ),
        // [activation], [slots]
        appended(
            "activation URL not https",
            "\n[activation]\nserver_url = \"http://albert.example\"\n",
            "activation.server_url",
            "http://albert",
        ),
        appended(
            "activation CA missing",
            "\n[activation]\nextra_ca_file = \"nowhere.pem\"\n",
            "activation.extra_ca_file",
            "nowhere",
        ),
        appended(
            "activation CA not PEM",
            "\n[activation]\nextra_ca_file = \"wifi-password.txt\"\n",
            "activation.extra_ca_file",
            "extra_ca_file",
        ),
        appended(
            "slot chain with a space",
            "\n[slots]\n\"1 -1\" = \"A\"\n",
            "slots.\"1 -1\"",
            "\"1 -1\"",
        ),
        appended(
            "slot label used twice",
            "\n[slots]\n\"1-1\" = \"A\"\n\"1-2\" = \"A\"\n",
            "slots.\"1-2\"",
            "\"1-2\"",
        ),
        // [asm], [web], [notify]
        with_files(
            appended(
                "asm key readable by others",
                ASM,
                "asm.private_key_file",
                "asm-key.pem",
            ),
            &[("asm-key.pem", "not a key", 0o644)],
        ),
        with_files(
            appended(
                "asm key not a key",
                ASM,
                "asm.private_key_file",
                "asm-key.pem",
            ),
            &[("asm-key.pem", "not a key", 0o600)],
        ),
        appended(
            "asm key missing",
            ASM,
            "asm.private_key_file",
            "asm-key.pem",
        ),
        with_files(
            appended(
                "asm empty client id",
                "\n[asm]\nclient_id = \"\"\nkey_id = \"k\"\nprivate_key_file = \"asm-key.pem\"\nmdm_server = \"Mosyle\"\n",
                "asm.client_id",
                "client_id",
            ),
            &[("asm-key.pem", "not a key", 0o600)],
        ),
        appended(
            "web listen not an address",
            "\n[web]\nlisten = \"everywhere\"\n",
            "web.listen",
            "everywhere",
        ),
        with_files(
            appended(
                "web token readable by others",
                "\n[web]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token.txt\"\n",
                "web.token_file",
                "token.txt",
            ),
            &[("token.txt", "0123456789abcdef0123456789abcdef", 0o644)],
        ),
        with_files(
            appended(
                "web token too short",
                "\n[web]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token.txt\"\n",
                "web.token_file",
                "token.txt",
            ),
            &[("token.txt", "abc", 0o600)],
        ),
        appended(
            "notify webhook not an address",
            "\n[notify]\nwebhook = \"chat\"\n",
            "notify.webhook",
            "chat",
        ),
    ]
}

fn to_bytes(text: &str) -> Vec<u8> {
    let parts: Vec<&[u8]> = text.split(BAD_BYTE).map(str::as_bytes).collect();
    parts.join(&0xFF)
}

#[test]
fn every_config_message_names_the_file_the_line_and_the_setting() {
    for c in cases() {
        let f = Fixture::new();
        for (name, contents, mode) in c.files {
            let path = f.path(name.trim_end_matches('/'));
            if name.ends_with('/') {
                fs::create_dir_all(&path).unwrap();
            } else {
                fs::write(&path, to_bytes(contents)).unwrap();
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let (from, to) = c.replace;
        assert!(
            MINIMAL.contains(from),
            "{}: {from:?} is not in MINIMAL",
            c.what
        );
        let text = format!("{}{}", MINIMAL.replacen(from, to, 1), c.append);
        let line = text
            .lines()
            .position(|l| l.contains(c.line_holding))
            .unwrap_or_else(|| panic!("{}: no line holds {:?}", c.what, c.line_holding))
            + 1;
        let path = f.path("station.toml");
        fs::write(&path, to_bytes(&text)).unwrap();
        let message = match Settings::load(&path) {
            Ok(_) => panic!("{}: the config was accepted:\n{text}", c.what),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains(&path.display().to_string()),
            "{}: no file in {message:?}",
            c.what
        );
        let named = format!("line {line}: {}: ", c.field);
        assert!(
            message.contains(&named),
            "{}: {named:?} is not in {message:?}",
            c.what
        );
    }
}
