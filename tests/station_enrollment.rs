//! The end of the road for a prepared iPad: Setup Assistant fetches the enrollment profile from
//! the URL the station wrote, and the station, when the iPad is plugged in again, records
//! whether it is enrolled in the MDM — against the simulated cart and its fake MDM.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use station::Outcome;
use station::status::Light;

const MDM_CA: &str = "mdm-ca.pem";

/// The tests' configuration, enrolling in the simulator's MDM, whose CA the iPads get as an
/// anchor certificate.
fn enroll_in_simulated_mdm(h: &Harness) {
    profiles::files::write_private(&h.station_dir.join(MDM_CA), &h.sim().mdm_ca_pem()).unwrap();
    let text = h
        .config_text(&ConfigSpec::default())
        .replace(ENROLLMENT_URL, &h.sim().mdm_enrollment_url())
        .replace(
            "mode = \"manual\"",
            &format!("mode = \"manual\"\nanchor_certificates = [\"{MDM_CA}\"]"),
        );
    write_atomically(&h.config_path, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_ipad_that_finished_setup_assistant_is_recorded_enrolled_when_plugged_back() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh()])).await;
        enroll_in_simulated_mdm(&h);
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        h.wait_for("both prepared", |h| {
            h.light(1) == Some(Light::Done) && h.light(2) == Some(Light::Done)
        })
        .await;
        for slot in [1, 2] {
            assert_eq!(
                h.record(slot).enrollment.as_deref(),
                Some("not enrolled yet: Setup Assistant not finished on the iPad"),
                "slot {slot}: just prepared"
            );
        }

        // Slot 1 goes through Setup Assistant; slot 2 comes back without it.
        for slot in [1, 2] {
            h.sim().cart.unplug(slot).unwrap();
        }
        let answer = simulator::control::execute(&h.sim().cart, "setup 1").await;
        assert!(
            answer.starts_with("ok slot 1: Setup Assistant finished; enrolled"),
            "{answer}"
        );
        let seen = h.sim().mdm_server().seen();
        assert_eq!(seen.len(), 1, "one request to the enrollment URL");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].user_agent, "CloudConfiguration/1.0");
        assert_eq!(seen[0].udid.as_deref(), Some(h.udid(1).as_str()));

        for slot in [1, 2] {
            h.sim().cart.plug(slot).unwrap();
        }
        h.wait_for("both seen again", |h| {
            [1, 2].iter().all(|s| {
                let r = h.record(*s);
                r.attempts == 2 && r.outcome == Outcome::Done
            })
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");

        let one = h.record(1);
        assert_eq!(
            one.enrollment.as_deref(),
            Some("enrolled in Test MDM (profile “Simulated MDM enrollment”)"),
            "{}",
            h.out.text()
        );
        let last = one.history.last().unwrap();
        assert_eq!(
            last.note.as_deref(),
            Some(
                "already prepared with these settings: not touched; enrolled in Test MDM (profile “Simulated MDM enrollment”)"
            )
        );
        assert_eq!(
            h.record(2).enrollment.as_deref(),
            Some("not enrolled yet: Setup Assistant not finished on the iPad")
        );
        // The station left both alone: the MDM profile and our Wi-Fi profile are what is there.
        let state = h.sim().cart.device(1).unwrap().state();
        let installed: Vec<&str> = state.profiles.iter().map(|p| p.identifier.as_str()).collect();
        assert_eq!(
            installed,
            [WIFI_PROFILE_ID, simulator::mdm_server::PROFILE_IDENTIFIER]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_that_cannot_reach_the_mdm_stays_in_setup_assistant_and_is_not_enrolled() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        // An enrollment URL nobody answers.
        let nobody = format!("https://127.0.0.1:{}/enroll", free_port());
        let text = h
            .config_text(&ConfigSpec::default())
            .replace(ENROLLMENT_URL, &nobody);
        write_atomically(&h.config_path, text.as_bytes());
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        h.wait_for("prepared", |h| h.light(1) == Some(Light::Done))
            .await;
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");

        let answer = simulator::control::execute(&h.sim().cart, "setup 1").await;
        assert!(
            answer.starts_with("ok slot 1: enrollment failed, still in Setup Assistant: the MDM server could not be reached"),
            "{answer}"
        );
        let state = h.sim().cart.device(1).unwrap().state();
        assert!(!state.setup_done);
        assert!(
            !state
                .profiles
                .iter()
                .any(|p| p.payload_types.iter().any(|t| t == "com.apple.mdm"))
        );
    })
    .await;
}
