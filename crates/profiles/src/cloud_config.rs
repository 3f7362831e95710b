//! The cloud configuration dictionary sent with MCInstall `SetCloudConfiguration`
//! (`docs/protocol.md` §5.3).
//!
//! Minimal, and completed by the device: `AllowPairing`, `IsSupervised`, `OrganizationName`,
//! `OrganizationMagic`, `SkipSetup`; when supervising `SupervisorHostCertificates` and
//! `IsMultiUser: false`; the optional organisation strings; and for MDM enrollment
//! `ConfigurationURL` (+ `AnchorCertificates`). Each key's source is in `docs/protocol.md` §5.3:
//! - `IsMultiUser: false` when supervising, as pymobiledevice3 (`supervise`) and go-ios
//!   (danielpaulus/go-ios#657) send it: a supervised iPad that supports Shared iPad keeps the
//!   key, and `false` says plainly that the cart's iPads are single-user; an unsupervised one
//!   drops it (iOS's `MCCloudConfigurationWriter _updateCloudConfigDetails:`).
//!
//! Deliberately never sent:
//! - `CloudConfigurationUIComplete` / `ConfigurationWasApplied`: the device sets both itself when
//!   no `ConfigurationURL` is present; sending them with a URL would most likely make Setup
//!   Assistant skip the enrollment step.
//! - `ConfigurationSource`: the device overwrites it (with 2, Configurator).
//! - `IsMandatory` / `IsMDMUnremovable`: forced by the device.

use plist::{Dictionary, Value};
use serde::Deserialize;
use x509_cert::Certificate;
use x509_cert::der::Decode;

use crate::error::{ProfileError, Result};
use crate::identity::{SupervisionIdentity, random_uuid};

/// Optional organisation details shown in Setup Assistant and Settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationDetails {
    pub department: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub address_line3: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub zip_code: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub support_phone: Option<String>,
    pub support_email: Option<String>,
}

impl OrganizationDetails {
    /// `(cloud configuration key, value)` for every field, set or not.
    fn entries(&self) -> [(&'static str, &Option<String>); 12] {
        [
            ("OrganizationDepartment", &self.department),
            ("OrganizationAddressLine1", &self.address_line1),
            ("OrganizationAddressLine2", &self.address_line2),
            ("OrganizationAddressLine3", &self.address_line3),
            ("OrganizationCity", &self.city),
            ("OrganizationRegion", &self.region),
            ("OrganizationZipCode", &self.zip_code),
            ("OrganizationCountry", &self.country),
            ("OrganizationPhone", &self.phone),
            ("OrganizationEmail", &self.email),
            ("OrganizationSupportPhone", &self.support_phone),
            ("OrganizationSupportEmail", &self.support_email),
        ]
    }
}

/// Builds the `SetCloudConfiguration` dictionary.
///
/// ```
/// # fn main() -> Result<(), profiles::ProfileError> {
/// let identity = profiles::SupervisionIdentity::create("Example School")?;
/// let dict = profiles::CloudConfigBuilder::new("Example School")
///     .supervised_by(&identity)
///     .skip_setup(vec!["Diagnostics".into(), "Siri".into()])
///     .build()?;
/// assert_eq!(dict["IsSupervised"].as_boolean(), Some(true));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CloudConfigBuilder {
    organization_name: String,
    organization_magic: String,
    allow_pairing: bool,
    supervisor_certificates: Vec<Vec<u8>>,
    details: OrganizationDetails,
    skip_setup: Vec<String>,
    configuration_url: Option<String>,
    anchor_certificates: Vec<Vec<u8>>,
}

impl CloudConfigBuilder {
    /// Unsupervised, pairing allowed, a random `OrganizationMagic`, nothing skipped.
    pub fn new(organization_name: impl Into<String>) -> Self {
        CloudConfigBuilder {
            organization_name: organization_name.into(),
            organization_magic: random_uuid(),
            allow_pairing: true,
            supervisor_certificates: Vec::new(),
            details: OrganizationDetails::default(),
            skip_setup: Vec::new(),
            configuration_url: None,
            anchor_certificates: Vec::new(),
        }
    }

    /// Supervises the device with this identity (`IsSupervised` and its certificate in
    /// `SupervisorHostCertificates`).
    pub fn supervised_by(self, identity: &SupervisionIdentity) -> Self {
        self.supervisor_certificate(identity.certificate_der().to_vec())
    }

    /// Adds a supervisor certificate (DER) and makes the configuration supervised. Several
    /// hosts can be allowed to escalate.
    pub fn supervisor_certificate(mut self, der: Vec<u8>) -> Self {
        self.supervisor_certificates.push(der);
        self
    }

    /// `AllowPairing` (default true). `false` makes the device delete every pairing record and
    /// allow only supervised pairing, so it requires supervision.
    pub fn allow_pairing(mut self, allow: bool) -> Self {
        self.allow_pairing = allow;
        self
    }

    /// `OrganizationMagic` (default: a random UUID).
    pub fn organization_magic(mut self, magic: impl Into<String>) -> Self {
        self.organization_magic = magic.into();
        self
    }

    /// The optional organisation strings (empty strings are left out).
    pub fn details(mut self, details: OrganizationDetails) -> Self {
        self.details = details;
        self
    }

    /// `SkipSetup`: Setup Assistant panes to skip, as [`crate::skip_keys::expand`] gives them.
    pub fn skip_setup(mut self, keys: Vec<String>) -> Self {
        self.skip_setup = keys;
        self
    }

    /// `ConfigurationURL`: the MDM enrollment profile fetched during Setup (https only).
    pub fn configuration_url(mut self, url: impl Into<String>) -> Self {
        self.configuration_url = Some(url.into());
        self
    }

    /// Adds a trust anchor (DER) for the `ConfigurationURL` TLS connection.
    pub fn anchor_certificate(mut self, der: Vec<u8>) -> Self {
        self.anchor_certificates.push(der);
        self
    }

    /// Validates and builds the dictionary.
    pub fn build(&self) -> Result<Dictionary> {
        check_text("OrganizationName", &self.organization_name)?;
        check_text("OrganizationMagic", &self.organization_magic)?;
        let supervised = !self.supervisor_certificates.is_empty();
        if !self.allow_pairing && !supervised {
            return Err(ProfileError::validation(
                "AllowPairing",
                "false needs supervision: the device deletes all pairing records and then only \
                 pairs with a supervisor certificate",
            ));
        }
        for der in &self.supervisor_certificates {
            check_certificate("SupervisorHostCertificates", der)?;
        }
        for der in &self.anchor_certificates {
            check_certificate("AnchorCertificates", der)?;
        }
        if let Some(url) = &self.configuration_url {
            check_https_url(url)?;
        } else if !self.anchor_certificates.is_empty() {
            return Err(ProfileError::validation(
                "AnchorCertificates",
                "given without a ConfigurationURL (they only serve its TLS connection)",
            ));
        }
        for key in &self.skip_setup {
            if key.trim().is_empty() || key.chars().any(char::is_control) {
                return Err(ProfileError::validation(
                    "SkipSetup",
                    format!("invalid key {key:?}"),
                ));
            }
        }

        let mut dict = Dictionary::new();
        dict.insert("AllowPairing".into(), Value::Boolean(self.allow_pairing));
        dict.insert("IsSupervised".into(), Value::Boolean(supervised));
        if supervised {
            dict.insert(
                "SupervisorHostCertificates".into(),
                data_array(&self.supervisor_certificates),
            );
            dict.insert("IsMultiUser".into(), Value::Boolean(false));
        }
        dict.insert(
            "OrganizationName".into(),
            Value::String(self.organization_name.clone()),
        );
        dict.insert(
            "OrganizationMagic".into(),
            Value::String(self.organization_magic.clone()),
        );
        for (key, value) in self.details.entries() {
            if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                check_text(key, value)?;
                dict.insert(key.into(), Value::String(value.to_owned()));
            }
        }
        dict.insert(
            "SkipSetup".into(),
            Value::Array(
                self.skip_setup
                    .iter()
                    .map(|k| Value::String(k.clone()))
                    .collect(),
            ),
        );
        if let Some(url) = &self.configuration_url {
            dict.insert("ConfigurationURL".into(), Value::String(url.clone()));
            if !self.anchor_certificates.is_empty() {
                dict.insert(
                    "AnchorCertificates".into(),
                    data_array(&self.anchor_certificates),
                );
            }
        }
        Ok(dict)
    }
}

fn data_array(ders: &[Vec<u8>]) -> Value {
    Value::Array(ders.iter().map(|d| Value::Data(d.clone())).collect())
}

fn check_text(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(ProfileError::validation(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(ProfileError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_certificate(field: &'static str, der: &[u8]) -> Result<()> {
    Certificate::from_der(der)
        .map(|_| ())
        .map_err(|e| ProfileError::validation(field, format!("not a DER X.509 certificate ({e})")))
}

fn check_https_url(url: &str) -> Result<()> {
    let field = "ConfigurationURL";
    let scheme_ok = url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !scheme_ok {
        return Err(ProfileError::validation(
            field,
            format!("{url:?} must be an https:// URL"),
        ));
    }
    let rest = &url[8..];
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(ProfileError::validation(
            field,
            format!("{url:?} has no host"),
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProfileError::validation(
            field,
            format!("{url:?} contains spaces or control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::shared;
    use std::collections::BTreeSet;

    fn keys(dict: &Dictionary) -> BTreeSet<&str> {
        dict.keys().map(String::as_str).collect()
    }

    fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
        names.iter().copied().collect()
    }

    const NEVER: [&str; 6] = [
        "CloudConfigurationUIComplete",
        "ConfigurationWasApplied",
        "ConfigurationSource",
        "IsMandatory",
        "IsMDMUnremovable",
        "PostSetupProfileWasInstalled",
    ];

    #[test]
    fn supervised_without_url() {
        let id = shared();
        let dict = CloudConfigBuilder::new("Example School")
            .supervised_by(id)
            .skip_setup(vec!["Diagnostics".into(), "WiFi".into()])
            .build()
            .expect("build");
        assert_eq!(
            keys(&dict),
            set(&[
                "AllowPairing",
                "IsSupervised",
                "IsMultiUser",
                "SupervisorHostCertificates",
                "OrganizationName",
                "OrganizationMagic",
                "SkipSetup",
            ])
        );
        assert_eq!(dict["IsMultiUser"].as_boolean(), Some(false));
        assert_eq!(dict["AllowPairing"].as_boolean(), Some(true));
        assert_eq!(dict["IsSupervised"].as_boolean(), Some(true));
        let certs = dict["SupervisorHostCertificates"]
            .as_array()
            .expect("array");
        assert_eq!(certs.len(), 1);
        assert_eq!(
            certs[0].as_data(),
            Some(id.certificate_der()),
            "exact DER bytes"
        );
        assert_eq!(dict["OrganizationName"].as_string(), Some("Example School"));
        let magic = dict["OrganizationMagic"].as_string().expect("magic");
        assert_eq!(magic.len(), 36);
        let skip: Vec<_> = dict["SkipSetup"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(Value::as_string)
            .collect();
        assert_eq!(skip, vec!["Diagnostics", "WiFi"]);
        for k in NEVER {
            assert!(!dict.contains_key(k), "{k}");
        }
    }

    #[test]
    fn supervised_with_url_and_anchor_and_details() {
        let id = shared();
        let details = OrganizationDetails {
            department: Some("IT".into()),
            address_line1: Some("1 rue de l'École".into()),
            address_line2: Some("".into()), // empty: left out
            city: Some("Lyon".into()),
            region: Some("ARA".into()),
            zip_code: Some("69001".into()),
            country: Some("FR".into()),
            phone: Some("+33 4 00 00 00 00".into()),
            email: Some("it@example.org".into()),
            support_phone: Some("+33 4 00 00 00 01".into()),
            support_email: Some("help@example.org".into()),
            ..Default::default()
        };
        let dict = CloudConfigBuilder::new("Example School")
            .supervised_by(id)
            .allow_pairing(false)
            .organization_magic("MAGIC-1")
            .details(details)
            .configuration_url("https://mdm.example.org/enroll")
            .anchor_certificate(id.certificate_der().to_vec())
            .build()
            .expect("build");
        assert_eq!(
            keys(&dict),
            set(&[
                "AllowPairing",
                "IsSupervised",
                "IsMultiUser",
                "SupervisorHostCertificates",
                "OrganizationName",
                "OrganizationMagic",
                "OrganizationDepartment",
                "OrganizationAddressLine1",
                "OrganizationCity",
                "OrganizationRegion",
                "OrganizationZipCode",
                "OrganizationCountry",
                "OrganizationPhone",
                "OrganizationEmail",
                "OrganizationSupportPhone",
                "OrganizationSupportEmail",
                "SkipSetup",
                "ConfigurationURL",
                "AnchorCertificates",
            ])
        );
        assert_eq!(dict["AllowPairing"].as_boolean(), Some(false));
        assert_eq!(dict["OrganizationMagic"].as_string(), Some("MAGIC-1"));
        assert_eq!(
            dict["ConfigurationURL"].as_string(),
            Some("https://mdm.example.org/enroll")
        );
        assert_eq!(dict["AnchorCertificates"].as_array().map(Vec::len), Some(1));
        assert_eq!(dict["SkipSetup"].as_array().map(Vec::len), Some(0));
        for k in NEVER {
            assert!(!dict.contains_key(k), "{k}");
        }
    }

    #[test]
    fn unsupervised_minimal() {
        let dict = CloudConfigBuilder::new("Example School")
            .configuration_url("HTTPS://mdm.example.org")
            .build()
            .expect("build");
        assert_eq!(
            keys(&dict),
            set(&[
                "AllowPairing",
                "IsSupervised",
                "OrganizationName",
                "OrganizationMagic",
                "SkipSetup",
                "ConfigurationURL",
            ])
        );
        assert_eq!(dict["IsSupervised"].as_boolean(), Some(false));
        // A fresh magic each time.
        let other = CloudConfigBuilder::new("Example School")
            .build()
            .expect("build");
        assert_ne!(dict["OrganizationMagic"], other["OrganizationMagic"]);
    }

    #[test]
    fn validation_errors() {
        let id = shared();
        let field = |b: CloudConfigBuilder| match b.build() {
            Err(ProfileError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        };
        for url in [
            "http://mdm.example.org",
            "mdm.example.org",
            "https://",
            "https:///path",
            "https://mdm example.org",
            "ftp://x",
            "",
        ] {
            let b = CloudConfigBuilder::new("Org").configuration_url(url);
            assert_eq!(field(b), "ConfigurationURL", "{url}");
        }
        assert_eq!(field(CloudConfigBuilder::new("  ")), "OrganizationName");
        assert_eq!(
            field(CloudConfigBuilder::new("Org").organization_magic("")),
            "OrganizationMagic"
        );
        assert_eq!(
            field(CloudConfigBuilder::new("Org").allow_pairing(false)),
            "AllowPairing"
        );
        assert_eq!(
            field(CloudConfigBuilder::new("Org").supervisor_certificate(b"junk".to_vec())),
            "SupervisorHostCertificates"
        );
        assert_eq!(
            field(CloudConfigBuilder::new("Org").anchor_certificate(id.certificate_der().to_vec())),
            "AnchorCertificates"
        );
        assert_eq!(
            field(CloudConfigBuilder::new("Org").skip_setup(vec!["".into()])),
            "SkipSetup"
        );
        let details = OrganizationDetails {
            city: Some("a\nb".into()),
            ..Default::default()
        };
        assert_eq!(
            field(CloudConfigBuilder::new("Org").details(details)),
            "OrganizationCity"
        );
    }

    #[test]
    fn details_deserialize_from_toml() {
        let d: OrganizationDetails =
            toml::from_str("city = \"Lyon\"\nsupport_email = \"a@b.c\"").expect("toml");
        assert_eq!(d.city.as_deref(), Some("Lyon"));
        assert!(toml::from_str::<OrganizationDetails>("town = \"x\"").is_err());
    }
}
