//! `/metrics`: the station in the Prometheus text format, built at each scrape from the board
//! (what is plugged in now, the usbmuxd link) and the ledger (everything ever prepared), so the
//! counts are the ledger's and nothing is counted twice across a restart.
//!
//! Metric names follow the Prometheus naming guide (prometheus.io/docs/practices/naming):
//! a `cartprep_` prefix, base units (seconds, bytes), `_total` for counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::record::{Attention, DeviceRecord, Outcome, Step};
use crate::status::{Light, Snapshot};

/// Buckets of the step-duration histograms, in seconds: a step takes from a fraction of a
/// second (naming) to minutes (activation over a slow network, an erase).
const STEP_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

const ATTENTIONS: [Attention; 9] = [
    Attention::Locked,
    Attention::TrustPrompt,
    Attention::TrustDenied,
    Attention::ActivationLocked,
    Attention::AlreadySetUp,
    Attention::AssignedToAde,
    Attention::SupervisedByOther,
    Attention::NotAssignedToAde,
    Attention::RecoveryMode,
];

const LIGHTS: [Light; 7] = [
    Light::Ready,
    Light::Waiting,
    Light::Working,
    Light::Done,
    Light::Attention,
    Light::Failed,
    Light::Unplugged,
];

/// What `/metrics` is made of.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub usbmuxd_up: bool,
    pub records: &'a [DeviceRecord],
    /// Size of the audit log, when it could be read.
    pub audit_log_bytes: Option<u64>,
}

/// The snake_case name serde gives a unit enum variant (the same word as in the JSON).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// Renders the metrics as Prometheus text.
pub fn render(inputs: &Inputs<'_>) -> Result<String, prometheus::Error> {
    let registry = Registry::new();

    let by_state = IntGaugeVec::new(
        Opts::new(
            "cartprep_ipads",
            "iPads on the status board now, by state (the LED)",
        ),
        &["state"],
    )?;
    for light in LIGHTS {
        let n = inputs
            .snapshot
            .devices
            .iter()
            .filter(|d| d.light == light)
            .count();
        by_state.with_label_values(&[&word(&light)]).set(n as i64);
    }
    registry.register(Box::new(by_state))?;

    let prepared = IntCounter::new(
        "cartprep_prepared_total",
        "Preparations completed (each time an iPad reached done), from the ledger",
    )?;
    // One per attempt that reached done by preparing: notes beside the pipeline (an Apple
    // School Manager assignment) and an iPad found already prepared are not preparations.
    let completions: usize = inputs
        .records
        .iter()
        .map(|r| {
            r.history
                .iter()
                .filter(|e| {
                    e.step == Step::Done
                        && e.error.is_none()
                        && e.kind() == crate::record::EventKind::Completed
                })
                // An iPad plugged in again and found prepared is not prepared again.
                .filter(|e| {
                    !e.note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("already prepared"))
                })
                .map(|e| e.attempt)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        })
        .sum();
    prepared.inc_by(completions as u64);
    registry.register(Box::new(prepared))?;

    let attention = IntGaugeVec::new(
        Opts::new(
            "cartprep_attention_ipads",
            "iPads in the ledger waiting for a person, by reason",
        ),
        &["reason"],
    )?;
    for reason in ATTENTIONS {
        let n = inputs
            .records
            .iter()
            .filter(|r| matches!(&r.outcome, Outcome::NeedsAttention(a) if *a == reason))
            .count();
        attention.with_label_values(&[&word(&reason)]).set(n as i64);
    }
    registry.register(Box::new(attention))?;

    let failed = IntGaugeVec::new(
        Opts::new(
            "cartprep_failed_ipads",
            "iPads in the ledger whose preparation failed, by the step that failed",
        ),
        &["step"],
    )?;
    for r in inputs.records {
        if matches!(r.outcome, Outcome::Failed { .. }) {
            failed
                .with_label_values(&[&word(&r.attempted_step())])
                .inc();
        }
    }
    registry.register(Box::new(failed))?;

    for (step, seconds) in step_durations(inputs.records) {
        let histogram = Histogram::with_opts(
            HistogramOpts::new(
                "cartprep_step_duration_seconds",
                "Time each prepare step took, from the ledger's history",
            )
            .const_label("step", word(&step))
            .buckets(STEP_BUCKETS.to_vec()),
        )?;
        for s in seconds {
            histogram.observe(s);
        }
        registry.register(Box::new(histogram))?;
    }

    let usbmuxd = IntGauge::new(
        "cartprep_usbmuxd_connected",
        "1 while the station is connected to usbmuxd",
    )?;
    usbmuxd.set(i64::from(inputs.usbmuxd_up));
    registry.register(Box::new(usbmuxd))?;

    let records = IntGauge::new("cartprep_ledger_records", "iPads recorded in the ledger")?;
    records.set(inputs.records.len() as i64);
    registry.register(Box::new(records))?;

    if let Some(bytes) = inputs.audit_log_bytes {
        let size = IntGauge::new(
            "cartprep_audit_log_bytes",
            "Size of the ledger's audit log (audit.jsonl)",
        )?;
        size.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        registry.register(Box::new(size))?;
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// How long each step took, by step, in seconds: the time from one completed step to the next
/// completed step of the same attempt. Failures and attention entries end a run of steps
/// (the time until a person acted is not the step's). The first step of an attempt has no
/// start in the ledger (the attempt's start is not journaled), so it is not measured.
pub fn step_durations(records: &[DeviceRecord]) -> Vec<(Step, Vec<f64>)> {
    let mut by_step: Vec<(Step, Vec<f64>)> = Step::ALL[1..].iter().map(|s| (*s, vec![])).collect();
    for r in records {
        let mut previous: Option<&crate::record::StepEvent> = None;
        for e in &r.history {
            let completed = e.error.is_none() && !is_attention(e.note.as_deref());
            if !completed {
                previous = None;
                continue;
            }
            if let Some(p) = previous
                && p.attempt == e.attempt
                && e.step > p.step
                && let Some((_, seconds)) = by_step.iter_mut().find(|(s, _)| *s == e.step)
            {
                seconds.push(e.at_ms.saturating_sub(p.at_ms) as f64 / 1000.0);
            }
            previous = Some(e);
        }
    }
    by_step.retain(|(_, v)| !v.is_empty());
    by_step
}

/// Whether a history note is an attention entry (they carry the instruction as their note).
fn is_attention(note: Option<&str>) -> bool {
    note.is_some_and(|n| ATTENTIONS.iter().any(|a| a.message() == n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DeviceStatus;

    fn record(serial: &str) -> DeviceRecord {
        DeviceRecord::new_at(serial, format!("udid-{serial}"), 1_000)
    }

    /// A record prepared with steps 2 s apart from `start_ms`.
    fn prepared(serial: &str) -> DeviceRecord {
        let mut r = record(serial);
        r.begin_attempt();
        for (i, step) in [Step::Paired, Step::Identified, Step::Done]
            .into_iter()
            .enumerate()
        {
            r.advance(step, None);
            r.history.last_mut().unwrap().at_ms = 1_000 + 2_000 * (i as u64 + 1);
        }
        r
    }

    #[test]
    fn durations_run_from_one_completed_step_to_the_next_of_the_same_attempt() {
        let mut r = prepared("A");
        // A second attempt that needs attention: not a duration.
        r.begin_attempt();
        r.attention(Attention::TrustPrompt);
        let durations = step_durations(&[r]);
        let steps: Vec<Step> = durations.iter().map(|(s, _)| *s).collect();
        // Pairing is the attempt's first step: the ledger has no start time for it.
        assert_eq!(steps, [Step::Identified, Step::Done]);
        for (_, seconds) in &durations {
            assert_eq!(seconds, &[2.0]);
        }
    }

    #[test]
    fn the_counts_are_the_ledgers_and_the_boards() {
        let mut stuck = record("B");
        stuck.begin_attempt();
        stuck.attention(Attention::ActivationLocked);
        let mut broken = record("C");
        broken.begin_attempt();
        broken.advance(Step::Paired, None);
        broken.fail("the iPad stopped answering");
        let records = [prepared("A"), stuck, broken];
        let snapshot = Snapshot {
            devices: vec![
                DeviceStatus::new("udid-A", Light::Done, "unplug"),
                DeviceStatus::new("udid-B", Light::Attention, "Activation Lock"),
            ],
            ..Snapshot::default()
        };
        let text = render(&Inputs {
            snapshot: &snapshot,
            usbmuxd_up: true,
            records: &records,
            audit_log_bytes: Some(4096),
        })
        .unwrap();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("Prometheus text");
        let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
                .unwrap_or_else(|| panic!("{name} {label:?} in\n{text}"))
        };
        assert_eq!(value("cartprep_ipads", Some(("state", "done"))), 1.0);
        assert_eq!(value("cartprep_ipads", Some(("state", "attention"))), 1.0);
        assert_eq!(value("cartprep_ipads", Some(("state", "working"))), 0.0);
        assert_eq!(value("cartprep_prepared_total", None), 1.0);
        assert_eq!(
            value(
                "cartprep_attention_ipads",
                Some(("reason", "activation_locked"))
            ),
            1.0
        );
        assert_eq!(
            value("cartprep_failed_ipads", Some(("step", "identified"))),
            1.0
        );
        assert_eq!(value("cartprep_usbmuxd_connected", None), 1.0);
        assert_eq!(value("cartprep_ledger_records", None), 3.0);
        assert_eq!(value("cartprep_audit_log_bytes", None), 4096.0);
        let histogram = parsed
            .samples
            .iter()
            .find(|s| {
                s.metric == "cartprep_step_duration_seconds" && s.labels.get("step") == Some("done")
            })
            .expect("a histogram for the done step");
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("not a histogram: {:?}", histogram.value);
        };
        let le_2_5 = buckets.iter().find(|b| b.less_than == 2.5).unwrap();
        let le_1 = buckets.iter().find(|b| b.less_than == 1.0).unwrap();
        assert_eq!((le_1.count, le_2_5.count), (0.0, 1.0), "one 2 s step");
    }
}
