//! `cartprep ledger list`: one row per iPad under a header, the state said once ("done",
//! "needs attention: …", "waiting, after assessed").

use station::{DeviceRecord, Outcome};

/// The header row.
pub fn header() -> String {
    row("SERIAL", "MODEL", "NAME", "SLOT", "STATE")
}

/// One iPad's row.
pub fn line(r: &DeviceRecord) -> String {
    let serial = if r.serial.is_empty() {
        "(not paired)"
    } else {
        r.serial.as_str()
    };
    row(
        serial,
        &r.marketing_name,
        r.name.as_deref().unwrap_or("-"),
        r.slot.as_deref().unwrap_or("-"),
        &state(r),
    )
}

/// Where the iPad stands, said once: the last step only when it is not done.
pub fn state(r: &DeviceRecord) -> String {
    match &r.outcome {
        Outcome::Done => "done".into(),
        Outcome::Waiting | Outcome::Working => {
            format!("{}, after {}", r.outcome.describe(), r.completed.label())
        }
        other => other.describe(),
    }
}

fn row(serial: &str, model: &str, name: &str, slot: &str, state: &str) -> String {
    format!("{serial:<14} {model:<26} {name:<20} {slot:<5} {state}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::{Attention, Step};

    #[test]
    fn each_state_is_said_once() {
        let mut r = DeviceRecord::new_at("F9FZ1234ABCD", "U1", 1_000);
        r.marketing_name = "iPad (9th generation)".into();
        let cases: Vec<(Outcome, Step, &str)> = vec![
            (Outcome::Done, Step::Done, "done"),
            (
                Outcome::NeedsAttention(Attention::TrustPrompt),
                Step::Detected,
                "needs attention: tap Trust on the iPad",
            ),
            (Outcome::Waiting, Step::Assessed, "waiting, after assessed"),
            (
                Outcome::Failed {
                    error: "boom".into(),
                },
                Step::Activated,
                "failed: boom",
            ),
        ];
        for (outcome, completed, expected) in cases {
            r.outcome = outcome;
            r.completed = completed;
            assert_eq!(state(&r), expected);
            assert!(line(&r).ends_with(expected), "{}", line(&r));
            assert!(!line(&r).contains("done done"));
        }
    }

    #[test]
    fn the_header_names_the_columns_above_them() {
        let mut r = DeviceRecord::new_at("F9FZ1234ABCD", "U1", 1_000);
        r.marketing_name = "iPad (9th generation)".into();
        r.slot = Some("3".into());
        let (h, l) = (header(), line(&r));
        for (column, value) in [("MODEL", "iPad ("), ("SLOT", "3 "), ("STATE", "waiting")] {
            assert_eq!(h.find(column), l.find(value), "{column}\n{h}\n{l}");
        }
    }
}
