//! The per-device record kept in the ledger: where an iPad is in the prepare pipeline, how it
//! got there (the step history) and what, if anything, a person has to do about it.
//!
//! One record per serial number. The serial, not the UDID, is the key because it is what is
//! printed on the box and what Apple School Manager knows; the UDID is kept for matching the
//! devices usbmuxd reports.

use serde::{Deserialize, Serialize};

use crate::clock;

/// The steps of the prepare pipeline, in the order they run.
///
/// A record stores the last step *completed*; `Detected` is completed as soon as usbmuxd has
/// reported the device. Pairing comes before identification: an iPad tells its serial number
/// only to a paired host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Detected,
    Paired,
    Identified,
    Assessed,
    Erased,
    Activated,
    Supervised,
    /// No longer journaled on its own (escalation is part of installing the Wi-Fi); kept so
    /// records written before still read.
    Escalated,
    WifiInstalled,
    Named,
    Done,
}

impl Step {
    /// Every step, in pipeline order.
    pub const ALL: [Step; 11] = [
        Step::Detected,
        Step::Paired,
        Step::Identified,
        Step::Assessed,
        Step::Erased,
        Step::Activated,
        Step::Supervised,
        Step::Escalated,
        Step::WifiInstalled,
        Step::Named,
        Step::Done,
    ];

    /// The number of steps, the `n` of "step k of n".
    pub const TOTAL: u32 = Step::ALL.len() as u32;

    /// What the status line shows for this step ("paired", "Wi-Fi installed", …).
    pub fn label(self) -> &'static str {
        match self {
            Step::Detected => "detected",
            Step::Identified => "identified",
            Step::Paired => "paired",
            Step::Assessed => "assessed",
            Step::Erased => "erased",
            Step::Activated => "activated",
            Step::Supervised => "supervised",
            Step::Escalated => "escalated",
            Step::WifiInstalled => "Wi-Fi installed",
            Step::Named => "named",
            Step::Done => "done",
        }
    }

    /// Position in the pipeline, from 1 (`Detected`) to [`Step::TOTAL`] (`Done`): the order of
    /// the steps (for [`Step::next`]), not what the operator is shown (see [`Step::shown`]).
    pub fn number(self) -> u32 {
        self as u32 + 1
    }

    /// The steps an operator sees counted, in order: "WORKING k of [`Step::SHOWN_TOTAL`]".
    /// Identified is part of pairing (the serial comes with it) and escalation is part of
    /// installing the Wi-Fi (the escalation holds for the one connection that installs it);
    /// an erase is not counted, since the iPad starts again from the beginning after it.
    pub const SHOWN: [Step; 8] = [
        Step::Detected,
        Step::Paired,
        Step::Assessed,
        Step::Activated,
        Step::Supervised,
        Step::WifiInstalled,
        Step::Named,
        Step::Done,
    ];

    /// The `n` of "step k of n" on the board.
    pub const SHOWN_TOTAL: u32 = Step::SHOWN.len() as u32;

    /// The `k` of "step k of n" on the board: no gaps from 1 to [`Step::SHOWN_TOTAL`]; `None`
    /// for an erase, which is not one of the counted steps.
    pub fn shown(self) -> Option<u32> {
        let counted = match self {
            Step::Identified => Step::Paired,
            Step::Escalated => Step::WifiInstalled,
            Step::Erased => return None,
            other => other,
        };
        Step::SHOWN
            .iter()
            .position(|s| *s == counted)
            .map(|i| i as u32 + 1)
    }

    /// The step while it is in progress, in words: "activating", "installing Wi-Fi"…
    pub fn doing(self) -> &'static str {
        match self {
            Step::Detected => "reading it",
            Step::Paired => "pairing",
            Step::Identified => "identifying",
            Step::Assessed => "checking its state",
            Step::Erased => "erasing",
            Step::Activated => "activating",
            Step::Supervised => "supervising",
            Step::Escalated => "escalating",
            Step::WifiInstalled => "installing Wi-Fi",
            Step::Named => "naming",
            Step::Done => "finishing",
        }
    }

    /// The step after this one, `None` after `Done`.
    ///
    /// `Erased` is in the sequence even though most devices skip it (erase is only done where
    /// policy allows); the plan (`prepare::plan`) decides whether to run it, this only orders the steps.
    pub fn next(self) -> Option<Step> {
        Step::ALL.get(self.number() as usize).copied()
    }

    /// The step that normally follows this one: like [`Step::next`], but without the steps that
    /// are journaled only when they happen (an erase) or no longer journaled on their own
    /// (escalation, now part of the Wi-Fi step). What a record is "working on" after `self`.
    pub fn next_worked_on(self) -> Option<Step> {
        let mut next = self.next()?;
        while matches!(next, Step::Erased | Step::Escalated) {
            next = next.next()?;
        }
        Some(next)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a device is stuck until a person does something, with what that person must do.
///
/// Unit variants are stored as a string (`"locked"`); one carrying data as an object
/// (`{"assigned_elsewhere": {"organization": "…"}}`), so ledgers written before a variant was
/// added still load. Nothing here may hold a secret: it is shown, logged and exported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// A passcode is set and the iPad is locked: pairing is refused until it is unlocked.
    Locked,
    /// The "Trust This Computer?" prompt is showing.
    TrustPrompt,
    /// Someone tapped "Don't Trust"; iOS only asks again after a replug.
    TrustDenied,
    /// Activation Lock (Find My) is on; only the owner's Apple ID can remove it.
    ActivationLocked,
    /// The iPad is past Setup Assistant and the erase policy does not allow erasing it.
    AlreadySetUp,
    /// Manual mode, but the device is assigned to an MDM in Apple School Manager: the cloud
    /// configuration would come from there, not from us.
    AssignedToAde,
    /// Supervised by an identity that is not ours.
    SupervisedByOther,
    /// ADE mode, but Apple School Manager has no assignment for this device.
    NotAssignedToAde,
    /// In recovery mode (seen on USB, not by usbmuxd).
    RecoveryMode,
    /// Apple School Manager does not hold this serial: the organization does not own it (yet).
    NotInOrganization,
    /// Still assigned in another organisation's Apple School Manager: activation gave it their
    /// cloud configuration. Only they can release it (erasing it would not help: it gets the
    /// same configuration at the next activation).
    AssignedElsewhere { organization: String },
}

impl Attention {
    /// Whether this attention is an erase the policy refused: the iPad is set up by someone
    /// else and erasing it is the only way on. Recorded against [`Step::Erased`], as "not
    /// erased".
    pub fn is_refused_erase(&self) -> bool {
        matches!(self, Attention::AlreadySetUp | Attention::SupervisedByOther)
    }

    /// The command that moves the iPad on once the operator has decided (or dealt with the
    /// cause), for the iPad `target` names (a serial, or `--slot N`). `None` when the iPad
    /// moves on by itself (Trust tapped, unlocked, replugged).
    pub fn command(&self, target: &str) -> Option<String> {
        match self {
            Attention::AlreadySetUp | Attention::SupervisedByOther => {
                Some(format!("to erase it: cartprep erase {target}"))
            }
            Attention::ActivationLocked
            | Attention::AssignedToAde
            | Attention::NotAssignedToAde
            | Attention::NotInOrganization
            | Attention::AssignedElsewhere { .. } => Some(format!("then: cartprep retry {target}")),
            Attention::Locked
            | Attention::TrustPrompt
            | Attention::TrustDenied
            | Attention::RecoveryMode => None,
        }
    }

    /// The instruction shown to the operator, in words a volunteer understands.
    pub fn message(&self) -> std::borrow::Cow<'static, str> {
        let text = match self {
            Attention::Locked => "unlock the iPad (passcode)",
            Attention::TrustPrompt => "tap Trust on the iPad",
            Attention::TrustDenied => {
                "\u{201c}Don\u{2019}t Trust\u{201d} was tapped: unplug, replug, tap Trust"
            }
            Attention::ActivationLocked => {
                "Activation Lock: remove it from the owner\u{2019}s Apple ID / Find My"
            }
            Attention::AlreadySetUp => "already set up; erase is not allowed by policy",
            Attention::AssignedToAde => {
                "assigned to ADE in Apple School Manager: use mode = \"ade\" or release it"
            }
            Attention::SupervisedByOther => "supervised by another organization",
            Attention::NotAssignedToAde => {
                "not assigned to our MDM in Apple School Manager: assign it there, or use mode = \"manual\""
            }
            Attention::RecoveryMode => "in recovery mode \u{2014} restore it",
            Attention::NotInOrganization => {
                "not in your Apple School Manager: ask the seller or the previous owner"
            }
            Attention::AssignedElsewhere { organization } => {
                return format!(
                    "assigned to {organization} in Apple School Manager: ask them to release it"
                )
                .into();
            }
        };
        text.into()
    }
}

impl std::fmt::Display for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Where a device stands overall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Queued behind another iPad (one at a time, as the school guide asks).
    Waiting,
    /// A step is running.
    Working,
    /// Prepared; it can be unplugged.
    Done,
    /// Stuck until a person acts.
    NeedsAttention(Attention),
    /// Gave up after bounded retries.
    Failed { error: String },
}

impl Outcome {
    /// A short lowercase description for exports and status lines: "done",
    /// "needs attention: tap Trust on the iPad", "failed: …".
    pub fn describe(&self) -> String {
        match self {
            Outcome::Waiting => "waiting".into(),
            Outcome::Working => "working".into(),
            Outcome::Done => "done".into(),
            Outcome::NeedsAttention(attention) => {
                format!("needs attention: {}", attention.message())
            }
            Outcome::Failed { error } => format!("failed: {error}"),
        }
    }
}

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The step was completed (or found already true of the iPad).
    Completed,
    /// A person has to act before the step can run.
    Attention,
    /// The step failed for good in this attempt.
    Failed,
    /// The work stopped from outside during the step (unplugged, usbmuxd gone, station stopped).
    Interrupted,
    /// A note beside the pipeline (an Apple School Manager assignment): where the iPad stands
    /// does not change.
    Note,
}

/// One entry of a record's history: a step completed, failed or blocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The step this event is about: the step completed, or the step that was being attempted
    /// when it failed or needed attention.
    pub step: Step,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Which attempt of the record this happened in (see [`DeviceRecord::attempts`]).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the entry records; absent in entries written before it was kept (see
    /// [`StepEvent::kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventKind>,
}

impl StepEvent {
    /// What the entry records. Older entries did not say: an error means a failure, an
    /// "interrupted: …" note an interruption, and otherwise the step was completed (older
    /// attention entries cannot be told from completed ones and read as such).
    pub fn kind(&self) -> EventKind {
        if let Some(k) = self.kind {
            return k;
        }
        if self.error.is_some() {
            EventKind::Failed
        } else if self
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with(INTERRUPTED))
        {
            EventKind::Interrupted
        } else {
            EventKind::Completed
        }
    }

    /// The entry in words, as `cartprep ledger show` prints it: what happened (a short
    /// heading) and the detail. Never says a step happened when it did not.
    pub fn describe(&self) -> (String, String) {
        let note = self.note.as_deref().unwrap_or("");
        let step = format!("\u{201c}{}\u{201d}", self.step.doing());
        match self.kind() {
            EventKind::Completed => (self.step.label().to_owned(), note.to_owned()),
            EventKind::Attention if self.step == Step::Erased => {
                let detail = if note.contains("policy") {
                    note.to_owned()
                } else {
                    format!("{note}; the erase policy does not allow erasing it")
                };
                ("not erased".to_owned(), detail)
            }
            EventKind::Attention => ("needs attention".to_owned(), format!("at {step}: {note}")),
            EventKind::Failed => (
                "failed".to_owned(),
                format!(
                    "at {step} because {}",
                    self.error.as_deref().unwrap_or("of an unknown error")
                ),
            ),
            EventKind::Interrupted => {
                let why = note.strip_prefix(INTERRUPTED).unwrap_or(note).trim();
                ("interrupted".to_owned(), format!("during {step}: {why}"))
            }
            EventKind::Note => ("note".to_owned(), note.to_owned()),
        }
    }
}

/// How an interruption's note starts (kept for records written before [`EventKind`]).
pub const INTERRUPTED: &str = "interrupted:";

/// Everything the station knows about one iPad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub serial: String,
    pub udid: String,
    /// `ProductType`, e.g. `iPad12,1`.
    pub product_type: String,
    /// e.g. "iPad (9th generation)".
    pub marketing_name: String,
    /// `ProductVersion`, e.g. `18.5`.
    pub ios_version: String,
    /// `BuildVersion`.
    pub build: String,
    /// Label of the USB slot it was last seen in, when slots are known.
    pub slot: Option<String>,
    /// The device name given from the naming template.
    pub name: Option<String>,
    /// Its number in the naming order, from 0, taken from the ledger's counter the first time
    /// it is named ([`crate::ledger::Ledger::allocate_number`]) and kept for good: the
    /// template's `{n}` is `naming.start` plus this. Absent in records written before numbers
    /// were allocated, and for iPads never named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// The last step completed (the step being worked on is the one after it, see
    /// [`DeviceRecord::attempted_step`]). Stored as `step`.
    #[serde(rename = "step")]
    pub completed: Step,
    pub outcome: Outcome,
    /// How many times work on this device has started (a replug or a retry starts a new
    /// attempt); bounds the retries.
    pub attempts: u32,
    pub history: Vec<StepEvent>,
    pub first_seen_ms: u64,
    pub updated_ms: u64,
    /// [`crate::config::StationConfig::fingerprint`] of the settings the device was prepared
    /// with, set when it reaches `Done`: a replugged iPad with the same fingerprint is
    /// recognised as already prepared and left alone.
    pub settings_fingerprint: Option<String>,
    /// Why the device was erased, when it was (every erase is recorded with its reason).
    pub erase_reason: Option<String>,
    /// What Apple School Manager says of it, and its assignment to our MDM server (when
    /// `[asm]` is configured; see [`crate::asm_sync`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asm: Option<crate::asm_sync::AsmRecord>,
    /// An erase an operator asked for (`cartprep erase`) and not yet carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_request: Option<EraseRequest>,
    /// Its MDM enrollment as last read from the iPad: "enrolled in …", or why not. Absent from
    /// ledgers written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
}

/// An operator's request to erase an iPad: who, why, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseRequest {
    /// Who asked: the user name and the uid the station saw.
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

impl EraseRequest {
    /// How the erase is journaled: "requested by alice (uid 1000): moving to the new MDM".
    pub fn describe(&self) -> String {
        format!("requested by {}: {}", self.by, self.reason)
    }
}

impl DeviceRecord {
    /// A record for a device just reported by usbmuxd: step `Detected`, waiting, no attempt yet.
    pub fn new(serial: impl Into<String>, udid: impl Into<String>) -> Self {
        Self::new_at(serial, udid, clock::now_ms())
    }

    /// [`DeviceRecord::new`] at a given time (tests and replays).
    pub fn new_at(serial: impl Into<String>, udid: impl Into<String>, at_ms: u64) -> Self {
        DeviceRecord {
            serial: serial.into(),
            udid: udid.into(),
            product_type: String::new(),
            marketing_name: String::new(),
            ios_version: String::new(),
            build: String::new(),
            slot: None,
            name: None,
            number: None,
            completed: Step::Detected,
            outcome: Outcome::Waiting,
            attempts: 0,
            history: vec![StepEvent {
                step: Step::Detected,
                at_ms,
                attempt: 0,
                note: None,
                error: None,
                kind: Some(EventKind::Completed),
            }],
            first_seen_ms: at_ms,
            updated_ms: at_ms,
            settings_fingerprint: None,
            erase_reason: None,
            asm: None,
            erase_request: None,
            enrollment: None,
        }
    }

    /// Starts a new attempt (first plug, replug, retry): counts it and marks the record working.
    pub fn begin_attempt(&mut self) {
        self.attempts += 1;
        self.outcome = Outcome::Working;
        self.updated_ms = clock::now_ms();
    }

    /// Records `step` as completed. Reaching `Done` sets the outcome to `Done`; any other step
    /// leaves the device `Working`.
    pub fn advance(&mut self, step: Step, note: Option<String>) {
        let at_ms = clock::now_ms();
        self.completed = step;
        self.outcome = if step == Step::Done {
            Outcome::Done
        } else {
            Outcome::Working
        };
        self.push(step, at_ms, note, None, EventKind::Completed);
    }

    /// Records that the step after the last completed one failed for good. The step stays where
    /// it was, so a later attempt resumes from there.
    pub fn fail(&mut self, error: impl Into<String>) {
        let error = error.into();
        let at_ms = clock::now_ms();
        let step = self.attempted_step();
        self.outcome = Outcome::Failed {
            error: error.clone(),
        };
        self.push(step, at_ms, None, Some(error), EventKind::Failed);
    }

    /// Records that the device is blocked until a person does what `attention` says: against
    /// the step it blocks, or as "not erased" when it is an erase the policy refused.
    pub fn attention(&mut self, attention: Attention) {
        let at_ms = clock::now_ms();
        let step = if attention.is_refused_erase() {
            Step::Erased
        } else {
            self.attempted_step()
        };
        let note = attention.message().into_owned();
        self.outcome = Outcome::NeedsAttention(attention);
        self.push(step, at_ms, Some(note), None, EventKind::Attention);
    }

    /// Adds a note to the history against the last completed step, without changing where the
    /// device stands (what happened next to the pipeline, such as an Apple School Manager
    /// assignment).
    pub fn remark(&mut self, note: impl Into<String>) {
        let at_ms = clock::now_ms();
        self.push(
            self.completed,
            at_ms,
            Some(note.into()),
            None,
            EventKind::Note,
        );
    }

    /// Records that the work stopped from outside during `step` (the step in progress, when
    /// known; else the one after the last completed). The record waits for the iPad.
    pub fn interrupt(&mut self, step: Option<Step>, why: &str) {
        let at_ms = clock::now_ms();
        let step = step.unwrap_or_else(|| self.attempted_step());
        self.outcome = Outcome::Waiting;
        self.push(
            step,
            at_ms,
            Some(format!("{INTERRUPTED} {why}")),
            None,
            EventKind::Interrupted,
        );
    }

    /// The step being worked on: the one that normally follows the last completed (`Done`
    /// stays `Done`; an erase is only worked on when the plan says so).
    pub fn attempted_step(&self) -> Step {
        self.completed.next_worked_on().unwrap_or(Step::Done)
    }

    /// When the device reached `Done`, if it did.
    pub fn done_at_ms(&self) -> Option<u64> {
        if self.outcome != Outcome::Done {
            return None;
        }
        self.history
            .iter()
            .rev()
            .find(|e| e.step == Step::Done && e.error.is_none())
            .map(|e| e.at_ms)
    }

    fn push(
        &mut self,
        step: Step,
        at_ms: u64,
        note: Option<String>,
        error: Option<String>,
        kind: EventKind,
    ) {
        // Never let updated_ms go backwards if the wall clock does (NTP step at boot): the
        // ledger sorts and reports by it.
        self.updated_ms = self.updated_ms.max(at_ms);
        self.history.push(StepEvent {
            step,
            at_ms,
            attempt: self.attempts,
            note,
            error,
            kind: Some(kind),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_pipeline_order_from_one_to_total() {
        assert_eq!(Step::Detected.number(), 1);
        assert_eq!(Step::Paired.number(), 2);
        assert_eq!(Step::Done.number(), Step::TOTAL);
        assert_eq!(Step::TOTAL, 11);
        for pair in Step::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
            assert_eq!(pair[0].next(), Some(pair[1]));
        }
        assert_eq!(Step::Done.next(), None);
        assert_eq!(Step::Paired.label(), "paired");
    }

    #[test]
    fn advancing_to_done_marks_the_record_done_and_keeps_history() {
        let mut r = DeviceRecord::new_at("F9FZ1234ABCD", "00008030-0001", 1_000);
        r.begin_attempt();
        r.advance(Step::Identified, Some("iPad12,1".into()));
        assert_eq!(r.outcome, Outcome::Working);
        r.advance(Step::Done, None);
        assert_eq!(r.completed, Step::Done);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.history.len(), 3);
        assert_eq!(r.history[1].note.as_deref(), Some("iPad12,1"));
        assert_eq!(r.history[1].attempt, 1);
        assert!(r.done_at_ms().is_some());
    }

    #[test]
    fn a_failure_is_recorded_against_the_step_being_attempted_and_keeps_progress() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.begin_attempt();
        r.advance(Step::Paired, None);
        r.advance(Step::Identified, None);
        r.fail("lockdownd closed the connection");
        assert_eq!(
            r.completed,
            Step::Identified,
            "progress is kept so a replug resumes"
        );
        let last = r.history.last().expect("an event");
        assert_eq!(last.step, Step::Assessed);
        assert_eq!(
            last.error.as_deref(),
            Some("lockdownd closed the connection")
        );
        assert_eq!(
            r.outcome.describe(),
            "failed: lockdownd closed the connection"
        );
        assert_eq!(r.done_at_ms(), None);
    }

    #[test]
    fn attention_tells_the_operator_what_to_do() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.attention(Attention::TrustPrompt);
        assert_eq!(r.outcome, Outcome::NeedsAttention(Attention::TrustPrompt));
        assert_eq!(
            r.outcome.describe(),
            "needs attention: tap Trust on the iPad"
        );
        assert_eq!(
            Attention::TrustDenied.message(),
            "\u{201c}Don\u{2019}t Trust\u{201d} was tapped: unplug, replug, tap Trust"
        );
    }

    #[test]
    fn another_organisation_is_named_and_stored_as_an_object() {
        let a = Attention::AssignedElsewhere {
            organization: "Shelbyville Academy".into(),
        };
        assert_eq!(
            a.message(),
            "assigned to Shelbyville Academy in Apple School Manager: ask them to release it"
        );
        let json = serde_json::to_string(&Outcome::NeedsAttention(a.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"needs_attention":{"assigned_elsewhere":{"organization":"Shelbyville Academy"}}}"#
        );
        assert_eq!(
            serde_json::from_str::<Outcome>(&json).unwrap(),
            Outcome::NeedsAttention(a)
        );
        // Unit variants keep their old form.
        assert_eq!(
            serde_json::to_string(&Attention::Locked).unwrap(),
            r#""locked""#
        );
    }

    #[test]
    fn a_record_written_before_enrollment_was_recorded_still_loads() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.enrollment = Some("enrolled in Demo MDM".into());
        let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
        json.as_object_mut().unwrap().remove("enrollment");
        let old: DeviceRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.enrollment, None);
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.begin_attempt();
        r.attention(Attention::SupervisedByOther);
        r.attention(Attention::ActivationLocked);
        r.fail("gave up");
        let json = serde_json::to_string(&r).expect("serialize");
        let back: DeviceRecord = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r);
        assert!(json.contains("\"step\":\"detected\""), "{json}");
    }

    #[test]
    fn the_board_counts_the_steps_an_operator_sees_without_gaps() {
        let fresh_manual = [
            Step::Detected,
            Step::Paired,
            Step::Identified,
            Step::Assessed,
            Step::Activated,
            Step::Supervised,
            Step::WifiInstalled,
            Step::Named,
            Step::Done,
        ];
        let mut shown: Vec<u32> = fresh_manual.iter().filter_map(|s| s.shown()).collect();
        shown.dedup();
        assert_eq!(shown, (1..=Step::SHOWN_TOTAL).collect::<Vec<_>>());
        assert_eq!(Step::Escalated.shown(), Step::WifiInstalled.shown());
        assert_eq!(Step::Erased.shown(), None, "an erase starts the iPad over");
        assert_eq!(Step::Done.shown(), Some(Step::SHOWN_TOTAL));
    }

    #[test]
    fn the_step_worked_on_after_assessing_is_activation_not_an_erase() {
        let cases = [
            (Step::Detected, Step::Paired),
            (Step::Assessed, Step::Activated),
            (Step::Erased, Step::Activated),
            (Step::Supervised, Step::WifiInstalled),
            (Step::Named, Step::Done),
            (Step::Done, Step::Done),
        ];
        for (completed, worked_on) in cases {
            let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
            r.completed = completed;
            assert_eq!(r.attempted_step(), worked_on, "after {completed:?}");
        }
    }

    #[test]
    fn each_history_entry_says_what_happened() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.begin_attempt();
        r.advance(Step::Paired, Some("slot 3".into()));
        r.advance(Step::Assessed, None);
        r.interrupt(Some(Step::Activated), "unplugged");
        r.begin_attempt();
        r.attention(Attention::AlreadySetUp);
        r.attention(Attention::SupervisedByOther);
        r.attention(Attention::ActivationLocked);
        r.fail("the activation server did not answer");
        let described: Vec<(String, String)> =
            r.history[1..].iter().map(StepEvent::describe).collect();
        let expected = [
            ("paired", "slot 3"),
            ("assessed", ""),
            ("interrupted", "during “activating”: unplugged"),
            (
                "not erased",
                "already set up; erase is not allowed by policy",
            ),
            (
                "not erased",
                "supervised by another organization; the erase policy does not allow erasing it",
            ),
            (
                "needs attention",
                "at “activating”: Activation Lock: remove it from the owner’s Apple ID / Find My",
            ),
            (
                "failed",
                "at “activating” because the activation server did not answer",
            ),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(described, expected);
        assert_eq!(
            r.outcome,
            Outcome::Failed {
                error: "the activation server did not answer".into()
            }
        );
    }

    #[test]
    fn entries_written_before_kinds_were_kept_are_read_by_their_shape() {
        let old = |note: Option<&str>, error: Option<&str>| StepEvent {
            step: Step::Activated,
            at_ms: 1,
            attempt: 1,
            note: note.map(str::to_owned),
            error: error.map(str::to_owned),
            kind: None,
        };
        assert_eq!(old(None, Some("boom")).kind(), EventKind::Failed);
        assert_eq!(
            old(Some("interrupted: unplugged"), None).kind(),
            EventKind::Interrupted
        );
        assert_eq!(old(Some("Activated"), None).kind(), EventKind::Completed);
    }
}
