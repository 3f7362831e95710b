//! Typed MCInstall failures (`docs/protocol.md` §3.2, §3.4). Every device failure keeps
//! the device's own description text, and `Display` shows it.

use std::time::Duration;

use plist::{Dictionary, Value};

/// One entry of a reply's `ErrorChain` (outer error first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    /// `ErrorCode`; signed or unsigned on the wire (an unsigned value above `i64::MAX` is read
    /// as the two's-complement negative it encodes).
    pub code: Option<i64>,
    pub domain: Option<String>,
    /// `LocalizedDescription`, else `USEnglishDescription`.
    pub description: Option<String>,
}

impl std::fmt::Display for ChainEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.domain.as_deref().unwrap_or("(no domain)"),
            self.code
                .map_or_else(|| "(no code)".into(), |c| c.to_string())
        )?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McInstallError {
    /// 14002: a cloud configuration exists; supervision needs an erase first.
    #[error("a cloud configuration is already present (14002): {description}")]
    AlreadyConfigured { description: String },
    /// 33003: activate first.
    #[error("the device is not activated (33003): {description}")]
    NotActivated { description: String },
    /// 33004: the device is assigned to ADE; use the ADE path or release it.
    #[error("the device must be configured through ADE (33004): {description}")]
    MustUseAde { description: String },
    /// 33002: the cloud configuration failed the device's validation.
    #[error("the cloud configuration is invalid (33002): {description}")]
    CloudConfigInvalid { description: String },
    /// `Escalate`: the certificate is not one of `SupervisorHostCertificates`.
    #[error("the supervisor certificate was rejected: {description}")]
    CertificateRejected { description: String },
    /// `EscalateResponse`: the CMS did not verify, the wrong certificate came first, or the
    /// content differs from the challenge.
    #[error("the signed escalation response was rejected: {description}")]
    SignedRequestRejected { description: String },
    /// Unknown request, ill-typed field, or a request not allowed in this parser state.
    #[error(
        "{request} was refused as malformed or not allowed now (CommandFormatError): {description}"
    )]
    CommandFormatError {
        request: &'static str,
        description: String,
    },
    /// 4020.
    #[error("the profile cannot be installed interactively (4020): {description}")]
    InteractiveInstallImpossible { description: String },
    /// 4021.
    #[error("the profile installation is blocked by Lockdown Mode (4021): {description}")]
    LockdownModeBlocked { description: String },
    /// 37000 / 37001.
    #[error("keybag migration failed ({code}): {description}")]
    KeybagMigrationFailed { code: i64, description: String },
    /// Any other failure, as the device sent it.
    #[error("{request} failed with Status {status}{}", describe_chain(.chain))]
    Device {
        request: &'static str,
        status: String,
        chain: Vec<ChainEntry>,
    },
    #[error("malformed reply to {request}: {reason}")]
    MalformedReply {
        request: &'static str,
        reason: String,
    },
    /// The device kept answering "wait" (a data migration pending since boot) for longer than
    /// the client waits.
    #[error(
        "the device asked to wait (a data migration is pending: unlock the iPad) and still did after {waited:?} of {request}"
    )]
    StillWaiting {
        request: &'static str,
        waited: Duration,
    },
    #[error("the device did not answer {request} within {after:?}")]
    Timeout {
        request: &'static str,
        after: Duration,
    },
    #[error("the device closed the connection during {request}")]
    ConnectionClosed { request: &'static str },
    #[error("connection error during {request}: {reason}")]
    Connection {
        request: &'static str,
        reason: String,
    },
    #[error("could not sign the escalation challenge: {0}")]
    Signer(String),
    /// Reaching the service: lockdown session, StartService, Connect, TLS.
    #[error(transparent)]
    Lockdown(#[from] lockdown::LockdownError),
}

impl McInstallError {
    /// Worth another try on a new connection: the device was slow or the link dropped. Answers
    /// by error code are the device's decision and are not retried.
    pub fn is_transient(&self) -> bool {
        match self {
            McInstallError::Timeout { .. }
            | McInstallError::StillWaiting { .. }
            | McInstallError::ConnectionClosed { .. }
            | McInstallError::Connection { .. }
            // A reply that did not parse is the link's doing, not the device's answer.
            | McInstallError::MalformedReply { .. } => true,
            McInstallError::Lockdown(l) => l.is_transient(),
            _ => false,
        }
    }
}

fn describe_chain(chain: &[ChainEntry]) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = chain.iter().map(ChainEntry::to_string).collect();
        format!(": {}", parts.join(" <- "))
    }
}

/// `ErrorCode` as i64, whether the plist integer is signed or unsigned.
fn code_of(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i.as_signed().or_else(|| i.as_unsigned().map(|u| u as i64)),
        // Some encoders write numbers as reals or strings; accept the exact ones.
        Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => Some(*r as i64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses `ErrorChain`; entries that are not dictionaries are skipped.
pub fn parse_chain(reply: &Dictionary) -> Vec<ChainEntry> {
    let Some(Value::Array(items)) = reply.get("ErrorChain") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_dictionary)
        .map(|d| {
            let text = |k: &str| {
                d.get(k)
                    .and_then(Value::as_string)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            ChainEntry {
                code: d.get("ErrorCode").and_then(code_of),
                domain: text("ErrorDomain"),
                description: text("LocalizedDescription").or_else(|| text("USEnglishDescription")),
            }
        })
        .collect()
}

/// Whether `domain` is `expected` (given in its `MC…` spelling) or its `DMC…` spelling; an
/// absent domain matches (the code decides).
fn domain_is(domain: Option<&str>, expected: &str) -> bool {
    match domain {
        None => true,
        Some(d) => d == expected || d.strip_prefix('D') == Some(expected),
    }
}

/// The typed error for a known (code, domain), keeping `description`.
fn known(entry: &ChainEntry, description: &str) -> Option<McInstallError> {
    let code = entry.code?;
    let domain = entry.domain.as_deref();
    let description = description.to_owned();
    let e = match code {
        14002 if domain_is(domain, "MCTunnelErrorDomain") => {
            McInstallError::AlreadyConfigured { description }
        }
        33002 if domain_is(domain, "MCCloudConfigErrorDomain") => {
            McInstallError::CloudConfigInvalid { description }
        }
        33003 if domain_is(domain, "MCCloudConfigErrorDomain") => {
            McInstallError::NotActivated { description }
        }
        33004 if domain_is(domain, "MCCloudConfigErrorDomain") => {
            McInstallError::MustUseAde { description }
        }
        4020 if domain_is(domain, "MCInstallationErrorDomain") => {
            McInstallError::InteractiveInstallImpossible { description }
        }
        4021 if domain_is(domain, "MCInstallationErrorDomain") => {
            McInstallError::LockdownModeBlocked { description }
        }
        37000 | 37001 if domain_is(domain, "MCKeybagErrorDomain") => {
            McInstallError::KeybagMigrationFailed { code, description }
        }
        _ => return None,
    };
    Some(e)
}

/// Checks a reply: `Ok` when `Status == "Acknowledged"`, else the typed error.
/// The statuses the device is known to send (`docs/protocol.md` §3.4).
const KNOWN_STATUSES: [&str; 5] = [
    "Acknowledged",
    "Error",
    "CommandFormatError",
    "CertificateRejected",
    "SignedRequestRejected",
];

/// Whether `reply` is the daemon's "wait until preboard is finished" answer: when a data
/// migration is pending and the iPad was not unlocked since boot, mc_mobile_tunnel reads the
/// request, answers a fixed dictionary instead of running it, and reads the next one (iOS 26.1
/// decompile, `MMTConnection executeNextCommand`; `docs/fidelity.md` §5). That dictionary's
/// content is not recoverable, so a reply that is neither a known status nor carries an
/// `ErrorChain` counts as it: the request was not run and may be sent again.
pub fn is_wait_reply(reply: &Dictionary) -> bool {
    if reply.contains_key("ErrorChain") {
        return false;
    }
    match reply.get("Status") {
        None => true,
        Some(Value::String(s)) => !KNOWN_STATUSES.contains(&s.as_str()),
        Some(_) => false,
    }
}

pub fn check_reply(request: &'static str, reply: &Dictionary) -> Result<(), McInstallError> {
    let status = match reply.get("Status") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(McInstallError::MalformedReply {
                request,
                reason: "Status is not a string".into(),
            });
        }
        None => {
            return Err(McInstallError::MalformedReply {
                request,
                reason: "no Status".into(),
            });
        }
    };
    if status == "Acknowledged" {
        return Ok(());
    }
    let chain = parse_chain(reply);
    // The device's own words: the outer error's text, else the first text in the chain, else
    // a top-level `Error` string (SetCertificate-style replies), else the Status itself.
    let description = chain
        .first()
        .and_then(|e| e.description.clone())
        .or_else(|| chain.iter().find_map(|e| e.description.clone()))
        .or_else(|| {
            reply
                .get("Error")
                .and_then(Value::as_string)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| status.to_owned());
    match status {
        "CertificateRejected" => return Err(McInstallError::CertificateRejected { description }),
        "SignedRequestRejected" => {
            return Err(McInstallError::SignedRequestRejected { description });
        }
        "CommandFormatError" => {
            return Err(McInstallError::CommandFormatError {
                request,
                description,
            });
        }
        _ => {}
    }
    // ErrorChain[0] decides; an underlying entry with a known code is the fallback (a wrapper
    // error around profiled's).
    if let Some(first) = chain.first()
        && let Some(e) = known(first, &description)
    {
        return Err(e);
    }
    for entry in chain.iter().skip(1) {
        let text = entry
            .description
            .clone()
            .unwrap_or_else(|| description.clone());
        if let Some(e) = known(entry, &text) {
            return Err(e);
        }
    }
    Err(McInstallError::Device {
        request,
        status: status.to_owned(),
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_neither_known_nor_an_error_chain_is_the_wait_reply() {
        let reply = |status: Option<Value>, chain: bool| {
            let mut d = Dictionary::new();
            if let Some(s) = status {
                d.insert("Status".into(), s);
            }
            if chain {
                d.insert("ErrorChain".into(), Value::Array(vec![]));
            }
            d
        };
        let s = |t: &str| Some(Value::String(t.into()));
        for (case, want) in [
            (reply(None, false), true),
            (reply(s("Waiting"), false), true),
            (reply(s("Acknowledged"), false), false),
            (reply(s("Error"), false), false),
            (reply(s("CommandFormatError"), false), false),
            (reply(s("CertificateRejected"), false), false),
            (reply(s("SignedRequestRejected"), false), false),
            (reply(s("Waiting"), true), false),
            (reply(None, true), false),
            (reply(Some(Value::Integer(1.into())), false), false),
        ] {
            assert_eq!(is_wait_reply(&case), want, "{case:?}");
        }
    }

    fn failure(code: Value, domain: &str, text: &str) -> Dictionary {
        let mut entry = Dictionary::new();
        entry.insert("ErrorCode".into(), code);
        entry.insert("ErrorDomain".into(), domain.into());
        entry.insert("LocalizedDescription".into(), text.into());
        entry.insert("USEnglishDescription".into(), format!("US {text}").into());
        let mut d = Dictionary::new();
        d.insert("Status".into(), "Error".into());
        d.insert(
            "ErrorChain".into(),
            Value::Array(vec![Value::Dictionary(entry)]),
        );
        d
    }

    fn status(s: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Status".into(), s.into());
        d
    }

    #[test]
    fn acknowledged_is_success() {
        assert!(check_reply("Flush", &status("Acknowledged")).is_ok());
    }

    #[test]
    fn known_codes_map_to_typed_errors_in_either_domain_spelling() {
        let text = "A cloud configuration is already present on this device.";
        for domain in ["DMCTunnelErrorDomain", "MCTunnelErrorDomain"] {
            match check_reply(
                "SetCloudConfiguration",
                &failure(14002.into(), domain, text),
            ) {
                Err(e @ McInstallError::AlreadyConfigured { .. }) => {
                    assert!(e.to_string().contains(text), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
        type Case = (i64, &'static str, fn(&McInstallError) -> bool);
        let cases: [Case; 8] = [
            (33003, "MCCloudConfigErrorDomain", |e| {
                matches!(e, McInstallError::NotActivated { .. })
            }),
            (33004, "DMCCloudConfigErrorDomain", |e| {
                matches!(e, McInstallError::MustUseAde { .. })
            }),
            (33002, "MCCloudConfigErrorDomain", |e| {
                matches!(e, McInstallError::CloudConfigInvalid { .. })
            }),
            (4020, "DMCInstallationErrorDomain", |e| {
                matches!(e, McInstallError::InteractiveInstallImpossible { .. })
            }),
            (4021, "MCInstallationErrorDomain", |e| {
                matches!(e, McInstallError::LockdownModeBlocked { .. })
            }),
            (37000, "DMCKeybagErrorDomain", |e| {
                matches!(e, McInstallError::KeybagMigrationFailed { code: 37000, .. })
            }),
            (37001, "MCKeybagErrorDomain", |e| {
                matches!(e, McInstallError::KeybagMigrationFailed { code: 37001, .. })
            }),
            (
                37002,
                "DMCKeybagErrorDomain",
                |e| matches!(e, McInstallError::Device { chain, .. } if chain[0].code == Some(37002)),
            ),
        ];
        for (code, domain, ok) in cases {
            let e = check_reply("X", &failure(code.into(), domain, "words")).unwrap_err();
            assert!(ok(&e), "{code} {domain}: {e:?}");
            assert!(e.to_string().contains("words"), "{e}");
        }
    }

    #[test]
    fn a_known_code_in_another_domain_stays_general() {
        let e = check_reply(
            "X",
            &failure(14002.into(), "NSCocoaErrorDomain", "something else"),
        )
        .unwrap_err();
        assert!(matches!(e, McInstallError::Device { .. }), "{e:?}");
    }

    #[test]
    fn unsigned_and_signed_codes_are_read() {
        let unsigned = failure(
            Value::Integer(plist::Integer::from(33003u64)),
            "MCCloudConfigErrorDomain",
            "x",
        );
        assert!(matches!(
            check_reply("X", &unsigned),
            Err(McInstallError::NotActivated { .. })
        ));
        let negative = failure(Value::Integer(u64::MAX.into()), "SomeDomain", "minus one");
        match check_reply("X", &negative) {
            Err(McInstallError::Device { chain, .. }) => assert_eq!(chain[0].code, Some(-1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn us_english_text_is_used_when_the_localized_one_is_missing() {
        let mut d = failure(33004.into(), "MCCloudConfigErrorDomain", "x");
        if let Some(Value::Array(a)) = d.get_mut("ErrorChain")
            && let Some(Value::Dictionary(e)) = a.get_mut(0)
        {
            e.remove("LocalizedDescription");
        }
        match check_reply("X", &d) {
            Err(McInstallError::MustUseAde { description }) => assert_eq!(description, "US x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_underlying_known_code_is_found() {
        let mut d = failure(12345.into(), "DMCTunnelErrorDomain", "outer");
        let mut inner = Dictionary::new();
        inner.insert("ErrorCode".into(), 33003.into());
        inner.insert("ErrorDomain".into(), "MCCloudConfigErrorDomain".into());
        inner.insert("LocalizedDescription".into(), "not activated".into());
        if let Some(Value::Array(a)) = d.get_mut("ErrorChain") {
            a.push(Value::Dictionary(inner));
        }
        match check_reply("X", &d) {
            Err(McInstallError::NotActivated { description }) => {
                assert_eq!(description, "not activated")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_link_failing_is_transient_and_the_device_answering_is_not() {
        let cases: Vec<(McInstallError, bool)> = vec![
            (
                McInstallError::Timeout {
                    request: "Flush",
                    after: Duration::from_secs(5),
                },
                true,
            ),
            (McInstallError::ConnectionClosed { request: "Flush" }, true),
            (
                McInstallError::MalformedReply {
                    request: "Escalate",
                    reason: "torn".into(),
                },
                true,
            ),
            (
                McInstallError::Lockdown(lockdown::LockdownError::MalformedReply("x".into())),
                true,
            ),
            (
                McInstallError::Lockdown(lockdown::LockdownError::UserDeniedPairing),
                false,
            ),
            (
                McInstallError::MustUseAde {
                    description: "ADE".into(),
                },
                false,
            ),
            (
                McInstallError::CertificateRejected {
                    description: "not ours".into(),
                },
                false,
            ),
            (McInstallError::Signer("no key".into()), false),
        ];
        for (error, transient) in cases {
            assert_eq!(error.is_transient(), transient, "{error:?}");
        }
    }

    #[test]
    fn status_only_failures() {
        assert!(matches!(
            check_reply("Escalate", &status("CertificateRejected")),
            Err(McInstallError::CertificateRejected { description }) if description == "CertificateRejected"
        ));
        assert!(matches!(
            check_reply("EscalateResponse", &status("SignedRequestRejected")),
            Err(McInstallError::SignedRequestRejected { .. })
        ));
        assert!(matches!(
            check_reply("InstallProfileSilent", &status("CommandFormatError")),
            Err(McInstallError::CommandFormatError {
                request: "InstallProfileSilent",
                ..
            })
        ));
        match check_reply("X", &status("ProvisionalEnrollmentRejected")) {
            Err(e @ McInstallError::Device { .. }) => {
                assert!(e.to_string().contains("ProvisionalEnrollmentRejected"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_without_status_are_malformed() {
        assert!(matches!(
            check_reply("X", &Dictionary::new()),
            Err(McInstallError::MalformedReply { .. })
        ));
        let mut d = Dictionary::new();
        d.insert("Status".into(), 1.into());
        assert!(matches!(
            check_reply("X", &d),
            Err(McInstallError::MalformedReply { .. })
        ));
    }

    #[test]
    fn a_malformed_chain_does_not_panic() {
        let mut d = status("Error");
        d.insert(
            "ErrorChain".into(),
            Value::Array(vec![1.into(), "x".into()]),
        );
        assert!(matches!(
            check_reply("X", &d),
            Err(McInstallError::Device { chain, .. }) if chain.is_empty()
        ));
        let mut d = status("Error");
        d.insert("ErrorChain".into(), "not an array".into());
        assert!(check_reply("X", &d).is_err());
    }
}
