//! A client for `com.apple.mobile.MCInstall`, the lockdown service behind Apple Configurator's
//! "prepare": profiles, cloud configuration (supervision), escalation with a supervision
//! identity, stored profiles, erase and Wi-Fi power (`docs/protocol.md` §3).
//!
//! ```no_run
//! # async fn f(provider: lockdown::UsbmuxProvider) -> Result<(), mcinstall::McInstallError> {
//! let mut mc = mcinstall::McInstallClient::connect(&provider).await?;
//! let profiles = mc.get_profile_list().await?;
//! let supervised = mc.get_cloud_configuration().await?.is_some();
//! # let _ = (profiles, supervised); Ok(()) }
//! ```

pub mod client;
pub mod error;
pub mod profile_list;

pub use client::{
    EraseOutcome, MIN_CLOUD_CONFIGURATION_DOWNLOAD, McInstallClient, SERVICE_NAME, Timeouts,
};
pub use error::{ChainEntry, McInstallError};
pub use lockdown::ChallengeSigner;
pub use profile_list::{InstalledProfile, ProfileList};
