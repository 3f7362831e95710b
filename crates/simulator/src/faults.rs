//! Fault injection: make a virtual iPad (or the usbmuxd server) misbehave on a chosen request,
//! so clients can be tested against drops, stalls and garbage.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// What happens instead of (or before) the normal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
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
/// `slot` (any device when absent; 0 = the usbmuxd server), do `action`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct FaultRule {
    pub slot: Option<u32>,
    /// A lockdownd `Request` name (GetValue, Pair…), an MCInstall `RequestType`, or a usbmuxd
    /// `MessageType` (ListDevices…).
    pub request: String,
    pub nth: u32,
    pub action: FaultAction,
}

/// The TOML form: `action = "drop" | "delay" | "malformed" | "error"`, with `ms` for delay and
/// `name` for error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    slot: Option<u32>,
    request: String,
    #[serde(default)]
    nth: u32,
    action: String,
    ms: Option<u64>,
    name: Option<String>,
}

impl TryFrom<RawRule> for FaultRule {
    type Error = String;

    fn try_from(r: RawRule) -> Result<Self, String> {
        let action = match (r.action.as_str(), r.ms, r.name) {
            ("drop", None, None) => FaultAction::Drop,
            ("malformed", None, None) => FaultAction::Malformed,
            ("delay", Some(ms), None) => FaultAction::Delay { ms },
            ("delay", None, _) => return Err("action \"delay\" needs ms = …".into()),
            ("error", None, Some(name)) => FaultAction::Error { name },
            ("error", _, None) => return Err("action \"error\" needs name = \"…\"".into()),
            ("drop" | "malformed" | "delay" | "error", _, _) => {
                return Err(format!(
                    "action {:?} takes no such option (ms goes with delay, name with error)",
                    r.action
                ));
            }
            (other, _, _) => {
                return Err(format!(
                    "unknown action {other:?} (drop, delay, malformed, error)"
                ));
            }
        };
        Ok(FaultRule {
            slot: r.slot,
            request: r.request,
            nth: r.nth,
            action,
        })
    }
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

    /// How many times each request was seen on the device in `slot` (0: the usbmuxd server),
    /// by name.
    pub fn seen(&self, slot: u32) -> std::collections::BTreeMap<String, u32> {
        self.seen
            .iter()
            .filter(|((s, _), _)| *s == slot)
            .map(|((_, request), n)| (request.clone(), *n))
            .collect()
    }

    pub fn clear(&mut self) {
        self.rules.clear();
        self.seen.clear();
    }

    /// Counts this request and returns the fault to apply, if any. `slot` 0 is the usbmuxd server.
    /// Every request is counted, rules or not, so a test can see what a client sent.
    pub fn check(&mut self, slot: u32, request: &str) -> Option<FaultAction> {
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
