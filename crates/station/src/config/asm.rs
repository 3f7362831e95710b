//! `[asm]`: the Apple School Manager (or Apple Business) API account, the MDM server iPads
//! are assigned to, and whether to assign them. The private key file is read once here, must
//! be a P-256 key, and must not be readable by others (0600).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::https_problem;
use super::files::{read_file, sha256_hex};
use super::problems::Problems;

/// `[asm]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAsm {
    client_id: String,
    key_id: String,
    private_key_file: PathBuf,
    kind: Option<asm::Kind>,
    mdm_server: String,
    assign: Option<bool>,
    stop_if_not_in_organization: Option<bool>,
    api_url: Option<String>,
    token_url: Option<String>,
    audience: Option<String>,
    extra_ca_file: Option<PathBuf>,
}

/// The checked `[asm]` section. Holds no key material (the key is in
/// [`crate::settings::Settings::asm`]), only its digest, to notice a changed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsmConfig {
    pub kind: asm::Kind,
    pub client_id: String,
    pub key_id: String,
    pub private_key_file: PathBuf,
    /// The device management service's name, exactly as Apple School Manager shows it.
    pub mdm_server: String,
    /// Assign prepared iPads to `mdm_server` (default true).
    pub assign: bool,
    /// Stop preparing an iPad the organization does not hold (default false: it is shown as
    /// needing attention and prepared anyway).
    pub stop_if_not_in_organization: bool,
    pub api_url: Option<String>,
    pub token_url: Option<String>,
    pub audience: Option<String>,
    pub extra_ca_file: Option<PathBuf>,
    key_sha256: String,
}

/// Checks `[asm]` and reads its key (and extra CA) once.
pub(super) fn check_asm(
    raw: RawAsm,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> (AsmConfig, Option<asm::AsmSettings>) {
    let kind = raw.kind.unwrap_or(asm::Kind::School);
    for (field, value) in [
        ("asm.client_id", &raw.client_id),
        ("asm.key_id", &raw.key_id),
        ("asm.mdm_server", &raw.mdm_server),
    ] {
        if value.trim().is_empty() {
            p.add(
                field,
                "is empty; copy it from the API account in Apple School Manager",
            );
        }
    }
    for (field, url) in [
        ("asm.api_url", &raw.api_url),
        ("asm.token_url", &raw.token_url),
    ] {
        if let Some(reason) = url.as_deref().and_then(https_problem) {
            p.add(field, reason);
        }
    }
    let key_path = resolve(&raw.private_key_file);
    let mut key = None;
    let mut key_sha256 = String::new();
    if let Some(reason) = private_mode_problem(&key_path) {
        p.add("asm.private_key_file", reason);
    } else if let Some(bytes) = read_file("asm.private_key_file", &key_path, p) {
        key_sha256 = sha256_hex(&bytes);
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        match asm::PrivateKey::from_pem(&text) {
            Ok(k) => key = Some(k),
            Err(e) => p.add(
                "asm.private_key_file",
                format!("{}: {e}", key_path.display()),
            ),
        }
    }
    let extra_ca_file = raw.extra_ca_file.as_deref().map(resolve);
    let mut extra_ca = None;
    if let Some(ca) = &extra_ca_file
        && let Some(bytes) = read_file("asm.extra_ca_file", ca, p)
    {
        if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            extra_ca = Some(bytes);
        } else {
            p.add(
                "asm.extra_ca_file",
                format!("{} is not a PEM certificate", ca.display()),
            );
        }
    }
    let config = AsmConfig {
        kind,
        client_id: raw.client_id.trim().to_owned(),
        key_id: raw.key_id.trim().to_owned(),
        private_key_file: key_path,
        mdm_server: raw.mdm_server,
        assign: raw.assign.unwrap_or(true),
        stop_if_not_in_organization: raw.stop_if_not_in_organization.unwrap_or(false),
        api_url: raw.api_url,
        token_url: raw.token_url,
        audience: raw.audience,
        extra_ca_file,
        key_sha256,
    };
    let settings = key.map(|k| {
        let mut s = asm::AsmSettings::new(kind, config.client_id.clone(), config.key_id.clone(), k);
        s.api_url = config.api_url.clone();
        s.token_url = config.token_url.clone();
        s.audience = config.audience.clone();
        s.extra_ca_pem = extra_ca;
        s
    });
    (config, settings)
}

/// A private key file must be readable by its owner only.
#[cfg(unix)]
fn private_mode_problem(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} can be read by others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn private_mode_problem(_: &Path) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dir: &Path, extra: &str) -> (Option<AsmConfig>, bool, Vec<String>) {
        let text = format!(
            "client_id = \"SCHOOLAPI.x\"\nkey_id = \"k\"\nprivate_key_file = \"key.pem\"\nmdm_server = \"Mosyle\"\n{extra}"
        );
        let raw: RawAsm = toml::from_str(&text).expect("parses");
        let mut p = Problems::default();
        let resolve = |q: &Path| dir.join(q);
        let (config, settings) = check_asm(raw, &resolve, &mut p);
        let problems =
            p.0.iter()
                .map(|x| format!("{}: {}", x.field, x.reason))
                .collect();
        (Some(config), settings.is_some(), problems)
    }

    fn key_file(dir: &Path, mode: u32) {
        let pem = asm::PrivateKey::generate().to_pem().expect("pem");
        profiles::files::write_private(&dir.join("key.pem"), pem.as_bytes()).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        }
    }

    #[test]
    fn a_private_key_readable_by_owner_only_is_accepted_with_school_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        key_file(dir.path(), 0o600);
        let (config, has_settings, problems) = check(dir.path(), "");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(has_settings);
        let config = config.expect("config");
        assert_eq!(config.kind, asm::Kind::School);
        assert!(config.assign);
        assert!(!config.stop_if_not_in_organization);
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
    }

    #[cfg(unix)]
    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        key_file(dir.path(), 0o644);
        let (_, has_settings, problems) = check(dir.path(), "kind = \"business\"\n");
        assert!(!has_settings);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("asm.private_key_file: "),
            "{problems:?}"
        );
        assert!(problems[0].contains("chmod 600"), "{problems:?}");
    }

    #[test]
    fn a_file_that_is_not_a_key_and_plain_http_are_reported() {
        let dir = tempfile::tempdir().expect("dir");
        profiles::files::write_private(&dir.path().join("key.pem"), b"not a key").expect("write");
        let (_, has_settings, problems) =
            check(dir.path(), "api_url = \"http://api-school.apple.com/\"\n");
        assert!(!has_settings);
        assert!(
            problems.iter().any(|p| p.starts_with("asm.api_url")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("asm.private_key_file")
                    && p.contains("not a PEM private key")),
            "{problems:?}"
        );
    }
}
