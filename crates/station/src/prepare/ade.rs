//! The two MCInstall requests of ADE mode that a device does not answer the simple way:
//! - `InstallProfile` of the Wi-Fi before setup, whose reply is reported to say "failed" while
//!   the profile works (field reports on `cfgutil install-profile`, `docs/fidelity.md` §6): what
//!   the iPad holds decides, not the reply;
//! - `DownloadAndApplyCloudConfiguration`, which takes seconds to minutes (the device asks
//!   Apple, then the MDM) and must never be sent again blindly: after a lost reply the iPad may
//!   still be applying the first one, so the station reads what it holds instead.

use mcinstall::{McInstallClient, McInstallError};
use plist::Dictionary;

use super::error::{StepError, retrying};
use crate::record::Attention;
use crate::settings::WifiPayload;

/// What a failed pre-setup Wi-Fi install leaves, read from the profile list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WifiAfterError {
    /// The iPad lists the profile: the reply misreported.
    Installed,
    /// Not listed. An unsupervised iPad in Setup Assistant may hold it only as "downloaded"
    /// (not listed), so this is not a failure by itself: `DownloadAndApplyCloudConfiguration`
    /// then tells whether the iPad got online, and the Wi-Fi step after it checks the profile.
    NotListed,
}

pub fn wifi_after_error(listed: bool) -> WifiAfterError {
    if listed {
        WifiAfterError::Installed
    } else {
        WifiAfterError::NotListed
    }
}

/// What a `DownloadAndApplyCloudConfiguration` whose reply was lost (timeout, dropped link)
/// left on the iPad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLostReply {
    /// The iPad holds a cloud configuration now: it had none before this step (the plan sends
    /// the request only then), so the download went through.
    Applied,
    /// None yet: the iPad failed, or is still fetching. Sending the request again on a new
    /// connection could start a second download next to the first, so the job stops here and
    /// the next plug-in looks again.
    NotYet,
}

pub fn after_lost_reply(cloud_configuration: Option<&Dictionary>) -> AfterLostReply {
    match cloud_configuration {
        Some(_) => AfterLostReply::Applied,
        None => AfterLostReply::NotYet,
    }
}

fn not_assigned(e: &McInstallError) -> bool {
    matches!(e, McInstallError::Device { chain, .. }
        if chain.first().is_some_and(|c| c.code == Some(33005)))
}

/// `InstallProfile` of the Wi-Fi before Setup Assistant ends (ADE mode).
pub async fn send_wifi_before_setup(
    provider: &lockdown::UsbmuxProvider,
    wifi: &WifiPayload,
) -> Result<(), StepError> {
    retrying(|| async {
        let mut mc = McInstallClient::connect(provider).await?;
        let refused = match mc.install_profile(&wifi.bytes).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => e,
        };
        let mut mc = McInstallClient::connect(provider).await?;
        let listed = mc.get_profile_list().await?.get(&wifi.identifier).is_some();
        match wifi_after_error(listed) {
            WifiAfterError::Installed => {
                tracing::info!("the iPad answered InstallProfile with \"{refused}\" but lists the Wi-Fi profile");
            }
            WifiAfterError::NotListed => {
                tracing::warn!("the iPad answered InstallProfile with \"{refused}\" and does not list the Wi-Fi profile; going on, its ADE download tells whether it is online");
            }
        }
        Ok(())
    })
    .await
}

/// `DownloadAndApplyCloudConfiguration`, sent once; connecting is retried (nothing was sent
/// yet), the request itself never.
pub async fn apply_configuration(provider: &lockdown::UsbmuxProvider) -> Result<(), StepError> {
    let mut mc = retrying(|| async { Ok(McInstallClient::connect(provider).await?) }).await?;
    let lost = match mc.download_and_apply_cloud_configuration(None, None).await {
        Ok(()) => return Ok(()),
        Err(e) if not_assigned(&e) => {
            return Err(StepError::Attention(Attention::NotAssignedToAde));
        }
        Err(e) if e.is_transient() => e,
        Err(e) => return Err(e.into()),
    };
    drop(mc);
    let held = retrying(|| async {
        let mut mc = McInstallClient::connect(provider).await?;
        Ok(mc.get_cloud_configuration().await?)
    })
    .await?;
    match after_lost_reply(held.as_ref()) {
        AfterLostReply::Applied => {
            tracing::info!(
                "DownloadAndApplyCloudConfiguration: {lost}, but the iPad holds its configuration now"
            );
            Ok(())
        }
        AfterLostReply::NotYet => Err(StepError::Fatal(format!(
            "DownloadAndApplyCloudConfiguration: {lost}; the iPad holds no configuration yet and the request is not sent twice (it may still be fetching): plug the iPad in again to look again"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_ade_reply_counts_as_applied_only_when_the_ipad_holds_a_configuration() {
        let mut held = Dictionary::new();
        held.insert("ConfigurationSource".into(), 1u64.into());
        for (configuration, want) in [
            (None, AfterLostReply::NotYet),
            (Some(&held), AfterLostReply::Applied),
        ] {
            assert_eq!(after_lost_reply(configuration), want);
        }
    }

    #[test]
    fn a_refused_wifi_install_is_judged_by_the_profile_list() {
        for (listed, want) in [
            (true, WifiAfterError::Installed),
            (false, WifiAfterError::NotListed),
        ] {
            assert_eq!(wifi_after_error(listed), want);
        }
    }

    #[test]
    fn only_33005_means_not_assigned() {
        let chain = |code| {
            vec![mcinstall::ChainEntry {
                code: Some(code),
                domain: Some("DEPCloudConfigErrorDomain".into()),
                description: None,
            }]
        };
        let device = |code| McInstallError::Device {
            request: "DownloadAndApplyCloudConfiguration",
            status: "Error".into(),
            chain: chain(code),
        };
        assert!(not_assigned(&device(33005)));
        assert!(!not_assigned(&device(-1009)));
        assert!(!not_assigned(&McInstallError::ConnectionClosed {
            request: "DownloadAndApplyCloudConfiguration"
        }));
    }
}
