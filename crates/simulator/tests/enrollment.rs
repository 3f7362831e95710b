//! Finishing Setup Assistant: the virtual iPad fetches its ConfigurationURL from the fake MDM
//! as iOS does, and installs the enrollment profile or stays in Setup Assistant saying why.

use plist::Value;
use simulator::enrollment::{Enrollment, EnrollmentFailure, SetupOutcome, USER_AGENT};
use simulator::{Scenario, SimConfig, Simulator};

async fn start(scenario: &str) -> (tempfile::TempDir, Simulator) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let scenario: Scenario = toml::from_str(scenario).unwrap();
    let sim = Simulator::start(SimConfig {
        scenario,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: dir.path().to_path_buf(),
        activated: false,
    })
    .await
    .unwrap();
    (dir, sim)
}

/// Activates slot 1 and gives it a manual cloud configuration naming `url`, trusting `anchor`.
fn prepared(sim: &Simulator, url: &str, anchor: Option<Vec<u8>>) {
    let mut state = sim.cart.device(1).unwrap().state();
    state.activated = true;
    let mut cc = plist::Dictionary::new();
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("IsMandatory".into(), true.into());
    cc.insert("ConfigurationSource".into(), 2u64.into());
    cc.insert("ConfigurationURL".into(), url.into());
    if let Some(a) = anchor {
        cc.insert(
            "AnchorCertificates".into(),
            Value::Array(vec![Value::Data(a)]),
        );
    }
    state.cloud_config = Some(cc);
}

const ONE_IPAD: &str = "[[device]]\nmodel = \"iPad12,1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_setup_posts_to_the_configuration_url_and_installs_the_mdm_profile() {
    let (_dir, sim) = start(ONE_IPAD).await;
    let ca = sim.mdm_server().ca_der.clone();
    prepared(&sim, &sim.mdm_enrollment_url(), Some(ca));
    let ipad = sim.cart.device(1).unwrap().clone();

    let outcome = simulator::enrollment::finish_setup_assistant(&ipad).await;
    assert_eq!(
        outcome,
        SetupOutcome::Enrolled {
            profile_identifier: simulator::mdm_server::PROFILE_IDENTIFIER.into()
        }
    );

    let seen = sim.mdm_server().seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/enroll");
    assert_eq!(seen[0].user_agent, USER_AGENT);
    assert_eq!(seen[0].content_type, "application/pkcs7-signature");
    assert_eq!(
        seen[0].udid.as_deref(),
        Some(ipad.udid()),
        "a signed MachineInfo"
    );

    {
        let state = ipad.state();
        assert!(state.setup_done);
        let profile = state
            .profiles
            .iter()
            .find(|p| p.identifier == simulator::mdm_server::PROFILE_IDENTIFIER)
            .expect("the MDM profile is installed");
        assert_eq!(profile.payload_types, ["com.apple.mdm"]);
        assert_eq!(profile.organization.as_deref(), Some(simulator::MDM_NAME));
        assert!(matches!(
            state.enrollment,
            Some(Enrollment::Enrolled { .. })
        ));
        assert_eq!(
            state
                .cloud_config
                .as_ref()
                .and_then(|c| c.get("CloudConfigurationUIComplete"))
                .and_then(Value::as_boolean),
            Some(true)
        );
    }
    assert_eq!(
        simulator::enrollment::finish_setup_assistant(&ipad).await,
        SetupOutcome::AlreadyFinished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_enrollment_keeps_the_ipad_in_setup_assistant_and_says_why() {
    let (_dir, sim) = start(ONE_IPAD).await;
    let ca = sim.mdm_server().ca_der.clone();
    let base = sim.mdm_server().base_url.clone();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    type Expected = fn(&EnrollmentFailure) -> bool;
    let cases: Vec<(String, Option<Vec<u8>>, Expected)> = vec![
        (format!("{base}enroll/unsigned"), Some(ca.clone()), |f| {
            *f == EnrollmentFailure::Unsigned
        }),
        (
            format!("{base}enroll/not-a-profile"),
            Some(ca.clone()),
            |f| matches!(f, EnrollmentFailure::NotAProfile(_)),
        ),
        (
            format!("{base}enroll/no-mdm-payload"),
            Some(ca.clone()),
            |f| *f == EnrollmentFailure::NoMdmPayload,
        ),
        (
            format!("{base}enroll/bad-signature"),
            Some(ca.clone()),
            |f| matches!(f, EnrollmentFailure::BadSignature(_)),
        ),
        (
            format!("{base}enroll/devices-only"),
            Some(ca.clone()),
            |f| *f == EnrollmentFailure::HttpStatus(403),
        ),
        (format!("{base}nowhere"), Some(ca.clone()), |f| {
            *f == EnrollmentFailure::HttpStatus(404)
        }),
        (
            format!("https://127.0.0.1:{closed}/enroll"),
            Some(ca.clone()),
            |f| matches!(f, EnrollmentFailure::Unreachable(_)),
        ),
        // Without the MDM's CA among its anchors the device cannot trust the server.
        (sim.mdm_enrollment_url(), None, |f| {
            matches!(f, EnrollmentFailure::Unreachable(_))
        }),
    ];
    let ipad = sim.cart.device(1).unwrap().clone();
    for (url, anchor, expected) in cases {
        {
            let mut state = ipad.state();
            state.setup_done = false;
            state.profiles.clear();
        }
        prepared(&sim, &url, anchor);
        let outcome = simulator::enrollment::finish_setup_assistant(&ipad).await;
        let SetupOutcome::Failed(why) = &outcome else {
            panic!("{url}: {outcome:?}");
        };
        assert!(expected(why), "{url}: {why}");
        let state = ipad.state();
        assert!(!state.setup_done, "{url}: still in Setup Assistant");
        assert!(state.profiles.is_empty(), "{url}: nothing installed");
        assert_eq!(state.enrollment, Some(Enrollment::Failed(why.clone())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_assistant_needs_activation_and_without_a_url_enrolls_nowhere() {
    let (_dir, sim) = start(ONE_IPAD).await;
    let ipad = sim.cart.device(1).unwrap().clone();
    assert_eq!(
        simulator::enrollment::finish_setup_assistant(&ipad).await,
        SetupOutcome::NotActivated
    );
    ipad.state().activated = true;
    assert_eq!(
        simulator::enrollment::finish_setup_assistant(&ipad).await,
        SetupOutcome::FinishedWithoutMdm
    );
    assert!(ipad.state().setup_done);
    assert!(sim.mdm_server().seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_line_and_the_timeline_finish_setup_assistant() {
    let (_dir, sim) = start(
        "[[device]]\nmodel = \"iPad12,1\"\n[[device]]\nmodel = \"iPad12,1\"\n\
         [[timeline]]\nat_ms = 0\nslot = 2\naction = \"setup\"\n",
    )
    .await;
    let ca = sim.mdm_server().ca_der.clone();
    for slot in [1, 2] {
        let mut state = sim.cart.device(slot).unwrap().state();
        state.activated = true;
        let mut cc = plist::Dictionary::new();
        cc.insert("ConfigurationURL".into(), sim.mdm_enrollment_url().into());
        cc.insert(
            "AnchorCertificates".into(),
            Value::Array(vec![Value::Data(ca.clone())]),
        );
        state.cloud_config = Some(cc);
    }
    let answer = simulator::control::execute(&sim.cart, "setup 1").await;
    assert!(
        answer.starts_with("ok slot 1: Setup Assistant finished; enrolled"),
        "{answer}"
    );
    assert!(
        simulator::control::execute(&sim.cart, "setup 9")
            .await
            .starts_with("error:")
    );

    let _timeline = sim.spawn_timeline();
    let ipad = sim.cart.device(2).unwrap().clone();
    for _ in 0..200 {
        if ipad.state().setup_done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        matches!(ipad.state().enrollment, Some(Enrollment::Enrolled { .. })),
        "the timeline's setup enrolled slot 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_organization_is_read_from_the_scenario_and_excludes_ade() {
    let (_dir, sim) =
        start("[[device]]\nmodel = \"iPad12,1\"\nother_organization = \"Shelbyville Academy\"\n")
            .await;
    let ipad = sim.cart.device(1).unwrap().clone();
    assert_eq!(
        ipad.spec.other_organization.as_deref(),
        Some("Shelbyville Academy")
    );
    assert!(
        ipad.state().cloud_config.is_none(),
        "nothing before activation (applied by activation: tests/station_attention.rs)"
    );
    let bad: Result<Scenario, _> =
        toml::from_str("[[device]]\nade = true\nother_organization = \"X\"\n");
    assert!(bad.unwrap().validate().unwrap_err().contains("choose one"));
}
