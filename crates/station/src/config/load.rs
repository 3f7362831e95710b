//! Loading in one stage: the TOML is checked section by section, and each file it names is
//! read once; the same bytes serve the checks, the fingerprint and the [`Settings`] (the
//! identity, the Wi-Fi profile, anchors as DER, the activation server with its extra CA).
//! Every problem found is collected, so one run reports all of them with their lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockdown::activation::ActivationServer;
use profiles::SupervisionIdentity;
use profiles::skip_keys::{self, SkipSelection};

use super::checks::{
    https_problem, is_serial_shaped, is_skip_key_shaped, is_tag, time_zone_problem, usbmuxd_problem,
};
use super::files::{MAX_REFERENCED_FILE, read_file, read_limited, sha256_hex};
use super::problems::{Problems, plain_profile_error};
use super::raw::{RawActivation, RawConfig, RawOrganization, RawSetup, RawSkip};
use super::toml_location::{line_of, toml_problem};
use super::wifi;
use super::{
    Activation, AnchorCertificate, BoardConfig, ConfigError, DEFAULT_ACTIVATION_URL,
    DEFAULT_USBMUXD, EraseMode, ErasePolicy, FORGET_AFTER_MINUTES_RANGE, MAX_CONCURRENT_RANGE, Mdm,
    MdmMode, NameTemplate, Naming, Organization, Problem, Setup, SkipPanes, StationConfig,
};
use crate::settings::Settings;

/// Reads the config file at `path`, checks it and reads the files it names.
pub(crate) fn load(path: &Path) -> Result<Settings, ConfigError> {
    let bytes = read_limited(path, MAX_REFERENCED_FILE).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        // The setting whose line holds the bad byte, from the valid text before it.
        let before = String::from_utf8_lossy(valid);
        let field = super::toml_location::setting_on_line(&before, before.len());
        ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem {
                field,
                line: Some(line),
                reason: format!(
                    "is not UTF-8 text (byte {} is not valid UTF-8); save the file as UTF-8",
                    valid.len() + 1
                ),
            }],
        }
    })?;
    from_toml(&text, path)
}

/// Checks config text as if it had been read from `path` (relative paths in it are taken
/// relative to `path`'s folder).
fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        problems: vec![toml_problem(text, &e)],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Problems::default();
    let settings = check(raw, path, &base, &mut problems);
    if let (Some(settings), true) = (settings, problems.is_empty()) {
        return Ok(settings);
    }
    if problems.is_empty() {
        // Every path that leaves the settings unbuilt records why; this is a safety net.
        problems.add("", "could not be loaded");
    }
    for problem in &mut problems.0 {
        problem.line = line_of(text, &problem.field);
    }
    // In file order, as a person fixes them; problems with no line go last.
    problems.0.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(ConfigError::Invalid {
        path: path.to_owned(),
        problems: problems.0,
    })
}

/// Checks every section, recording problems in `p`; the settings are built only when every
/// part of them could be.
fn check(raw: RawConfig, path: &Path, base: &Path, p: &mut Problems) -> Option<Settings> {
    let resolve = |q: &Path| {
        if q.is_absolute() {
            q.to_owned()
        } else {
            base.join(q)
        }
    };

    // [mdm] first: whether an identity is required depends on the mode.
    let mode = raw.mdm.mode.unwrap_or(MdmMode::Manual);
    if raw.mdm.name.trim().is_empty() {
        p.add(
            "mdm.name",
            "is empty; give the MDM's name (it is shown in logs)",
        );
    }
    if let Some(reason) = https_problem(&raw.mdm.enrollment_url) {
        p.add("mdm.enrollment_url", reason);
    }
    let mut anchors = Vec::new();
    let mut anchor_certificates = Vec::new();
    for (i, a) in raw.mdm.anchor_certificates.iter().enumerate() {
        let field = format!("mdm.anchor_certificates[{i}]");
        let path = resolve(a);
        let Some(bytes) = read_file(&field, &path, p) else {
            continue;
        };
        if !(bytes.starts_with(b"-----BEGIN CERTIFICATE-----") || bytes.first() == Some(&0x30)) {
            p.add(
                field,
                format!("{} is not a certificate (PEM or DER)", path.display()),
            );
            continue;
        }
        anchors.push(pem_or_der(&bytes));
        anchor_certificates.push(AnchorCertificate {
            path,
            sha256: sha256_hex(&bytes),
        });
    }
    let mdm = Mdm {
        name: raw.mdm.name,
        enrollment_url: raw.mdm.enrollment_url,
        mode,
        anchor_certificates,
    };

    let (organization, identity) = check_organization(raw.organization, mode, &resolve, p);
    let (wifi, wifi_payload) = wifi::check_wifi(raw.wifi, &organization.name, &resolve, p);
    let setup = check_setup(raw.setup, p);

    let naming = raw
        .naming
        .and_then(|n| match NameTemplate::parse(&n.template) {
            Ok(template) => Some(Naming {
                template,
                start: n.start.unwrap_or(1),
            }),
            Err(reason) => {
                p.add("naming.template", reason.to_string());
                None
            }
        });

    let erase = ErasePolicy {
        mode: raw.erase.policy.unwrap_or(EraseMode::Never),
        allow_supervised_by_us: raw.erase.allow_supervised_by_us,
        allow_serials: raw
            .erase
            .allow_serials
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .collect(),
    };
    for (i, s) in erase.allow_serials.iter().enumerate() {
        if !is_serial_shaped(s) {
            p.add(
                format!("erase.allow_serials[{i}]"),
                format!("\"{s}\" is not a serial number (letters and digits only)"),
            );
        }
    }
    // Rules with policy "never" would look like erasing is allowed when it never happens.
    if erase.mode == EraseMode::Never {
        if !erase.allow_serials.is_empty() {
            p.add(
                "erase.allow_serials",
                "lists serials but policy is \"never\", so none would be erased: set policy = \"rules\" or empty the list",
            );
        }
        if erase.allow_supervised_by_us {
            p.add(
                "erase.allow_supervised_by_us",
                "is true but policy is \"never\", so nothing would be erased: set policy = \"rules\" or remove it",
            );
        }
    }
    if erase.mode == EraseMode::Rules
        && !erase.allow_supervised_by_us
        && erase.allow_serials.is_empty()
    {
        p.add(
            "erase.policy",
            "is \"rules\" but no rule allows anything: set allow_supervised_by_us = true or list allow_serials, or use policy = \"never\"",
        );
    }

    let max_concurrent = match raw.max_concurrent {
        None => 1,
        Some(n) if MAX_CONCURRENT_RANGE.contains(&n) => n as usize,
        Some(n) => {
            p.add(
                "max_concurrent",
                format!(
                    "is {n}; it must be between {} and {} (1, one iPad at a time, is what the school guide asks)",
                    MAX_CONCURRENT_RANGE.start(),
                    MAX_CONCURRENT_RANGE.end()
                ),
            );
            1
        }
    };

    let state_dir = raw
        .state_dir
        .as_deref()
        .map(resolve)
        .unwrap_or_else(crate::paths::default_state_dir);
    if state_dir.exists() && !state_dir.is_dir() {
        p.add(
            "state_dir",
            format!("{} exists and is not a folder", state_dir.display()),
        );
    }

    let usbmuxd = raw
        .usbmuxd
        .or_else(|| {
            std::env::var("USBMUXD_SOCKET_ADDRESS")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_USBMUXD.to_owned());
    if let Some(reason) = usbmuxd_problem(&usbmuxd) {
        p.add("usbmuxd", reason);
    }

    let (activation, activation_server) = check_activation(raw.activation, &resolve, p);

    let mut labels = BTreeSet::new();
    for (chain, label) in &raw.slots {
        let field = format!("slots.\"{chain}\"");
        if chain.trim().is_empty() || chain.chars().any(char::is_whitespace) {
            p.add(field.clone(), "a port chain has no spaces, e.g. \"1-1.2\"");
        }
        if label.trim().is_empty() {
            p.add(field, "the slot label is empty");
        } else if !labels.insert(label.trim()) {
            p.add(
                field,
                format!("the label \"{label}\" is used for two ports"),
            );
        }
    }

    let (asm_config, asm_settings) = match raw.asm {
        Some(a) => {
            let (c, s) = super::asm::check_asm(a, &resolve, p);
            (Some(c), s)
        }
        None => (None, None),
    };
    let board = check_board(raw.board, p);
    let web = super::web::check_web(raw.web, &resolve, p);
    let notify = super::web::check_notify(raw.notify, p);

    let config = StationConfig {
        path: path.to_owned(),
        organization,
        wifi,
        mdm,
        setup,
        naming,
        erase,
        max_concurrent,
        state_dir,
        usbmuxd,
        activation,
        slots: raw.slots,
        asm: asm_config,
        web,
        notify,
        transcript: raw.debug.transcript.as_deref().map(resolve),
        board,
    };
    Some(Settings {
        fingerprint: config.fingerprint(),
        identity,
        wifi: wifi_payload?,
        anchors,
        activation: activation_server?,
        asm: asm_settings,
        config: Arc::new(config),
    })
}

/// The organization, and its supervision identity loaded from the folder it names (each of the
/// identity's two files read once, by `SupervisionIdentity::load`).
fn check_organization(
    raw: RawOrganization,
    mode: MdmMode,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> (Organization, Option<Arc<SupervisionIdentity>>) {
    if raw.name.trim().is_empty() {
        p.add(
            "organization.name",
            "is empty; the iPads show it as their owner",
        );
    }
    let identity_dir = raw.identity.as_deref().map(resolve);
    let mut identity = None;
    match &identity_dir {
        None if mode == MdmMode::Manual => p.add(
            "organization.identity",
            "is missing; manual mode supervises the iPads with our identity (the folder with supervision.crt.der and supervision.key.pem)",
        ),
        // ADE mode: Apple School Manager supervises.
        None => {}
        Some(dir) if !dir.is_dir() => p.add(
            "organization.identity",
            format!("{} is not a folder (or does not exist)", dir.display()),
        ),
        Some(dir) => match SupervisionIdentity::load(dir) {
            Ok(loaded) => identity = Some(Arc::new(loaded)),
            Err(e) => {
                let missing = matches!(&e, profiles::ProfileError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound);
                let hint = if missing {
                    format!(
                        " (create one with `cartprep identity create --org \"{}\"`)",
                        raw.name
                    )
                } else {
                    String::new()
                };
                p.add(
                    "organization.identity",
                    format!("{}{hint}", plain_profile_error(&e)),
                );
            }
        },
    }
    let non_empty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    let organization = Organization {
        name: raw.name,
        department: non_empty(raw.department),
        phone: non_empty(raw.phone),
        email: non_empty(raw.email),
        address: non_empty(raw.address),
        identity: identity_dir,
        identity_certificate_sha256: identity
            .as_ref()
            .map(|i: &Arc<SupervisionIdentity>| sha256_hex(i.certificate_der())),
    };
    (organization, identity)
}

fn check_setup(raw: RawSetup, p: &mut Problems) -> Setup {
    let skip = match raw.skip {
        RawSkip::One(s) if s.trim().eq_ignore_ascii_case("all") => SkipPanes::All,
        RawSkip::One(s) => {
            p.add(
                "setup.skip",
                format!("is \"{s}\"; write \"all\" or a list such as [\"Privacy\", \"Siri\"]"),
            );
            SkipPanes::All
        }
        RawSkip::Many(keys) => {
            let mut shaped = true;
            for (i, k) in keys.iter().enumerate() {
                if !is_skip_key_shaped(k) {
                    shaped = false;
                    p.add(
                        format!("setup.skip[{i}]"),
                        format!("\"{k}\" is not a skip key (letters and digits, e.g. \"Privacy\")"),
                    );
                }
            }
            let keys: Vec<String> = keys
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // Unknown panes are a configuration mistake, reported at load (and on reload), not
            // a failure of every iPad at the supervise step. A list is checked against the
            // whole catalogue, so the iOS version given does not matter.
            if shaped && let Err(e) = skip_keys::expand(&SkipSelection::List(keys.clone()), "26.0")
            {
                p.add("setup.skip", e.to_string());
            }
            SkipPanes::Keys(keys)
        }
    };
    let mut shaped = |field: &str, value: &Option<String>, ok: &dyn Fn(&str) -> bool, example| {
        if let Some(v) = value
            && !ok(v)
        {
            p.add(
                field,
                format!("\"{v}\" does not look right; expected something like {example}"),
            );
        }
    };
    shaped(
        "setup.language",
        &raw.language,
        &|v| is_tag(v, '-'),
        "\"en\" or \"fr\"",
    );
    shaped(
        "setup.locale",
        &raw.locale,
        &|v| is_tag(v, '_'),
        "\"en_GB\"",
    );
    if let Some(reason) = raw.time_zone.as_deref().and_then(time_zone_problem) {
        p.add("setup.time_zone", reason);
    }
    Setup {
        skip,
        language: raw.language,
        locale: raw.locale,
        time_zone: raw.time_zone,
    }
}

/// The activation server and the extra CA it is trusted with (read once, kept as read).
fn check_activation(
    raw: RawActivation,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> (Activation, Option<ActivationServer>) {
    let activation = Activation {
        server_url: raw
            .server_url
            .unwrap_or_else(|| DEFAULT_ACTIVATION_URL.to_owned()),
        extra_ca_file: raw.extra_ca_file.as_deref().map(resolve),
    };
    let url_problem = https_problem(&activation.server_url);
    let url_ok = url_problem.is_none();
    if let Some(reason) = url_problem {
        p.add("activation.server_url", reason);
    }
    let mut extra_ca = None;
    if let Some(ca) = &activation.extra_ca_file
        && let Some(bytes) = read_file("activation.extra_ca_file", ca, p)
    {
        if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            extra_ca = Some(bytes);
        } else {
            p.add(
                "activation.extra_ca_file",
                format!("{} is not a PEM certificate", ca.display()),
            );
        }
    }
    if !url_ok {
        return (activation, None);
    }
    let server = match ActivationServer::new(&activation.server_url) {
        Ok(mut server) => {
            server.extra_root_certificates.extend(extra_ca);
            Some(server)
        }
        Err(e) => {
            p.add(
                "activation.server_url",
                format!("is \"{}\": {e}", activation.server_url),
            );
            None
        }
    };
    (activation, server)
}

/// An anchor certificate file may be PEM or DER; the cloud configuration wants DER.
fn pem_or_der(bytes: &[u8]) -> Vec<u8> {
    match der::pem::decode_vec(bytes) {
        Ok((_label, der)) => der,
        Err(_) => bytes.to_vec(),
    }
}

/// `[board]`: the minutes an unplugged iPad's line stays, within a day.
fn check_board(raw: super::raw::RawBoard, p: &mut Problems) -> BoardConfig {
    match raw.forget_after_minutes {
        None => BoardConfig::default(),
        Some(n) if FORGET_AFTER_MINUTES_RANGE.contains(&n) => {
            BoardConfig::forgetting_after_minutes(n.unsigned_abs())
        }
        Some(n) => {
            p.add(
                "board.forget_after_minutes",
                format!(
                    "is {n}; it must be between {} and {} (minutes an unplugged iPad stays on the board; 0 lets it go at the next plug or unplug)",
                    FORGET_AFTER_MINUTES_RANGE.start(),
                    FORGET_AFTER_MINUTES_RANGE.end()
                ),
            );
            BoardConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn anchor_certificates_are_read_as_pem_or_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQc=\n-----END CERTIFICATE-----\n";
        assert_eq!(super::pem_or_der(pem.as_bytes()), der);
        assert_eq!(super::pem_or_der(&der), der);
    }
}
