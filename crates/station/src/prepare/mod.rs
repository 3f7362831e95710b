//! Prepare: one iPad from "plugged in" to "done — unplug", journaled step by step in the ledger
//! (each step is saved before the next starts).
//!
//! Three parts, each in its own file:
//! - [`assess`] reads the iPad into facts (it decides nothing);
//! - [`plan`] decides from those facts what to do — already done, erase, attention, or which
//!   steps — as a pure function;
//! - [`execute`] carries out the plan and journals each step (it decides nothing).
//!
//! The job converges rather than replays: each run looks at the iPad as it is and does only
//! what is missing, so a replug, a restart of the station, or an erase and re-attach all
//! continue where the work stopped, and an iPad already prepared with the same settings is left
//! untouched.
//!
//! Before pairing the iPad has no serial for us (it tells it only to a paired host): a job that
//! ends there is recorded by UDID ([`Unpaired`]). Once paired it has its record by serial
//! ([`execute::Identified`]).
//!
//! Journaled order: detected → paired → identified → assessed → [erased] → activated →
//! supervised → Wi-Fi installed (with the escalation it needs) → named → done.

pub mod ade;
pub mod assess;
pub mod error;
pub mod execute;
mod link;
mod pair;
pub mod plan;
pub mod progress;

use std::sync::Arc;

use lockdown::{DeviceRef, PairRecordStore};
use usbmux::{DeviceProperties, UsbmuxAddress};

use crate::ledger::{Event, Ledger};
use crate::record::{Attention, DeviceRecord, Step};
use crate::settings::Settings;
use crate::status::Light;

use assess::PublicFacts;
use error::StepError;
use execute::Identified;
use progress::Reporter;

/// What a job needs from the daemon.
#[derive(Clone)]
pub struct Context {
    pub usbmux: UsbmuxAddress,
    pub ledger: Arc<Ledger>,
    pub pair_store: PairRecordStore,
    /// Apple School Manager, when `[asm]` is configured.
    pub asm: Option<Arc<crate::asm_sync::AsmSync>>,
    /// Where each job's transcript goes, when transcripts are on.
    pub transcripts: Option<std::path::PathBuf>,
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

impl From<StepError> for JobEnd {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Attention(a) => JobEnd::Attention(a),
            StepError::Transient(e) | StepError::Fatal(e) => JobEnd::Failed(e),
        }
    }
}

/// An iPad usbmuxd reports, where it is plugged in.
#[derive(Debug, Clone)]
pub struct Plugged {
    pub props: DeviceProperties,
    /// The operator's name for its USB slot, when known.
    pub slot: Option<String>,
}

/// Runs one iPad's job to its end and records the outcome.
pub async fn run(
    ctx: &Context,
    settings: &Settings,
    plugged: Plugged,
    mut reporter: Reporter,
) -> JobEnd {
    let mut device = DeviceRef::new(ctx.usbmux.clone(), &plugged.props);
    if let Some(dir) = &ctx.transcripts {
        match crate::transcript::start(dir, &plugged.props) {
            Ok((transcript, _)) => device = device.with_transcript(transcript),
            // A debugging aid: the iPad is prepared without one.
            Err(e) => tracing::warn!(udid = %plugged.props.udid, "no transcript: {e}"),
        }
    }
    let mut unpaired = Unpaired {
        ctx,
        plugged,
        public: None,
    };
    match unpaired.pair(settings, &device, &mut reporter).await {
        Ok(identified) => identified.run(&mut reporter).await,
        Err(e) => unpaired.end(e, &mut reporter).await,
    }
}

/// A job before the iPad trusts us: it is known by UDID only.
struct Unpaired<'a> {
    ctx: &'a Context,
    plugged: Plugged,
    /// What it told before pairing, once read.
    public: Option<PublicFacts>,
}

impl<'a> Unpaired<'a> {
    /// Detected → paired → identified.
    async fn pair(
        &mut self,
        settings: &'a Settings,
        device: &DeviceRef,
        reporter: &mut Reporter,
    ) -> Result<Identified<'a>, StepError> {
        reporter.show(Light::Working, Some(Step::Detected), "plugged in");
        // Straight to pairing: the paired session's one GetValue reads the public values too
        // (docs/protocol.md §3.1); they are read before only while it waits for a person.
        reporter.show(Light::Working, Some(Step::Paired), "pairing");
        let (public, facts, paired) = match self.pair_and_read(settings, device, reporter).await {
            Ok(read) => read,
            Err(e @ StepError::Attention(_)) => {
                // It stops here for a person (Don't Trust, another supervisor): its model goes
                // on the board and into the record (a round trip only on this way out).
                learn_public(device, reporter, &mut self.public).await;
                return Err(e);
            }
            Err(e @ StepError::Transient(_)) => return Err(e),
            // Not in normal mode explains any failure better than the failure itself.
            Err(e) => return Err(assess::mode_problem(device).await.unwrap_or(e)),
        };
        reporter.learn_model(model_name(&public.product_type));
        self.public = Some(public.clone());

        let record = self
            .ctx
            .ledger
            .identify(&self.plugged.props.udid, &facts.serial)?;
        Identified::begin(
            self.ctx,
            settings,
            device.clone(),
            self.plugged.clone(),
            record,
            public,
            facts,
            paired,
            reporter,
        )
        .await
    }

    /// Pairs and reads the iPad's facts in that session; a transient failure of the reads
    /// starts over on a new session, a bounded number of times (like every step,
    /// [`error::retrying`]).
    async fn pair_and_read(
        &mut self,
        settings: &'a Settings,
        device: &DeviceRef,
        reporter: &mut Reporter,
    ) -> Result<(PublicFacts, assess::DeviceFacts, pair::Paired), StepError> {
        let mut attempt = 1;
        let mut waited_for = None;
        loop {
            let mut paired =
                pair::pair(self.ctx, settings, device, reporter, &mut self.public).await?;
            // A wait before an earlier attempt still happened.
            waited_for = paired.waited_for.take().or(waited_for);
            match assess::read_device(&mut paired.session).await {
                Ok((public, facts)) => {
                    paired.waited_for = waited_for;
                    return Ok((public, facts, paired));
                }
                Err(StepError::Transient(e)) if attempt < error::STEP_ATTEMPTS => {
                    tracing::info!("transient error reading the iPad (attempt {attempt}): {e}");
                    error::pause_before_retry(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.after_attempts(attempt)),
            }
        }
    }

    /// Records how a job that never identified the iPad ended, under its UDID.
    async fn end(&self, e: StepError, reporter: &mut Reporter) -> JobEnd {
        let end = JobEnd::from(e);
        let ledger = &self.ctx.ledger;
        let udid = &self.plugged.props.udid;
        let mut r = match ledger.unidentified(udid) {
            Ok(Some(r)) => r,
            _ => DeviceRecord::new(String::new(), udid.clone()),
        };
        if let Some(p) = &self.public {
            r.product_type = p.product_type.clone();
            r.marketing_name = model_name(&p.product_type).to_owned();
            r.ios_version = p.ios_version.clone();
            r.build = p.build.clone();
        }
        r.slot = self.plugged.slot.clone().or(r.slot);
        r.begin_attempt();
        execute::record_end(ledger, &mut r, &end, reporter).await;
        end
    }
}

/// The marketing name of a ProductType ("iPad (9th generation)"), or the ProductType itself.
/// Reads the public values if they are not known yet, and names the model on the board: for an
/// iPad that waits for a person or stops for one (see [`assess::read_public`]).
async fn learn_public(
    device: &DeviceRef,
    reporter: &mut Reporter,
    public: &mut Option<PublicFacts>,
) {
    if public.is_none()
        && let Ok(p) = assess::read_public(device).await
    {
        reporter.learn_model(model_name(&p.product_type));
        *public = Some(p);
    }
}

fn model_name(product_type: &str) -> &str {
    crate::models::marketing_name(product_type).unwrap_or(product_type)
}

/// Saves a record, for jobs (ledger errors end the job).
async fn save(ledger: &Ledger, record: &DeviceRecord, event: Event) -> Result<(), StepError> {
    ledger.save(record, event).await.map_err(StepError::from)
}
