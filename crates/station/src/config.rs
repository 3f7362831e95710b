//! The station configuration: a TOML file (see `config/station.example.toml`, which documents
//! every key) read into a checked [`StationConfig`].
//!
//! Loading checks everything a volunteer can get wrong before any iPad is touched, and says
//! which setting is wrong and why: `station.toml: mdm.enrollment_url: must be an https://
//! address …`. Relative paths in the file are relative to the folder of the file, so a config
//! and the files it names can be moved together. Loading reads the files the config names
//! (to check them) and writes nothing.
//!
//! Secrets: the Wi-Fi password is held in a [`Secret`], whose `Debug` and `Display` print
//! `***`, so a config can be logged with `{:?}`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default Apple activation server.
pub const DEFAULT_ACTIVATION_URL: &str = "https://albert.apple.com/deviceservices/";
/// usbmuxd's socket when `USBMUXD_SOCKET_ADDRESS` is not set.
pub const DEFAULT_USBMUXD: &str = "/var/run/usbmuxd";
/// Default state folder (the ledger, audit log and pair records).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cartprep";
/// Bounds of `max_concurrent`.
pub const MAX_CONCURRENT_RANGE: std::ops::RangeInclusive<i64> = 1..=16;
/// The identity folder's files, as `profiles::identity` writes them.
pub const IDENTITY_CERTIFICATE_FILE: &str = "supervision.crt.der";
pub const IDENTITY_KEY_FILE: &str = "supervision.key.pem";
/// Placeholders the naming template understands.
pub const NAME_PLACEHOLDERS: [&str; 4] = ["serial", "slot", "n", "model"];

/// Largest file the config may point at that is read whole (profiles, certificates, password).
const MAX_REFERENCED_FILE: u64 = 16 << 20;
/// Rounds of SHA-256 over the Wi-Fi password for the settings fingerprint. The fingerprint is
/// stored in the ledger and its exports; stretching makes guessing a weak password from it
/// expensive (20 000 rounds: about 5 ms in a release build, once per load).
const PASSWORD_DIGEST_ROUNDS: u32 = 20_000;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the setting (`mdm.enrollment_url`, `slots."1-1.2"`); empty when the
    /// problem is with the file as a whole (a TOML syntax error outside any setting).
    pub field: String,
    /// Line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, in plain words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The config file concerned.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The problems found (empty when the file could not be read at all).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }

    /// The dotted paths of the settings with problems.
    pub fn fields(&self) -> Vec<&str> {
        self.problems().iter().map(|p| p.field.as_str()).collect()
    }
}

fn describe_problems(path: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", path.display()),
        many => {
            let mut s = format!("{} has {} problems:", path.display(), many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// Collects problems while checking, so one run reports all of them.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            line: None,
            reason: reason.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Secret
// ---------------------------------------------------------------------------------------------

/// A password. `Debug` and `Display` print `***`; use [`Secret::expose`] where the value is
/// really needed (building the Wi-Fi profile). Deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

// ---------------------------------------------------------------------------------------------
// The checked configuration
// ---------------------------------------------------------------------------------------------

/// A loaded and checked station configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct StationConfig {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub organization: Organization,
    pub wifi: Wifi,
    pub mdm: Mdm,
    pub setup: Setup,
    /// `None`: devices keep their names.
    pub naming: Option<Naming>,
    pub erase: ErasePolicy,
    /// iPads worked on at the same time (1..=16, default 1).
    pub max_concurrent: usize,
    pub state_dir: PathBuf,
    /// usbmuxd address: a socket path, `UNIX:/path`, or `host:port`.
    pub usbmuxd: String,
    pub activation: Activation,
    /// USB port chain → slot label.
    pub slots: BTreeMap<String, String>,
}

/// Who the iPads belong to: shown on the device and in the cloud configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub name: String,
    pub department: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<String>,
    /// Folder holding the supervision identity (`supervision.crt.der`, `supervision.key.pem`).
    /// Required in manual mode; in ADE mode Apple School Manager supervises.
    pub identity: Option<PathBuf>,
    /// SHA-256 (hex) of the identity's certificate, read at load.
    pub identity_certificate_sha256: Option<String>,
}

/// The Wi-Fi the iPads join: a network described here, or a ready-made profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wifi {
    Network(WifiNetwork),
    Mobileconfig { path: PathBuf, sha256: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct WifiNetwork {
    pub ssid: String,
    pub security: WifiSecurity,
    /// The password, whether it was written in the file or read from `password_file`.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub hidden: bool,
    pub auto_join: bool,
    /// Stretched digest of the password, for the fingerprint only.
    password_digest: Option<String>,
}

impl fmt::Debug for WifiNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand to leave out the password digest as well as the password.
        f.debug_struct("WifiNetwork")
            .field("ssid", &self.ssid)
            .field("security", &self.security)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("hidden", &self.hidden)
            .field("auto_join", &self.auto_join)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WifiSecurity {
    None,
    Wep,
    Wpa,
    Wpa2,
    Wpa3,
    Any,
}

impl WifiSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            WifiSecurity::None => "none",
            WifiSecurity::Wep => "wep",
            WifiSecurity::Wpa => "wpa",
            WifiSecurity::Wpa2 => "wpa2",
            WifiSecurity::Wpa3 => "wpa3",
            WifiSecurity::Any => "any",
        }
    }

    /// Networks that cannot be joined without a password.
    pub fn requires_password(self) -> bool {
        matches!(
            self,
            WifiSecurity::Wep | WifiSecurity::Wpa | WifiSecurity::Wpa2 | WifiSecurity::Wpa3
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mdm {
    pub name: String,
    pub enrollment_url: String,
    pub mode: MdmMode,
    pub anchor_certificates: Vec<AnchorCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorCertificate {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MdmMode {
    /// We supervise with our identity and hand the device the enrollment URL (as Apple
    /// Configurator does).
    Manual,
    /// The device is assigned to the MDM in Apple School Manager; we give it Wi-Fi and ask it to
    /// fetch its cloud configuration.
    Ade,
}

impl MdmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MdmMode::Manual => "manual",
            MdmMode::Ade => "ade",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub skip: SkipPanes,
    pub language: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
}

/// Which Setup Assistant panes to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipPanes {
    All,
    /// These skip keys (sorted, without duplicates).
    Keys(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    pub template: NameTemplate,
    /// First value of `{n}`.
    pub start: u32,
}

/// A device-name template such as `Cart A - {n:02}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<NamePart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NamePart {
    Text(String),
    Serial,
    Slot,
    Model,
    /// `{n}`, or `{n:0W}` zero-padded to W digits.
    N {
        width: usize,
    },
}

/// The values a name is made from.
#[derive(Clone, Copy, Debug)]
pub struct NameVars<'a> {
    pub serial: &'a str,
    /// Empty in the name when the slot is not known.
    pub slot: Option<&'a str>,
    pub n: u32,
    /// The marketing name ("iPad (9th generation)"), or the product type when unknown.
    pub model: &'a str,
}

impl NameTemplate {
    /// Parses a template, refusing unknown placeholders and unbalanced braces (`{{` and `}}`
    /// stand for literal braces).
    pub fn parse(source: &str) -> Result<NameTemplate, String> {
        if source.trim().is_empty() {
            return Err("is empty; write a template such as \"Cart A - {n:02}\"".into());
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => {
                    return Err("has a } with no { before it (write }} for a literal brace)".into());
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "has a {{ that is not closed after \"{{{name}\" (write {{{{ for a literal brace)"
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(NamePart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(parse_placeholder(&name)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(NamePart::Text(text));
        }
        Ok(NameTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the template contains `{slot}`.
    pub fn uses_slot(&self) -> bool {
        self.parts.contains(&NamePart::Slot)
    }

    /// The device name for these values.
    pub fn render(&self, vars: &NameVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                NamePart::Text(t) => out.push_str(t),
                NamePart::Serial => out.push_str(vars.serial),
                NamePart::Slot => out.push_str(vars.slot.unwrap_or("")),
                NamePart::Model => out.push_str(vars.model),
                NamePart::N { width } => {
                    out.push_str(&format!("{:0width$}", vars.n, width = *width))
                }
            }
        }
        out
    }
}

fn parse_placeholder(name: &str) -> Result<NamePart, String> {
    let known = || "use {serial}, {slot}, {n} (or {n:02} for 01, 02, …) or {model}".to_owned();
    match name.trim() {
        "serial" => Ok(NamePart::Serial),
        "slot" => Ok(NamePart::Slot),
        "model" => Ok(NamePart::Model),
        "n" => Ok(NamePart::N { width: 0 }),
        other => {
            if let Some(spec) = other.strip_prefix("n:") {
                let digits = spec.strip_prefix('0').unwrap_or("");
                if let Ok(width @ 1..=9) = digits.parse::<usize>() {
                    return Ok(NamePart::N { width });
                }
                return Err(format!(
                    "has {{{other}}}: the width of {{n}} is written {{n:02}} (0 then 1 to 9 digits)"
                ));
            }
            Err(format!(
                "has an unknown placeholder {{{other}}}; {}",
                known()
            ))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasePolicy {
    pub mode: EraseMode,
    /// Erase devices already supervised by our identity (re-preparing our own iPads).
    pub allow_supervised_by_us: bool,
    /// Erase these serials (upper case).
    pub allow_serials: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EraseMode {
    /// Never erase (the default).
    Never,
    /// Erase only devices matching the rules.
    Rules,
}

impl ErasePolicy {
    /// Whether the policy allows erasing this device, and the reason to record when it does.
    pub fn allows(&self, serial: &str, supervised_by_us: bool) -> Option<String> {
        if self.mode == EraseMode::Never {
            return None;
        }
        if self
            .allow_serials
            .iter()
            .any(|s| s.eq_ignore_ascii_case(serial))
        {
            return Some("serial is on erase.allow_serials".into());
        }
        if self.allow_supervised_by_us && supervised_by_us {
            return Some(
                "supervised by our organization and erase.allow_supervised_by_us = true".into(),
            );
        }
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    pub server_url: String,
    /// An extra CA (PEM) to trust for the activation server (a proxy or the simulator).
    pub extra_ca_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The file as written (every table refuses keys it does not know)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    organization: RawOrganization,
    wifi: RawWifi,
    mdm: RawMdm,
    #[serde(default)]
    setup: RawSetup,
    naming: Option<RawNaming>,
    #[serde(default)]
    erase: RawErase,
    // Signed, so 0 and negative numbers get our range message rather than a type error.
    max_concurrent: Option<i64>,
    state_dir: Option<PathBuf>,
    usbmuxd: Option<String>,
    #[serde(default)]
    activation: RawActivation,
    #[serde(default)]
    slots: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    name: String,
    department: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<String>,
    identity: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWifi {
    ssid: Option<String>,
    security: Option<WifiSecurity>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    hidden: Option<bool>,
    auto_join: Option<bool>,
    mobileconfig: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMdm {
    name: String,
    enrollment_url: String,
    mode: Option<MdmMode>,
    #[serde(default)]
    anchor_certificates: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetup {
    #[serde(default = "skip_all")]
    skip: RawSkip,
    language: Option<String>,
    locale: Option<String>,
    time_zone: Option<String>,
}

impl Default for RawSetup {
    fn default() -> Self {
        RawSetup {
            skip: skip_all(),
            language: None,
            locale: None,
            time_zone: None,
        }
    }
}

fn skip_all() -> RawSkip {
    RawSkip::One("all".into())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSkip {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNaming {
    template: String,
    start: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErase {
    policy: Option<EraseMode>,
    #[serde(default)]
    allow_supervised_by_us: bool,
    #[serde(default)]
    allow_serials: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivation {
    server_url: Option<String>,
    extra_ca_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl StationConfig {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<StationConfig, ConfigError> {
        let bytes =
            read_limited(path, MAX_REFERENCED_FILE).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem {
                field: String::new(),
                line: None,
                reason: "is not UTF-8 text".into(),
            }],
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks config text as if it had been read from `path` (relative paths in it are taken
    /// relative to `path`'s folder).
    pub fn from_toml(text: &str, path: &Path) -> Result<StationConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![toml_problem(text, &e)],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut problems = Problems::default();
        let config = check(raw, path, &base, &mut problems);
        if problems.0.is_empty() {
            return Ok(config);
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

    /// A stable hash (SHA-256, hex) of the settings that decide what a prepared iPad looks like:
    /// organization, supervision certificate, Wi-Fi, MDM URL, mode and anchors, skipped panes,
    /// language, locale, time zone and naming template. A device recorded as done with the same
    /// fingerprint is already prepared and is left alone.
    ///
    /// Not included, because they do not change the device: the MDM's display name, erase
    /// policy, concurrency, state folder, usbmuxd address, activation server, slot labels.
    pub fn fingerprint(&self) -> String {
        #[derive(Serialize)]
        struct Input<'a> {
            v: u32,
            org: [&'a Option<String>; 4],
            org_name: &'a str,
            identity_cert: &'a Option<String>,
            wifi: WifiInput<'a>,
            mdm_url: &'a str,
            mdm_mode: &'a str,
            anchors: Vec<&'a str>,
            skip: Option<&'a [String]>,
            language: &'a Option<String>,
            locale: &'a Option<String>,
            time_zone: &'a Option<String>,
            naming: Option<&'a str>,
        }
        #[derive(Serialize)]
        enum WifiInput<'a> {
            Network {
                ssid: &'a str,
                security: &'a str,
                password: &'a Option<String>,
                hidden: bool,
                auto_join: bool,
            },
            Mobileconfig {
                sha256: &'a str,
            },
        }
        let o = &self.organization;
        let input = Input {
            v: 1,
            org: [&o.department, &o.phone, &o.email, &o.address],
            org_name: &o.name,
            identity_cert: &o.identity_certificate_sha256,
            wifi: match &self.wifi {
                Wifi::Network(n) => WifiInput::Network {
                    ssid: &n.ssid,
                    security: n.security.as_str(),
                    password: &n.password_digest,
                    hidden: n.hidden,
                    auto_join: n.auto_join,
                },
                Wifi::Mobileconfig { sha256, .. } => WifiInput::Mobileconfig { sha256 },
            },
            mdm_url: &self.mdm.enrollment_url,
            mdm_mode: self.mdm.mode.as_str(),
            anchors: self
                .mdm
                .anchor_certificates
                .iter()
                .map(|a| a.sha256.as_str())
                .collect(),
            skip: match &self.setup.skip {
                SkipPanes::All => None,
                SkipPanes::Keys(k) => Some(k),
            },
            language: &self.setup.language,
            locale: &self.setup.locale,
            time_zone: &self.setup.time_zone,
            naming: self.naming.as_ref().map(|n| n.template.as_str()),
        };
        // serde_json writes struct fields in declaration order: the encoding is stable.
        let bytes = serde_json::to_vec(&input).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// The top-level sections that differ from `other` (for the reload log line).
    pub fn changed_sections(&self, other: &StationConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("organization", self.organization != other.organization);
        check("wifi", self.wifi != other.wifi);
        check("mdm", self.mdm != other.mdm);
        check("setup", self.setup != other.setup);
        check("naming", self.naming != other.naming);
        check("erase", self.erase != other.erase);
        check(
            "max_concurrent",
            self.max_concurrent != other.max_concurrent,
        );
        check("state_dir", self.state_dir != other.state_dir);
        check("usbmuxd", self.usbmuxd != other.usbmuxd);
        check("activation", self.activation != other.activation);
        check("slots", self.slots != other.slots);
        changed
    }
}

fn check(raw: RawConfig, path: &Path, base: &Path, p: &mut Problems) -> StationConfig {
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
    check_https("mdm.enrollment_url", &raw.mdm.enrollment_url, p);
    let anchor_certificates = raw
        .mdm
        .anchor_certificates
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let field = format!("mdm.anchor_certificates[{i}]");
            let path = resolve(a);
            let bytes = read_file(&field, &path, p)?;
            if !(bytes.starts_with(b"-----BEGIN CERTIFICATE-----") || bytes.first() == Some(&0x30))
            {
                p.add(
                    field,
                    format!("{} is not a certificate (PEM or DER)", path.display()),
                );
                return None;
            }
            Some(AnchorCertificate {
                path,
                sha256: hex(&Sha256::digest(&bytes)),
            })
        })
        .collect();
    let mdm = Mdm {
        name: raw.mdm.name,
        enrollment_url: raw.mdm.enrollment_url,
        mode,
        anchor_certificates,
    };

    let organization = check_organization(raw.organization, mode, &resolve, p);
    let wifi = check_wifi(raw.wifi, &resolve, p);
    let setup = check_setup(raw.setup, p);

    let naming = raw
        .naming
        .and_then(|n| match NameTemplate::parse(&n.template) {
            Ok(template) => Some(Naming {
                template,
                start: n.start.unwrap_or(1),
            }),
            Err(reason) => {
                p.add("naming.template", reason);
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
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            p.add(
                format!("erase.allow_serials[{i}]"),
                format!("\"{s}\" is not a serial number (letters and digits only)"),
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
                format!("is {n}; it must be between 1 and 16 (1, one iPad at a time, is what the school guide asks)"),
            );
            1
        }
    };

    let state_dir = raw
        .state_dir
        .as_deref()
        .map(resolve)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
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
    check_usbmuxd(&usbmuxd, p);

    let activation = Activation {
        server_url: raw
            .activation
            .server_url
            .unwrap_or_else(|| DEFAULT_ACTIVATION_URL.to_owned()),
        extra_ca_file: raw.activation.extra_ca_file.as_deref().map(resolve),
    };
    check_https("activation.server_url", &activation.server_url, p);
    if let Some(ca) = &activation.extra_ca_file
        && let Some(bytes) = read_file("activation.extra_ca_file", ca, p)
        && !bytes.windows(11).any(|w| w == b"-----BEGIN ")
    {
        p.add(
            "activation.extra_ca_file",
            format!("{} is not a PEM certificate", ca.display()),
        );
    }

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

    StationConfig {
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
    }
}

fn check_organization(
    raw: RawOrganization,
    mode: MdmMode,
    resolve: &dyn Fn(&Path) -> PathBuf,
    p: &mut Problems,
) -> Organization {
    if raw.name.trim().is_empty() {
        p.add(
            "organization.name",
            "is empty; the iPads show it as their owner",
        );
    }
    let identity = raw.identity.as_deref().map(resolve);
    let mut identity_certificate_sha256 = None;
    match &identity {
        None if mode == MdmMode::Manual => p.add(
            "organization.identity",
            "is missing; manual mode supervises the iPads with our identity (the folder with supervision.crt.der and supervision.key.pem)",
        ),
        None => {}
        Some(dir) if !dir.is_dir() => {
            p.add("organization.identity", format!("{} is not a folder (or does not exist)", dir.display()))
        }
        Some(dir) => {
            let cert = dir.join(IDENTITY_CERTIFICATE_FILE);
            if let Some(bytes) = read_file("organization.identity", &cert, p) {
                identity_certificate_sha256 = Some(hex(&Sha256::digest(&bytes)));
            }
            // The key is only opened, not read: loading the config has no business holding it.
            let key = dir.join(IDENTITY_KEY_FILE);
            if let Err(e) = fs::File::open(&key) {
                p.add("organization.identity", format!("cannot read {}: {}", key.display(), plain_io(&e)));
            }
        }
    }
    let non_empty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    Organization {
        name: raw.name,
        department: non_empty(raw.department),
        phone: non_empty(raw.phone),
        email: non_empty(raw.email),
        address: non_empty(raw.address),
        identity,
        identity_certificate_sha256,
    }
}

fn check_wifi(raw: RawWifi, resolve: &dyn Fn(&Path) -> PathBuf, p: &mut Problems) -> Wifi {
    if let Some(profile) = raw.mobileconfig {
        let others = [
            ("ssid", raw.ssid.is_some()),
            ("security", raw.security.is_some()),
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("hidden", raw.hidden.is_some()),
            ("auto_join", raw.auto_join.is_some()),
        ];
        for (key, set) in others {
            if set {
                p.add(format!("wifi.{key}"), "cannot be combined with wifi.mobileconfig (the profile already describes the network)");
            }
        }
        let path = resolve(&profile);
        let sha256 = match read_file("wifi.mobileconfig", &path, p) {
            Some(bytes) => {
                if let Err(reason) = check_mobileconfig(&bytes) {
                    p.add("wifi.mobileconfig", format!("{}: {reason}", path.display()));
                }
                hex(&Sha256::digest(&bytes))
            }
            None => String::new(),
        };
        return Wifi::Mobileconfig { path, sha256 };
    }

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
    let security = raw.security.unwrap_or(WifiSecurity::Wpa2);
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
        (None, Some(file)) => read_file("wifi.password_file", file, p).and_then(|bytes| {
            match String::from_utf8(bytes) {
                // Only the line ending goes: spaces can be part of a passphrase.
                Ok(text) => Some(Secret(text.trim_end_matches(['\n', '\r']).to_owned())),
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
        (Some(_), WifiSecurity::None) => p.add(
            pw_field,
            "is set but security = \"none\" (an open network takes no password)",
        ),
        (Some(pw), s) => {
            if let Err(reason) = check_password(pw.expose(), s) {
                p.add(pw_field, reason);
            }
        }
        _ => {}
    }
    let password_digest = password.as_ref().map(|pw| stretched_digest(pw.expose()));
    Wifi::Network(WifiNetwork {
        ssid,
        security,
        password,
        password_file,
        hidden: raw.hidden.unwrap_or(false),
        auto_join: raw.auto_join.unwrap_or(true),
        password_digest,
    })
}

/// The same length rules iOS applies when joining.
fn check_password(pw: &str, security: WifiSecurity) -> Result<(), String> {
    let hex_digits = |n: usize| pw.len() == n && pw.chars().all(|c| c.is_ascii_hexdigit());
    let wpa_ok = (8..=63).contains(&pw.chars().count()) || hex_digits(64);
    let wpa_err = || {
        Err(format!(
            "is {} characters long; a WPA password is 8 to 63 characters",
            pw.chars().count()
        ))
    };
    match security {
        WifiSecurity::Wep
            if !(pw.len() == 5 || pw.len() == 13 || hex_digits(10) || hex_digits(26)) =>
        {
            Err("a WEP key is 5 or 13 characters, or 10 or 26 hexadecimal digits".into())
        }
        WifiSecurity::Wpa | WifiSecurity::Wpa2 | WifiSecurity::Wpa3 if !wpa_ok => wpa_err(),
        // "any" lets the device pick the security, so any key shape may be right.
        _ => Ok(()),
    }
}

/// A `.mobileconfig` is a property list, or a signed one (CMS, DER: starts with a SEQUENCE).
fn check_mobileconfig(bytes: &[u8]) -> Result<(), String> {
    if bytes.first() == Some(&0x30) {
        return Ok(());
    }
    let limits = usbmux::Limits::new(MAX_REFERENCED_FILE as usize);
    let value = usbmux::bounded_plist::from_bytes(bytes, limits)
        .map_err(|e| format!("is not a configuration profile (not a property list: {e})"))?;
    let dict = value
        .as_dictionary()
        .ok_or("is not a configuration profile (not a dictionary)")?;
    match dict.get("PayloadType").and_then(plist::Value::as_string) {
        Some("Configuration") => Ok(()),
        _ => Err("is not a configuration profile (PayloadType is not \"Configuration\")".into()),
    }
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
            for (i, k) in keys.iter().enumerate() {
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                    p.add(
                        format!("setup.skip[{i}]"),
                        format!("\"{k}\" is not a skip key (letters and digits, e.g. \"Privacy\")"),
                    );
                }
            }
            SkipPanes::Keys(
                keys.into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            )
        }
    };
    let shaped = |field: &str,
                  value: &Option<String>,
                  ok: fn(&str) -> bool,
                  example: &str,
                  p: &mut Problems| {
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
        |v| is_tag(v, '-'),
        "\"en\" or \"fr\"",
        p,
    );
    shaped(
        "setup.locale",
        &raw.locale,
        |v| is_tag(v, '_'),
        "\"en_GB\"",
        p,
    );
    shaped(
        "setup.time_zone",
        &raw.time_zone,
        |v| {
            !v.is_empty()
                && !v.starts_with('/')
                && !v.contains("..")
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        },
        "\"Europe/London\"",
        p,
    );
    Setup {
        skip,
        language: raw.language,
        locale: raw.locale,
        time_zone: raw.time_zone,
    }
}

/// `en`, `pt-BR`, `zh-Hans`, `en_GB`: letters first, then parts of letters or digits.
fn is_tag(v: &str, sep: char) -> bool {
    let mut parts = v.split(sep);
    let first_ok = parts
        .next()
        .is_some_and(|f| (2..=3).contains(&f.len()) && f.chars().all(|c| c.is_ascii_alphabetic()));
    first_ok
        && parts
            .all(|p| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn check_https(field: &str, url: &str, p: &mut Problems) {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") {
        p.add(field, format!("is \"{url}\"; it must be an https:// address (plain http is refused: the device would trust whatever answers)"));
        return;
    }
    let Some(rest) = lower.strip_prefix("https://") else {
        p.add(
            field,
            format!("is \"{url}\"; it must be an https:// address"),
        );
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        p.add(
            field,
            format!("is \"{url}\"; the address has no server name"),
        );
    } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add(
            field,
            format!("is \"{url}\"; an address cannot contain spaces"),
        );
    }
}

fn check_usbmuxd(addr: &str, p: &mut Problems) {
    if let Some(path) = addr.strip_prefix("UNIX:") {
        if path.is_empty() {
            p.add("usbmuxd", "is \"UNIX:\" with no socket path");
        }
    } else if addr.is_empty() {
        p.add(
            "usbmuxd",
            "is empty; give a socket path such as /var/run/usbmuxd, or host:port",
        );
    } else if addr.contains(':') && addr.parse::<SocketAddr>().is_err() {
        // Tools read an address with a colon as host:port (a path with a colon needs UNIX:).
        p.add(
            "usbmuxd",
            format!("\"{addr}\" is neither host:port (e.g. 127.0.0.1:27015) nor a socket path"),
        );
    }
}

/// Reads a file the config names, recording a problem if it cannot be read.
fn read_file(field: &str, path: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    match read_limited(path, MAX_REFERENCED_FILE) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            p.add(
                field,
                format!("cannot read {}: {}", path.display(), plain_io(&e)),
            );
            None
        }
    }
}

fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a folder, not a file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", max >> 20),
        ));
    }
    Ok(bytes)
}

/// io errors in words a volunteer understands.
fn plain_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it does not exist".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (check who owns it and its mode)".into()
        }
        _ => e.to_string(),
    }
}

fn stretched_digest(password: &str) -> String {
    let mut digest = Sha256::new_with_prefix(b"cartprep wifi password v1\0");
    digest.update(password.as_bytes());
    let mut out = digest.finalize();
    for _ in 1..PASSWORD_DIGEST_ROUNDS {
        out = Sha256::digest(out);
    }
    hex(&out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// TOML errors → the setting's dotted path
// ---------------------------------------------------------------------------------------------

/// Turns a TOML/serde error into a [`Problem`] naming the setting. toml reports a byte span;
/// the span is matched against the document's keys to find the dotted path, and
/// "missing field" errors (whose span is the enclosing table) get the missing name appended.
fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    let message = error.message().trim().to_owned();
    let span = error.span();
    let line = span
        .as_ref()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let mut field = span
        .as_ref()
        .and_then(|s| {
            toml::de::DeTable::parse(text)
                .ok()
                .map(|doc| path_at(doc.get_ref(), s))
        })
        .unwrap_or_default();
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let reason = if let Some(missing) = quoted("missing field `") {
        field = join_path(&field, &missing);
        "is missing".to_owned()
    } else if let Some(unknown) = quoted("unknown field `") {
        if !field.ends_with(&unknown) {
            field = join_path(&field, &unknown);
        }
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        let expected = expected.strip_prefix("one of ").unwrap_or(&expected);
        if expected.is_empty() {
            "is not a setting cartprep knows".to_owned()
        } else {
            format!("is not a setting cartprep knows here (known: {expected})")
        }
    } else {
        plain_serde_message(&message.replace('`', "\""))
    };
    Problem {
        field,
        line,
        reason,
    }
}

/// serde's wording ("invalid type: string \"two\", expected i64") in a volunteer's words
/// ("is the text \"two\"; expected a whole number").
fn plain_serde_message(message: &str) -> String {
    let kinds = |s: &str| {
        s.replace("expected i64", "expected a whole number")
            .replace("expected u32", "expected a whole number (0 or more)")
            .replace("expected path string", "expected a path in quotes")
            .replace("expected a boolean", "expected true or false")
            .replace("string ", "the text ")
            .replace("integer ", "the number ")
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return format!("is {}", kinds(rest).replacen(", expected", "; expected", 1));
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.split_once(", expected one of ") {
            Some((got, choices)) => format!("is {got}; choose one of {choices}"),
            None => format!("is {rest}"),
        };
    }
    kinds(message)
}

/// The line of the setting at dotted path `field` (`mdm.anchor_certificates[1]`,
/// `slots."1-1.2"`), for problems found after parsing.
fn line_of(text: &str, field: &str) -> Option<usize> {
    use toml::de::DeValue;
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut start = None;
    for segment in split_path(field) {
        let (name, index) = match segment.find('[') {
            Some(i) => (
                &segment[..i],
                segment[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (segment.as_str(), None),
        };
        // A missing setting is reported at its section.
        let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        start = Some(key.span().start);
        let value = match (index, value.get_ref()) {
            (Some(i), DeValue::Array(items)) => {
                let item = items.get(i)?;
                start = Some(item.span().start);
                item
            }
            _ => value,
        };
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    start.map(|s| text[..s.min(text.len())].matches('\n').count() + 1)
}

/// Splits `a.b."c.d"[0]` into `a`, `b`, `c.d[0]` (dots inside quotes belong to the key).
fn split_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in field.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// Dotted path of the deepest key whose key or value span holds `span`.
///
/// Every table is searched, not only those whose span holds `span`: the span of a `[section]`
/// table covers its header, not the keys below it.
fn path_at(table: &toml::de::DeTable<'_>, span: &std::ops::Range<usize>) -> String {
    use toml::de::{DeTable, DeValue};
    type Span = std::ops::Range<usize>;

    fn contains(outer: &Span, inner: &Span) -> bool {
        outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
    }
    fn in_value(value: &toml::Spanned<DeValue<'_>>, span: &Span) -> Option<String> {
        match value.get_ref() {
            DeValue::Table(t) => in_table(t, span),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match in_value(item, span) {
                    Some(inner) if inner.starts_with('[') => Some(format!("[{i}]{inner}")),
                    Some(inner) => Some(format!("[{i}].{inner}")),
                    None if contains(&item.span(), span) => Some(format!("[{i}]")),
                    None => None,
                }),
            _ => None,
        }
    }
    fn in_table(table: &DeTable<'_>, span: &Span) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            let name = key.get_ref();
            match in_value(value, span) {
                Some(inner) if inner.starts_with('[') => Some(format!("{name}{inner}")),
                Some(inner) => Some(format!("{name}.{inner}")),
                None if contains(&key.span(), span) || contains(&value.span(), span) => {
                    Some(name.to_string())
                }
                None => None,
            }
        })
    }
    in_table(table, span).unwrap_or_default()
}

#[cfg(test)]
mod tests;
