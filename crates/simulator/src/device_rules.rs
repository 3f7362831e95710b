//! Device rules a scenario can switch off or tune, one field each. Every rule's evidence is its
//! row in `docs/fidelity.md`; the defaults are the stricter behaviour where evidence is missing.

use std::time::Duration;

use crate::scenario::DeviceEntry;

/// How long `DownloadAndApplyCloudConfiguration` takes unless a scenario says otherwise: the
/// device fetches from Apple and then from the MDM before answering (`docs/fidelity.md` §3).
pub const DEFAULT_ADE_APPLY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRules {
    /// lockdownd refuses `StartService com.apple.mobile.MCInstall` with `InvalidService` while
    /// the iPad is unactivated.
    pub mcinstall_needs_activation: bool,
    /// How long `DownloadAndApplyCloudConfiguration` takes before it answers.
    pub ade_apply: Duration,
    /// MCInstall requests answered with the "wait until preboard is finished" reply (a data
    /// migration is pending and the iPad was not unlocked since boot) before the daemon serves
    /// requests again.
    pub migration_wait_replies: u32,
}

impl Default for DeviceRules {
    fn default() -> Self {
        DeviceRules {
            mcinstall_needs_activation: true,
            ade_apply: DEFAULT_ADE_APPLY,
            migration_wait_replies: 0,
        }
    }
}

impl DeviceRules {
    pub fn from_entry(entry: &DeviceEntry) -> Self {
        DeviceRules {
            mcinstall_needs_activation: !entry.mcinstall_before_activation,
            ade_apply: entry
                .ade_apply_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_ADE_APPLY),
            migration_wait_replies: entry.migration_wait_replies,
        }
    }
}
