//! Assess: read the iPad once into facts the plan is made from. Reading decides nothing.
//!
//! Two sources, in this order:
//! - lockdownd, in the paired session: serial, name, iPadOS, activation state;
//! - MCInstall, only once the iPad is activated (lockdownd may refuse services to an
//!   unactivated iPad, and every proven client activates first; see `docs/protocol.md`):
//!   its cloud configuration and its profile list.
//!
//! An unactivated iPad is one out of the box or just erased: it has no cloud configuration and
//! no profile, so there is nothing more to read before activating it.

use lockdown::DeviceSession;
use mcinstall::McInstallClient;
use plist::{Dictionary, Value};

use super::error::{StepError, retrying};

/// What any host may read before pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicFacts {
    /// `ProductType`, e.g. `iPad12,1`.
    pub product_type: String,
    /// `ProductVersion`, e.g. `18.5`.
    pub ios_version: String,
    /// `BuildVersion`.
    pub build: String,
}

/// `ActivationState` as lockdownd reports it. Anything but `Unactivated` counts as activated
/// (`Activated`, `FactoryActivated`…), as proven clients treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    Unactivated,
    Activated(String),
}

impl Activation {
    pub fn from_state(state: &str) -> Activation {
        if state == "Unactivated" {
            Activation::Unactivated
        } else {
            Activation::Activated(state.to_owned())
        }
    }

    pub fn is_activated(&self) -> bool {
        matches!(self, Activation::Activated(_))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Activation::Unactivated => "Unactivated",
            Activation::Activated(s) => s,
        }
    }
}

/// What a paired host reads from lockdownd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The Apple serial number (printed on the box; what Apple School Manager knows).
    pub serial: String,
    /// `DeviceName` now.
    pub name: String,
    pub activation: Activation,
}

/// The parts of a cloud configuration the plan looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudFacts {
    /// `IsSupervised`.
    pub supervised: bool,
    /// `SupervisorHostCertificates` (DER).
    pub supervisor_certificates: Vec<Vec<u8>>,
    /// `ConfigurationURL`: where the iPad enrolls in its MDM.
    pub configuration_url: Option<String>,
    /// `ConfigurationSource`: who wrote it (set by the device when ADE applied it).
    pub source: Option<u64>,
    /// `OrganizationName`.
    pub organization: Option<String>,
    /// `CloudConfigurationUIComplete`: the device sets it when Setup Assistant has gone past
    /// the configuration (and, with a `ConfigurationURL`, the mandatory enrollment).
    pub setup_complete: bool,
}

impl CloudFacts {
    /// Reads the keys of interest; missing or mistyped keys count as absent.
    pub fn from_dict(dict: &Dictionary) -> CloudFacts {
        CloudFacts {
            supervised: dict.get("IsSupervised").and_then(Value::as_boolean) == Some(true),
            supervisor_certificates: dict
                .get("SupervisorHostCertificates")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_data)
                        .map(<[u8]>::to_vec)
                        .collect()
                })
                .unwrap_or_default(),
            configuration_url: dict
                .get("ConfigurationURL")
                .and_then(Value::as_string)
                .map(str::to_owned),
            source: dict
                .get("ConfigurationSource")
                .and_then(Value::as_unsigned_integer),
            organization: dict
                .get("OrganizationName")
                .and_then(Value::as_string)
                .map(str::to_owned),
            setup_complete: dict
                .get("CloudConfigurationUIComplete")
                .and_then(Value::as_boolean)
                == Some(true),
        }
    }

    /// Supervised, with `certificate` among its supervisors.
    pub fn supervised_by(&self, certificate: Option<&[u8]>) -> bool {
        self.supervised
            && certificate.is_some_and(|c| self.supervisor_certificates.iter().any(|s| s == c))
    }
}

/// What an activated iPad's MCInstall says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFacts {
    /// `None`: no cloud configuration (nobody has set it up).
    pub cloud: Option<CloudFacts>,
    /// Our Wi-Fi profile is in its profile list.
    pub wifi_installed: bool,
    /// Its MDM enrollment, from the cloud configuration and the profile list.
    pub enrollment: Enrollment,
}

/// Where the iPad stands with its MDM. The device enrolls at the end of Setup Assistant by
/// fetching its `ConfigurationURL`; the enrollment is mandatory (`IsMandatory`), so Setup
/// Assistant completes only once the MDM profile is installed (`docs/protocol.md` §7).
/// `GetProfileList` does not say which profile is the MDM's: on an iPad we prepared, a profile
/// other than our Wi-Fi one, present once Setup Assistant completed, is the enrollment's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Enrollment {
    /// No cloud configuration, or one without a `ConfigurationURL`.
    #[default]
    NoEnrollmentUrl,
    /// Still in Setup Assistant: the enrollment happens at its end.
    SetupNotFinished,
    /// Setup Assistant completed and the MDM's profile (this display name) is installed.
    Enrolled { profile: String },
    /// Setup Assistant completed but no profile besides ours is installed.
    NoMdmProfile,
}

impl Enrollment {
    /// Reads the enrollment from the cloud configuration and the installed profiles
    /// (identifier, display name), leaving out our Wi-Fi profile.
    pub fn from_facts(
        cloud: Option<&CloudFacts>,
        profiles: &[(String, Option<String>)],
        wifi_identifier: &str,
    ) -> Enrollment {
        let Some(cloud) = cloud.filter(|c| c.configuration_url.is_some()) else {
            return Enrollment::NoEnrollmentUrl;
        };
        if !cloud.setup_complete {
            return Enrollment::SetupNotFinished;
        }
        match profiles.iter().find(|(id, _)| id != wifi_identifier) {
            Some((id, name)) => Enrollment::Enrolled {
                profile: name.clone().unwrap_or_else(|| id.clone()),
            },
            None => Enrollment::NoMdmProfile,
        }
    }

    /// What the ledger records: "enrolled in <MDM>", or why not.
    pub fn describe(&self, mdm_name: &str) -> String {
        match self {
            Enrollment::NoEnrollmentUrl => "not enrolled: no MDM enrollment URL on the iPad".into(),
            Enrollment::SetupNotFinished => {
                "not enrolled yet: Setup Assistant not finished on the iPad".into()
            }
            Enrollment::Enrolled { profile } => {
                format!("enrolled in {mdm_name} (profile \u{201c}{profile}\u{201d})")
            }
            Enrollment::NoMdmProfile => {
                "not enrolled: Setup Assistant finished but no MDM profile is installed".into()
            }
        }
    }
}

/// Everything the plan is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub device: DeviceFacts,
    /// `None` until the iPad is activated (nothing to read before).
    pub config: Option<ConfigFacts>,
}

impl Assessment {
    /// One line for the ledger's history.
    pub fn note(&self, certificate: Option<&[u8]>) -> String {
        let activation = self.device.activation.as_str();
        let Some(config) = &self.config else {
            return format!("activation {activation}: new or erased, nothing set up yet");
        };
        let cloud = match &config.cloud {
            // The profile list is not read then (see `read_config`).
            None => return format!("activation {activation}; no cloud configuration"),
            Some(c) if c.supervised_by(certificate) => "ours",
            Some(_) => "someone else's",
        };
        let wifi = if config.wifi_installed {
            "our Wi-Fi installed"
        } else {
            "no Wi-Fi profile of ours"
        };
        format!("activation {activation}; cloud configuration {cloud}; {wifi}")
    }
}

/// Reads the public values before pairing. Only while the iPad waits for a person (Trust, its
/// passcode), so the board can name the model meanwhile: on the way through, the paired
/// session's read ([`read_device`]) has the same values and costs no extra round trip.
pub async fn read_public(device: &lockdown::DeviceRef) -> Result<PublicFacts, StepError> {
    retrying(|| async {
        let mut s = DeviceSession::connect(device.clone()).await?;
        // One GetValue for all three (the public subset), not one per key.
        public_facts(&s.get_all_values().await?)
    })
    .await
}

/// Why an iPad that failed before pairing cannot be worked on, when lockdownd says it is not
/// in normal mode (`QueryType` answers another service, e.g. a restore in progress). Asked only
/// after a failure, so a healthy iPad is not sent a request that decides nothing.
pub async fn mode_problem(device: &lockdown::DeviceRef) -> Option<StepError> {
    let mut s = DeviceSession::connect(device.clone()).await.ok()?;
    let kind = s.query_type().await.ok()?;
    (kind != "com.apple.mobile.lockdown")
        .then(|| StepError::Fatal(format!("device is in {kind} mode, not normal mode")))
}

fn public_facts(values: &Dictionary) -> Result<PublicFacts, StepError> {
    Ok(PublicFacts {
        product_type: string(values, "ProductType")?,
        ios_version: string(values, "ProductVersion")?,
        build: string(values, "BuildVersion").unwrap_or_default(),
    })
}

/// Reads what a paired host may know, in the trusted session: the public values too.
pub async fn read_device(
    session: &mut DeviceSession,
) -> Result<(PublicFacts, DeviceFacts), StepError> {
    // One GetValue for the whole default domain, not one per key.
    let values = session.get_all_values().await?;
    Ok((
        public_facts(&values)?,
        DeviceFacts {
            serial: string(&values, "SerialNumber")?,
            name: string(&values, "DeviceName").unwrap_or_default(),
            activation: Activation::from_state(&string(&values, "ActivationState")?),
        },
    ))
}

/// A string value from a GetValue answer; missing or not a string is a malformed reply.
fn string(values: &Dictionary, key: &str) -> Result<String, StepError> {
    values
        .get(key)
        .and_then(Value::as_string)
        .map(str::to_owned)
        .ok_or_else(|| {
            StepError::from(lockdown::LockdownError::MalformedReply(format!(
                "{key} is missing or not a string"
            )))
        })
}

/// Reads the cloud configuration and profile list of an activated iPad.
/// On the job's MCInstall connection (the caller retries, with a new one).
pub async fn read_config(
    mc: &mut McInstallClient,
    wifi_identifier: &str,
) -> Result<ConfigFacts, StepError> {
    // No Flush first: it empties the MDM command queue, which a read does not need, and
    // pymobiledevice3 reads without it (docs/protocol.md §4).
    let cloud = mc.get_cloud_configuration().await?;
    let cloud = cloud.as_ref().map(CloudFacts::from_dict);
    if cloud.is_none() {
        // Nothing set up: the plan supervises and installs the Wi-Fi profile whatever the
        // profile list says (an install replaces a profile with the same identifier), so
        // reading the list would be a round trip that decides nothing.
        return Ok(ConfigFacts::default());
    }
    let profiles = mc.get_profile_list().await?;
    let installed: Vec<(String, Option<String>)> = profiles
        .profiles
        .iter()
        .map(|p| (p.identifier.clone(), p.display_name.clone()))
        .collect();
    Ok(ConfigFacts {
        enrollment: Enrollment::from_facts(cloud.as_ref(), &installed, wifi_identifier),
        cloud,
        wifi_installed: profiles.get(wifi_identifier).is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unactivated_counts_as_not_activated() {
        for (state, activated) in [
            ("Unactivated", false),
            ("Activated", true),
            ("FactoryActivated", true),
            ("SoftActivation", true),
        ] {
            assert_eq!(
                Activation::from_state(state).is_activated(),
                activated,
                "{state}"
            );
        }
    }

    #[test]
    fn a_cloud_configuration_is_read_into_facts() {
        let mut d = Dictionary::new();
        d.insert("IsSupervised".into(), true.into());
        d.insert(
            "SupervisorHostCertificates".into(),
            Value::Array(vec![Value::Data(vec![1, 2, 3]), Value::String("x".into())]),
        );
        d.insert(
            "ConfigurationURL".into(),
            "https://mdm.example.org/enroll".into(),
        );
        d.insert("ConfigurationSource".into(), 2u64.into());
        d.insert("OrganizationName".into(), "Springfield".into());
        let facts = CloudFacts::from_dict(&d);
        assert_eq!(
            facts,
            CloudFacts {
                supervised: true,
                supervisor_certificates: vec![vec![1, 2, 3]],
                configuration_url: Some("https://mdm.example.org/enroll".into()),
                source: Some(2),
                organization: Some("Springfield".into()),
                setup_complete: false,
            }
        );
        assert!(facts.supervised_by(Some(&[1, 2, 3])));
        assert!(!facts.supervised_by(Some(&[9])));
        assert!(!facts.supervised_by(None));
    }

    #[test]
    fn the_enrollment_is_read_from_setup_completion_and_the_profiles_besides_ours() {
        const WIFI: &str = "org.example.wifi";
        let cloud = |url: bool, complete: bool| CloudFacts {
            configuration_url: url.then(|| "https://mdm.example.org/enroll".into()),
            setup_complete: complete,
            ..CloudFacts::default()
        };
        let wifi = (WIFI.to_owned(), Some("Wi-Fi".to_owned()));
        let mdm = ("com.example.mdm".to_owned(), Some("Example MDM".to_owned()));
        let unnamed = ("com.example.unnamed".to_owned(), None);
        type Installed = Vec<(String, Option<String>)>;
        let cases: Vec<(Option<CloudFacts>, Installed, Enrollment)> = vec![
            (None, vec![], Enrollment::NoEnrollmentUrl),
            (
                Some(cloud(false, true)),
                vec![mdm.clone()],
                Enrollment::NoEnrollmentUrl,
            ),
            (
                Some(cloud(true, false)),
                vec![wifi.clone()],
                Enrollment::SetupNotFinished,
            ),
            (
                Some(cloud(true, true)),
                vec![wifi.clone(), mdm.clone()],
                Enrollment::Enrolled {
                    profile: "Example MDM".into(),
                },
            ),
            (
                Some(cloud(true, true)),
                vec![unnamed.clone()],
                Enrollment::Enrolled {
                    profile: "com.example.unnamed".into(),
                },
            ),
            (
                Some(cloud(true, true)),
                vec![wifi.clone()],
                Enrollment::NoMdmProfile,
            ),
        ];
        for (cloud, profiles, expected) in cases {
            assert_eq!(
                Enrollment::from_facts(cloud.as_ref(), &profiles, WIFI),
                expected,
                "{cloud:?} {profiles:?}"
            );
        }
        assert_eq!(
            Enrollment::Enrolled {
                profile: "Example MDM".into()
            }
            .describe("Demo MDM"),
            "enrolled in Demo MDM (profile \u{201c}Example MDM\u{201d})"
        );
    }

    #[test]
    fn an_unsupervised_configuration_has_no_supervisor() {
        let mut d = Dictionary::new();
        d.insert("IsSupervised".into(), false.into());
        d.insert(
            "SupervisorHostCertificates".into(),
            Value::Array(vec![Value::Data(vec![1])]),
        );
        assert!(!CloudFacts::from_dict(&d).supervised_by(Some(&[1])));
        assert_eq!(
            CloudFacts::from_dict(&Dictionary::new()),
            CloudFacts::default()
        );
    }
}
