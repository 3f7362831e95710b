//! Execute: carry out a plan on an identified iPad and journal each step. Nothing here decides
//! what to do; [`super::plan`] does.

use lockdown::{DeviceRef, PairingFile};
use mcinstall::{McInstallClient, McInstallError};
use plist::Value;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::assess::{self, Assessment, DeviceFacts, PublicFacts};
use super::error::{StepError, retrying};
use super::link::Link;
use super::plan::{Action, Plan, PlannedStep, Wanted, assigned_elsewhere, plan};
use super::progress::Reporter;

/// Fixes the error type of an action's async block (for `?` inside it).
async fn step_result<T>(
    f: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    f.await
}

/// Runs `$body` (an async block using `$mc`, the job's MCInstall connection) with retries of
/// transient failures, each on a new connection.
macro_rules! on_mc {
    ($job:expr, |$mc:ident| $body:expr) => {
        retrying(|| async {
            let mut link = $job.link.lock().await;
            let done = match link.mc().await {
                Ok($mc) => step_result($body).await,
                Err(e) => Err(e),
            };
            if done.is_err() {
                link.reset();
            }
            done
        })
        .await
    };
}
use super::{Context, JobEnd, Plugged, model_name, save};
use crate::asm_sync::Verdict;
use crate::config::MdmMode;
use crate::ledger::{Event, Ledger};
use crate::record::{DeviceRecord, Step};
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
    /// The job's lockdown session and MCInstall connection (see [`super::link`]).
    link: tokio::sync::Mutex<Link>,
    /// Set when `SetCloudConfiguration` was refused because the iPad is configured already.
    refused_as_configured: AtomicBool,
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
        paired: super::pair::Paired,
        reporter: &mut Reporter,
    ) -> Result<Identified<'a>, StepError> {
        let super::pair::Paired {
            session,
            record: pair_record,
            waited_for,
        } = paired;
        record.product_type = public.product_type.clone();
        record.marketing_name = model_name(&public.product_type).to_owned();
        record.ios_version = public.ios_version.clone();
        record.build = public.build;
        record.slot = plugged.slot.clone().or(record.slot);
        record.begin_attempt();
        ctx.ledger.save_identified(&record).await?;
        reporter.learn(&record);
        let link = Link::new(device.clone(), pair_record.clone(), Some(session));
        let mut job = Identified {
            ctx,
            settings,
            device,
            plugged,
            record,
            facts,
            pair_record,
            link: tokio::sync::Mutex::new(link),
            refused_as_configured: AtomicBool::new(false),
        };
        let mut slot = format!("slot {}", job.plugged.slot.as_deref().unwrap_or("?"));
        if let Some(waited) = waited_for.as_ref().and_then(super::pair::waited_note) {
            slot = format!("{slot}; {waited}");
        }
        job.advance(Step::Paired, Some(slot)).await?;
        let what = format!("{} iPadOS {}", public.product_type, public.ios_version);
        job.advance(Step::Identified, Some(what)).await?;
        Ok(job)
    }

    /// Looks the serial up in Apple School Manager (when configured) and records the answer;
    /// stops only where [`crate::asm_sync::state::verdict`] says so.
    async fn check_asm(&mut self, reporter: &mut Reporter) -> Result<(), StepError> {
        let Some(asm) = self.ctx.asm.clone() else {
            return Ok(());
        };
        reporter.show(
            Light::Working,
            Some(Step::Assessed),
            "looking it up in Apple School Manager",
        );
        let mode = self.settings.config.mdm.mode;
        let verdict = asm.on_identified(&mut self.record, mode).await;
        let note = match &verdict {
            Verdict::Continue { note } | Verdict::Warn { note, .. } => note.clone(),
            Verdict::Stop(a) => a.message().into_owned(),
        };
        self.record.remark(note);
        save(&self.ctx.ledger, &self.record, Event::Update).await?;
        match verdict {
            Verdict::Continue { .. } => Ok(()),
            Verdict::Warn { attention, .. } => {
                reporter.attention(attention, Some(Step::Assessed));
                Ok(())
            }
            Verdict::Stop(a) => Err(StepError::Attention(a)),
        }
    }

    /// Assesses, plans and executes, then records how it ended.
    pub(super) async fn run(mut self, reporter: &mut Reporter) -> JobEnd {
        let end = match self.steps(reporter).await {
            Ok(end) => end,
            Err(e) => e.into(),
        };
        reporter.learn(&self.record);
        record_end(&self.ctx.ledger, &mut self.record, &end, reporter).await;
        if let (JobEnd::Done { .. }, Some(asm)) = (&end, &self.ctx.asm) {
            // Journals the decision, then assigns in the background: the next iPad never waits.
            asm.after_done(&mut self.record).await;
        }
        end
    }

    async fn steps(&mut self, reporter: &mut Reporter) -> Result<JobEnd, StepError> {
        // First, so an iPad it stops at is recorded under its serial like any other end.
        self.check_asm(reporter).await?;
        let mut read_first = !self.may_supervise_unread();
        loop {
            match self.assess_plan_execute(read_first, reporter).await {
                Err(e) if !read_first && self.refused_as_configured.swap(false, Relaxed) => {
                    // It has a configuration after all (set up by someone, or prepared here
                    // before the ledger knew it): read it and decide again.
                    tracing::info!(serial = %self.record.serial, "already configured ({e:?}); reading it");
                    read_first = true;
                }
                other => return other,
            }
        }
    }

    /// Whether the iPad may be supervised without reading its configuration first: activated,
    /// manual mode, and never seen here before this attempt (no erase asked for). A configured
    /// iPad refuses `SetCloudConfiguration` with 14002 (docs/fidelity.md §6), changing nothing,
    /// and is then read; a new one saves the `GetCloudConfiguration` round trip.
    fn may_supervise_unread(&self) -> bool {
        self.facts.activation.is_activated()
            && self.settings.config.mdm.mode == MdmMode::Manual
            && self.settings.identity.is_some()
            && self.record.erase_request.is_none()
            && self.record.attempts <= 1
            && self.record.history.iter().all(|e| {
                e.attempt == self.record.attempts || (e.attempt == 0 && e.step == Step::Detected)
            })
    }

    async fn assess_plan_execute(
        &mut self,
        read_first: bool,
        reporter: &mut Reporter,
    ) -> Result<JobEnd, StepError> {
        reporter.show(Light::Working, Some(Step::Assessed), "checking its state");
        let provider = self.provider();
        let config = if !self.facts.activation.is_activated() {
            None
        } else if read_first {
            let wifi = &self.settings.wifi.identifier;
            Some(on_mc!(self, |mc| assess::read_config(mc, wifi))?)
        } else {
            Some(assess::ConfigFacts::default())
        };
        let assessment = Assessment {
            device: self.facts.clone(),
            config,
        };
        let certificate = self.settings.identity.as_ref().map(|i| i.certificate_der());
        let note = if read_first {
            assessment.note(certificate)
        } else {
            format!(
                "activation {}; new to this station: supervised without reading its configuration first (a configured iPad refuses, and is then read)",
                assessment.device.activation.as_str()
            )
        };
        self.advance(Step::Assessed, Some(note)).await?;

        let name = self.wanted_name();
        let requested = self.record.erase_request.as_ref().map(|r| r.describe());
        let wanted = Wanted {
            mode: self.settings.config.mdm.mode,
            organization: &self.settings.config.organization.name,
            certificate,
            enrollment_url: &self.settings.config.mdm.enrollment_url,
            name: &name,
            fingerprint: &self.settings.fingerprint,
            erase: &self.settings.config.erase,
            erase_requested: requested.as_deref(),
        };
        let decided = plan(&assessment, &wanted, &self.record);
        if self.record.erase_request.is_some() && !matches!(decided, Plan::Erase { .. }) {
            // A new (or just erased) iPad has nothing to erase: the request is spent.
            self.record.erase_request = None;
            save(&self.ctx.ledger, &self.record, Event::Update).await?;
        }
        if !matches!(decided, Plan::Attention(_)) {
            self.record.enrollment = Some(self.enrollment_note(assessment.config.as_ref()));
        }
        match decided {
            Plan::AlreadyDone => {
                // Named as planned; a record from before numbers were allocated takes its
                // number now (the one the plan matched, unless another iPad took it meanwhile,
                // in which case the name it has is kept).
                if self.record.number.is_none() {
                    let _ = self.numbered_name().await?;
                }
                self.record.name = Some(name);
                let note = format!(
                    "already prepared with these settings: not touched; {}",
                    self.enrollment_note(assessment.config.as_ref())
                );
                self.finish(Some(&note)).await?;
                Ok(JobEnd::Done { already: true })
            }
            Plan::Erase { reason } => self.erase(&provider, reason, reporter).await,
            Plan::Attention(a) => Err(StepError::Attention(a)),
            Plan::Prepare(steps) => {
                for step in steps {
                    self.run_step(&step, &provider, &name, reporter).await?;
                    if step.actions.contains(&Action::Activate) {
                        self.check_assignment(&wanted).await?;
                    }
                }
                let prepared = self.prepared_as(&name);
                self.finish(Some(&prepared)).await?;
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
        let wifi = self.settings.wifi_name();
        for action in &planned.actions {
            let mut name = name.to_owned();
            if *action == Action::Name {
                // The number is taken (and saved) before the iPad gets the name, so a crash
                // in between names it the same when it comes back.
                name = self.numbered_name().await?;
            }
            reporter.show(
                Light::Working,
                Some(planned.step),
                doing(*action, &name, &wifi),
            );
            self.act(*action, provider, &name).await?;
            if *action == Action::Name {
                self.record.name = Some(name);
                reporter.learn(&self.record);
            }
        }
        let note = self.note_for(planned.step, planned.actions.is_empty());
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
                let activated = retrying(|| async {
                    lockdown::activation::activate(provider, server).await?;
                    Ok(())
                })
                .await;
                // The iPad changed under the job's connections: open new ones after.
                self.link.lock().await.reset();
                activated
            }
            Action::SetCloudConfiguration => {
                let cc = self
                    .settings
                    .cloud_configuration(&self.record.ios_version)
                    .map_err(|e| StepError::Fatal(e.to_string()))?;
                // SetCloudConfiguration alone, as pymobiledevice3 supervises real iPads: the
                // HelloHostIdentifier pings Configurator sends around it change nothing
                // (docs/protocol.md §4), and each is a round trip.
                on_mc!(self, |mc| async {
                    match mc.set_cloud_configuration(&cc).await {
                        // Activation may still be settling: worth another try.
                        Err(McInstallError::NotActivated { description }) => {
                            Err(StepError::Transient(description))
                        }
                        Err(e @ McInstallError::AlreadyConfigured { .. }) => {
                            self.refused_as_configured.store(true, Relaxed);
                            Err(e.into())
                        }
                        other => Ok(other?),
                    }
                })
            }
            Action::EscalateAndInstallWifi => {
                let signer = self.settings.identity.clone().ok_or_else(|| {
                    StepError::Fatal("manual mode needs a supervision identity".into())
                })?;
                // Escalation belongs to one connection: the silent install must follow on it.
                on_mc!(self, |mc| async {
                    mc.escalate_with(signer.as_ref()).await?;
                    mc.install_profile_silent(&wifi.bytes).await?;
                    Ok(())
                })
            }
            Action::SendWifiBeforeSetup => super::ade::send_wifi_before_setup(provider, wifi).await,
            Action::ApplyAdeConfiguration => super::ade::apply_configuration(provider).await,
            Action::InstallWifiIfMissing => {
                // An unsupervised iPad only "downloads" a profile; once its ADE configuration
                // has made it supervised, in Setup Assistant, the same install is silent.
                on_mc!(self, |mc| async {
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
            }
            Action::Name => self.name(name).await,
        }
    }

    /// Names the iPad and sets language, region and time zone.
    async fn name(&self, name: &str) -> Result<(), StepError> {
        let setup = &self.settings.config.setup;
        let intl = Some("com.apple.international");
        // In the job's session (no new connection or StartSession).
        retrying(|| async {
            let mut link = self.link.lock().await;
            let done = step_result(async {
                let s = link.session().await?;
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
            .await;
            if done.is_err() {
                link.reset();
            }
            done
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
        // An operator's request is carried out now: it must not erase the iPad again later.
        self.record.erase_request = None;
        self.record.advance(Step::Erased, Some(reason));
        save(&self.ctx.ledger, &self.record, Event::Erase).await?;
        // Its own connection; the job's are closed first (the iPad is about to leave anyway).
        self.link.lock().await.reset();
        let mc = McInstallClient::connect(provider).await?;
        mc.erase_device(true, false).await?;
        Ok(JobEnd::Erasing)
    }

    /// After activation: an iPad still assigned in another organisation's Apple School Manager
    /// has just received their configuration, and nothing we do can replace it.
    async fn check_assignment(&self, wanted: &Wanted<'_>) -> Result<(), StepError> {
        let wifi = &self.settings.wifi.identifier;
        let config = on_mc!(self, |mc| assess::read_config(mc, wifi))?;
        match assigned_elsewhere(config.cloud.as_ref(), wanted, &self.record) {
            Some(attention) => Err(StepError::Attention(attention)),
            None => Ok(()),
        }
    }

    /// "enrolled in <MDM>", or why not, from what the assessment read (an iPad not activated
    /// yet is still in Setup Assistant).
    fn enrollment_note(&self, config: Option<&assess::ConfigFacts>) -> String {
        let enrollment = config
            .map(|c| c.enrollment.clone())
            .unwrap_or(assess::Enrollment::SetupNotFinished);
        enrollment.describe(&self.settings.config.mdm.name)
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

    /// What the history says of a completed step; `already` when the iPad was found that way
    /// and nothing was done for it in this attempt.
    fn note_for(&self, step: Step, already: bool) -> Option<String> {
        let config = &self.settings.config;
        let wifi = self.settings.wifi_name();
        let note = match (step, config.mdm.mode) {
            (Step::Supervised, MdmMode::Manual) => Some(format!(
                "organization {}, enrollment {}",
                config.organization.name, config.mdm.enrollment_url
            )),
            (Step::Supervised, MdmMode::Ade) => Some("ADE configuration applied".into()),
            (Step::WifiInstalled, MdmMode::Manual) => Some(format!(
                "Wi-Fi \u{201c}{wifi}\u{201d}, installed silently with our identity"
            )),
            (Step::WifiInstalled, MdmMode::Ade) => Some(format!("Wi-Fi \u{201c}{wifi}\u{201d}")),
            (Step::Named, _) => self
                .record
                .name
                .as_ref()
                .map(|n| format!("\u{201c}{n}\u{201d}")),
            _ => None,
        };
        if !already {
            return note;
        }
        Some(match note {
            Some(n) => format!("already so before this attempt ({n})"),
            None => "already so before this attempt".into(),
        })
    }

    /// What the DONE line and the history say a prepared iPad is: its name, Wi-Fi and MDM.
    fn prepared_as(&self, name: &str) -> String {
        prepared_text(
            name,
            &self.settings.wifi_name(),
            &self.settings.config.mdm.enrollment_url,
        )
    }

    fn provider(&self) -> lockdown::UsbmuxProvider {
        lockdown::UsbmuxProvider {
            addr: self.device.addr.clone(),
            device_id: self.device.device_id,
            label: lockdown::session::LABEL.into(),
            pair_record: self.pair_record.clone(),
            transcript: self.device.transcript.clone(),
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
fn doing(action: Action, name: &str, wifi: &str) -> String {
    match action {
        Action::Activate => "activating".into(),
        Action::SetCloudConfiguration => "supervising".into(),
        Action::EscalateAndInstallWifi => format!("installing Wi-Fi \u{201c}{wifi}\u{201d}"),
        Action::SendWifiBeforeSetup => {
            format!("sending Wi-Fi \u{201c}{wifi}\u{201d}, then applying its ADE configuration")
        }
        Action::ApplyAdeConfiguration => "applying its ADE configuration".into(),
        Action::InstallWifiIfMissing => format!("installing Wi-Fi \u{201c}{wifi}\u{201d}"),
        Action::Name => format!("naming it \u{201c}{name}\u{201d}"),
    }
}

/// "prepared as “Cart A - 01”, Wi-Fi “School”, MDM https://…": the DONE line's text.
pub fn prepared_text(name: &str, wifi: &str, mdm: &str) -> String {
    format!("prepared as \u{201c}{name}\u{201d}, Wi-Fi \u{201c}{wifi}\u{201d}, MDM {mdm}")
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
            let msg = match record.history.last().and_then(|e| e.note.as_deref()) {
                Some(prepared) if !*already && record.completed == Step::Done => {
                    format!("{prepared} \u{2014} unplug")
                }
                _ if *already => "already prepared with these settings \u{2014} unplug".into(),
                _ => "prepared \u{2014} unplug".into(),
            };
            reporter.show(Light::Done, None, msg);
        }
        JobEnd::Attention(a) => {
            record.attention(a.clone());
            let _ = ledger.save(record, Event::Attention).await;
            reporter.attention(a.clone(), Some(record.attempted_step()));
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
