//! "Trust This Computer?" on a set-up iPad: shown at the first ordinary Pair, answered by the
//! person holding the iPad (scripted by the scenario, or tapped through the control channel),
//! and asked again after a replug when it was refused (`docs/fidelity.md` §13.2).

use crate::ipad::PairingBehavior;

/// What the person taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    Trust,
    DontTrust,
}

/// Where the alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Alert {
    #[default]
    Hidden,
    Showing,
    /// Trust tapped: the next Pair succeeds.
    Trusted,
    /// "Don't Trust" tapped: every Pair is refused until the iPad is reconnected.
    Denied,
}

/// The device's answer to an ordinary Pair request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Paired,
    /// Refused with this lockdownd error name.
    Refused(&'static str),
}

/// Tapping when no alert is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no \u{201c}Trust This Computer?\u{201d} alert is showing")]
pub struct NoAlert;

#[derive(Debug, Clone, Default)]
pub struct TrustPrompt {
    alert: Alert,
    /// Pair requests answered PairingDialogResponsePending since the alert was shown.
    pending_answers: u32,
    /// The scenario's "Don't Trust" was given once; after that the alert waits for a tap.
    scripted_denial_given: bool,
}

impl TrustPrompt {
    /// Answers an ordinary Pair, as `behaviour` (the scenario's person) would.
    pub fn on_pair(&mut self, behaviour: PairingBehavior) -> Consent {
        // A passcode-locked iPad refuses before any alert (lockdownd.rs); once unlocked it
        // asks like any set-up iPad.
        let behaviour = match behaviour {
            PairingBehavior::Accept => return Consent::Paired,
            PairingBehavior::Locked { attempts } => PairingBehavior::Dialog { attempts },
            b @ (PairingBehavior::Dialog { .. } | PairingBehavior::Deny) => b,
        };
        if matches!(self.alert, Alert::Hidden | Alert::Showing) {
            match behaviour {
                PairingBehavior::Dialog { attempts } if self.pending_answers >= attempts => {
                    self.alert = Alert::Trusted
                }
                PairingBehavior::Deny if !self.scripted_denial_given => {
                    self.scripted_denial_given = true;
                    self.alert = Alert::Denied;
                }
                _ => {}
            }
        }
        match self.alert {
            Alert::Trusted => {
                self.alert = Alert::Hidden;
                self.pending_answers = 0;
                Consent::Paired
            }
            Alert::Denied => Consent::Refused("UserDeniedPairing"),
            Alert::Hidden | Alert::Showing => {
                self.alert = Alert::Showing;
                self.pending_answers = self.pending_answers.saturating_add(1);
                Consent::Refused("PairingDialogResponsePending")
            }
        }
    }

    /// The person taps a button of the alert that is showing.
    pub fn tap(&mut self, tap: Tap) -> Result<(), NoAlert> {
        if self.alert != Alert::Showing {
            return Err(NoAlert);
        }
        self.alert = match tap {
            Tap::Trust => Alert::Trusted,
            Tap::DontTrust => Alert::Denied,
        };
        Ok(())
    }

    /// The iPad was unplugged (or locked and unlocked): a refusal is forgotten and the next Pair
    /// shows the alert again; an unanswered alert goes away.
    pub fn reconnected(&mut self) {
        self.alert = Alert::Hidden;
        self.pending_answers = 0;
    }

    pub fn is_showing(&self) -> bool {
        self.alert == Alert::Showing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PENDING: Consent = Consent::Refused("PairingDialogResponsePending");
    const DENIED: Consent = Consent::Refused("UserDeniedPairing");

    fn answers(p: &mut TrustPrompt, b: PairingBehavior, n: usize) -> Vec<Consent> {
        (0..n).map(|_| p.on_pair(b)).collect()
    }

    #[test]
    fn a_scripted_dialog_is_pending_until_the_person_taps_trust() {
        let mut p = TrustPrompt::default();
        let b = PairingBehavior::Dialog { attempts: 2 };
        assert_eq!(answers(&mut p, b, 3), [PENDING, PENDING, Consent::Paired]);
        assert!(!p.is_showing());
    }

    #[test]
    fn dont_trust_refuses_until_a_replug_then_the_alert_comes_back() {
        let mut p = TrustPrompt::default();
        let b = PairingBehavior::Deny;
        assert_eq!(answers(&mut p, b, 3), [DENIED, DENIED, DENIED]);
        assert_eq!(p.tap(Tap::Trust), Err(NoAlert), "nothing is showing");
        p.reconnected();
        assert_eq!(answers(&mut p, b, 2), [PENDING, PENDING]);
        assert!(p.is_showing());
        assert_eq!(p.tap(Tap::Trust), Ok(()));
        assert_eq!(p.on_pair(b), Consent::Paired);
    }

    #[test]
    fn a_tapped_dont_trust_also_lasts_until_the_next_replug() {
        let mut p = TrustPrompt::default();
        let b = PairingBehavior::Dialog { attempts: 100 };
        assert_eq!(p.on_pair(b), PENDING);
        assert_eq!(p.tap(Tap::DontTrust), Ok(()));
        assert_eq!(answers(&mut p, b, 2), [DENIED, DENIED]);
        p.reconnected();
        assert_eq!(p.on_pair(b), PENDING);
    }

    #[test]
    fn accept_never_shows_the_alert_and_an_unlocked_ipad_asks_like_a_dialog() {
        let mut p = TrustPrompt::default();
        assert_eq!(p.on_pair(PairingBehavior::Accept), Consent::Paired);
        assert!(!p.is_showing());
        let unlocked = PairingBehavior::Locked { attempts: 1 };
        assert_eq!(answers(&mut p, unlocked, 2), [PENDING, Consent::Paired]);
    }
}
