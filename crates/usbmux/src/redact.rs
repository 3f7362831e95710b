//! What a field transcript must never hold, replaced by fixed markers before any sink sees a
//! message (`docs/protocol.md` §9): private keys, escrow bags, passwords, PKCS#12 identities,
//! activation records' signatures and certificates, and signed profiles (whose content cannot
//! be redacted without breaking the signature, so the whole blob goes).
//!
//! A pure function over plists. Data that is itself a plist (a pair record in
//! `PairRecordData`, a profile in `Payload`, an activation record) is opened and redacted too,
//! and kept as a dictionary so the transcript stays readable.

use plist::{Dictionary, Value};

use crate::bounded_plist::{self, Limits};

/// Every marker starts with this; the replayer knows a redacted value by it.
pub const MARKER: &str = "REDACTED";

/// Keys whose values are secret wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "HostPrivateKey",
    "RootPrivateKey",
    "DevicePrivateKey",
    "PrivateKey",
    "EscrowBag",
    "Password",
    "UserPassword",
    "PayloadCertificatePassword",
    "AccountTokenSignature",
    "FairPlayKeyData",
];

/// Inside an activation record every signature, certificate and key blob is redacted.
const ACTIVATION_RECORD: &str = "ActivationRecord";
const ACTIVATION_SUFFIXES: &[&str] = &["Signature", "Certificate", "KeyData"];

const PKCS12_PAYLOAD: &str = "com.apple.security.pkcs12";

/// How deep nested plists (data holding a plist holding data…) are opened.
const MAX_NESTING: usize = 4;
const NESTED_LIMITS: Limits = Limits::new(crate::plist_service::MAX_MESSAGE_LEN as usize);

/// The marker for the value of `key`.
pub fn marker(key: &str) -> Value {
    Value::String(format!("{MARKER}:{key}"))
}

/// Whether `value` is a marker this module wrote.
pub fn is_redacted(value: &Value) -> bool {
    value.as_string().is_some_and(|s| s.starts_with(MARKER))
}

/// `message` with every secret replaced by a marker. The channel is not needed to decide
/// (secrets are recognised by key and by content, on every channel alike) but names where
/// the message came from in a future rule.
pub fn redact(_channel: &str, message: &Dictionary) -> Dictionary {
    redact_dict(message, false, 0)
}

fn redact_dict(dict: &Dictionary, in_activation_record: bool, nesting: usize) -> Dictionary {
    let pkcs12 = dict.get("PayloadType").and_then(Value::as_string) == Some(PKCS12_PAYLOAD);
    dict.iter()
        .map(|(key, value)| {
            let secret = SECRET_KEYS.contains(&key.as_str())
                || (pkcs12 && key == "PayloadContent")
                || (in_activation_record && ACTIVATION_SUFFIXES.iter().any(|s| key.ends_with(s)));
            let value = if secret {
                marker(key)
            } else {
                redact_value(
                    key,
                    value,
                    in_activation_record || key == ACTIVATION_RECORD,
                    nesting,
                )
            };
            (key.clone(), value)
        })
        .collect()
}

fn redact_value(key: &str, value: &Value, in_record: bool, nesting: usize) -> Value {
    match value {
        Value::Dictionary(d) => Value::Dictionary(redact_dict(d, in_record, nesting)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| redact_value(key, v, in_record, nesting))
                .collect(),
        ),
        Value::String(s) if holds_private_key(s.as_bytes()) => marker(key),
        Value::Data(bytes) => redact_data(key, bytes, in_record, nesting),
        other => other.clone(),
    }
}

fn redact_data(key: &str, bytes: &[u8], in_record: bool, nesting: usize) -> Value {
    if holds_private_key(bytes) {
        return marker(key);
    }
    if nesting < MAX_NESTING
        && is_plist(bytes)
        && let Ok(inner) = bounded_plist::dictionary_from_bytes(bytes, NESTED_LIMITS)
    {
        return Value::Dictionary(redact_dict(&inner, in_record, nesting + 1));
    }
    if let Some(content) = embedded_plist(bytes) {
        return signed_marker(key, bytes.len(), content);
    }
    Value::Data(bytes.to_vec())
}

/// A PEM private key (PKCS#1, PKCS#8, EC, encrypted) anywhere in `bytes`.
fn holds_private_key(bytes: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"PRIVATE KEY-----";
    bytes.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fn is_plist(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let b = &bytes[start..];
    b.starts_with(b"bplist00") || b.starts_with(b"<?xml") || b.starts_with(b"<plist")
}

/// The plist a DER structure (a CMS-signed profile) carries inside, if any.
fn embedded_plist(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&0x30) {
        return None;
    }
    let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle);
    let start = find(b"<?xml").or_else(|| find(b"<plist"))?;
    let end = bytes[start..]
        .windows(8)
        .position(|w| w == b"</plist>")
        .map(|i| start + i + 8)?;
    Some(&bytes[start..end])
}

/// A signed blob: its length and what it installs, so a reader still knows which profile it was.
fn signed_marker(key: &str, len: usize, content: &[u8]) -> Value {
    let mut identifiers = Vec::new();
    if let Ok(profile) = bounded_plist::dictionary_from_bytes(content, NESTED_LIMITS) {
        let mut note = |d: &Dictionary| {
            if let Some(id) = d.get("PayloadIdentifier").and_then(Value::as_string) {
                let kind = d
                    .get("PayloadType")
                    .and_then(Value::as_string)
                    .unwrap_or("?");
                identifiers.push(format!("{id} ({kind})"));
            }
        };
        note(&profile);
        if let Some(Value::Array(items)) = profile.get("PayloadContent") {
            items.iter().filter_map(Value::as_dictionary).for_each(note);
        }
    }
    Value::String(format!(
        "{MARKER}:{key}: signed profile of {len} bytes; payloads: {}",
        if identifiers.is_empty() {
            "unknown".to_owned()
        } else {
            identifiers.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn xml(d: &Dictionary) -> Vec<u8> {
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, d).unwrap();
        out
    }

    fn text(v: &Dictionary) -> String {
        String::from_utf8(xml(v)).unwrap()
    }

    const PEM_KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn secrets_are_replaced_and_everything_else_kept() {
        let wifi = dict(&[
            ("PayloadType", "com.apple.wifi.managed".into()),
            ("SSID_STR", "Students".into()),
            ("Password", "hunter2-secret".into()),
        ]);
        let profile = dict(&[
            ("PayloadIdentifier", "org.example.wifi".into()),
            (
                "PayloadContent",
                Value::Array(vec![Value::Dictionary(wifi)]),
            ),
        ]);
        let pkcs12 = dict(&[
            ("PayloadType", PKCS12_PAYLOAD.into()),
            ("PayloadContent", Value::Data(b"p12-secret-bytes".to_vec())),
        ]);
        let pair_record = dict(&[
            ("HostID", "HOST-1".into()),
            ("HostPrivateKey", Value::Data(PEM_KEY.as_bytes().to_vec())),
            ("RootPrivateKey", Value::Data(b"root-secret".to_vec())),
            ("EscrowBag", Value::Data(b"escrow-secret".to_vec())),
            (
                "HostCertificate",
                Value::Data(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ),
        ]);
        let activation = dict(&[(
            "ActivationRecord",
            Value::Dictionary(dict(&[
                ("AccountToken", Value::Data(b"token-public".to_vec())),
                (
                    "AccountTokenCertificate",
                    Value::Data(b"cert-secret".to_vec()),
                ),
                ("DeviceCertificate", Value::Data(b"devcert-secret".to_vec())),
                ("unbrick", true.into()),
            ])),
        )]);
        // (message, what must go, what must stay)
        let cases: Vec<(Dictionary, Vec<&str>, Vec<&str>)> = vec![
            (
                dict(&[
                    ("RequestType", "InstallProfile".into()),
                    ("Payload", Value::Data(xml(&profile))),
                ]),
                vec!["hunter2-secret"],
                vec!["org.example.wifi", "Students", "REDACTED:Password"],
            ),
            (
                dict(&[("Payload", Value::Data(xml(&pkcs12)))]),
                vec!["p12-secret-bytes"],
                vec!["REDACTED:PayloadContent"],
            ),
            (
                dict(&[
                    ("MessageType", "SavePairRecord".into()),
                    ("PairRecordData", Value::Data(xml(&pair_record))),
                ]),
                vec!["BEGIN PRIVATE KEY", "root-secret", "escrow-secret"],
                vec!["HOST-1", "BEGIN CERTIFICATE", "REDACTED:EscrowBag"],
            ),
            (
                dict(&[
                    ("Request", "Pair".into()),
                    ("EscrowBag", Value::Data(b"escrow-secret".to_vec())),
                ]),
                vec!["escrow-secret"],
                vec!["Pair"],
            ),
            (
                dict(&[
                    ("Command", "HandleActivationInfoWithSessionRequest".into()),
                    ("Value", Value::Data(xml(&activation))),
                ]),
                vec!["cert-secret", "devcert-secret"],
                vec!["token-public", "unbrick"],
            ),
            (
                dict(&[("Note", PEM_KEY.into())]),
                vec!["BEGIN PRIVATE KEY"],
                vec!["REDACTED:Note"],
            ),
            (
                dict(&[
                    ("Request", "StartSession".into()),
                    ("SessionID", "SESSION-1".into()),
                ]),
                vec![],
                vec!["SESSION-1"],
            ),
        ];
        for (message, gone, kept) in cases {
            let out = text(&redact("test", &message));
            // Data is base64 in XML: look at the decoded text too.
            let decoded = decode_all(&redact("test", &message));
            for g in gone {
                assert!(
                    !out.contains(g) && !decoded.contains(g),
                    "{g} survived in {out}"
                );
            }
            for k in kept {
                assert!(
                    out.contains(k) || decoded.contains(k),
                    "{k} is missing from {out}"
                );
            }
        }
    }

    /// Every data value's bytes, as text.
    fn decode_all(d: &Dictionary) -> String {
        fn walk(v: &Value, out: &mut String) {
            match v {
                Value::Data(b) => out.push_str(&String::from_utf8_lossy(b)),
                Value::Dictionary(d) => d.values().for_each(|v| walk(v, out)),
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = String::new();
        d.values().for_each(|v| walk(v, &mut out));
        out
    }

    #[test]
    fn a_signed_profile_is_replaced_by_its_length_and_identifiers() {
        let profile = dict(&[
            ("PayloadIdentifier", "org.example.wifi".into()),
            ("PayloadType", "Configuration".into()),
            (
                "PayloadContent",
                Value::Array(vec![Value::Dictionary(dict(&[
                    ("PayloadIdentifier", "org.example.wifi.1".into()),
                    ("PayloadType", "com.apple.wifi.managed".into()),
                    ("Password", "hunter2-secret".into()),
                ]))]),
            ),
        ]);
        // The shape of a CMS SignedData blob: DER around the profile's bytes.
        let mut blob = vec![0x30, 0x82, 0x01, 0x00, 0x06, 0x09];
        blob.extend_from_slice(&xml(&profile));
        blob.extend_from_slice(&[0xa0, 0x00, 0x31, 0x00]);
        let out = redact("mc", &dict(&[("Payload", Value::Data(blob.clone()))]));
        let marker = out["Payload"].as_string().expect("a marker");
        assert!(marker.starts_with("REDACTED:Payload: signed profile of"));
        assert!(marker.contains(&blob.len().to_string()));
        assert!(marker.contains("org.example.wifi (Configuration)"));
        assert!(marker.contains("org.example.wifi.1 (com.apple.wifi.managed)"));
        assert!(!marker.contains("hunter2"));
        assert!(is_redacted(&out["Payload"]));
    }

    #[test]
    fn plain_der_and_plain_data_are_kept() {
        let cert = vec![0x30, 0x82, 0x02, 0x0a, 1, 2, 3];
        let out = redact(
            "mc",
            &dict(&[("SupervisorCertificate", Value::Data(cert.clone()))]),
        );
        assert_eq!(out["SupervisorCertificate"], Value::Data(cert));
    }
}
