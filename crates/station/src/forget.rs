//! When the status board lets go of an unplugged iPad's line: once another iPad is plugged
//! into its slot, or `[board] forget_after_minutes` after it was unplugged. The ledger keeps
//! the iPad and the summary still counts it; only the line goes, so a station that prepares
//! carts all day keeps a board (and a memory) the size of a cart, not of the district.
//!
//! Decided here from the times and slots the scheduler gives it; the scheduler asks at each
//! usbmuxd event, so nothing wakes an idle station to forget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An iPad whose line says it was unplugged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gone {
    udid: String,
    slot: Option<String>,
    at: Instant,
}

/// The unplugged iPads still on the board, oldest first.
#[derive(Debug)]
pub struct Forgetting {
    after: Duration,
    gone: VecDeque<Gone>,
}

impl Forgetting {
    pub fn new(after: Duration) -> Self {
        Forgetting {
            after,
            gone: VecDeque::new(),
        }
    }

    /// A reload changed the setting: it applies to the lines already there too.
    pub fn set_after(&mut self, after: Duration) {
        self.after = after;
    }

    /// `udid`'s line now says it was unplugged (prepared, or before it was done), at `at`.
    pub fn unplugged(&mut self, udid: &str, slot: Option<&str>, at: Instant) {
        self.back(udid);
        self.gone.push_back(Gone {
            udid: udid.to_owned(),
            slot: slot.map(str::to_owned),
            at,
        });
    }

    /// `udid`'s line is live again (plugged back in, or any other news of it).
    pub fn back(&mut self, udid: &str) {
        self.gone.retain(|g| g.udid != udid);
    }

    /// The lines to forget at `now`: unplugged for `after` or longer, and any in `taken_slot`,
    /// the slot an iPad was just plugged into. Each is given once.
    pub fn due(&mut self, now: Instant, taken_slot: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        // Lines are added in the order they were unplugged, so the old ones are at the front.
        while self
            .gone
            .front()
            .is_some_and(|g| now.saturating_duration_since(g.at) >= self.after)
        {
            if let Some(g) = self.gone.pop_front() {
                out.push(g.udid);
            }
        }
        if let Some(slot) = taken_slot {
            self.gone.retain(|g| {
                let taken = g.slot.as_deref() == Some(slot);
                if taken {
                    out.push(g.udid.clone());
                }
                !taken
            });
        }
        out
    }

    /// Unplugged iPads still on the board.
    pub fn len(&self) -> usize {
        self.gone.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gone.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// A board that forgets after 10 minutes, with "A" unplugged from slot 1 at t0 and "B"
    /// from slot 2 a minute later.
    fn two_gone() -> (Forgetting, Instant) {
        let t0 = Instant::now();
        let mut f = Forgetting::new(10 * MIN);
        f.unplugged("A", Some("1"), t0);
        f.unplugged("B", Some("2"), t0 + MIN);
        (f, t0)
    }

    #[test]
    fn lines_go_once_their_time_is_up_oldest_first() {
        let cases: [(Duration, &[&str]); 4] = [
            (5 * MIN, &[]),
            (10 * MIN, &["A"]),
            (10 * MIN + MIN / 2, &["A"]),
            (11 * MIN, &["A", "B"]),
        ];
        for (elapsed, forgotten) in cases {
            let (mut f, t0) = two_gone();
            assert_eq!(f.due(t0 + elapsed, None), forgotten, "after {elapsed:?}");
            assert_eq!(f.len(), 2 - forgotten.len());
        }
    }

    #[test]
    fn an_ipad_plugged_into_a_slot_takes_the_line_of_the_one_unplugged_there() {
        let (mut f, t0) = two_gone();
        assert_eq!(f.due(t0 + MIN, Some("2")), ["B"]);
        assert_eq!(f.due(t0 + MIN, Some("3")), Vec::<String>::new());
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn an_ipad_back_on_the_cable_is_not_forgotten() {
        let (mut f, t0) = two_gone();
        f.back("A");
        assert_eq!(f.due(t0 + 11 * MIN, None), ["B"]);
        assert!(f.is_empty());
    }

    #[test]
    fn unplugged_again_starts_its_time_again() {
        let (mut f, t0) = two_gone();
        f.unplugged("A", Some("1"), t0 + 5 * MIN);
        assert_eq!(f.due(t0 + 11 * MIN, None), ["B"]);
        assert_eq!(f.due(t0 + 15 * MIN, None), ["A"]);
    }

    #[test]
    fn zero_minutes_forgets_at_the_next_event_and_a_reload_applies_to_lines_already_there() {
        let (mut f, t0) = two_gone();
        f.set_after(Duration::ZERO);
        assert_eq!(f.due(t0 + MIN, None), ["A", "B"]);
    }

    #[test]
    fn an_ipad_without_a_slot_goes_only_with_time() {
        let t0 = Instant::now();
        let mut f = Forgetting::new(MIN);
        f.unplugged("A", None, t0);
        assert_eq!(f.due(t0, Some("1")), Vec::<String>::new());
        assert_eq!(f.due(t0 + MIN, None), ["A"]);
    }
}
