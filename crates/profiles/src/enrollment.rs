//! The MDM enrollment exchange an iPad makes at the end of Setup Assistant, from the host's
//! side (`docs/protocol.md` §7.1): the request body a station sends to look like one, and what
//! the reply means.
//!
//! What a station can imitate: the method (POST), the user agent (`CloudConfiguration/1.0`),
//! the content type and the `MachineInfo` plist (`UDID`, `SERIAL`, `PRODUCT`, `VERSION`,
//! `LANGUAGE`), CMS-signed. What it cannot: the signature of a real iPad. A device signs with
//! its Apple-issued device identity, whose chain leads to Apple's root; a station has none and
//! signs with a throwaway self-signed certificate, and its UDID and serial are stand-ins no MDM
//! knows. An MDM that checks either refuses the request, which says nothing about whether a
//! real iPad would be refused (see [`ReplyProblem::is_warning`]).

use plist::{Dictionary, Value};

use crate::cms_check::{self, CmsCheckError};
use crate::error::Result;
use crate::identity::SupervisionIdentity;

/// The user agent of an iPad's request (`docs/protocol.md` §7.1).
pub const USER_AGENT: &str = "CloudConfiguration/1.0";
/// The request body's content type: a CMS message.
pub const REQUEST_CONTENT_TYPE: &str = "application/pkcs7-signature";
/// Replies larger than this are not read: an enrollment profile is a few kilobytes.
pub const MAX_REPLY: usize = 1024 * 1024;
/// How much of an error reply's body is quoted.
const EXCERPT_CHARS: usize = 100;
/// The error code of Apple's documented 403 "software update required" reply.
const SOFTWARE_UPDATE_REQUIRED: &str = "com.apple.softwareupdate.required";

/// What goes into the `MachineInfo` plist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    pub udid: String,
    pub serial: String,
    /// The product type, e.g. `iPad13,18`.
    pub product: String,
    /// The iOS build, e.g. `22A3354`.
    pub version: String,
    pub language: String,
}

impl MachineInfo {
    /// The stand-in a station sends: a UDID and serial no device has, so an MDM's log shows
    /// plainly that the request came from `cartprep check`; a current iPad model and build.
    pub fn station_stand_in(language: &str) -> Self {
        MachineInfo {
            udid: "0000000000000000000000000000CA27C4EC0000".into(),
            serial: "CARTPREPCHK0".into(),
            product: "iPad13,18".into(),
            version: "22A3354".into(),
            language: language.into(),
        }
    }

    /// The plist, XML.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("UDID".into(), self.udid.clone().into());
        d.insert("SERIAL".into(), self.serial.clone().into());
        d.insert("PRODUCT".into(), self.product.clone().into());
        d.insert("VERSION".into(), self.version.clone().into());
        d.insert("LANGUAGE".into(), self.language.clone().into());
        let mut out = Vec::new();
        // Writing a dictionary of strings to memory cannot fail.
        let _ = plist::to_writer_xml(&mut out, &d);
        out
    }

    /// The request body: the plist CMS-signed by `signer` (a device would use its own
    /// identity; a station uses a throwaway one).
    pub fn signed(&self, signer: &SupervisionIdentity) -> Result<Vec<u8>> {
        crate::cms::sign_attached(signer, &self.to_xml())
    }
}

/// The `com.apple.mdm` payload found in an enrollment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmPayload {
    pub server_url: String,
    pub topic: String,
    pub check_in_url: Option<String>,
}

/// Whether the reply's signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Verified,
    /// Signed, but in a form cartprep does not check (the reason); the iPad checks it itself.
    NotChecked(String),
}

/// A reply an iPad would enroll with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProfile {
    pub identifier: String,
    pub display_name: Option<String>,
    pub organization: Option<String>,
    pub mdm: MdmPayload,
    /// The signer certificate's subject, when the message names one.
    pub signer: Option<String>,
    pub signature: Signature,
}

/// Why a reply is not one an iPad would enroll with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyProblem {
    /// 403 with Apple's "software update required" code: the MDM wants a newer iOS than the
    /// request claimed before it enrolls.
    #[error("HTTP 403 {SOFTWARE_UPDATE_REQUIRED}: the MDM requires a newer iOS than {version}")]
    SoftwareUpdateRequired { version: String },
    /// 401 or 403: the MDM refuses this request (a sign-in, or a request not signed by a real
    /// iPad, or a device it does not know).
    #[error("HTTP {status}: the MDM refuses the request{}", quoted(excerpt))]
    Refused { status: u16, excerpt: String },
    /// Any other status than 200.
    #[error("HTTP {status}{}", quoted(excerpt))]
    Status { status: u16, excerpt: String },
    /// A profile that is not CMS-signed.
    #[error("the reply is not signed")]
    Unsigned,
    /// CMS whose signature does not verify.
    #[error("the reply's signature does not verify: {0}")]
    BadSignature(String),
    /// Not a configuration profile (signed or not).
    #[error("the reply is not a configuration profile: {0}")]
    NotAProfile(String),
    /// A configuration profile without a `com.apple.mdm` payload.
    #[error("the profile holds no com.apple.mdm payload (its payloads: {})", types_list(.0))]
    NoMdmPayload(Vec<String>),
    /// A `com.apple.mdm` payload without what an MDM payload must have.
    #[error("the com.apple.mdm payload has no {0}")]
    IncompleteMdmPayload(&'static str),
}

impl ReplyProblem {
    /// Whether the problem may be the request's rather than the MDM's: a station's request is
    /// not signed by a real iPad nor sent for a device the MDM knows, and an MDM may refuse
    /// it with 401 or 403 where it would enroll the iPad (`docs/protocol.md` §7.1).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            ReplyProblem::Refused { .. } | ReplyProblem::SoftwareUpdateRequired { .. }
        )
    }
}

fn quoted(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(" (\u{201c}{excerpt}\u{201d})")
    }
}

fn types_list(types: &[String]) -> String {
    if types.is_empty() {
        "none".into()
    } else {
        types.join(", ")
    }
}

/// The start of an error reply's body, as printable text on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
        if out.chars().count() >= EXCERPT_CHARS {
            let cut: String = out.chars().take(EXCERPT_CHARS).collect();
            return format!("{cut}\u{2026}");
        }
    }
    out
}

/// What an iPad would make of the reply (`status`, `body`) to its enrollment request: only a
/// 200 whose body is a CMS-signed configuration profile holding a `com.apple.mdm` payload
/// enrolls it (the rules the simulated iPad applies, `docs/fidelity.md` §12).
pub fn judge_reply(
    status: u16,
    body: &[u8],
    version_sent: &str,
) -> Result<EnrollmentProfile, ReplyProblem> {
    if status != 200 {
        let excerpt = excerpt(body);
        let update_required = String::from_utf8_lossy(body).contains(SOFTWARE_UPDATE_REQUIRED);
        return Err(match status {
            403 if update_required => ReplyProblem::SoftwareUpdateRequired {
                version: version_sent.into(),
            },
            401 | 403 => ReplyProblem::Refused { status, excerpt },
            _ => ReplyProblem::Status { status, excerpt },
        });
    }
    // A DER or BER SEQUENCE is the only way a CMS message starts.
    if body.first() != Some(&0x30) {
        // Unsigned: a configuration profile, whatever else it lacks, is refused for that.
        return Err(match read_profile(body) {
            Err(e @ ReplyProblem::NotAProfile(_)) if !is_configuration(body) => e,
            _ => ReplyProblem::Unsigned,
        });
    }
    let (content, signer, signature) = match cms_check::verify_by_included_signer(body) {
        Ok(checked) => (
            checked.content,
            Some(checked.signer_subject),
            Signature::Verified,
        ),
        Err(CmsCheckError::Unsupported(why)) => {
            let content = crate::cms::signed_content(body)
                .map_err(|e| ReplyProblem::NotAProfile(e.to_string()))?
                .content;
            (
                content,
                cms_check::first_certificate_subject(body),
                Signature::NotChecked(why),
            )
        }
        Err(CmsCheckError::DoesNotVerify(why)) => return Err(ReplyProblem::BadSignature(why)),
        Err(e @ CmsCheckError::NotSignedData(_)) => {
            return Err(ReplyProblem::NotAProfile(e.to_string()));
        }
    };
    let mut profile = read_profile(&content)?;
    profile.signer = signer;
    profile.signature = signature;
    Ok(profile)
}

/// Whether `bytes` is a plist dictionary whose `PayloadType` is `Configuration`.
fn is_configuration(bytes: &[u8]) -> bool {
    usbmux::bounded_plist::from_bytes(bytes, usbmux::Limits::new(MAX_REPLY))
        .ok()
        .and_then(|v| {
            v.as_dictionary()?
                .get("PayloadType")?
                .as_string()
                .map(|t| t == "Configuration")
        })
        .unwrap_or(false)
}

/// A configuration profile plist with its `com.apple.mdm` payload.
fn read_profile(bytes: &[u8]) -> Result<EnrollmentProfile, ReplyProblem> {
    let not = |why: &str| ReplyProblem::NotAProfile(why.to_owned());
    let value = usbmux::bounded_plist::from_bytes(bytes, usbmux::Limits::new(MAX_REPLY))
        .map_err(|e| ReplyProblem::NotAProfile(format!("not a property list ({e})")))?;
    let top = value
        .as_dictionary()
        .ok_or_else(|| not("the top level is not a dictionary"))?;
    let string =
        |d: &Dictionary, key: &str| d.get(key).and_then(Value::as_string).map(str::to_owned);
    match string(top, "PayloadType").as_deref() {
        Some("Configuration") => {}
        Some(other) => {
            return Err(ReplyProblem::NotAProfile(format!(
                "PayloadType is {other:?}"
            )));
        }
        None => return Err(not("no PayloadType")),
    }
    let identifier = string(top, "PayloadIdentifier")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not("no PayloadIdentifier"))?;
    let payloads: Vec<&Dictionary> = top
        .get("PayloadContent")
        .and_then(Value::as_array)
        .ok_or_else(|| not("no PayloadContent array"))?
        .iter()
        .filter_map(Value::as_dictionary)
        .collect();
    let Some(mdm) = payloads
        .iter()
        .find(|p| string(p, "PayloadType").as_deref() == Some("com.apple.mdm"))
    else {
        return Err(ReplyProblem::NoMdmPayload(
            payloads
                .iter()
                .filter_map(|p| string(p, "PayloadType"))
                .collect(),
        ));
    };
    // Both are required keys of the MDM payload (Apple's `com.apple.mdm` documentation).
    let server_url =
        string(mdm, "ServerURL").ok_or(ReplyProblem::IncompleteMdmPayload("ServerURL"))?;
    let topic = string(mdm, "Topic").ok_or(ReplyProblem::IncompleteMdmPayload("Topic"))?;
    Ok(EnrollmentProfile {
        identifier,
        display_name: string(top, "PayloadDisplayName"),
        organization: string(top, "PayloadOrganization"),
        mdm: MdmPayload {
            server_url,
            topic,
            check_in_url: string(mdm, "CheckInURL"),
        },
        signer: None,
        signature: Signature::NotChecked("unsigned".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::shared;

    fn payload(kind: &str, extra: &[(&str, &str)]) -> Value {
        let mut d = Dictionary::new();
        d.insert("PayloadType".into(), kind.into());
        for (k, v) in extra {
            d.insert((*k).into(), (*v).into());
        }
        Value::Dictionary(d)
    }

    fn profile(payloads: Vec<Value>) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("PayloadType".into(), "Configuration".into());
        d.insert("PayloadIdentifier".into(), "org.example.enroll".into());
        d.insert("PayloadOrganization".into(), "Example MDM".into());
        d.insert("PayloadContent".into(), Value::Array(payloads));
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, &d).unwrap();
        out
    }

    fn mdm() -> Value {
        payload(
            "com.apple.mdm",
            &[
                ("ServerURL", "https://mdm.example.org/server"),
                ("Topic", "com.apple.mgmt.External.1234"),
                ("CheckInURL", "https://mdm.example.org/checkin"),
            ],
        )
    }

    fn signed(bytes: &[u8]) -> Vec<u8> {
        crate::sign_attached(shared(), bytes).unwrap()
    }

    #[test]
    fn a_signed_profile_with_an_mdm_payload_enrolls() {
        let reply = signed(&profile(vec![
            payload("com.apple.security.scep", &[]),
            mdm(),
        ]));
        let found = judge_reply(200, &reply, "22A3354").expect("enrolls");
        assert_eq!(found.mdm.server_url, "https://mdm.example.org/server");
        assert_eq!(found.mdm.topic, "com.apple.mgmt.External.1234");
        assert_eq!(found.organization.as_deref(), Some("Example MDM"));
        assert_eq!(found.signature, Signature::Verified);
        assert!(found.signer.unwrap().contains("Apple Configurator"));
    }

    #[test]
    fn each_kind_of_reply_an_ipad_would_not_enroll_with_is_named() {
        let good = signed(&profile(vec![mdm()]));
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let no_mdm = signed(&profile(vec![payload("com.apple.wifi.managed", &[])]));
        let no_topic = signed(&profile(vec![payload(
            "com.apple.mdm",
            &[("ServerURL", "https://x/")],
        )]));
        let not_profile = signed(b"<?xml version=\"1.0\"?><plist><dict/></plist>");
        let update =
            br#"{"code":"com.apple.softwareupdate.required","details":{"OSVersion":"26.1"}}"#;
        let unsigned = profile(vec![mdm()]);
        let unsigned_empty = profile(vec![]);
        let cases: Vec<(u16, &[u8], ReplyProblem)> = vec![
            (
                404,
                b"unknown endpoint",
                ReplyProblem::Status {
                    status: 404,
                    excerpt: "unknown endpoint".into(),
                },
            ),
            (
                500,
                b"",
                ReplyProblem::Status {
                    status: 500,
                    excerpt: String::new(),
                },
            ),
            (
                403,
                b"not signed by Apple\n Device CA",
                ReplyProblem::Refused {
                    status: 403,
                    excerpt: "not signed by Apple Device CA".into(),
                },
            ),
            (
                401,
                b"",
                ReplyProblem::Refused {
                    status: 401,
                    excerpt: String::new(),
                },
            ),
            (
                403,
                update,
                ReplyProblem::SoftwareUpdateRequired {
                    version: "22A3354".into(),
                },
            ),
            (200, &unsigned, ReplyProblem::Unsigned),
            (200, &unsigned_empty, ReplyProblem::Unsigned),
            (
                200,
                &tampered,
                ReplyProblem::BadSignature(
                    "not made with the key of the signer certificate it includes".into(),
                ),
            ),
            (
                200,
                &no_mdm,
                ReplyProblem::NoMdmPayload(vec!["com.apple.wifi.managed".into()]),
            ),
            (200, &no_topic, ReplyProblem::IncompleteMdmPayload("Topic")),
            (
                200,
                &not_profile,
                ReplyProblem::NotAProfile("no PayloadType".into()),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                judge_reply(status, body, "22A3354"),
                Err(expected.clone()),
                "HTTP {status}"
            );
        }
        assert!(matches!(
            judge_reply(200, b"<html>Sign in</html>", "22A3354"),
            Err(ReplyProblem::NotAProfile(_))
        ));
    }

    #[test]
    fn only_refusals_that_may_be_the_stations_own_are_warnings() {
        assert!(
            ReplyProblem::Refused {
                status: 403,
                excerpt: String::new()
            }
            .is_warning()
        );
        assert!(
            ReplyProblem::SoftwareUpdateRequired {
                version: "x".into()
            }
            .is_warning()
        );
        for hard in [
            ReplyProblem::Status {
                status: 404,
                excerpt: String::new(),
            },
            ReplyProblem::Unsigned,
            ReplyProblem::BadSignature(String::new()),
            ReplyProblem::NoMdmPayload(vec![]),
        ] {
            assert!(!hard.is_warning(), "{hard:?}");
        }
    }

    #[test]
    fn the_request_body_is_the_machine_info_signed() {
        let info = MachineInfo::station_stand_in("fr");
        let body = info.signed(shared()).unwrap();
        let checked = cms_check::verify_by_included_signer(&body).unwrap();
        let read: Dictionary = plist::from_bytes(&checked.content).unwrap();
        for (key, value) in [
            ("UDID", info.udid.as_str()),
            ("SERIAL", "CARTPREPCHK0"),
            ("PRODUCT", "iPad13,18"),
            ("VERSION", "22A3354"),
            ("LANGUAGE", "fr"),
        ] {
            assert_eq!(
                read.get(key).and_then(Value::as_string),
                Some(value),
                "{key}"
            );
        }
    }

    #[test]
    fn error_bodies_are_quoted_short_and_on_one_line() {
        assert_eq!(excerpt(b"  a\r\n\tb\x07c "), "a bc");
        let long = excerpt(&[b'x'; 500]);
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert!(long.ends_with('\u{2026}'));
    }
}
