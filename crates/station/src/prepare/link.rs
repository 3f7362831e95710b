//! One lockdown session and one MCInstall connection for a job, kept from pairing to the
//! last step (docs/protocol.md §3.1): the trusted session pairing opened reads the values,
//! starts MCInstall once and names the iPad; assess → supervise → escalate → Wi-Fi share one
//! MCInstall connection (escalation belongs to a connection, so the silent install must follow
//! on it anyway). pymobiledevice3 works the same way: one lockdown client, one
//! MobileConfigService. After a failed exchange both are dropped and the next use reconnects.

use lockdown::{DeviceRef, DeviceSession, PairingFile};
use mcinstall::McInstallClient;

use super::error::StepError;

/// The MCInstall service name lockdownd starts.
const MCINSTALL: &str = "com.apple.mobile.MCInstall";

pub struct Link {
    device: DeviceRef,
    pair_record: PairingFile,
    session: Option<DeviceSession>,
    mc: Option<McInstallClient>,
}

impl Link {
    /// `session`: the trusted session pairing left open, if any.
    pub fn new(
        device: DeviceRef,
        pair_record: PairingFile,
        session: Option<DeviceSession>,
    ) -> Link {
        Link {
            device,
            pair_record,
            session: session.filter(DeviceSession::in_session),
            mc: None,
        }
    }

    /// The trusted lockdown session, opened again if it was dropped.
    pub async fn session(&mut self) -> Result<&mut DeviceSession, StepError> {
        if self.session.is_none() {
            let mut s = DeviceSession::connect(self.device.clone()).await?;
            s.start_session(&self.pair_record).await?;
            self.session = Some(s);
        }
        self.session
            .as_mut()
            .ok_or_else(|| StepError::Fatal("no lockdown session".into()))
    }

    /// The job's MCInstall connection, started in the session when there is none.
    pub async fn mc(&mut self) -> Result<&mut McInstallClient, StepError> {
        if self.mc.as_ref().is_some_and(|mc| !mc.is_usable()) {
            self.mc = None;
        }
        if self.mc.is_none() {
            let record = self.pair_record.clone();
            let idevice = self
                .session()
                .await?
                .open_service(MCINSTALL, &record)
                .await?;
            self.mc = Some(McInstallClient::from_idevice(idevice));
        }
        self.mc
            .as_mut()
            .ok_or_else(|| StepError::Fatal("no MCInstall connection".into()))
    }

    /// Forgets both connections (after an error, or when the iPad changed under them, as
    /// activation does); the next use opens new ones.
    pub fn reset(&mut self) {
        self.mc = None;
        self.session = None;
    }
}
