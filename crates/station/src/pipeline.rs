//! The prepare pipeline: one iPad from "plugged in" to "done — unplug", as a journaled state
//! machine. Every step is recorded in the ledger (and flushed) before the next starts.
//!
//! The pipeline converges rather than replays: each run looks at the device as it is (paired?
//! activated? supervised by us? Wi-Fi installed? named?) and does only what is missing, so
//! re-plugging an iPad, restarting the daemon, or an erase and re-attach all continue where
//! the work stopped, and an iPad already prepared with the same settings is left untouched.
//!
//! Order: detected → paired → identified → assessed → [erased] → activated → supervised →
//! escalated → Wi-Fi installed → named → done. (Pairing comes before identification because an
//! iPad gives its serial number only to a paired host.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lockdown::activation::ActivationError;
use lockdown::{
    ChallengeSigner, DeviceRef, DeviceSession, LockdownError, PairRecordStore, PairingFile,
};
use mcinstall::{McInstallClient, McInstallError};
use plist::Value;
use usbmux::{DeviceProperties, UsbmuxAddress};

use crate::config::MdmMode;
use crate::ledger::{Event, Ledger};
use crate::record::{Attention, DeviceRecord, Outcome, Step};
pub use crate::settings::{Settings, WifiPayload, identity_dir};
use crate::status::{Board, DeviceStatus, Light};

/// How long a "Trust This Computer?" prompt may stay unanswered before the operator is told.
const TRUST_NUDGE: Duration = Duration::from_secs(3);
/// How long, in all, to wait for someone to tap Trust.
const TRUST_GIVE_UP: Duration = Duration::from_secs(600);
/// Attempts for a step failing with a transient error (timeouts, dropped connections).
const STEP_ATTEMPTS: u32 = 3;

/// What a job needs from the daemon.
#[derive(Clone)]
pub struct Context {
    pub usbmux: UsbmuxAddress,
    pub ledger: Arc<Ledger>,
    pub board: Board,
    pub pair_store: PairRecordStore,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Done {
        already: bool,
    },
    Attention(Attention),
    Failed(String),
    /// Erased: it will leave USB and come back; the job continues then.
    Erasing,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StepError {
    Attention(Attention),
    /// Worth another try (timeouts, a dropped connection).
    Transient(String),
    Fatal(String),
}

impl From<LockdownError> for StepError {
    fn from(e: LockdownError) -> Self {
        match e {
            LockdownError::PasswordProtected => StepError::Attention(Attention::Locked),
            LockdownError::UserDeniedPairing => StepError::Attention(Attention::TrustDenied),
            LockdownError::TrustPromptUnanswered(_) => StepError::Attention(Attention::TrustPrompt),
            LockdownError::Timeout { .. } | LockdownError::Io(_) | LockdownError::Usbmux(_) => {
                StepError::Transient(e.to_string())
            }
            other => StepError::Fatal(other.to_string()),
        }
    }
}

impl From<McInstallError> for StepError {
    fn from(e: McInstallError) -> Self {
        match e {
            McInstallError::MustUseAde { .. } => StepError::Attention(Attention::AssignedToAde),
            McInstallError::Timeout { .. }
            | McInstallError::ConnectionClosed { .. }
            | McInstallError::Connection { .. } => StepError::Transient(e.to_string()),
            McInstallError::Lockdown(l) => l.into(),
            other => StepError::Fatal(other.to_string()),
        }
    }
}

impl From<ActivationError> for StepError {
    fn from(e: ActivationError) -> Self {
        match e {
            ActivationError::ActivationLocked => StepError::Attention(Attention::ActivationLocked),
            ActivationError::Timeout { .. }
            | ActivationError::Http(_)
            | ActivationError::ServerError { .. } => StepError::Transient(e.to_string()),
            ActivationError::Lockdown(l) => l.into(),
            other => StepError::Fatal(other.to_string()),
        }
    }
}

/// Retries `f` on transient errors, with a growing pause.
async fn retrying<T, F, Fut>(mut f: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(StepError::Transient(e)) if attempt < STEP_ATTEMPTS => {
                tracing::info!("transient error (attempt {attempt}/{STEP_ATTEMPTS}): {e}");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(StepError::Transient(e)) => {
                return Err(StepError::Fatal(format!(
                    "{e} (after {STEP_ATTEMPTS} attempts)"
                )));
            }
            other => return other,
        }
    }
}

/// One device's job.
pub struct Job<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    device: DeviceRef,
    props: DeviceProperties,
    slot: Option<String>,
    /// Known once paired.
    record: Option<DeviceRecord>,
    /// What any host may read: ProductType, ProductVersion, BuildVersion.
    public: Option<(String, String, String)>,
    status: DeviceStatus,
}

impl<'a> Job<'a> {
    /// `previous`: what the board showed of this iPad before (serial, model, name survive a
    /// replug).
    pub fn new(
        ctx: &'a Context,
        settings: &'a Settings,
        props: DeviceProperties,
        slot: Option<String>,
        previous: Option<DeviceStatus>,
    ) -> Self {
        let mut status = DeviceStatus::new(props.udid.clone(), Light::Working, "plugged in");
        if let Some(p) = previous {
            status.serial = p.serial;
            status.model = p.model;
            status.name = p.name;
        }
        status.slot = slot.clone();
        Job {
            device: DeviceRef::new(ctx.usbmux.clone(), &props),
            status,
            ctx,
            settings,
            props,
            slot,
            record: None,
            public: None,
        }
    }

    fn show(&mut self, light: Light, step: Option<Step>, message: impl Into<String>) {
        self.status.light = light;
        self.status.step = step;
        self.status.message = message.into();
        self.status.since_ms = crate::clock::now_ms();
        self.status.attention = None;
        if let Some(r) = &self.record {
            self.status.serial = Some(r.serial.clone()).filter(|s| !s.is_empty());
            self.status.name = r.name.clone();
            if !r.marketing_name.is_empty() {
                self.status.model = Some(r.marketing_name.clone());
            }
        }
        self.ctx.board.update(self.status.clone());
    }

    /// Records a completed step and shows the next one as working.
    async fn advance(&mut self, step: Step, note: Option<String>) -> Result<(), StepError> {
        if let Some(r) = self.record.as_mut() {
            r.advance(step, note);
            let event = if step == Step::Done {
                Event::Done
            } else {
                Event::Advance
            };
            self.ctx
                .ledger
                .save(r, event)
                .await
                .map_err(|e| StepError::Fatal(format!("ledger: {e}")))?;
        }
        Ok(())
    }

    async fn save(&mut self, event: Event) -> Result<(), StepError> {
        if let Some(r) = &self.record {
            self.ctx
                .ledger
                .save(r, event)
                .await
                .map_err(|e| StepError::Fatal(format!("ledger: {e}")))?;
        }
        Ok(())
    }

    /// Runs the pipeline to its end and records the outcome.
    pub async fn run(mut self) -> JobEnd {
        let end = match self.steps().await {
            Ok(end) => end,
            Err(StepError::Attention(a)) => JobEnd::Attention(a),
            Err(StepError::Transient(e)) | Err(StepError::Fatal(e)) => JobEnd::Failed(e),
        };
        match &end {
            JobEnd::Done { already } => {
                let msg = if *already {
                    "already prepared with these settings — unplug"
                } else {
                    "prepared — unplug"
                };
                self.show(Light::Done, None, msg);
            }
            JobEnd::Attention(a) => {
                self.ensure_record().await;
                if let Some(r) = self.record.as_mut() {
                    r.attention(*a);
                }
                let _ = self.save(Event::Attention).await;
                let step = self.record.as_ref().map(|r| r.attempted_step());
                self.show(Light::Attention, step, a.message());
                self.status.attention = Some(*a);
                self.ctx.board.update(self.status.clone());
            }
            JobEnd::Failed(e) => {
                self.ensure_record().await;
                if let Some(r) = self.record.as_mut() {
                    r.fail(e.clone());
                }
                let _ = self.save(Event::Fail).await;
                let step = self.record.as_ref().map(|r| r.attempted_step());
                self.show(Light::Failed, step, e.clone());
            }
            JobEnd::Erasing => self.show(
                Light::Working,
                Some(Step::Erased),
                "erased — waiting for it to restart",
            ),
        }
        end
    }

    async fn steps(&mut self) -> Result<JobEnd, StepError> {
        self.show(Light::Working, Some(Step::Detected), "plugged in");
        // Detected: what any host may read (model, iOS).
        let public = retrying(|| async {
            let mut s = DeviceSession::connect(self.device.clone()).await?;
            let kind = s.query_type().await?;
            if kind != "com.apple.mobile.lockdown" {
                return Err(StepError::Fatal(format!(
                    "device is in {kind} mode, not normal mode"
                )));
            }
            let product_type = s.get_string("ProductType").await?;
            let version = s.get_string("ProductVersion").await?;
            let build = s.get_string("BuildVersion").await.unwrap_or_default();
            Ok((product_type, version, build))
        })
        .await?;
        self.public = Some(public.clone());

        // Paired (and a TLS session).
        self.show(Light::Working, Some(Step::Paired), "pairing");
        let (mut session, pair_record) = self.pair().await?;
        let serial = session.get_string("SerialNumber").await?;
        let current_name = session.get_string("DeviceName").await.unwrap_or_default();
        let activation_state = session
            .get_string("ActivationState")
            .await
            .unwrap_or_default();
        drop(session);

        // Identified: the ledger record, one per serial, from here on.
        let ledger_err = |e: crate::ledger::LedgerError| StepError::Fatal(format!("ledger: {e}"));
        let provisional = self
            .ctx
            .ledger
            .get(&format!("udid:{}", self.props.udid))
            .map_err(ledger_err)?;
        let mut record = match self.ctx.ledger.get(&serial).map_err(ledger_err)? {
            Some(r) => r,
            None => DeviceRecord::new(serial.clone(), self.props.udid.clone()),
        };
        if let Some(p) = &provisional {
            // Earlier attempts, made before the iPad trusted us, join its record.
            record.history.extend(p.history.iter().cloned());
            record.history.sort_by_key(|e| e.at_ms);
            record.first_seen_ms = record.first_seen_ms.min(p.first_seen_ms);
            record.attempts = record.attempts.max(p.attempts);
        }
        record.udid = self.props.udid.clone();
        record.product_type = public.0.clone();
        record.marketing_name = crate::models::marketing_name(&public.0)
            .unwrap_or(&public.0)
            .to_owned();
        record.ios_version = public.1.clone();
        record.build = public.2.clone();
        record.slot = self.slot.clone().or(record.slot);
        record.begin_attempt();
        self.record = Some(record);
        self.save(Event::Attempt).await?;
        if let Some(p) = &provisional {
            self.ctx.ledger.forget(p).await.map_err(ledger_err)?;
        }
        self.advance(
            Step::Paired,
            Some(format!("slot {}", self.slot.as_deref().unwrap_or("?"))),
        )
        .await?;
        self.advance(
            Step::Identified,
            Some(format!("{} iPadOS {}", public.0, public.1)),
        )
        .await?;

        // Assessed.
        self.show(Light::Working, Some(Step::Assessed), "checking its state");
        let provider = self.provider(&pair_record);
        let assessment = retrying(|| async {
            let mut mc = McInstallClient::connect(&provider).await?;
            mc.flush().await?;
            let cc = mc.get_cloud_configuration().await?;
            let profiles = mc.get_profile_list().await?;
            Ok((cc, profiles))
        })
        .await?;
        let (cloud, profiles) = assessment;
        let ours = self.settings.identity.as_ref().map(|i| i.certificate_der());
        let supervised_by_us = cloud.as_ref().is_some_and(|cc| {
            cc.get("IsSupervised").and_then(Value::as_boolean) == Some(true)
                && cc
                    .get("SupervisorHostCertificates")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|c| ours.is_some() && c.as_data() == ours))
        });
        let wifi_installed = profiles.get(&self.settings.wifi.identifier).is_some();
        let wanted_name = self.wanted_name();
        let mode = self.settings.config.mdm.mode;
        let our_url = cloud
            .as_ref()
            .and_then(|cc| cc.get("ConfigurationURL"))
            .and_then(Value::as_string)
            == Some(self.settings.config.mdm.enrollment_url.as_str());
        let activated = activation_state == "Activated";
        let note = format!(
            "activation {activation_state}; cloud configuration {}; {}",
            match (&cloud, supervised_by_us) {
                (None, _) => "none",
                (Some(_), true) => "ours",
                (Some(_), false) => "someone else's",
            },
            if wifi_installed {
                "our Wi-Fi installed"
            } else {
                "no Wi-Fi profile of ours"
            }
        );
        self.advance(Step::Assessed, Some(note)).await?;

        let prepared_by_us = match mode {
            MdmMode::Manual => supervised_by_us && our_url,
            MdmMode::Ade => cloud.as_ref().is_some_and(|cc| {
                cc.get("ConfigurationSource")
                    .and_then(Value::as_unsigned_integer)
                    == Some(1)
            }),
        };
        if prepared_by_us && activated && wifi_installed && current_name == wanted_name {
            // Same organisation, same settings: leave it alone.
            let same = self
                .record
                .as_ref()
                .and_then(|r| r.settings_fingerprint.clone())
                == Some(self.settings.fingerprint.clone())
                || self
                    .record
                    .as_ref()
                    .is_some_and(|r| r.settings_fingerprint.is_none());
            if same {
                if let Some(r) = self.record.as_mut() {
                    r.name = Some(wanted_name.clone());
                    r.settings_fingerprint = Some(self.settings.fingerprint.clone());
                }
                self.advance(
                    Step::Done,
                    Some("already prepared with these settings: not touched".into()),
                )
                .await?;
                return Ok(JobEnd::Done { already: true });
            }
        }
        if cloud.is_some() && !prepared_by_us {
            // Set up by someone else (or with other settings): only an erase can change that.
            let serial = self
                .record
                .as_ref()
                .map(|r| r.serial.clone())
                .unwrap_or_default();
            match self.settings.config.erase.allows(&serial, supervised_by_us) {
                Some(reason) => return self.erase(&provider, reason).await,
                None => {
                    let is_supervised = cloud
                        .as_ref()
                        .and_then(|c| c.get("IsSupervised"))
                        .and_then(Value::as_boolean)
                        == Some(true);
                    let attention = if is_supervised && !supervised_by_us {
                        Attention::SupervisedByOther
                    } else {
                        Attention::AlreadySetUp
                    };
                    return Err(StepError::Attention(attention));
                }
            }
        }

        // Activated.
        if !activated {
            self.show(Light::Working, Some(Step::Activated), "activating");
            let server = self.settings.activation.clone();
            retrying(|| async {
                lockdown::activation::activate(&provider, &server).await?;
                Ok(())
            })
            .await?;
        }
        self.advance(Step::Activated, None).await?;

        match mode {
            MdmMode::Manual => {
                self.manual(&provider, cloud.is_some(), wifi_installed)
                    .await?
            }
            MdmMode::Ade => self.ade(&provider, cloud.is_some(), wifi_installed).await?,
        }

        // Named, with language, region and time zone.
        self.show(
            Light::Working,
            Some(Step::Named),
            format!("naming it “{wanted_name}”"),
        );
        let setup = self.settings.config.setup.clone();
        let name = wanted_name.clone();
        retrying(|| async {
            let mut s = DeviceSession::connect(self.device.clone()).await?;
            s.start_session(&pair_record).await?;
            s.set_value("DeviceName", Value::String(name.clone()), None)
                .await?;
            if let Some(l) = &setup.language {
                s.set_value(
                    "Language",
                    Value::String(l.clone()),
                    Some("com.apple.international"),
                )
                .await?;
            }
            if let Some(l) = &setup.locale {
                s.set_value(
                    "Locale",
                    Value::String(l.clone()),
                    Some("com.apple.international"),
                )
                .await?;
            }
            if let Some(tz) = &setup.time_zone {
                s.set_value("TimeZone", Value::String(tz.clone()), None)
                    .await?;
            }
            Ok(())
        })
        .await?;
        if let Some(r) = self.record.as_mut() {
            r.name = Some(wanted_name.clone());
        }
        self.status.name = Some(wanted_name);
        self.advance(Step::Named, None).await?;
        if let Some(r) = self.record.as_mut() {
            r.settings_fingerprint = Some(self.settings.fingerprint.clone());
        }
        self.advance(Step::Done, None).await?;
        Ok(JobEnd::Done { already: false })
    }

    /// Manual prepare: our cloud configuration, then escalation and a silent Wi-Fi install.
    async fn manual(
        &mut self,
        provider: &lockdown::UsbmuxProvider,
        has_cloud: bool,
        wifi_installed: bool,
    ) -> Result<(), StepError> {
        if !has_cloud {
            self.show(Light::Working, Some(Step::Supervised), "supervising");
            let ios = self
                .record
                .as_ref()
                .map(|r| r.ios_version.clone())
                .unwrap_or_default();
            let cc = self
                .settings
                .cloud_configuration(&ios)
                .map_err(|e| StepError::Fatal(e.to_string()))?;
            retrying(|| async {
                let mut mc = McInstallClient::connect(provider).await?;
                mc.hello_host_identifier().await?;
                match mc.set_cloud_configuration(&cc).await {
                    Ok(()) => Ok(()),
                    Err(McInstallError::NotActivated { description }) => {
                        Err(StepError::Transient(description))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        }
        self.advance(
            Step::Supervised,
            Some(format!(
                "organization {}, enrollment {}",
                self.settings.config.organization.name, self.settings.config.mdm.enrollment_url
            )),
        )
        .await?;
        if !wifi_installed {
            self.show(
                Light::Working,
                Some(Step::Escalated),
                "escalating with our identity",
            );
            let signer = self.settings.identity.clone().ok_or_else(|| {
                StepError::Fatal("manual mode needs a supervision identity".into())
            })?;
            let wifi = self.settings.wifi.clone();
            retrying(|| async {
                // Escalation belongs to one connection: the silent install must follow on it.
                let mut mc = McInstallClient::connect(provider).await?;
                mc.escalate_with(&signer).await?;
                mc.install_profile_silent(&wifi.bytes).await?;
                Ok(())
            })
            .await?;
        }
        self.advance(Step::Escalated, None).await?;
        self.advance(
            Step::WifiInstalled,
            Some(self.settings.wifi.description.clone()),
        )
        .await?;
        Ok(())
    }

    /// ADE prepare: Wi-Fi first (Setup Assistant needs a network to reach Apple and the MDM),
    /// then the device fetches its own cloud configuration. A profile sent to an unsupervised
    /// iPad may only be "downloaded" (waiting for approval in Settings); once the ADE
    /// configuration has made it supervised, still in Setup Assistant, the same install is
    /// silent — so the Wi-Fi is sent again if the profile list does not show it.
    async fn ade(
        &mut self,
        provider: &lockdown::UsbmuxProvider,
        has_cloud: bool,
        wifi_installed: bool,
    ) -> Result<(), StepError> {
        let wifi = self.settings.wifi.clone();
        if !wifi_installed && !has_cloud {
            self.show(
                Light::Working,
                Some(Step::Supervised),
                "sending Wi-Fi, then applying its ADE configuration",
            );
            retrying(|| async {
                let mut mc = McInstallClient::connect(provider).await?;
                mc.install_profile(&wifi.bytes).await?;
                Ok(())
            })
            .await?;
        }
        if !has_cloud {
            retrying(|| async {
                let mut mc = McInstallClient::connect(provider).await?;
                match mc.download_and_apply_cloud_configuration(None, None).await {
                    Ok(()) => Ok(()),
                    Err(McInstallError::Device { ref chain, .. })
                        if chain.first().is_some_and(|c| c.code == Some(33005)) =>
                    {
                        Err(StepError::Attention(Attention::NotAssignedToAde))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        }
        self.advance(Step::Supervised, Some("ADE configuration applied".into()))
            .await?;
        if !wifi_installed {
            self.show(
                Light::Working,
                Some(Step::WifiInstalled),
                "installing Wi-Fi",
            );
            retrying(|| async {
                let mut mc = McInstallClient::connect(provider).await?;
                if mc.get_profile_list().await?.get(&wifi.identifier).is_none() {
                    mc.install_profile(&wifi.bytes).await?;
                }
                if mc.get_profile_list().await?.get(&wifi.identifier).is_none() {
                    return Err(StepError::Fatal(
                        "the Wi-Fi profile was only downloaded, not installed (the iPad is not supervised by its ADE configuration)".into(),
                    ));
                }
                Ok(())
            })
            .await?;
        }
        self.advance(
            Step::WifiInstalled,
            Some(self.settings.wifi.description.clone()),
        )
        .await?;
        Ok(())
    }

    async fn erase(
        &mut self,
        provider: &lockdown::UsbmuxProvider,
        reason: String,
    ) -> Result<JobEnd, StepError> {
        self.show(
            Light::Working,
            Some(Step::Erased),
            format!("erasing ({reason})"),
        );
        tracing::warn!(udid = %self.props.udid, "erasing: {reason}");
        // Journaled before the command: the iPad leaves USB as soon as it acknowledges, and
        // the daemon then stops this job, so a save after it could be lost.
        if let Some(r) = self.record.as_mut() {
            r.erase_reason = Some(reason.clone());
            r.advance(Step::Erased, Some(reason));
        }
        self.save(Event::Erase).await?;
        let mc = McInstallClient::connect(provider).await?;
        mc.erase_device(true, false).await?;
        Ok(JobEnd::Erasing)
    }

    /// A trusted session: our pair record, or new pairing (silent in Setup Assistant, the
    /// trust prompt otherwise, supervised pairing when the device only lets its supervisor in).
    async fn pair(&mut self) -> Result<(DeviceSession, PairingFile), StepError> {
        let started = std::time::Instant::now();
        loop {
            match lockdown::trusted_session(
                self.device.clone(),
                Some(&self.ctx.pair_store),
                TRUST_NUDGE,
            )
            .await
            {
                Ok(pair) => return Ok(pair),
                Err(LockdownError::TrustPromptUnanswered(_))
                    if started.elapsed() < TRUST_GIVE_UP =>
                {
                    // Keep asking; the operator sees what to do meanwhile.
                    self.show(
                        Light::Attention,
                        Some(Step::Paired),
                        Attention::TrustPrompt.message(),
                    );
                }
                Err(LockdownError::Device { name, .. }) if name == "MCProtected" => {
                    // Only its supervisor may pair; without an identity that cannot be us.
                    let Some(signer) = self.settings.identity.clone() else {
                        return Err(StepError::Attention(Attention::SupervisedByOther));
                    };
                    let mut session = DeviceSession::connect(self.device.clone()).await?;
                    let record = lockdown::pair_supervised_and_save(
                        &mut session,
                        Some(&self.ctx.pair_store),
                        Some("cartprep"),
                        &signer,
                    )
                    .await
                    .map_err(|e| match e {
                        LockdownError::Device { .. } => {
                            StepError::Attention(Attention::SupervisedByOther)
                        }
                        other => other.into(),
                    })?;
                    let mut session = DeviceSession::connect(self.device.clone()).await?;
                    session.start_session(&record).await?;
                    return Ok((session, record));
                }
                Err(e) => {
                    let err: StepError = e.into();
                    match err {
                        StepError::Transient(_) if started.elapsed() < Duration::from_secs(30) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        other => return Err(other),
                    }
                }
            }
        }
    }

    /// An iPad that stopped before it paired has no serial yet: it is recorded by UDID, with
    /// what it told anyone (model, iPadOS), so the ledger still shows what needs doing.
    async fn ensure_record(&mut self) {
        if self.record.is_some() {
            return;
        }
        let udid = self.props.udid.clone();
        let mut r = match self.ctx.ledger.get(&format!("udid:{udid}")) {
            Ok(Some(r)) => r,
            _ => DeviceRecord::new(String::new(), udid),
        };
        if let Some((product_type, version, build)) = &self.public {
            r.product_type = product_type.clone();
            r.marketing_name = crate::models::marketing_name(product_type)
                .unwrap_or(product_type)
                .to_owned();
            r.ios_version = version.clone();
            r.build = build.clone();
        }
        r.slot = self.slot.clone().or(r.slot);
        r.begin_attempt();
        self.record = Some(r);
    }

    fn provider(&self, record: &PairingFile) -> lockdown::UsbmuxProvider {
        lockdown::UsbmuxProvider {
            addr: self.device.addr.clone(),
            device_id: self.device.device_id,
            label: lockdown::session::LABEL.into(),
            pair_record: record.clone(),
        }
    }

    /// The name from the template: {serial}, {slot}, {n} (this device's place in the ledger),
    /// {model}. A device that was named before keeps its number.
    fn wanted_name(&self) -> String {
        let Some(r) = &self.record else {
            return String::new();
        };
        let Some(naming) = &self.settings.config.naming else {
            return r.name.clone().unwrap_or_else(|| "iPad".into());
        };
        let n = self
            .ctx
            .ledger
            .list()
            .map(|all| {
                // iPads recorded only by UDID (never paired) take no number.
                let named: Vec<_> = all.iter().filter(|x| !x.serial.is_empty()).collect();
                named
                    .iter()
                    .position(|x| x.serial == r.serial)
                    .unwrap_or(named.len()) as u32
            })
            .unwrap_or(0)
            + naming.start;
        naming.template.render(&crate::config::NameVars {
            serial: &r.serial,
            slot: self.slot.as_deref(),
            n,
            model: &r.marketing_name,
        })
    }
}

/// What the ledger says of a device that is no longer plugged in while a job ran.
pub fn unplugged_outcome(record: &mut DeviceRecord) {
    if record.outcome == Outcome::Working {
        record.outcome = Outcome::Waiting;
    }
}
