//! The `[wifi]` section: a network described in the file (its password written there or read
//! from `password_file`), or a ready-made `.mobileconfig`. Either way the profile to install is
//! made here, from the bytes read once at load.

use std::path::{Path, PathBuf};

use profiles::ProfileError;
use profiles::wifi::{Security, WifiProfile};

use super::checks::password_problem;
use super::files::{read_file, sha256_hex, stretched_digest};
use super::problems::Problems;
use super::raw::RawWifi;
use super::{Secret, Wifi, WifiNetwork};
use crate::settings::WifiPayload;

/// Checks the section and builds the profile; the profile is `None` when a problem was found.
pub(super) fn check_wifi(
    raw: RawWifi,
    organization: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> (Wifi, Option<WifiPayload>) {
    if let Some(profile) = raw.mobileconfig {
        let others = [
            ("ssid", raw.ssid.is_some()),
            ("security", raw.security.is_some()),
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
            (
                "allow_readable_password_file",
                raw.allow_readable_password_file.is_some(),
            ),
            ("hidden", raw.hidden.is_some()),
            ("auto_join", raw.auto_join.is_some()),
        ];
        for (key, set) in others {
            if set {
                p.add(format!("wifi.{key}"), "cannot be combined with wifi.mobileconfig (the profile already describes the network)");
            }
        }
        let path = resolve(&profile);
        let Some(bytes) = read_file("wifi.mobileconfig", &path, p) else {
            let wifi = Wifi::Mobileconfig {
                path,
                sha256: String::new(),
            };
            return (wifi, None);
        };
        let sha256 = sha256_hex(&bytes);
        let payload = match profiles::wifi::parse_mobileconfig(bytes) {
            Ok(existing) => Some(WifiPayload {
                description: existing
                    .display_name
                    .clone()
                    .unwrap_or_else(|| existing.identifier.clone()),
                identifier: existing.identifier,
                bytes: existing.bytes,
            }),
            Err(e) => {
                // "<file>: not a configuration profile: <why>"
                p.add("wifi.mobileconfig", e.in_file(&path).to_string());
                None
            }
        };
        return (Wifi::Mobileconfig { path, sha256 }, payload);
    }

    let problems_before = p.len();
    let ssid = raw.ssid.unwrap_or_default();
    if ssid.is_empty() {
        p.add("wifi.ssid", "is missing; give the network name (or wifi.mobileconfig = \"path\" to a ready-made profile)");
    } else if ssid.len() > 32 {
        p.add(
            "wifi.ssid",
            format!(
                "is {} bytes long; a Wi-Fi network name is at most 32",
                ssid.len()
            ),
        );
    }
    let security = raw.security.unwrap_or(Security::Wpa2);
    let password_file = raw.password_file.as_deref().map(resolve);
    let password = match (raw.password, &password_file) {
        (Some(_), Some(_)) => {
            p.add(
                "wifi.password_file",
                "give either wifi.password or wifi.password_file, not both",
            );
            None
        }
        (Some(pw), None) => Some(pw),
        (None, Some(file))
            if !raw.allow_readable_password_file.unwrap_or(false)
                && let Some(mode) = readable_by_others(file) =>
        {
            p.add(
                "wifi.password_file",
                format!(
                    "{} can be read by every user of this machine (mode {mode:o}): run `chmod 600 {}` (or set wifi.allow_readable_password_file = true)",
                    file.display(),
                    file.display()
                ),
            );
            None
        }
        (None, Some(file)) => read_file("wifi.password_file", file, p).and_then(|bytes| {
            match String::from_utf8(bytes) {
                // Only the line ending goes: spaces can be part of a passphrase.
                Ok(text) => Some(Secret::new(text.trim_end_matches(['\n', '\r']))),
                Err(_) => {
                    p.add(
                        "wifi.password_file",
                        format!("{} is not UTF-8 text", file.display()),
                    );
                    None
                }
            }
        }),
        (None, None) => None,
    };
    let pw_field = if password_file.is_some() {
        "wifi.password_file"
    } else {
        "wifi.password"
    };
    match (&password, security) {
        // A password_file that could not be read has already been reported.
        (None, s) if s.requires_password() && password_file.is_none() => p.add(
            "wifi.password",
            format!(
                "is missing; a \"{}\" network needs a password (or password_file)",
                s.as_str()
            ),
        ),
        (Some(_), Security::None) => p.add(
            pw_field,
            "is set but security = \"none\" (an open network takes no password)",
        ),
        (Some(pw), s) => {
            if let Some(reason) = password_problem(pw.expose(), s) {
                p.add(pw_field, reason);
            }
        }
        _ => {}
    }
    let network = WifiNetwork {
        password_digest: password.as_ref().map(|pw| stretched_digest(pw.expose())),
        ssid,
        security,
        password,
        password_file,
        hidden: raw.hidden.unwrap_or(false),
        auto_join: raw.auto_join.unwrap_or(true),
    };
    // Built only from a section without problems, so the profile's own checks do not report
    // a mistake a second time.
    let payload = if p.len() == problems_before {
        build_profile(&network, organization, pw_field, p)
    } else {
        None
    };
    (Wifi::Network(network), payload)
}

/// The `.mobileconfig` for a network; what the profile refuses is reported on its setting.
fn build_profile(
    network: &WifiNetwork,
    organization: &str,
    pw_field: &str,
    p: &mut Problems,
) -> Option<WifiPayload> {
    let mut profile = WifiProfile::new(
        network.ssid.clone(),
        network.security,
        network.password.clone(),
    );
    profile.hidden = network.hidden;
    profile.auto_join = network.auto_join;
    // An empty name is reported on organization.name already.
    profile.organization = Some(organization.to_owned()).filter(|o| !o.trim().is_empty());
    match profile.to_mobileconfig() {
        Ok(bytes) => Some(WifiPayload {
            bytes,
            identifier: profile.identifier(),
            description: format!("Wi-Fi {}", network.ssid),
        }),
        Err(e) => {
            let (field, reason) = match e {
                ProfileError::Validation { field, reason } => {
                    (profile_field(field, pw_field), reason)
                }
                other => ("wifi", other.to_string()),
            };
            p.add(field, reason);
            None
        }
    }
}

/// The config setting behind a field of the Wi-Fi profile.
fn profile_field<'a>(profile_field: &str, pw_field: &'a str) -> &'a str {
    match profile_field {
        "ssid" => "wifi.ssid",
        "password" => pw_field,
        "organization" => "organization.name",
        _ => "wifi",
    }
}

/// The file's mode when users other than its owner and group may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    (meta.is_file() && mode & 0o004 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::profile_field;

    #[test]
    fn profile_fields_map_to_the_settings_behind_them() {
        for (field, pw_field, setting) in [
            ("ssid", "wifi.password", "wifi.ssid"),
            ("password", "wifi.password", "wifi.password"),
            ("password", "wifi.password_file", "wifi.password_file"),
            ("organization", "wifi.password", "organization.name"),
            ("security", "wifi.password", "wifi"),
        ] {
            assert_eq!(profile_field(field, pw_field), setting, "{field}");
        }
    }
}
