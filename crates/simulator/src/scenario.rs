//! Scenarios: a TOML file describing a cart — its iPads, their initial state, when each is
//! plugged and unplugged, latency, and faults to inject.
//!
//! ```toml
//! seed = 7                       # identities derive from it (same file, same serials)
//! flavour = "linux"              # linux | macos: whose usbmuxd the simulator imitates
//!
//! [[device]]                     # slot 1
//! model = "iPad12,1"             # a ProductType from the catalogue
//! ios = "17.6.1"                 # a release that model shipped
//! name = "iPad"                  # DeviceName
//! activated = false
//! setup_done = false             # still in Setup Assistant
//! passcode = false
//! pairing = "auto"               # auto | accept | dialog | deny | locked
//! dialog_attempts = 2            # PairingDialogResponsePending answers before "Trust"
//!                                # (with locked: once unlocked)
//! latency_ms = 0                 # before every reply
//! plugged = true                 # plugged at start (default: unless the timeline plugs it)
//! activation_lock = false        # Find My on: the activation server wants an Apple ID
//! ade = false                    # assigned to an MDM server in Apple School Manager
//! ade_organization = "…"         # with ade: the organisation of its DEP profile
//! ade_configuration_url = "…"    # with ade: the MDM enrollment URL of its DEP profile
//! other_organization = "…"       # still assigned in another organisation's Apple School
//!                                # Manager: activation gives it their cloud configuration
//! erase_reattach_ms = 2000       # after EraseDevice, back on USB this much later
//! mcinstall_before_activation = false  # true: lockdownd starts MCInstall while unactivated
//! ade_apply_ms = 5000            # DownloadAndApplyCloudConfiguration takes this long
//! migration_wait_replies = 0     # MCInstall answers this many requests "wait" (data migration)
//! connection = "usb"             # usb | network: reached over Wi-Fi only (a teacher's iPad
//!                                # paired for Wi-Fi sync); listed by the macOS flavour only
//! also_network = false           # also listed over Wi-Fi (macOS flavour), under a second
//!                                # DeviceID with the same SerialNumber
//!
//! [[timeline]]
//! at_ms = 1500
//! slot = 1
//! action = "unplug"              # plug | unplug | setup (finish Setup Assistant: the iPad
//!                                # fetches its ConfigurationURL and enrolls) | unlock (enter
//!                                # the passcode of a `locked` iPad; Trust is asked next)
//!
//! [[fault]]
//! slot = 1                       # omit for every device; 0 = the usbmuxd server
//! request = "GetValue"
//! nth = 2                        # the 2nd GetValue (0 = every one)
//! action = "drop"                # drop | delay (ms = …) | malformed | deep | error (name = …)
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::bus;
use crate::catalogue;
use crate::error::SimError;
use crate::faults::FaultRule;
use crate::flavour::{self, Flavour};
use crate::ipad::PairingBehavior;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub flavour: Flavour,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceEntry>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultRule>,
    /// Levels of hubs on the cart's USB bus, 1 to 3 (default 1): see `bus.rs`.
    #[serde(default)]
    pub hub_levels: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PairingKind {
    /// Setup Assistant pairs silently; a set-up iPad asks "Trust This Computer?".
    #[default]
    Auto,
    Accept,
    Dialog,
    Deny,
    Locked,
}

/// How usbmuxd reaches an iPad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// On a USB cable in its slot.
    #[default]
    Usb,
    /// Over Wi-Fi only: never on the cart's bus.
    Network,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    pub model: Option<String>,
    pub ios: Option<String>,
    pub serial: Option<String>,
    pub udid: Option<String>,
    pub name: Option<String>,
    pub activated: Option<bool>,
    #[serde(default)]
    pub setup_done: bool,
    #[serde(default)]
    pub passcode: bool,
    #[serde(default)]
    pub pairing: PairingKind,
    pub dialog_attempts: Option<u32>,
    #[serde(default)]
    pub latency_ms: u64,
    pub plugged: Option<bool>,
    #[serde(default)]
    pub activation_lock: bool,
    #[serde(default)]
    pub ade: bool,
    pub ade_organization: Option<String>,
    pub ade_configuration_url: Option<String>,
    pub other_organization: Option<String>,
    pub erase_reattach_ms: Option<u64>,
    /// Turns off the rule "lockdownd refuses MCInstall on an unactivated iPad".
    #[serde(default)]
    pub mcinstall_before_activation: bool,
    pub ade_apply_ms: Option<u64>,
    #[serde(default)]
    pub migration_wait_replies: u32,
    #[serde(default)]
    pub connection: Connection,
    #[serde(default)]
    pub also_network: bool,
}

impl DeviceEntry {
    pub fn pairing_behavior(&self) -> PairingBehavior {
        let dialog = PairingBehavior::Dialog {
            attempts: self.dialog_attempts.unwrap_or(2),
        };
        match self.pairing {
            PairingKind::Auto if self.setup_done => dialog,
            PairingKind::Auto | PairingKind::Accept => PairingBehavior::Accept,
            PairingKind::Dialog => dialog,
            PairingKind::Deny => PairingBehavior::Deny,
            PairingKind::Locked => PairingBehavior::Locked {
                attempts: self.dialog_attempts.unwrap_or(2),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Plug,
    Unplug,
    /// The person at the iPad finishes Setup Assistant (see `enrollment.rs`).
    Setup,
    /// The person at the iPad enters its passcode (pairing `locked`).
    Unlock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub slot: u32,
    pub action: Action,
}

impl Scenario {
    /// A cart of `n` fresh iPads, models taken in catalogue order, all plugged at start.
    pub fn uniform(n: usize) -> Self {
        Scenario {
            seed: 0,
            flavour: Flavour::default(),
            devices: vec![DeviceEntry::default(); n],
            timeline: vec![],
            faults: vec![],
            hub_levels: None,
        }
    }

    pub fn load(path: &Path) -> Result<Self, SimError> {
        let err = |reason: String| SimError::Scenario {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        scenario.validate().map_err(err)?;
        Ok(scenario)
    }

    /// The bus layout the scenario asks for.
    pub fn levels(&self) -> Result<bus::HubLevels, String> {
        match self.hub_levels {
            None => Ok(bus::HubLevels::ONE),
            Some(n) => bus::HubLevels::new(n)
                .ok_or_else(|| format!("hub_levels = {n}: a cart has 1 to 3 levels of hubs")),
        }
    }

    /// Checks what serde cannot: models and releases exist, slots exist, UDIDs look real.
    pub fn validate(&self) -> Result<(), String> {
        if self.devices.is_empty() {
            return Err("no [[device]] entries".into());
        }
        let levels = self.levels()?;
        if self.devices.len() > levels.max_slots_all_buses() as usize {
            return Err(format!(
                "{} devices: with {} level(s) of hubs a USB bus has {} slots, and the simulator \
                 has at most {} buses ({} slots)",
                self.devices.len(),
                levels.get(),
                levels.max_slots(),
                crate::bus::MAX_BUSES,
                levels.max_slots_all_buses()
            ));
        }
        for (i, d) in self.devices.iter().enumerate() {
            let slot = i + 1;
            if let Some(m) = &d.model {
                let model = catalogue::model(m).ok_or_else(|| {
                    let known: Vec<_> = catalogue::MODELS.iter().map(|m| m.product_type).collect();
                    format!(
                        "device {slot}: unknown model {m:?} (known: {})",
                        known.join(", ")
                    )
                })?;
                if let Some(v) = &d.ios
                    && model.release(v).is_none()
                {
                    let known: Vec<_> = model.releases.iter().map(|r| r.version).collect();
                    return Err(format!(
                        "device {slot}: {m} never ran iPadOS {v} (known: {})",
                        known.join(", ")
                    ));
                }
            } else if d.ios.is_some() {
                return Err(format!("device {slot}: `ios` needs a `model`"));
            }
            if !d.ade && (d.ade_organization.is_some() || d.ade_configuration_url.is_some()) {
                return Err(format!(
                    "device {slot}: ade_organization/ade_configuration_url need `ade = true`"
                ));
            }
            if d.ade && d.other_organization.is_some() {
                return Err(format!(
                    "device {slot}: `other_organization` and `ade` both assign it in Apple School Manager; choose one"
                ));
            }
            if d.connection == Connection::Network && d.also_network {
                return Err(format!(
                    "device {slot}: `also_network` is for an iPad on USB; this one is `connection = \"network\"` already"
                ));
            }
            if self.flavour == Flavour::Macos
                && d.connection == Connection::Usb
                && bus::port_in(levels, slot as u32)
                    .and_then(|p| p.macos_location_id())
                    .is_none()
            {
                return Err(format!(
                    "device {slot}: its port has no macOS LocationID (hub ports past {} do not fit                      a nibble; use hub_levels = 2 or 3 for a larger cart)",
                    flavour::MACOS_MAX_HUB_PORT
                ));
            }
            if let Some(u) = &d.udid {
                let modern = u.len() == 25 && u.as_bytes()[8] == b'-';
                let legacy = u.len() == 40;
                if !(modern || legacy) || !u.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(format!(
                        "device {slot}: udid {u:?} is neither 40 hex digits nor 8-16 hex digits"
                    ));
                }
            }
        }
        for t in &self.timeline {
            if t.slot == 0 || t.slot as usize > self.devices.len() {
                return Err(format!(
                    "timeline at {} ms: there is no slot {}",
                    t.at_ms, t.slot
                ));
            }
        }
        for f in &self.faults {
            if let Some(s) = f.slot
                && s as usize > self.devices.len()
            {
                return Err(format!("fault on {}: there is no slot {s}", f.request));
            }
        }
        Ok(())
    }

    /// Whether `slot` is plugged when the simulator starts.
    pub fn plugged_at_start(&self, slot: u32) -> bool {
        let entry = &self.devices[slot as usize - 1];
        entry.plugged.unwrap_or_else(|| {
            !self
                .timeline
                .iter()
                .any(|t| t.slot == slot && t.action == Action::Plug)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_cart_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/cart.example.toml");
        let s = Scenario::load(&path).unwrap();
        assert_eq!(s.devices.len(), 3);
        assert!(s.plugged_at_start(1));
        assert!(!s.plugged_at_start(3), "the timeline plugs slot 3 later");
        assert_eq!(
            s.devices[1].pairing_behavior(),
            PairingBehavior::Dialog { attempts: 2 }
        );
        assert_eq!(
            s.devices[2].pairing_behavior(),
            PairingBehavior::Locked { attempts: 2 }
        );
        assert_eq!(s.faults[0].action, crate::faults::FaultAction::Drop);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |text: &str| {
            let s: Result<Scenario, _> = toml::from_str(text);
            match s {
                Err(e) => e.to_string(),
                Ok(s) => s.validate().unwrap_err(),
            }
        };
        assert!(bad("[[device]]\nmodel = \"iPad99,1\"").contains("unknown model \"iPad99,1\""));
        assert!(
            bad("[[device]]\nmodel = \"iPad12,1\"\nios = \"9.3\"").contains("never ran iPadOS 9.3")
        );
        assert!(bad("[[device]]\ncolour = \"red\"").contains("unknown field `colour`"));
        assert!(
            bad("[[device]]\n[[timeline]]\nat_ms = 1\nslot = 4\naction = \"plug\"")
                .contains("no slot 4")
        );
        assert!(
            bad("[[device]]\n[[fault]]\nrequest = \"Pair\"\naction = \"delay\"")
                .contains("needs ms")
        );
        assert!(
            bad("[[device]]\n[[fault]]\nrequest = \"Pair\"\naction = \"explode\"")
                .contains("unknown action")
        );
        assert!(bad("seed = 1").contains("no [[device]]"));
        let all_buses = crate::bus::HubLevels::default().max_slots_all_buses() as usize;
        assert!(Scenario::uniform(all_buses).validate().is_ok());
        assert!(
            bad(&"[[device]]\n".repeat(all_buses + 1))
                .contains(&format!("{} devices", all_buses + 1))
        );
        assert!(bad("[[device]]\nudid = \"1234\"").contains("udid"));
        assert!(
            bad("[[device]]\nconnection = \"network\"\nalso_network = true")
                .contains("also_network")
        );
        assert!(
            bad(&format!(
                "flavour = \"macos\"\n{}",
                "[[device]]\n".repeat(16)
            ))
            .contains("hub ports past 15")
        );
        assert!(
            Scenario {
                hub_levels: Some(2),
                flavour: Flavour::Macos,
                ..Scenario::uniform(49)
            }
            .validate()
            .is_ok(),
            "a Mac's cart of 7-port hubs fits in nibbles"
        );
        assert!(
            bad("hub_levels = 4
[[device]]")
            .contains("1 to 3 levels")
        );
        assert!(
            bad(&format!(
                "hub_levels = 2
{}",
                "[[device]]\n".repeat(49 * crate::bus::MAX_BUSES as usize + 1)
            ))
            .contains("a USB bus has 49 slots")
        );
        assert!(
            Scenario {
                hub_levels: Some(2),
                ..Scenario::uniform(50)
            }
            .validate()
            .is_ok(),
            "the 50th iPad of 7-port hubs goes on a second bus"
        );
        assert!(bad("flavour = \"windows\"\n[[device]]").contains("unknown variant"));
    }
}
