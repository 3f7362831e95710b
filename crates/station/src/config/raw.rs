//! The file as written: serde types that mirror the TOML, each table refusing keys it does not
//! know (so a misspelt setting is reported, not ignored).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use profiles::wifi::Security;

use super::{EraseMode, MdmMode, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) organization: RawOrganization,
    pub(super) wifi: RawWifi,
    pub(super) mdm: RawMdm,
    #[serde(default)]
    pub(super) setup: RawSetup,
    pub(super) naming: Option<RawNaming>,
    #[serde(default)]
    pub(super) erase: RawErase,
    // Signed, so 0 and negative numbers get our range message rather than a type error.
    pub(super) max_concurrent: Option<i64>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) usbmuxd: Option<String>,
    #[serde(default)]
    pub(super) activation: RawActivation,
    #[serde(default)]
    pub(super) slots: BTreeMap<String, String>,
    pub(super) asm: Option<super::asm::RawAsm>,
    pub(super) web: Option<super::web::RawWeb>,
    pub(super) notify: Option<super::web::RawNotify>,
    #[serde(default)]
    pub(super) board: RawBoard,
    #[serde(default)]
    pub(super) debug: RawDebug,
}

/// `[board]`: what the status board shows.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBoard {
    // Signed, so a negative number gets our range message rather than a type error.
    pub(super) forget_after_minutes: Option<i64>,
}

/// `[debug]`: help for a bug report; nothing here changes what is done to an iPad.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDebug {
    /// A folder for field transcripts (`docs/protocol.md` §9).
    pub(super) transcript: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganization {
    pub(super) name: String,
    pub(super) department: Option<String>,
    pub(super) phone: Option<String>,
    pub(super) email: Option<String>,
    pub(super) address: Option<String>,
    pub(super) identity: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWifi {
    pub(super) ssid: Option<String>,
    pub(super) security: Option<Security>,
    pub(super) password: Option<Secret>,
    pub(super) password_file: Option<PathBuf>,
    /// Accept a password file every user of the machine can read (refused by default).
    pub(super) allow_readable_password_file: Option<bool>,
    pub(super) hidden: Option<bool>,
    pub(super) auto_join: Option<bool>,
    pub(super) mobileconfig: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMdm {
    pub(super) name: String,
    pub(super) enrollment_url: String,
    pub(super) mode: Option<MdmMode>,
    #[serde(default)]
    pub(super) anchor_certificates: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSetup {
    #[serde(default = "skip_all")]
    pub(super) skip: RawSkip,
    pub(super) language: Option<String>,
    pub(super) locale: Option<String>,
    pub(super) time_zone: Option<String>,
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
pub(super) enum RawSkip {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNaming {
    pub(super) template: String,
    pub(super) start: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErase {
    pub(super) policy: Option<EraseMode>,
    #[serde(default)]
    pub(super) allow_supervised_by_us: bool,
    #[serde(default)]
    pub(super) allow_serials: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivation {
    pub(super) server_url: Option<String>,
    pub(super) extra_ca_file: Option<PathBuf>,
}
