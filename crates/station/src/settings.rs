//! What a job needs that follows from one configuration: the supervision identity, the Wi-Fi
//! profile's bytes, anchor certificates and the activation server. They are made when the
//! configuration is loaded ([`Settings::load`]), from the same file reads as its checks. A
//! reload makes new settings; jobs already running keep theirs.

use std::path::Path;
use std::sync::Arc;

use lockdown::activation::ActivationServer;
use profiles::SupervisionIdentity;
use profiles::skip_keys::{SkipKeysError, SkipSelection};

use crate::config::{ConfigError, SkipPanes, StationConfig};

/// Why the cloud configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloudConfigError {
    #[error("setup.skip: {0}")]
    SkipKeys(#[from] SkipKeysError),
    #[error("manual mode needs a supervision identity (organization.identity)")]
    NoIdentity,
    #[error(transparent)]
    Build(#[from] profiles::ProfileError),
}
/// The Wi-Fi profile to install, built once per configuration.
#[derive(Clone)]
pub struct WifiPayload {
    pub bytes: Vec<u8>,
    pub identifier: String,
    pub description: String,
}

/// Everything a job needs that follows from one configuration snapshot. A configuration
/// reload makes a new one; jobs already running keep theirs.
#[derive(Clone)]
pub struct Settings {
    pub config: Arc<StationConfig>,
    /// `None` in ADE mode without `organization.identity` (Apple School Manager supervises).
    pub identity: Option<Arc<SupervisionIdentity>>,
    pub wifi: WifiPayload,
    pub anchors: Vec<Vec<u8>>,
    pub activation: ActivationServer,
    pub fingerprint: String,
    /// The Apple School Manager API account (`[asm]`), its key read once at load.
    pub asm: Option<asm::AsmSettings>,
}

impl Settings {
    /// Reads and checks the config file at `path` and every file it names (each once), and
    /// makes the settings from them. Every problem is reported in the error, with the setting's
    /// dotted path and line.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        crate::config::load::load(path)
    }

    /// The Wi-Fi the iPads join, as the operator knows it: the SSID, or the ready-made
    /// profile's name.
    pub fn wifi_name(&self) -> String {
        match &self.config.wifi {
            crate::config::Wifi::Network(n) => n.ssid.clone(),
            crate::config::Wifi::Mobileconfig { .. } => self.wifi.description.clone(),
        }
    }

    /// The cloud configuration our manual prepare writes, for a device on `ios_version`.
    pub fn cloud_configuration(
        &self,
        ios_version: &str,
    ) -> Result<plist::Dictionary, CloudConfigError> {
        let cfg = &self.config;
        let selection = match &cfg.setup.skip {
            SkipPanes::All => SkipSelection::All,
            SkipPanes::Keys(k) => SkipSelection::List(k.clone()),
        };
        let skip = profiles::skip_keys::expand(&selection, ios_version)?;
        let details = profiles::cloud_config::OrganizationDetails {
            department: cfg.organization.department.clone(),
            phone: cfg.organization.phone.clone(),
            email: cfg.organization.email.clone(),
            address_line1: cfg.organization.address.clone(),
            ..Default::default()
        };
        let identity = self.identity.as_ref().ok_or(CloudConfigError::NoIdentity)?;
        let mut builder = profiles::CloudConfigBuilder::new(cfg.organization.name.clone())
            .supervised_by(identity)
            .allow_pairing(true)
            .details(details)
            .skip_setup(skip)
            .configuration_url(cfg.mdm.enrollment_url.clone());
        for a in &self.anchors {
            builder = builder.anchor_certificate(a.clone());
        }
        Ok(builder.build()?)
    }
}

/// Where the identity lives: the configured folder, else the state folder (where
/// `cartprep identity create` puts it).
pub fn identity_dir(config: &StationConfig) -> std::path::PathBuf {
    config
        .organization
        .identity
        .clone()
        .unwrap_or_else(|| config.state_dir.clone())
}
