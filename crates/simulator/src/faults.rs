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
    /// Answer normally, plus a key holding arrays nested [`DEEP_LEVELS`] deep: a well-formed
    /// reply that a client must refuse rather than descend into.
    Deep,
    /// Answer with this lockdownd error name.
    Error { name: String },
    /// Do what was asked, then answer with this error name instead of the normal reply (a
    /// device whose reply misreports, as `cfgutil install-profile` before setup is reported
    /// to: `docs/fidelity.md` §6).
    ErrorAfter { name: String },
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

/// The TOML form: `action = "drop" | "delay" | "malformed" | "deep" | "error" | "error_after"`,
/// with `ms` for delay and `name` for the errors.
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
            ("deep", None, None) => FaultAction::Deep,
            ("delay", Some(ms), None) => FaultAction::Delay { ms },
            ("delay", None, _) => return Err("action \"delay\" needs ms = …".into()),
            ("error", None, Some(name)) => FaultAction::Error { name },
            ("error", _, None) => return Err("action \"error\" needs name = \"…\"".into()),
            ("error_after", None, Some(name)) => FaultAction::ErrorAfter { name },
            ("error_after", _, None) => {
                return Err("action \"error_after\" needs name = \"…\"".into());
            }
            ("drop" | "malformed" | "deep" | "delay" | "error" | "error_after", _, _) => {
                return Err(format!(
                    "action {:?} takes no such option (ms goes with delay, name with error)",
                    r.action
                ));
            }
            (other, _, _) => {
                return Err(format!(
                    "unknown action {other:?} (drop, delay, malformed, deep, error, error_after)"
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

/// How deep the `deep` action nests its extra value.
pub const DEEP_LEVELS: usize = 10_000;

/// `answer` as an XML plist with one more key, `Deep`, holding [`DEEP_LEVELS`] nested arrays.
/// Written as text: building such a value would itself recurse on drop.
pub fn deep_xml(answer: &plist::Dictionary) -> Vec<u8> {
    let mut xml = Vec::new();
    // A dictionary of plain values always serialises.
    let _ = plist::to_writer_xml(&mut xml, answer);
    let mut deep = b"<key>Deep</key>".to_vec();
    deep.extend_from_slice("<array>".repeat(DEEP_LEVELS).as_bytes());
    deep.extend_from_slice("</array>".repeat(DEEP_LEVELS).as_bytes());
    let close = b"</dict>";
    match xml.windows(close.len()).rposition(|w| w == close) {
        Some(at) => {
            xml.splice(at..at, deep);
        }
        // An empty dictionary is written `<dict/>`.
        None => {
            let empty = b"<dict/>";
            if let Some(at) = xml.windows(empty.len()).rposition(|w| w == empty) {
                let mut full = b"<dict>".to_vec();
                full.extend_from_slice(&deep);
                full.extend_from_slice(close);
                xml.splice(at..at + empty.len(), full);
            }
        }
    }
    xml
}

/// [`deep_xml`] with the 4-byte length of lockdownd and its services.
pub fn deep_message(answer: &plist::Dictionary) -> Vec<u8> {
    let body = deep_xml(answer);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
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

#[cfg(test)]
mod deep_tests {
    use super::*;
    use usbmux::bounded_plist::{self, BoundedPlistError, Limits};

    #[test]
    fn a_deep_answer_keeps_its_keys_and_nests_as_announced() {
        let mut answer = plist::Dictionary::new();
        answer.insert("Request".into(), "GetValue".into());
        let bytes = deep_xml(&answer);
        assert!(matches!(
            bounded_plist::dictionary_from_bytes(&bytes, Limits::new(1 << 20)),
            Err(BoundedPlistError::TooDeep { .. })
        ));
        // With room for it, the answer and the extra key are there.
        let roomy = Limits::new(1 << 20).with_max_depth(DEEP_LEVELS + 1);
        let dict = bounded_plist::dictionary_from_bytes(&bytes, roomy).expect("parses");
        assert_eq!(dict["Request"].as_string(), Some("GetValue"));
        assert!(dict.contains_key("Deep"));
    }

    #[test]
    fn an_empty_answer_gets_the_deep_key_too() {
        let bytes = deep_xml(&plist::Dictionary::new());
        assert!(matches!(
            bounded_plist::dictionary_from_bytes(&bytes, Limits::new(1 << 20)),
            Err(BoundedPlistError::TooDeep { .. })
        ));
    }
}
