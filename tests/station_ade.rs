//! ADE mode against iPads that behave as devices do: the ADE download takes seconds, needs a
//! network (the Wi-Fi profile), is never sent twice, and a Wi-Fi install whose reply says
//! "failed" does not stop the job (`docs/fidelity.md` §6).

mod common;

use common::*;
use plist::Value;
use simulator::faults::{FaultAction, FaultRule};
use simulator::scenario::DeviceEntry;
use station::Outcome;
use station::status::Light;

fn assigned(apply_ms: u64) -> DeviceEntry {
    DeviceEntry {
        ade: true,
        ade_apply_ms: Some(apply_ms),
        ..fresh()
    }
}

fn fault(request: &str, nth: u32, action: FaultAction) -> FaultRule {
    FaultRule {
        slot: Some(1),
        request: request.into(),
        nth,
        action,
    }
}

/// Runs the daemon in ADE mode until slot 1 is done, needs attention or failed.
async fn prepare(scenario: simulator::Scenario) -> Harness {
    let h = Harness::new(scenario).await;
    h.write_config(&ConfigSpec {
        mode: "ade",
        ..ConfigSpec::default()
    });
    h.spawn_daemon(
        false,
        when_all(
            vec![h.udid(1)],
            &[Light::Done, Light::Attention, Light::Failed],
        ),
    )
    .await
    .unwrap()
    .expect("the daemon runs");
    h
}

fn failure(h: &Harness) -> String {
    match h.record(1).outcome {
        Outcome::Failed { error } => error,
        other => panic!("expected a failure, got {other:?}\n{}", h.out.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_second_ade_download_after_a_wifi_install_that_reported_failure_completes() {
    within(async {
        let mut scenario = cart(vec![assigned(3000)]);
        // The iPad takes the profile but answers as if it had not.
        scenario.faults.push(fault(
            "InstallProfile",
            1,
            FaultAction::ErrorAfter {
                name: "Error".into(),
            },
        ));
        let h = prepare(scenario).await;
        assert_eq!(h.record(1).outcome, Outcome::Done, "{}", h.out.text());
        let state = h.sim().cart.device(1).unwrap().state();
        let cc = state.cloud_config.as_ref().expect("its ADE configuration");
        assert_eq!(
            cc.get("ConfigurationSource")
                .and_then(Value::as_unsigned_integer),
            Some(1)
        );
        let installed: Vec<&str> = state
            .profiles
            .iter()
            .map(|p| p.identifier.as_str())
            .collect();
        assert_eq!(installed, [WIFI_PROFILE_ID]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_wifi_install_leaves_the_ade_download_to_say_the_ipad_is_offline() {
    within(async {
        let mut scenario = cart(vec![assigned(1000)]);
        scenario.faults.push(fault(
            "InstallProfile",
            1,
            FaultAction::Error {
                name: "Error".into(),
            },
        ));
        let h = prepare(scenario).await;
        let error = failure(&h);
        assert!(error.contains("offline"), "{error}");
        assert!(
            h.sim()
                .cart
                .device(1)
                .unwrap()
                .state()
                .cloud_config
                .is_none(),
            "nothing was applied"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ade_download_whose_reply_is_lost_is_not_sent_again() {
    within(async {
        let mut scenario = cart(vec![assigned(1000)]);
        scenario.faults.push(fault(
            "DownloadAndApplyCloudConfiguration",
            1,
            FaultAction::Drop,
        ));
        // A second request would be answered with this, and the failure would name it.
        scenario.faults.push(fault(
            "DownloadAndApplyCloudConfiguration",
            2,
            FaultAction::Error {
                name: "SentTwice".into(),
            },
        ));
        let h = prepare(scenario).await;
        let error = failure(&h);
        assert!(error.contains("not sent twice"), "{error}");
        assert!(!error.contains("SentTwice"), "{error}");
    })
    .await;
}
