//! What a job needs that follows from one configuration: the supervision identity, the Wi-Fi
//! profile's bytes, anchor certificates and the activation server. A reload makes new settings;
//! jobs already running keep theirs.

use std::sync::Arc;

use lockdown::activation::ActivationServer;
use profiles::SupervisionIdentity;

use crate::config::{MdmMode, SkipPanes, StationConfig, Wifi};
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
}

impl Settings {
    pub fn from_config(config: Arc<StationConfig>) -> Result<Settings, String> {
        let identity_dir = identity_dir(&config);
        let identity = if config.mdm.mode == MdmMode::Ade && config.organization.identity.is_none()
        {
            None
        } else {
            Some(Arc::new(SupervisionIdentity::load(&identity_dir).map_err(|e| {
                format!(
                    "supervision identity in {}: {e} (create one with `cartprep identity create --org \"{}\"`)",
                    identity_dir.display(),
                    config.organization.name
                )
            })?))
        };
        let wifi = match &config.wifi {
            Wifi::Network(n) => {
                let password = match (&n.password, &n.password_file) {
                    (Some(p), _) => Some(p.expose().to_owned()),
                    (None, Some(f)) => Some(
                        std::fs::read_to_string(f)
                            .map_err(|e| format!("wifi.password_file {}: {e}", f.display()))?
                            .trim_end_matches(['\r', '\n'])
                            .to_owned(),
                    ),
                    (None, None) => None,
                };
                let security: profiles::wifi::Security = n
                    .security
                    .as_str()
                    .parse()
                    .map_err(|e| format!("wifi.security: {e}"))?;
                let mut profile = profiles::WifiProfile::new(
                    n.ssid.clone(),
                    security,
                    password.map(profiles::wifi::Secret::new),
                );
                profile.hidden = n.hidden;
                profile.auto_join = n.auto_join;
                profile.organization = Some(config.organization.name.clone());
                WifiPayload {
                    bytes: profile
                        .to_mobileconfig()
                        .map_err(|e| format!("wifi: {e}"))?,
                    identifier: profile.identifier(),
                    description: format!("Wi-Fi {}", n.ssid),
                }
            }
            Wifi::Mobileconfig { path, .. } => {
                let p = profiles::wifi::load_mobileconfig(path)
                    .map_err(|e| format!("wifi.mobileconfig: {e}"))?;
                WifiPayload {
                    description: p
                        .display_name
                        .clone()
                        .unwrap_or_else(|| p.identifier.clone()),
                    identifier: p.identifier,
                    bytes: p.bytes,
                }
            }
        };
        // Unknown Setup Assistant panes are a configuration mistake, reported at load (and on
        // reload), not a failure of every iPad at the supervise step.
        if let SkipPanes::Keys(keys) = &config.setup.skip {
            let list = profiles::skip_keys::SkipSelection::List(keys.clone());
            profiles::skip_keys::expand(&list, "26.0").map_err(|e| format!("setup.skip: {e}"))?;
        }
        let mut anchors = Vec::new();
        for a in &config.mdm.anchor_certificates {
            let bytes = std::fs::read(&a.path)
                .map_err(|e| format!("mdm.anchor_certificates {}: {e}", a.path.display()))?;
            anchors.push(pem_or_der(&bytes));
        }
        let mut activation = ActivationServer::new(&config.activation.server_url)
            .map_err(|e| format!("activation.server_url: {e}"))?;
        if let Some(ca) = &config.activation.extra_ca_file {
            activation.extra_root_certificates.push(
                std::fs::read(ca)
                    .map_err(|e| format!("activation.extra_ca_file {}: {e}", ca.display()))?,
            );
        }
        Ok(Settings {
            fingerprint: config.fingerprint(),
            identity,
            wifi,
            anchors,
            activation,
            config,
        })
    }

    /// The cloud configuration our manual prepare writes, for a device on `ios_version`.
    pub fn cloud_configuration(&self, ios_version: &str) -> Result<plist::Dictionary, String> {
        let cfg = &self.config;
        let selection = match &cfg.setup.skip {
            SkipPanes::All => profiles::skip_keys::SkipSelection::All,
            SkipPanes::Keys(k) => profiles::skip_keys::SkipSelection::List(k.clone()),
        };
        let skip = profiles::skip_keys::expand(&selection, ios_version)
            .map_err(|e| format!("setup.skip: {e}"))?;
        let details = profiles::cloud_config::OrganizationDetails {
            department: cfg.organization.department.clone(),
            phone: cfg.organization.phone.clone(),
            email: cfg.organization.email.clone(),
            address_line1: cfg.organization.address.clone(),
            ..Default::default()
        };
        let identity = self
            .identity
            .as_ref()
            .ok_or("manual mode needs a supervision identity (organization.identity)")?;
        let mut builder = profiles::CloudConfigBuilder::new(cfg.organization.name.clone())
            .supervised_by(identity)
            .allow_pairing(true)
            .details(details)
            .skip_setup(skip)
            .configuration_url(cfg.mdm.enrollment_url.clone());
        for a in &self.anchors {
            builder = builder.anchor_certificate(a.clone());
        }
        builder.build().map_err(|e| e.to_string())
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

/// An anchor certificate file may be PEM or DER; the cloud configuration wants DER.
fn pem_or_der(bytes: &[u8]) -> Vec<u8> {
    match der::pem::decode_vec(bytes) {
        Ok((_label, der)) => der,
        Err(_) => bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn anchor_certificates_are_read_as_pem_or_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQc=\n-----END CERTIFICATE-----\n";
        assert_eq!(super::pem_or_der(pem.as_bytes()), der);
        assert_eq!(super::pem_or_der(&der), der);
    }
}
