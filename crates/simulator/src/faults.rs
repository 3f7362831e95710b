//! Fault injection: make a virtual iPad (or the usbmuxd server) misbehave on a chosen request,
//! so clients can be tested against drops, stalls and garbage.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// What happens instead of (or before) the normal reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum FaultAction {
    /// Close the connection without answering (a cable pulled mid-request).
    Drop,
    /// Answer normally after a pause.
    Delay { ms: u64 },
    /// Answer with bytes that are not a valid message.
    Malformed,
    /// Answer with this lockdownd error name.
    Error { name: String },
}

/// One rule: on the `nth` occurrence (1-based; 0 = every time) of `request` on the device in
/// `slot` (any device when absent), do `action`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub slot: Option<u32>,
    /// A lockdownd `Request` name (GetValue, Pair…) or a usbmuxd `MessageType` (ListDevices…).
    pub request: String,
    #[serde(default)]
    pub nth: u32,
    #[serde(flatten)]
    pub action: FaultAction,
}

impl FaultAction {
    pub fn delay(&self) -> Option<Duration> {
        match self {
            FaultAction::Delay { ms } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }
}

/// The rules and how often each (slot, request) pair has been seen.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Vec<FaultRule>,
    seen: HashMap<(u32, String), u32>,
}

impl FaultBook {
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
        self.seen.clear();
    }

    /// Counts this request and returns the fault to apply, if any. `slot` 0 is the usbmuxd server.
    pub fn check(&mut self, slot: u32, request: &str) -> Option<FaultAction> {
        if self.rules.is_empty() {
            return None;
        }
        let count = self.seen.entry((slot, request.to_owned())).or_insert(0);
        *count += 1;
        let count = *count;
        self.rules
            .iter()
            .find(|r| {
                r.request == request
                    && r.slot.is_none_or(|s| s == slot)
                    && (r.nth == 0 || r.nth == count)
            })
            .map(|r| r.action.clone())
    }
}
