//! Execute: carry out a plan on an identified iPad and journal each step. Nothing here decides
//! what to do; [`super::plan`] does.

use lockdown::{DeviceRef, DeviceSession, PairingFile};
use mcinstall::{McInstallClient, McInstallError};
use plist::Value;

use super::assess::{self, Assessment, DeviceFacts, PublicFacts};
use super::error::{StepError, retrying};
use super::plan::{Action, Plan, PlannedStep, Wanted, plan};
use super::progress::Reporter;
use super::{Context, JobEnd, Plugged, model_name, save};
use crate::config::MdmMode;
use crate::ledger::{Event, Ledger};
use crate::record::{Attention, DeviceRecord, Step};
use crate::settings::Settings;
use crate::status::Light;

/// A job once the iPad is paired and known by serial: it always has its record.
pub struct Identified<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    device: DeviceRef,
    plugged: Plugged,
    record: DeviceRecord,
    facts: DeviceFacts,
    pair_record: PairingFile,
}

impl<'a> Identified<'a> {
    /// Starts the attempt on the iPad's record and journals paired and identified.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn begin(
        ctx: &'a Context,
        settings: &'a Settings,
        device: DeviceRef,
        plugged: Plugged,
        mut record: DeviceRecord,
        public: PublicFacts,
        facts: DeviceFacts,
        pair_record: PairingFile,
        reporter: &mut Reporter,
    ) -> Result<Identified<'a>, StepError> {
        record.product_type = public.product_type.clone();
        record.marketing_name = model_name(&public.product_type).to_owned();
        record.ios_version = public.ios_version.clone();
        record.build = public.build;
        record.slot = plugged.slot.clone().or(record.slot);
        record.begin_attempt();
        ctx.ledger.save_identified(&record).await?;
        reporter.learn(&record);
        let mut job = Identified {
            ctx,
            settings,
            device,
            plugged,
            record,
            facts,
            pair_record,
        };
        let slot = format!("slot {}", job.plugged.slot.as_deref().unwrap_or("?"));
        job.advance(Step::Paired, Some(slot)).await?;
        let what = format!("{} iPadOS {}", public.product_type, public.ios_version);
        job.advance(Step::Identified, Some(what)).await?;
        Ok(job)
    }

    /// Assesses, plans and executes, then records how it ended.
    pub(super) async fn run(mut self, reporter: &mut Reporter) -> JobEnd {
        let end = match self.steps(reporter).await {
            Ok(end) => end,
            Err(e) => e.into(),
        };
        reporter.learn(&self.record);
        record_end(&self.ctx.ledger, &mut self.record, &end, reporter).await;
        end
    }

    async fn steps(&mut self, reporter: &mut Reporter) -> Result<JobEnd, StepError> {
        reporter.show(Light::Working, Some(Step::Assessed), "checking its state");
        let provider = self.provider();
        let config = if self.facts.activation.is_activated() {
            Some(assess::read_config(&provider, &self.settings.wifi.identifier).await?)
        } else {
            None
        };
        let assessment = Assessment {
            device: self.facts.clone(),
            config,
        };
        let certificate = self.settings.identity.as_ref().map(|i| i.certificate_der());
        let note = assessment.note(certificate);
        self.advance(Step::Assessed, Some(note)).await?;

        let name = self.wanted_name();
        let wanted = Wanted {
            mode: self.settings.config.mdm.mode,
            certificate,
            enrollment_url: &self.settings.config.mdm.enrollment_url,
            name: &name,
            fingerprint: &self.settings.fingerprint,
            erase: &self.settings.config.erase,
        };
        match plan(&assessment, &wanted, &self.record) {
            Plan::AlreadyDone => {
                // Named as planned; a record from before numbers were allocated takes its
                // number now (the one the plan matched, unless another iPad took it meanwhile,
                // in which case the name it has is kept).
                if self.record.number.is_none() {
                    let _ = self.numbered_name().await?;
                }
                self.record.name = Some(name);
                self.finish(Some("already prepared with these settings: not touched"))
                    .await?;
                Ok(JobEnd::Done { already: true })
            }
            Plan::Erase { reason } => self.erase(&provider, reason, reporter).await,
            Plan::Attention(a) => Err(StepError::Attention(a)),
            Plan::Prepare(steps) => {
                for step in steps {
                    self.run_step(&step, &provider, &name, reporter).await?;
                }
                self.finish(None).await?;
                Ok(JobEnd::Done { already: false })
            }
        }
    }

    /// Runs a planned step's actions, then journals the step.
    async fn run_step(
        &mut self,
        planned: &PlannedStep,
        provider: &lockdown::UsbmuxProvider,
        name: &str,
        reporter: &mut Reporter,
    ) -> Result<(), StepError> {
        for action in &planned.actions {
            let mut name = name.to_owned();
            if *action == Action::Name {
                // The number is taken (and saved) before the iPad gets the name, so a crash
                // in between names it the same when it comes back.
                name = self.numbered_name().await?;
            }
            reporter.show(Light::Working, Some(planned.step), doing(*action, &name));
            self.act(*action, provider, &name).await?;
            if *action == Action::Name {
                self.record.name = Some(name);
                reporter.learn(&self.record);
            }
        }
        let note = self.note_for(planned.step);
        self.advance(planned.step, note).await
    }

    async fn act(
        &self,
        action: Action,
        provider: &lockdown::UsbmuxProvider,
        name: &str,
    ) -> Result<(), StepError> {
        let wifi = &self.settings.wifi;
        match action {
            Action::Activate => {
                let server = &self.settings.activation;
                retrying(|| async {
                    lockdown::activation::activate(provider, server).await?;
                    Ok(())
                })
                .await
            }
            Action::SetCloudConfiguration => {
                let cc = self
                    .settings
                    .cloud_configuration(&self.record.ios_version)
                    .map_err(|e| StepError::Fatal(e.to_string()))?;
                retrying(|| async {
                    let mut mc = McInstallClient::connect(provider).await?;
                    mc.hello_host_identifier().await?;
                    match mc.set_cloud_configuration(&cc).await {
                        // Activation may still be settling: worth another try.
                        Err(McInstallError::NotActivated { description }) => {
                            Err(StepError::Transient(description))
                        }
                        other => Ok(other?),
                    }
                })
                .await
            }
            Action::EscalateAndInstallWifi => {
                let signer = self.settings.identity.clone().ok_or_else(|| {
                    StepError::Fatal("manual mode needs a supervision identity".into())
                })?;
                retrying(|| async {
                    // Escalation belongs to one connection: the silent install must follow on it.
                    let mut mc = McInstallClient::connect(provider).await?;
                    mc.escalate_with(signer.as_ref()).await?;
                    mc.install_profile_silent(&wifi.bytes).await?;
                    Ok(())
                })
                .await
            }
            Action::SendWifiBeforeSetup => {
                retrying(|| async {
                    let mut mc = McInstallClient::connect(provider).await?;
                    mc.install_profile(&wifi.bytes).await?;
                    Ok(())
                })
                .await
            }
            Action::ApplyAdeConfiguration => {
                retrying(|| async {
                    let mut mc = McInstallClient::connect(provider).await?;
                    match mc.download_and_apply_cloud_configuration(None, None).await {
                        Err(McInstallError::Device { ref chain, .. })
                            if chain.first().is_some_and(|c| c.code == Some(33005)) =>
                        {
                            Err(StepError::Attention(Attention::NotAssignedToAde))
                        }
                        other => Ok(other?),
                    }
                })
                .await
            }
            Action::InstallWifiIfMissing => {
                retrying(|| async {
                    // An unsupervised iPad only "downloads" a profile; once its ADE configuration
                    // has made it supervised, in Setup Assistant, the same install is silent.
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
                .await
            }
            Action::Name => self.name(name).await,
        }
    }

    /// Names the iPad and sets language, region and time zone.
    async fn name(&self, name: &str) -> Result<(), StepError> {
        let setup = &self.settings.config.setup;
        let intl = Some("com.apple.international");
        retrying(|| async {
            let mut s = DeviceSession::connect(self.device.clone()).await?;
            s.start_session(&self.pair_record).await?;
            s.set_value("DeviceName", Value::String(name.to_owned()), None)
                .await?;
            if let Some(l) = &setup.language {
                s.set_value("Language", Value::String(l.clone()), intl)
                    .await?;
            }
            if let Some(l) = &setup.locale {
                s.set_value("Locale", Value::String(l.clone()), intl)
                    .await?;
            }
            if let Some(tz) = &setup.time_zone {
                s.set_value("TimeZone", Value::String(tz.clone()), None)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Erases the iPad; it leaves USB and comes back new, and the job continues then.
    async fn erase(
        &mut self,
        provider: &lockdown::UsbmuxProvider,
        reason: String,
        reporter: &mut Reporter,
    ) -> Result<JobEnd, StepError> {
        reporter.show(
            Light::Working,
            Some(Step::Erased),
            format!("erasing ({reason})"),
        );
        tracing::warn!(udid = %self.record.udid, "erasing: {reason}");
        // Journaled before the command: the iPad leaves USB as soon as it acknowledges, and
        // the daemon then stops this job, so a save after it could be lost.
        self.record.erase_reason = Some(reason.clone());
        self.record.advance(Step::Erased, Some(reason));
        save(&self.ctx.ledger, &self.record, Event::Erase).await?;
        let mc = McInstallClient::connect(provider).await?;
        mc.erase_device(true, false).await?;
        Ok(JobEnd::Erasing)
    }

    /// Records a completed step.
    async fn advance(&mut self, step: Step, note: Option<String>) -> Result<(), StepError> {
        self.record.advance(step, note);
        let event = if step == Step::Done {
            Event::Done
        } else {
            Event::Advance
        };
        save(&self.ctx.ledger, &self.record, event).await
    }

    /// Records the iPad as prepared with these settings.
    async fn finish(&mut self, note: Option<&str>) -> Result<(), StepError> {
        self.record.settings_fingerprint = Some(self.settings.fingerprint.clone());
        self.advance(Step::Done, note.map(str::to_owned)).await
    }

    /// What the history says of a completed step.
    fn note_for(&self, step: Step) -> Option<String> {
        let config = &self.settings.config;
        match (step, config.mdm.mode) {
            (Step::Supervised, MdmMode::Manual) => Some(format!(
                "organization {}, enrollment {}",
                config.organization.name, config.mdm.enrollment_url
            )),
            (Step::Supervised, MdmMode::Ade) => Some("ADE configuration applied".into()),
            (Step::WifiInstalled, _) => Some(self.settings.wifi.description.clone()),
            _ => None,
        }
    }

    fn provider(&self) -> lockdown::UsbmuxProvider {
        lockdown::UsbmuxProvider {
            addr: self.device.addr.clone(),
            device_id: self.device.device_id,
            label: lockdown::session::LABEL.into(),
            pair_record: self.pair_record.clone(),
        }
    }

    /// The name from the template: {serial}, {slot}, {n}, {model}. `{n}` comes from the iPad's
    /// number ([`DeviceRecord::number`]); an iPad not numbered yet is planned with the number
    /// it would take now, and takes one for real only when it is named
    /// ([`Identified::numbered_name`]), so an iPad that stops for attention takes none.
    fn wanted_name(&self) -> String {
        let number = self
            .record
            .number
            .unwrap_or_else(|| self.ctx.ledger.peek_next_number());
        self.name_with(number)
    }

    fn name_with(&self, number: u32) -> String {
        let r = &self.record;
        let Some(naming) = &self.settings.config.naming else {
            return r.name.clone().unwrap_or_else(|| "iPad".into());
        };
        naming.template.render(&crate::config::NameVars {
            serial: &r.serial,
            slot: self.plugged.slot.as_deref(),
            n: naming.start.saturating_add(number),
            model: &r.marketing_name,
        })
    }

    /// The name to give now: the iPad's number is taken from the ledger's counter (and saved)
    /// if it has none yet. Without a naming template no number is needed.
    async fn numbered_name(&mut self) -> Result<String, StepError> {
        if self.settings.config.naming.is_some() {
            let number = self.ctx.ledger.allocate_number(&mut self.record).await?;
            Ok(self.name_with(number))
        } else {
            Ok(self.wanted_name())
        }
    }
}

/// What the board says while an action runs.
fn doing(action: Action, name: &str) -> String {
    match action {
        Action::Activate => "activating".into(),
        Action::SetCloudConfiguration => "supervising".into(),
        Action::EscalateAndInstallWifi => "escalating with our identity".into(),
        Action::SendWifiBeforeSetup => "sending Wi-Fi, then applying its ADE configuration".into(),
        Action::ApplyAdeConfiguration => "applying its ADE configuration".into(),
        Action::InstallWifiIfMissing => "installing Wi-Fi".into(),
        Action::Name => format!("naming it \u{201c}{name}\u{201d}"),
    }
}

/// Records how a job ended (attention and failure in the ledger; everything on the board).
/// A ledger error here is not reported again: the job is over either way.
pub(super) async fn record_end(
    ledger: &Ledger,
    record: &mut DeviceRecord,
    end: &JobEnd,
    reporter: &mut Reporter,
) {
    match end {
        JobEnd::Done { already } => {
            let msg = if *already {
                "already prepared with these settings — unplug"
            } else {
                "prepared — unplug"
            };
            reporter.show(Light::Done, None, msg);
        }
        JobEnd::Attention(a) => {
            record.attention(*a);
            let _ = ledger.save(record, Event::Attention).await;
            reporter.attention(*a, Some(record.attempted_step()));
        }
        JobEnd::Failed(e) => {
            record.fail(e.clone());
            let _ = ledger.save(record, Event::Fail).await;
            reporter.show(Light::Failed, Some(record.attempted_step()), e.clone());
        }
        JobEnd::Erasing => reporter.show(
            Light::Working,
            Some(Step::Erased),
            "erased — waiting for it to restart",
        ),
    }
}
