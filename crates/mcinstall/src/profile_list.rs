//! `GetProfileList` replies (`docs/protocol.md` §3.3).

use plist::{Dictionary, Value};

use crate::error::McInstallError;

/// One installed profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledProfile {
    /// `PayloadIdentifier` (the key in `OrderedIdentifiers`).
    pub identifier: String,
    /// `PayloadDisplayName`.
    pub display_name: Option<String>,
    /// `PayloadUUID`.
    pub uuid: Option<String>,
    /// `PayloadVersion`.
    pub version: Option<i64>,
    /// `ProfileManifest.Description`, else `PayloadDescription`.
    pub description: Option<String>,
    /// `ProfileManifest.IsActive`.
    pub is_active: bool,
    /// `PayloadRemovalDisallowed`.
    pub removal_disallowed: bool,
    /// `PayloadOrganization`.
    pub organization: Option<String>,
}

/// The installed profiles, in the device's order (`OrderedIdentifiers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileList {
    pub profiles: Vec<InstalledProfile>,
}

impl ProfileList {
    pub fn get(&self, identifier: &str) -> Option<&InstalledProfile> {
        self.profiles.iter().find(|p| p.identifier == identifier)
    }

    pub fn identifiers(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|p| p.identifier.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }
}

fn optional_dict<'a>(
    reply: &'a Dictionary,
    key: &str,
) -> Result<Option<&'a Dictionary>, McInstallError> {
    match reply.get(key) {
        None => Ok(None),
        Some(Value::Dictionary(d)) => Ok(Some(d)),
        Some(_) => Err(McInstallError::MalformedReply {
            request: "GetProfileList",
            reason: format!("{key} is not a dictionary"),
        }),
    }
}

fn bool_of(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Boolean(b)) => *b,
        Some(Value::Integer(i)) => i.as_signed().is_some_and(|n| n != 0),
        _ => false,
    }
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Integer(i) => i.as_signed().or_else(|| i.as_unsigned().map(|u| u as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses a successful reply. Profiles follow `OrderedIdentifiers`; without it, the order of
/// `ProfileMetadata`.
pub fn parse(reply: &Dictionary) -> Result<ProfileList, McInstallError> {
    let malformed = |reason: &str| McInstallError::MalformedReply {
        request: "GetProfileList",
        reason: reason.into(),
    };
    let manifest = optional_dict(reply, "ProfileManifest")?;
    let metadata = optional_dict(reply, "ProfileMetadata")?;
    let ids: Vec<String> = match reply.get("OrderedIdentifiers") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_string()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed("OrderedIdentifiers holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("OrderedIdentifiers is not an array")),
        None => metadata
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
    };
    let mut profiles = Vec::with_capacity(ids.len());
    for identifier in ids {
        let man = manifest
            .and_then(|m| m.get(&identifier))
            .and_then(Value::as_dictionary);
        let meta = metadata
            .and_then(|m| m.get(&identifier))
            .and_then(Value::as_dictionary);
        let text = |d: Option<&Dictionary>, k: &str| {
            d.and_then(|d| d.get(k))
                .and_then(Value::as_string)
                .map(str::to_owned)
        };
        profiles.push(InstalledProfile {
            display_name: text(meta, "PayloadDisplayName"),
            uuid: text(meta, "PayloadUUID"),
            version: int_of(meta.and_then(|d| d.get("PayloadVersion"))),
            description: text(man, "Description").or_else(|| text(meta, "PayloadDescription")),
            is_active: bool_of(man.and_then(|d| d.get("IsActive"))),
            removal_disallowed: bool_of(meta.and_then(|d| d.get("PayloadRemovalDisallowed"))),
            organization: text(meta, "PayloadOrganization"),
            identifier,
        });
    }
    Ok(ProfileList { profiles })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(s: &str) -> Dictionary {
        plist::from_bytes::<Dictionary>(s.as_bytes()).unwrap()
    }

    #[test]
    fn the_real_py_ios_device_dump_parses() {
        let reply = xml(r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>OrderedIdentifiers</key><array><string>aaaff7e2b7df39eeb77bfbc0cd7a70ea99f3fd97a</string></array>
<key>ProfileManifest</key><dict><key>aaaff7e2b7df39eeb77bfbc0cd7a70ea99f3fd97a</key><dict>
  <key>Description</key><string>DO_NOT_TRUST_FiddlerRoot</string><key>IsActive</key><true/></dict></dict>
<key>ProfileMetadata</key><dict><key>aaaff7e2b7df39eeb77bfbc0cd7a70ea99f3fd97a</key><dict>
  <key>PayloadDisplayName</key><string>DO_NOT_TRUST_FiddlerRoot</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadUUID</key><string>C8CE7BC1-F840-4616-B606-337F8CB6AE19</string>
  <key>PayloadVersion</key><integer>1</integer></dict></dict>
<key>Status</key><string>Acknowledged</string>
</dict></plist>"#);
        let list = parse(&reply).unwrap();
        assert_eq!(
            list.profiles,
            vec![InstalledProfile {
                identifier: "aaaff7e2b7df39eeb77bfbc0cd7a70ea99f3fd97a".into(),
                display_name: Some("DO_NOT_TRUST_FiddlerRoot".into()),
                uuid: Some("C8CE7BC1-F840-4616-B606-337F8CB6AE19".into()),
                version: Some(1),
                description: Some("DO_NOT_TRUST_FiddlerRoot".into()),
                is_active: true,
                removal_disallowed: false,
                organization: None,
            }]
        );
    }

    #[test]
    fn order_follows_ordered_identifiers() {
        let reply = xml(r#"<plist version="1.0"><dict>
<key>OrderedIdentifiers</key><array><string>z.last</string><string>a.first</string></array>
<key>ProfileManifest</key><dict/>
<key>ProfileMetadata</key><dict>
  <key>a.first</key><dict><key>PayloadOrganization</key><string>School</string></dict>
  <key>z.last</key><dict><key>PayloadRemovalDisallowed</key><true/></dict></dict>
<key>Status</key><string>Acknowledged</string></dict></plist>"#);
        let list = parse(&reply).unwrap();
        assert_eq!(
            list.identifiers().collect::<Vec<_>>(),
            ["z.last", "a.first"]
        );
        assert!(list.get("z.last").unwrap().removal_disallowed);
        assert_eq!(
            list.get("a.first").unwrap().organization.as_deref(),
            Some("School")
        );
    }

    #[test]
    fn empty_device_and_malformed_replies() {
        let empty = xml(
            r#"<plist version="1.0"><dict><key>OrderedIdentifiers</key><array/><key>ProfileManifest</key><dict/><key>ProfileMetadata</key><dict/><key>Status</key><string>Acknowledged</string></dict></plist>"#,
        );
        assert!(parse(&empty).unwrap().is_empty());
        let bad = xml(
            r#"<plist version="1.0"><dict><key>OrderedIdentifiers</key><string>x</string></dict></plist>"#,
        );
        assert!(matches!(
            parse(&bad),
            Err(McInstallError::MalformedReply { .. })
        ));
        let bad = xml(
            r#"<plist version="1.0"><dict><key>OrderedIdentifiers</key><array><integer>1</integer></array></dict></plist>"#,
        );
        assert!(parse(&bad).is_err());
    }
}
