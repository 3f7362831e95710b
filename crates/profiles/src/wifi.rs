//! Wi-Fi configuration profiles (`com.apple.wifi.managed`, `docs/protocol.md` §5.4), and
//! reading existing `.mobileconfig` files to install them as they are.
//!
//! Identifiers and UUIDs are derived from the SSID alone, so installing a profile for the same
//! network again (say with a new password) replaces the old one instead of adding a second.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use plist::{Dictionary, Value};
use sha2::{Digest, Sha256};
use usbmux::BoundedPlistError;
use zeroize::Zeroizing;

use crate::error::{ProfileError, Result};
use crate::files;
use crate::identity::{format_uuid, hex_lower};

/// Namespace of the name-based UUIDs of Wi-Fi profiles (a fixed random value).
const UUID_NAMESPACE: [u8; 16] = [
    0x5c, 0x0e, 0x8f, 0x3a, 0x91, 0x7d, 0x4b, 0x26, 0xa4, 0x1f, 0xc8, 0x62, 0x0b, 0xd3, 0x57, 0xe9,
];
/// Prefix of the profiles' PayloadIdentifier.
pub const IDENTIFIER_PREFIX: &str = "org.cartprep.wifi.";
/// Largest `.mobileconfig` read.
const MAX_PROFILE: u64 = 16 << 20;
/// Bounds of a profile's property list (the file's, or the one inside its signature).
const PROFILE_LIMITS: usbmux::Limits = usbmux::Limits::new(MAX_PROFILE as usize);

/// The network's security (`EncryptionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// Open network: no password.
    None,
    /// WEP: 5 or 13 ASCII characters, or 10 or 26 hex digits.
    Wep,
    /// WPA/WPA2 personal (any of them): passphrase of 8 to 63 characters.
    Wpa,
    /// WPA2 personal: passphrase of 8 to 63 characters.
    Wpa2,
    /// WPA3 personal: passphrase of 8 to 63 characters.
    Wpa3,
    /// Any: the device picks; the password is optional.
    Any,
}

/// The spellings accepted in configuration files and on the command line (any case; `open` is
/// also accepted for `none`).
pub const SECURITY_NAMES: [&str; 6] = ["none", "wep", "wpa", "wpa2", "wpa3", "any"];

impl Security {
    /// The lower-case name used in configuration files (`wpa2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Wep => "wep",
            Security::Wpa => "wpa",
            Security::Wpa2 => "wpa2",
            Security::Wpa3 => "wpa3",
            Security::Any => "any",
        }
    }

    /// The `EncryptionType` string.
    pub fn encryption_type(self) -> &'static str {
        match self {
            Security::None => "None",
            Security::Wep => "WEP",
            Security::Wpa => "WPA",
            Security::Wpa2 => "WPA2",
            Security::Wpa3 => "WPA3",
            Security::Any => "Any",
        }
    }

    /// True when a password is required.
    pub fn requires_password(self) -> bool {
        matches!(
            self,
            Security::Wep | Security::Wpa | Security::Wpa2 | Security::Wpa3
        )
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encryption_type())
    }
}

impl FromStr for Security {
    type Err = ProfileError;

    /// Case-insensitive: `none` (or `open`), `wep`, `wpa`, `wpa2`, `wpa3`, `any`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "open" => Ok(Security::None),
            "wep" => Ok(Security::Wep),
            "wpa" => Ok(Security::Wpa),
            "wpa2" => Ok(Security::Wpa2),
            "wpa3" => Ok(Security::Wpa3),
            "any" => Ok(Security::Any),
            _ => Err(ProfileError::validation(
                "security",
                format!("unknown security {s:?} (none, wep, wpa, wpa2, wpa3 or any)"),
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Security {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // serde's own "unknown variant" wording, so a config file's error reads like the
        // errors of its other choice settings.
        s.parse()
            .map_err(|_| serde::de::Error::unknown_variant(&s, &SECURITY_NAMES))
    }
}

impl serde::Serialize for Security {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A secret string (a Wi-Fi password): `Debug` and `Display` print `***`, and the memory is
/// cleared on drop. It can be read from a configuration file (`Deserialize`) but is
/// deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(Zeroizing::new(secret.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (at most 64 KiB of UTF-8), dropping one trailing newline
    /// (`\n` or `\r\n`) and nothing else. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(files::read_limited(path, 64 * 1024)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            ProfileError::invalid(path.display().to_string(), "the secret is not UTF-8 text")
        })?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        Ok(Secret::new(text))
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Wi-Fi network to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WifiProfile {
    /// Network name, 1 to 32 bytes of UTF-8.
    pub ssid: String,
    pub security: Security,
    /// Required for WEP and WPA*, optional for Any, refused for None.
    pub password: Option<Secret>,
    /// The network does not broadcast its SSID.
    pub hidden: bool,
    /// Join automatically (default true).
    pub auto_join: bool,
    /// `PayloadOrganization`, shown on the device.
    pub organization: Option<String>,
}

impl WifiProfile {
    /// A visible, auto-joined network without organisation.
    pub fn new(ssid: impl Into<String>, security: Security, password: Option<Secret>) -> Self {
        WifiProfile {
            ssid: ssid.into(),
            security,
            password,
            hidden: false,
            auto_join: true,
            organization: None,
        }
    }

    /// Checks the SSID, the password against the security type, and the organisation.
    pub fn validate(&self) -> Result<()> {
        let ssid_bytes = self.ssid.len();
        if !(1..=32).contains(&ssid_bytes) {
            return Err(ProfileError::validation(
                "ssid",
                format!("must be 1 to 32 bytes long (UTF-8), is {ssid_bytes}"),
            ));
        }
        if self.ssid.chars().any(char::is_control) {
            return Err(ProfileError::validation(
                "ssid",
                "contains control characters, which a profile cannot carry",
            ));
        }
        if let Some(org) = &self.organization
            && (org.trim().is_empty() || org.chars().any(char::is_control))
        {
            return Err(ProfileError::validation(
                "organization",
                "must be non-empty text without control characters",
            ));
        }
        match (&self.password, self.security) {
            (Some(_), Security::None) => Err(ProfileError::validation(
                "password",
                "given for an open network (security none); drop it or pick a security type",
            )),
            (None, s) if s.requires_password() => Err(ProfileError::validation(
                "password",
                format!("required for {s} networks"),
            )),
            (None, _) => Ok(()),
            (Some(p), s) => check_password(p.expose(), s),
        }
    }

    /// `org.cartprep.wifi.<sanitised SSID>`.
    pub fn identifier(&self) -> String {
        format!("{IDENTIFIER_PREFIX}{}", sanitise_ssid(&self.ssid))
    }

    /// The top-level `PayloadUUID`, derived from the SSID.
    pub fn uuid(&self) -> String {
        name_based_uuid("configuration", &self.ssid)
    }

    /// The Wi-Fi payload's `PayloadUUID`, derived from the SSID.
    pub fn payload_uuid(&self) -> String {
        name_based_uuid("com.apple.wifi.managed", &self.ssid)
    }

    /// The profile as an XML property list (`.mobileconfig`), after [`validate`](Self::validate).
    /// Values are escaped by the plist writer.
    pub fn to_mobileconfig(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let display_name = format!("Wi-Fi {}", self.ssid);
        let identifier = self.identifier();

        let mut payload = Dictionary::new();
        payload.insert("AutoJoin".into(), Value::Boolean(self.auto_join));
        payload.insert(
            "EncryptionType".into(),
            Value::String(self.security.encryption_type().into()),
        );
        payload.insert("HIDDEN_NETWORK".into(), Value::Boolean(self.hidden));
        if let Some(password) = &self.password {
            payload.insert("Password".into(), Value::String(password.expose().into()));
        }
        payload.insert("SSID_STR".into(), Value::String(self.ssid.clone()));
        payload.insert(
            "PayloadDisplayName".into(),
            Value::String(display_name.clone()),
        );
        payload.insert(
            "PayloadIdentifier".into(),
            Value::String(format!("{identifier}.payload")),
        );
        if let Some(org) = &self.organization {
            payload.insert("PayloadOrganization".into(), Value::String(org.clone()));
        }
        payload.insert(
            "PayloadType".into(),
            Value::String("com.apple.wifi.managed".into()),
        );
        payload.insert("PayloadUUID".into(), Value::String(self.payload_uuid()));
        payload.insert("PayloadVersion".into(), Value::Integer(1.into()));

        let mut top = Dictionary::new();
        top.insert(
            "PayloadContent".into(),
            Value::Array(vec![Value::Dictionary(payload)]),
        );
        top.insert("PayloadDisplayName".into(), Value::String(display_name));
        top.insert("PayloadIdentifier".into(), Value::String(identifier));
        if let Some(org) = &self.organization {
            top.insert("PayloadOrganization".into(), Value::String(org.clone()));
        }
        top.insert("PayloadRemovalDisallowed".into(), Value::Boolean(false));
        top.insert("PayloadType".into(), Value::String("Configuration".into()));
        top.insert("PayloadUUID".into(), Value::String(self.uuid()));
        top.insert("PayloadVersion".into(), Value::Integer(1.into()));

        let mut out = Vec::new();
        Value::Dictionary(top)
            .to_writer_xml(&mut out)
            .map_err(|e| ProfileError::Crypto(format!("writing the profile: {e}")))?;
        Ok(out)
    }
}

fn check_password(password: &str, security: Security) -> Result<()> {
    let field = "password";
    if password.chars().any(char::is_control) {
        return Err(ProfileError::validation(
            field,
            "contains control characters, which a profile cannot carry",
        ));
    }
    let wpa_ok = (8..=63).contains(&password.chars().count());
    let wep_ok = {
        let n = password.len();
        let ascii = password.is_ascii() && (n == 5 || n == 13);
        let hex = password.chars().all(|c| c.is_ascii_hexdigit()) && (n == 10 || n == 26);
        ascii || hex
    };
    match security {
        Security::Wpa | Security::Wpa2 | Security::Wpa3 if !wpa_ok => {
            Err(ProfileError::validation(
                field,
                format!("a {security} passphrase must be 8 to 63 characters long"),
            ))
        }
        Security::Wep if !wep_ok => Err(ProfileError::validation(
            field,
            "a WEP key must be 5 or 13 ASCII characters, or 10 or 26 hex digits",
        )),
        Security::Any if !wpa_ok && !wep_ok => Err(ProfileError::validation(
            field,
            "neither a WPA passphrase (8 to 63 characters) nor a WEP key \
             (5 or 13 ASCII characters, 10 or 26 hex digits)",
        )),
        _ => Ok(()),
    }
}

/// The SSID as an identifier component: ASCII letters, digits, `-` and `_` kept, anything else
/// replaced by `-`. When anything was replaced, 8 hex digits of the SSID's SHA-256 are appended,
/// so two SSIDs that sanitise alike (`My Net`, `My.Net`) still get distinct identifiers and do
/// not replace each other on the device.
pub fn sanitise_ssid(ssid: &str) -> String {
    let clean: String = ssid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == ssid {
        clean
    } else {
        let hash = hex_lower(&Sha256::digest(ssid.as_bytes())[..4]);
        format!("{clean}-{hash}")
    }
}

/// A name-based UUID: the first 16 bytes of SHA-256(namespace ‖ role ‖ 0 ‖ ssid) with the
/// RFC 9562 version 8 and variant bits, formatted upper-case 8-4-4-4-12.
pub fn name_based_uuid(role: &str, ssid: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(UUID_NAMESPACE);
    hasher.update(role.as_bytes());
    hasher.update([0u8]);
    hasher.update(ssid.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format_uuid(&bytes)
}

/// How an existing profile file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileFormat {
    /// XML property list.
    Xml,
    /// Binary property list (`bplist00`).
    Binary,
    /// CMS SignedData wrapping a property list.
    Signed,
}

/// An existing configuration profile, to install as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingProfile {
    /// The file's bytes, unchanged (signed profiles keep their signature).
    pub bytes: Vec<u8>,
    pub format: ProfileFormat,
    pub identifier: String,
    pub display_name: Option<String>,
    pub uuid: String,
}

/// Reads a `.mobileconfig` (XML, binary or CMS-signed) and checks it is a configuration profile.
/// Errors name the file.
pub fn load_mobileconfig(path: &Path) -> Result<ExistingProfile> {
    let bytes = files::read_limited(path, MAX_PROFILE)?;
    parse_mobileconfig(bytes).map_err(|e| e.in_file(path))
}

/// [`load_mobileconfig`] on bytes already in memory.
pub fn parse_mobileconfig(bytes: Vec<u8>) -> Result<ExistingProfile> {
    let what = "profile";
    let not_profile = |reason: String| ProfileError::NotAProfile {
        what: what.into(),
        reason,
    };
    let (plist_bytes, format) = if bytes.starts_with(b"bplist") {
        (bytes.clone(), ProfileFormat::Binary)
    } else if looks_like_xml(&bytes) {
        (bytes.clone(), ProfileFormat::Xml)
    } else if bytes.first() == Some(&0x30) {
        let signed = crate::cms::signed_content(&bytes)
            .map_err(|e| not_profile(format!("unreadable CMS signature wrapper ({e})")))?;
        (signed.content, ProfileFormat::Signed)
    } else {
        return Err(not_profile(
            "neither a property list nor a CMS-signed profile".into(),
        ));
    };
    let value =
        usbmux::bounded_plist::from_bytes(&plist_bytes, PROFILE_LIMITS).map_err(|source| {
            match source {
                BoundedPlistError::Malformed(e) => {
                    not_profile(format!("not a property list ({e})"))
                }
                source => ProfileError::Plist {
                    what: what.into(),
                    source,
                },
            }
        })?;
    let dict = value
        .as_dictionary()
        .ok_or_else(|| not_profile("the top level is not a dictionary".into()))?;
    let string = |key: &str| dict.get(key).and_then(Value::as_string).map(str::to_owned);
    match string("PayloadType").as_deref() {
        Some("Configuration") => {}
        Some(other) => return Err(not_profile(format!("PayloadType is {other:?}"))),
        None => return Err(not_profile("no PayloadType".into())),
    }
    let identifier = string("PayloadIdentifier")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not_profile("no PayloadIdentifier".into()))?;
    let uuid = string("PayloadUUID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not_profile("no PayloadUUID".into()))?;
    let has_content = dict
        .get("PayloadContent")
        .and_then(Value::as_array)
        .is_some()
        || dict.get("EncryptedPayloadContent").is_some();
    if !has_content {
        return Err(not_profile("no PayloadContent array".into()));
    }
    Ok(ExistingProfile {
        display_name: string("PayloadDisplayName"),
        bytes,
        format,
        identifier,
        uuid,
    })
}

fn looks_like_xml(bytes: &[u8]) -> bool {
    let b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    b.iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|&c| c == b'<')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wpa2(ssid: &str, password: &str) -> WifiProfile {
        WifiProfile::new(ssid, Security::Wpa2, Some(Secret::new(password)))
    }

    fn parse(bytes: &[u8]) -> Dictionary {
        Value::from_reader_xml(bytes)
            .expect("XML plist")
            .into_dictionary()
            .expect("dict")
    }

    #[test]
    fn profile_has_the_documented_shape() {
        let mut p = wpa2("École <&> \"Wi-Fi\"", "pass&word<>\"'");
        p.hidden = true;
        p.auto_join = false;
        p.organization = Some("Lycée Test".into());
        let xml = p.to_mobileconfig().expect("profile");
        let text = String::from_utf8(xml.clone()).expect("utf8");
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(!text.contains("<&>"), "SSID not escaped: {text}");

        let top = parse(&xml);
        assert_eq!(top["PayloadType"].as_string(), Some("Configuration"));
        assert_eq!(top["PayloadVersion"].as_signed_integer(), Some(1));
        assert_eq!(
            top["PayloadIdentifier"].as_string(),
            Some(p.identifier().as_str())
        );
        assert!(
            p.identifier().starts_with("org.cartprep.wifi.-cole-"),
            "{}",
            p.identifier()
        );
        assert_eq!(top["PayloadUUID"].as_string(), Some(p.uuid().as_str()));
        assert_eq!(
            top["PayloadDisplayName"].as_string(),
            Some("Wi-Fi École <&> \"Wi-Fi\"")
        );
        assert_eq!(top["PayloadOrganization"].as_string(), Some("Lycée Test"));
        let content = top["PayloadContent"].as_array().expect("array");
        assert_eq!(content.len(), 1);
        let w = content[0].as_dictionary().expect("payload");
        assert_eq!(w["PayloadType"].as_string(), Some("com.apple.wifi.managed"));
        assert_eq!(w["SSID_STR"].as_string(), Some("École <&> \"Wi-Fi\""));
        assert_eq!(w["Password"].as_string(), Some("pass&word<>\"'"));
        assert_eq!(w["EncryptionType"].as_string(), Some("WPA2"));
        assert_eq!(w["HIDDEN_NETWORK"].as_boolean(), Some(true));
        assert_eq!(w["AutoJoin"].as_boolean(), Some(false));
        assert_eq!(
            w["PayloadUUID"].as_string(),
            Some(p.payload_uuid().as_str())
        );
        assert_eq!(w["PayloadVersion"].as_signed_integer(), Some(1));
        assert_ne!(p.uuid(), p.payload_uuid());
    }

    #[test]
    fn open_network_has_no_password_key() {
        let p = WifiProfile::new("Guest", Security::None, None);
        let top = parse(&p.to_mobileconfig().expect("profile"));
        let w = top["PayloadContent"].as_array().expect("array")[0]
            .as_dictionary()
            .expect("payload");
        assert!(!w.contains_key("Password"));
        assert_eq!(w["EncryptionType"].as_string(), Some("None"));
        assert_eq!(w["AutoJoin"].as_boolean(), Some(true));
        assert_eq!(w["HIDDEN_NETWORK"].as_boolean(), Some(false));
        assert!(!top.contains_key("PayloadOrganization"));
    }

    #[test]
    fn identifiers_and_uuids_are_deterministic_per_ssid() {
        let a = wpa2("SchoolNet", "password1");
        let b = wpa2("SchoolNet", "another-password");
        assert_eq!(a.identifier(), "org.cartprep.wifi.SchoolNet");
        assert_eq!(a.uuid(), b.uuid());
        assert_eq!(a.payload_uuid(), b.payload_uuid());
        assert_eq!(a.to_mobileconfig().is_ok(), b.to_mobileconfig().is_ok());
        let c = wpa2("SchoolNet2", "password1");
        assert_ne!(a.uuid(), c.uuid());
        // UUID shape: upper case, version 8, RFC variant.
        let u = a.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert!(matches!(&u[19..20], "8" | "9" | "A" | "B"), "{u}");
        assert!(!u.chars().any(|c| c.is_ascii_lowercase()));
    }

    #[test]
    fn sanitised_identifiers_do_not_collide() {
        let a = sanitise_ssid("My Net");
        let b = sanitise_ssid("My.Net");
        assert!(a.starts_with("My-Net-") && b.starts_with("My-Net-"));
        assert_ne!(a, b);
        assert_eq!(sanitise_ssid("Plain-SSID_1"), "Plain-SSID_1");
        assert!(
            sanitise_ssid("日本")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }

    #[test]
    fn validation() {
        let cases: Vec<(WifiProfile, &str)> = vec![
            (wpa2("", "password1"), "ssid"),
            (wpa2(&"x".repeat(33), "password1"), "ssid"),
            (wpa2(&"é".repeat(17), "password1"), "ssid"), // 34 bytes
            (wpa2("a\u{7}b", "password1"), "ssid"),
            (wpa2("net", "short"), "password"),
            (wpa2("net", &"x".repeat(64)), "password"),
            (wpa2("net", "pass\nword"), "password"),
            (WifiProfile::new("net", Security::Wpa3, None), "password"),
            (WifiProfile::new("net", Security::Wep, None), "password"),
            (
                WifiProfile::new("net", Security::Wep, Some("123456".into())),
                "password",
            ),
            (
                WifiProfile::new(
                    "net",
                    Security::Wep,
                    Some("0123456789abcdeg0123456789".into()),
                ),
                "password",
            ),
            (
                WifiProfile::new("net", Security::None, Some("password1".into())),
                "password",
            ),
            (
                WifiProfile::new("net", Security::Any, Some("abc".into())),
                "password",
            ),
        ];
        for (profile, field) in cases {
            match profile.to_mobileconfig() {
                Err(ProfileError::Validation { field: f, .. }) => {
                    assert_eq!(f, field, "{profile:?}")
                }
                other => panic!("{profile:?} gave {other:?}"),
            }
        }
        let ok = [
            wpa2(&"x".repeat(32), "12345678"),
            wpa2(&"é".repeat(16), &"x".repeat(63)),
            WifiProfile::new("n", Security::Wep, Some("abcde".into())),
            WifiProfile::new("n", Security::Wep, Some("abcdefghijklm".into())),
            WifiProfile::new("n", Security::Wep, Some("0123456789".into())),
            WifiProfile::new(
                "n",
                Security::Wep,
                Some("0123456789ABCDEF0123456789".into()),
            ),
            WifiProfile::new("n", Security::Any, None),
            WifiProfile::new("n", Security::Any, Some("abcde".into())),
            WifiProfile::new("n", Security::Wpa, Some("wpa-pass".into())),
            WifiProfile::new("n", Security::Wpa3, Some("wpa3-pass".into())),
        ];
        for p in ok {
            p.to_mobileconfig().unwrap_or_else(|e| panic!("{p:?}: {e}"));
        }
    }

    #[test]
    fn secret_is_never_printed() {
        let p = wpa2("net", "hunter22-secret");
        let debug = format!("{p:?}");
        assert!(!debug.contains("hunter22"), "{debug}");
        assert!(debug.contains("***"));
        assert_eq!(Secret::new("x").to_string(), "***");
        assert_eq!(Secret::new("x").expose(), "x");
    }

    #[test]
    fn secret_from_file_strips_one_newline_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        for (content, expected) in [
            ("secret\n", "secret"),
            ("secret\r\n", "secret"),
            ("secret  \n\n", "secret  \n"),
            ("no newline", "no newline"),
            ("", ""),
        ] {
            std::fs::write(&path, content).expect("write");
            assert_eq!(Secret::from_file(&path).expect("read").expose(), expected);
        }
        std::fs::write(&path, b"\xff\xfe").expect("write");
        let e = Secret::from_file(&path).expect_err("not utf-8");
        assert!(e.to_string().contains("pw"), "{e}");
        let e = Secret::from_file(&dir.path().join("missing")).expect_err("missing");
        assert!(
            e.is_input_error() && e.to_string().contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn security_parsing() {
        assert_eq!("WPA2".parse::<Security>().expect("wpa2"), Security::Wpa2);
        assert_eq!("open".parse::<Security>().expect("open"), Security::None);
        assert!("wpa4".parse::<Security>().is_err());
        #[derive(serde::Deserialize)]
        struct Cfg {
            security: Security,
        }
        let c: Cfg = toml::from_str("security = \"wpa3\"").expect("toml");
        assert_eq!(c.security, Security::Wpa3);
        let c: Cfg = toml::from_str("security = \"Open\"").expect("toml");
        assert_eq!(c.security, Security::None);
        let e = toml::from_str::<Cfg>("security = \"wpa4\"")
            .err()
            .expect("wpa4 is refused");
        assert!(
            e.message().starts_with(
                "unknown variant `wpa4`, expected one of `none`, `wep`, `wpa`, `wpa2`, `wpa3`, `any`"
            ),
            "{e}"
        );
    }

    #[test]
    fn security_names_round_trip() {
        for name in SECURITY_NAMES {
            let s: Security = name.parse().expect(name);
            assert_eq!(s.as_str(), name);
            assert_eq!(s.encryption_type().to_ascii_lowercase(), name);
        }
    }

    #[test]
    fn existing_profiles_xml_and_binary() {
        let p = wpa2("SchoolNet", "password1");
        let xml = p.to_mobileconfig().expect("xml");
        let read = parse_mobileconfig(xml.clone()).expect("xml profile");
        assert_eq!(read.bytes, xml);
        assert_eq!(read.format, ProfileFormat::Xml);
        assert_eq!(read.identifier, p.identifier());
        assert_eq!(read.uuid, p.uuid());
        assert_eq!(read.display_name.as_deref(), Some("Wi-Fi SchoolNet"));

        let value = Value::from_reader_xml(&xml[..]).expect("value");
        let mut binary = Vec::new();
        value.to_writer_binary(&mut binary).expect("binary");
        let read = parse_mobileconfig(binary.clone()).expect("binary profile");
        assert_eq!(read.format, ProfileFormat::Binary);
        assert_eq!(read.bytes, binary);
        assert_eq!(read.identifier, p.identifier());
    }

    #[test]
    fn existing_signed_profile() {
        let id = crate::identity::tests::shared();
        let p = wpa2("SignedNet", "password1");
        let xml = p.to_mobileconfig().expect("xml");
        let signed = crate::cms::sign_attached(id, &xml).expect("sign");
        let read = parse_mobileconfig(signed.clone()).expect("signed profile");
        assert_eq!(read.format, ProfileFormat::Signed);
        assert_eq!(read.bytes, signed, "bytes unchanged, signature kept");
        assert_eq!(read.identifier, p.identifier());
    }

    #[test]
    fn not_profiles_are_rejected() {
        let dict_xml = |body: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>{body}</dict></plist>"
            )
            .into_bytes()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello".to_vec(), "neither"),
            (
                b"<?xml version=\"1.0\"?><plist><dict><key>a</key></plist>".to_vec(),
                "not a property list",
            ),
            (
                b"<?xml version=\"1.0\"?><plist version=\"1.0\"><array/></plist>".to_vec(),
                "not a dictionary",
            ),
            (
                dict_xml("<key>PayloadType</key><string>com.apple.wifi.managed</string>"),
                "PayloadType is",
            ),
            (
                dict_xml(
                    "<key>PayloadType</key><string>Configuration</string><key>PayloadUUID</key><string>U</string><key>PayloadContent</key><array/>",
                ),
                "no PayloadIdentifier",
            ),
            (
                dict_xml(
                    "<key>PayloadType</key><string>Configuration</string><key>PayloadIdentifier</key><string>x</string><key>PayloadContent</key><array/>",
                ),
                "no PayloadUUID",
            ),
            (
                dict_xml(
                    "<key>PayloadType</key><string>Configuration</string><key>PayloadIdentifier</key><string>x</string><key>PayloadUUID</key><string>U</string>",
                ),
                "no PayloadContent",
            ),
            (vec![0x30, 0x03, 0x02, 0x01, 0x01], "CMS"),
        ];
        for (bytes, expected) in cases {
            match parse_mobileconfig(bytes) {
                Err(e @ ProfileError::NotAProfile { .. }) => {
                    assert!(e.to_string().contains(expected), "{e} lacks {expected}")
                }
                other => panic!("expected NotAProfile ({expected}), got {other:?}"),
            }
        }
    }

    #[test]
    fn a_deeply_nested_mobileconfig_is_refused_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (format, bytes) in usbmux::test_support::nested_plists(10_000) {
            let path = dir.path().join(format!("deep-{format}.mobileconfig"));
            std::fs::write(&path, &bytes).expect("write");
            match load_mobileconfig(&path) {
                Err(ProfileError::Plist {
                    what,
                    source: BoundedPlistError::TooDeep { .. },
                }) => assert!(what.contains("deep-"), "{format}: names the file"),
                other => panic!("{format}: expected TooDeep, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_deeply_nested_plist_inside_a_signature_is_refused() {
        let id = crate::identity::tests::shared();
        let signed =
            crate::cms::sign_attached(id, &usbmux::test_support::xml_nested(10_000)).expect("sign");
        assert!(matches!(
            parse_mobileconfig(signed),
            Err(ProfileError::Plist {
                source: BoundedPlistError::TooDeep { .. },
                ..
            })
        ));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.mobileconfig");
        std::fs::write(&path, b"nonsense").expect("write");
        let e = load_mobileconfig(&path).expect_err("bad");
        assert!(e.to_string().contains("bad.mobileconfig"), "{e}");
        let good = dir.path().join("good.mobileconfig");
        std::fs::write(
            &good,
            wpa2("Net", "password1").to_mobileconfig().expect("xml"),
        )
        .expect("write");
        assert_eq!(
            load_mobileconfig(&good).expect("good").identifier,
            "org.cartprep.wifi.Net"
        );
    }
}
