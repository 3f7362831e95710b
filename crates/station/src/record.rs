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

    /// Position in the pipeline, from 1 (`Detected`) to [`Step::TOTAL`] (`Done`): the `k` of
    /// "step k of n".
    pub fn number(self) -> u32 {
        self as u32 + 1
    }

    /// The step after this one, `None` after `Done`.
    ///
    /// `Erased` is in the sequence even though most devices skip it (erase is only done where
    /// policy allows); the plan (`prepare::plan`) decides whether to run it, this only orders the steps.
    pub fn next(self) -> Option<Step> {
        Step::ALL.get(self.number() as usize).copied()
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a device is stuck until a person does something, with what that person must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

impl Attention {
    /// The instruction shown to the operator, in words a volunteer understands.
    pub fn message(self) -> &'static str {
        match self {
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
        }
    }
}

impl std::fmt::Display for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
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
}

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
            }],
            first_seen_ms: at_ms,
            updated_ms: at_ms,
            settings_fingerprint: None,
            erase_reason: None,
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
        self.push(step, at_ms, note, None);
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
        self.push(step, at_ms, None, Some(error));
    }

    /// Records that the device is blocked until a person does what `attention` says.
    pub fn attention(&mut self, attention: Attention) {
        let at_ms = clock::now_ms();
        let step = self.attempted_step();
        self.outcome = Outcome::NeedsAttention(attention);
        self.push(step, at_ms, Some(attention.message().to_owned()), None);
    }

    /// The step being worked on: the one after the last completed (`Done` stays `Done`).
    pub fn attempted_step(&self) -> Step {
        self.completed.next().unwrap_or(Step::Done)
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

    fn push(&mut self, step: Step, at_ms: u64, note: Option<String>, error: Option<String>) {
        // Never let updated_ms go backwards if the wall clock does (NTP step at boot): the
        // ledger sorts and reports by it.
        self.updated_ms = self.updated_ms.max(at_ms);
        self.history.push(StepEvent {
            step,
            at_ms,
            attempt: self.attempts,
            note,
            error,
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
    fn a_record_round_trips_through_json() {
        let mut r = DeviceRecord::new_at("S1", "U1", 1_000);
        r.begin_attempt();
        r.attention(Attention::ActivationLocked);
        r.fail("gave up");
        let json = serde_json::to_string(&r).expect("serialize");
        let back: DeviceRecord = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r);
        assert!(json.contains("\"step\":\"detected\""), "{json}");
    }
}
