//! Editing station.toml while the station runs: a good edit applies to the next iPad, a bad
//! one is refused and the last good configuration stays in force.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use station::Outcome;
use station::status::Light;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_configuration_applies_to_the_next_ipad_and_a_bad_edit_is_refused() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), unplugged(), unplugged()])).await;
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(true, when_flag(stop.clone()));

        h.wait_for("slot 1 prepared", |h| h.light(1) == Some(Light::Done))
            .await;
        assert_eq!(
            h.sim().cart.device(1).unwrap().state().device_name,
            "Cart A - 01"
        );

        // A new naming template.
        h.write_config(&ConfigSpec {
            template: Some("Cart B - {n:02}".into()),
            ..ConfigSpec::default()
        });
        h.wait_for("the reload noted", |h| {
            h.out.text().contains("configuration reloaded")
        })
        .await;
        assert!(
            h.out
                .lines()
                .iter()
                .any(|l| l == "configuration reloaded (naming): applies to the next iPad"),
            "{}",
            h.out.text()
        );
        h.sim().cart.plug(2).unwrap();
        h.wait_for("slot 2 prepared", |h| h.light(2) == Some(Light::Done))
            .await;
        assert_eq!(
            h.sim().cart.device(2).unwrap().state().device_name,
            "Cart B - 02"
        );
        assert_eq!(
            h.sim().cart.device(1).unwrap().state().device_name,
            "Cart A - 01",
            "an iPad already prepared keeps its name"
        );

        // A broken edit: refused, the last good configuration stays.
        let broken = h
            .config_text(&ConfigSpec {
                template: Some("Cart C - {n:02}".into()),
                ..ConfigSpec::default()
            })
            .replace(ENROLLMENT_URL, "http://mdm.example.org/enroll");
        write_atomically(&h.config_path, broken.as_bytes());
        h.wait_for("the refusal noted", |h| {
            h.out.text().contains("configuration edit refused")
        })
        .await;
        let refusal = h
            .out
            .lines()
            .into_iter()
            .find(|l| l.starts_with("configuration edit refused, keeping the previous one: "))
            .unwrap();
        assert!(refusal.contains("mdm.enrollment_url"), "{refusal}");
        h.sim().cart.plug(3).unwrap();
        h.wait_for("slot 3 prepared", |h| h.light(3) == Some(Light::Done))
            .await;
        assert_eq!(
            h.sim().cart.device(3).unwrap().state().device_name,
            "Cart B - 03"
        );

        stop.store(true, Ordering::SeqCst);
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 3);
        let names: Vec<(Outcome, Option<String>)> = (1..=3)
            .map(|s| h.record(s))
            .map(|r| (r.outcome, r.name))
            .collect();
        assert_eq!(
            names,
            [
                (Outcome::Done, Some("Cart A - 01".into())),
                (Outcome::Done, Some("Cart B - 02".into())),
                (Outcome::Done, Some("Cart B - 03".into())),
            ]
        );
        let fingerprints: Vec<_> = (1..=3).map(|s| h.record(s).settings_fingerprint).collect();
        assert_ne!(
            fingerprints[0], fingerprints[1],
            "prepared with other settings"
        );
        assert_eq!(
            fingerprints[1], fingerprints[2],
            "the refused edit changed nothing"
        );
    })
    .await;
}
