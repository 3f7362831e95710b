//! The station configuration: a TOML file (see `config/station.example.toml`, which documents
//! every key) read into a checked [`StationConfig`], and with it the [`Settings`] the pipeline
//! uses (see [`crate::settings`]).
//!
//! Loading checks everything a volunteer can get wrong before any iPad is touched, and says
//! which setting is wrong and why: `station.toml: line 15: mdm.enrollment_url: must be an
//! https:// address …`. Relative paths in the file are relative to the folder of the file, so a
//! config and the files it names can be moved together. Loading reads each file the config
//! names once (the checks and the settings use the same bytes) and writes nothing.
//!
//! - `raw`: the file as written (serde types); `load` and `wifi`: checking it and reading the
//!   files it names; `checks`: single-value checks; `name_template`: the naming template;
//!   `problems`: [`Problem`] and [`ConfigError`]; `toml_location`: setting paths and lines;
//!   `files`: bounded reads and digests.
//!
//! Secrets: the Wi-Fi password is held in a [`Secret`], whose `Debug` and `Display` print
//! `***`, so a config can be logged with `{:?}`.
//!
//! [`Settings`]: crate::settings::Settings

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use profiles::wifi::Security;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) mod asm;
mod checks;
mod files;
pub(crate) mod load;
mod name_template;
mod problems;
mod raw;
mod toml_location;
mod web;
mod wifi;

pub use asm::AsmConfig;
pub use name_template::{NAME_PLACEHOLDERS, NameTemplate, NameTemplateError, NameVars};
pub use problems::{ConfigError, Problem};
pub use web::{NotifyConfig, WebConfig};

/// Default Apple activation server.
pub const DEFAULT_ACTIVATION_URL: &str = "https://albert.apple.com/deviceservices/";
/// usbmuxd's socket when `USBMUXD_SOCKET_ADDRESS` is not set.
pub const DEFAULT_USBMUXD: &str = "/var/run/usbmuxd";
/// Default state folder (the ledger, audit log and pair records).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cartprep";
/// `[board] forget_after_minutes` when not set, and its bounds (a day at most).
pub const DEFAULT_FORGET_AFTER_MINUTES: u64 = 10;
pub const FORGET_AFTER_MINUTES_RANGE: std::ops::RangeInclusive<i64> = 0..=1440;
/// Bounds of `max_concurrent`.
pub const MAX_CONCURRENT_RANGE: std::ops::RangeInclusive<i64> = 1..=64;
/// The identity folder's files, as `profiles::identity` writes them.
pub const IDENTITY_CERTIFICATE_FILE: &str = "supervision.crt.der";
pub const IDENTITY_KEY_FILE: &str = "supervision.key.pem";

// ---------------------------------------------------------------------------------------------
// Secret
// ---------------------------------------------------------------------------------------------

/// A password: the Wi-Fi profile's own secret type (prints `***`, cleared on drop).
pub use profiles::wifi::Secret;

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
    /// iPads worked on at the same time (1..=64, default 1): a cart holds 30–36.
    pub max_concurrent: usize,
    pub state_dir: PathBuf,
    /// usbmuxd address: a socket path, `UNIX:/path`, or `host:port`.
    pub usbmuxd: String,
    pub activation: Activation,
    /// USB port chain → slot label.
    pub slots: BTreeMap<String, String>,
    /// `[asm]`: Apple School Manager, when configured.
    pub asm: Option<AsmConfig>,
    /// `[web]`: the live page, JSON and `/metrics`; `None` (the default) serves nothing.
    pub web: Option<WebConfig>,
    /// `[notify]`: the webhook; `None` (the default) posts nothing.
    pub notify: Option<NotifyConfig>,
    /// `[debug] transcript`: the folder each iPad's transcript is written to; `None` (the
    /// default) records nothing.
    pub transcript: Option<PathBuf>,
    /// `[board]`: what the status board shows.
    pub board: BoardConfig,
}

/// `[board]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardConfig {
    /// How long an unplugged iPad's line stays on the board (`forget.rs`); sooner when
    /// another iPad is plugged into its slot.
    pub forget_after: std::time::Duration,
}

impl BoardConfig {
    pub fn forgetting_after_minutes(minutes: u64) -> Self {
        BoardConfig {
            forget_after: std::time::Duration::from_secs(60 * minutes),
        }
    }
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig::forgetting_after_minutes(DEFAULT_FORGET_AFTER_MINUTES)
    }
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
    pub security: Security,
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

impl StationConfig {
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
        files::hex(&Sha256::digest(&bytes))
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
        check("asm", self.asm != other.asm);
        check("web", self.web != other.web);
        check("notify", self.notify != other.notify);
        check("board", self.board != other.board);
        changed
    }
}

#[cfg(test)]
mod tests;
