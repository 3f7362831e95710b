//! The MCInstall client against virtual iPads that follow the device rules described in
//! `docs/protocol.md` (§3.3 requests, §3.4 errors, §3.5 escalation, §3.6 silent and downloaded
//! installs, §3.7 device states, §5.3 the device's rewrite of the cloud configuration).

use std::time::Duration;

use mcinstall::{ChallengeSigner, EraseOutcome, McInstallClient, McInstallError, Timeouts};
use plist::{Dictionary, Value};
use testcart::{Cart, SignsWrongBytes, new_identity, supervised_cloud_configuration};

const SCENARIO: &str = r#"
seed = 21

[[device]]            # 1: fresh, activated, in Setup Assistant: the prepare path
model = "iPad12,1"
activated = true

[[device]]            # 2: fresh, not activated, with lockdownd's MCInstall rule switched off
activated = false
mcinstall_before_activation = true

[[device]]            # 3: set up by a user: a cloud configuration exists
activated = true
setup_done = true
pairing = "accept"

[[device]]            # 4: assigned to ADE in Apple School Manager; its download takes 1.5 s
activated = true
ade = true
ade_organization = "Springfield Schools"
ade_configuration_url = "https://mdm.example.org/enroll"
ade_apply_ms = 1500

[[device]]            # 5: fresh, activated: erased in a test
activated = true
erase_reattach_ms = 300

[[device]]            # 6: out of the box: not activated, lockdownd's rules as they are
"#;

async fn mcinstall(cart: &Cart, slot: u32) -> McInstallClient {
    let (provider, _) = cart.provider(slot).await;
    McInstallClient::connect(&provider).await.unwrap()
}

fn cloud_configuration(supervisor: &[u8]) -> Dictionary {
    let mut cc = supervised_cloud_configuration(supervisor);
    cc.insert(
        "OrganizationMagic".into(),
        "6A1B3C9E-0D4F-4B7A-9C2E-1F0A2B3C4D5E".into(),
    );
    cc.insert(
        "SkipSetup".into(),
        Value::Array(vec!["AppleID".into(), "Siri".into(), "Privacy".into()]),
    );
    cc
}

/// A Wi-Fi configuration profile.
fn wifi_profile(identifier: &str, ssid: &str) -> Vec<u8> {
    let mut wifi = Dictionary::new();
    wifi.insert("PayloadType".into(), "com.apple.wifi.managed".into());
    wifi.insert(
        "PayloadIdentifier".into(),
        format!("{identifier}.wifi").into(),
    );
    wifi.insert(
        "PayloadUUID".into(),
        "0F8E4C1A-2B3D-4E5F-8A9B-0C1D2E3F4A5B".into(),
    );
    wifi.insert("PayloadVersion".into(), 1.into());
    wifi.insert("SSID_STR".into(), ssid.into());
    wifi.insert("EncryptionType".into(), "WPA2".into());
    wifi.insert("Password".into(), "correct horse".into());
    wifi.insert("AutoJoin".into(), true.into());
    let mut p = Dictionary::new();
    p.insert("PayloadType".into(), "Configuration".into());
    p.insert("PayloadIdentifier".into(), identifier.into());
    p.insert(
        "PayloadUUID".into(),
        "7C0E1D2F-3A4B-4C5D-9E6F-7A8B9C0D1E2F".into(),
    );
    p.insert("PayloadVersion".into(), 1.into());
    p.insert("PayloadDisplayName".into(), format!("Wi-Fi {ssid}").into());
    p.insert(
        "PayloadOrganization".into(),
        "Springfield Elementary".into(),
    );
    p.insert(
        "PayloadContent".into(),
        Value::Array(vec![Value::Dictionary(wifi)]),
    );
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &p).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_requests_on_a_fresh_ipad() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 1).await;
    mc.hello_host_identifier().await.unwrap();
    mc.flush().await.unwrap();
    assert!(mc.get_profile_list().await.unwrap().is_empty());
    assert_eq!(mc.get_cloud_configuration().await.unwrap(), None);
    assert_eq!(mc.get_stored_profile().await.unwrap(), None);
    // A missing identifier is acknowledged.
    mc.remove_profile("org.example.nothing").await.unwrap();
    mc.set_wifi_power_state(false).await.unwrap();
    assert!(!cart.sim.cart.device(1).unwrap().state().wifi_power);
    mc.set_wifi_power_state(true).await.unwrap();
    assert!(cart.sim.cart.device(1).unwrap().state().wifi_power);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_supervise_escalate_and_install_silently() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let mut mc = mcinstall(&cart, 1).await;

    mc.flush().await.unwrap();
    assert_eq!(mc.get_cloud_configuration().await.unwrap(), None);
    mc.hello_host_identifier().await.unwrap();
    mc.set_cloud_configuration(&cloud_configuration(identity.certificate_der()))
        .await
        .unwrap();
    mc.hello_host_identifier().await.unwrap();
    let cc = mc
        .get_cloud_configuration()
        .await
        .unwrap()
        .expect("a cloud configuration now");
    assert_eq!(cc["IsSupervised"].as_boolean(), Some(true));
    // The device's rewrite (`docs/protocol.md` §5.3): no ConfigurationURL ⇒ UI complete;
    // IsMandatory forced.
    assert_eq!(cc["CloudConfigurationUIComplete"].as_boolean(), Some(true));
    assert_eq!(cc["ConfigurationWasApplied"].as_boolean(), Some(true));
    assert_eq!(cc["IsMandatory"].as_boolean(), Some(true));
    assert_eq!(cc["IsMDMUnremovable"].as_boolean(), Some(false));

    // A second configuration is refused: 14002, with the device's words.
    match mc
        .set_cloud_configuration(&cloud_configuration(identity.certificate_der()))
        .await
    {
        Err(e @ McInstallError::AlreadyConfigured { .. }) => {
            assert!(e.to_string().contains("already present"), "{e}")
        }
        other => panic!("expected AlreadyConfigured, got {other:?}"),
    }

    // Supervised-only requests need escalation on this connection.
    let profile = wifi_profile("org.springfield.wifi", "Springfield");
    match mc.install_profile_silent(&profile).await {
        Err(McInstallError::CommandFormatError {
            request: "InstallProfileSilent",
            ..
        }) => {}
        other => panic!("expected CommandFormatError, got {other:?}"),
    }
    match mc.proceed_with_keybag_migration().await {
        Err(McInstallError::CommandFormatError { .. }) => {}
        other => panic!("expected CommandFormatError, got {other:?}"),
    }

    mc.escalate_with(&identity).await.unwrap();
    assert!(mc.is_escalated());
    mc.install_profile_silent(&profile).await.unwrap();
    let list = mc.get_profile_list().await.unwrap();
    let installed = list.get("org.springfield.wifi").expect("installed");
    assert_eq!(installed.display_name.as_deref(), Some("Wi-Fi Springfield"));
    assert_eq!(
        installed.uuid.as_deref(),
        Some("7C0E1D2F-3A4B-4C5D-9E6F-7A8B9C0D1E2F")
    );
    assert_eq!(installed.version, Some(1));
    assert_eq!(
        installed.organization.as_deref(),
        Some("Springfield Elementary")
    );
    assert!(installed.is_active);
    assert!(!installed.removal_disallowed);

    // Unsupervised commands keep working after escalation (`docs/protocol.md` §3.1).
    mc.hello_host_identifier().await.unwrap();
    mc.remove_profile("org.springfield.wifi").await.unwrap();
    assert!(mc.get_profile_list().await.unwrap().is_empty());

    // A new connection starts unescalated.
    drop(mc);
    let mut mc = mcinstall(&cart, 1).await;
    assert!(matches!(
        mc.install_profile_silent(&profile).await,
        Err(McInstallError::CommandFormatError { .. })
    ));
    // Plain InstallProfile on a supervised iPad in Setup Assistant installs without a prompt.
    mc.install_profile(&wifi_profile("org.springfield.guest", "Guest"))
        .await
        .unwrap();
    let ids: Vec<String> = mc
        .get_profile_list()
        .await
        .unwrap()
        .identifiers()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids, ["org.springfield.guest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_failures_are_typed() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let stranger = new_identity("Shelbyville");
    let mut mc = mcinstall(&cart, 1).await;

    // No cloud configuration yet: every certificate is rejected.
    assert!(matches!(
        mc.escalate_with(&identity).await,
        Err(McInstallError::CertificateRejected { .. })
    ));
    // go-ios's "unsupervised escalate" with a dummy certificate.
    assert!(matches!(
        mc.escalate_request(&[0]).await,
        Err(McInstallError::CertificateRejected { .. })
    ));

    mc.set_cloud_configuration(&cloud_configuration(identity.certificate_der()))
        .await
        .unwrap();
    // Another identity's certificate.
    assert!(matches!(
        mc.escalate_with(&stranger).await,
        Err(McInstallError::CertificateRejected { .. })
    ));
    // The right certificate, signed by the wrong key.
    match mc.escalate(identity.certificate_der(), &stranger).await {
        Err(McInstallError::SignedRequestRejected { .. }) => {}
        other => panic!("expected SignedRequestRejected, got {other:?}"),
    }
    // The right identity, but other bytes than the challenge.
    match mc.escalate_with(&SignsWrongBytes(&identity)).await {
        Err(McInstallError::SignedRequestRejected { .. }) => {}
        other => panic!("expected SignedRequestRejected, got {other:?}"),
    }
    // A response to a challenge that was already spent.
    let challenge = mc
        .escalate_request(identity.certificate_der())
        .await
        .unwrap();
    assert_eq!(challenge.len(), 8);
    let signed = identity.sign(&challenge).unwrap();
    mc.escalate_response(&signed).await.unwrap();
    assert!(matches!(
        mc.escalate_response(&signed).await,
        Err(McInstallError::SignedRequestRejected { .. })
    ));
    // The connection was escalated by the good response.
    mc.proceed_with_keybag_migration().await.unwrap();
    mc.install_profile_silent(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdownd_refuses_mcinstall_until_the_ipad_is_activated() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(6).await;
    match McInstallClient::connect(&provider).await {
        Err(McInstallError::Lockdown(lockdown::LockdownError::Device { request, name })) => {
            assert_eq!((request, name.as_str()), ("StartService", "InvalidService"))
        }
        other => panic!("expected InvalidService, got {other:?}"),
    }
    // Activation (here set directly; the activation flow has its own tests) opens it.
    cart.sim.cart.device(6).unwrap().state().activated = true;
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    assert_eq!(mc.get_cloud_configuration().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_state_refusals_33003_14002_33004() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let cc = cloud_configuration(identity.certificate_der());

    let mut not_activated = mcinstall(&cart, 2).await;
    match not_activated.set_cloud_configuration(&cc).await {
        Err(e @ McInstallError::NotActivated { .. }) => {
            assert!(e.to_string().contains("not activated"), "{e}")
        }
        other => panic!("expected NotActivated, got {other:?}"),
    }
    assert_eq!(
        not_activated.get_cloud_configuration().await.unwrap(),
        None,
        "nothing was stored"
    );

    let mut set_up = mcinstall(&cart, 3).await;
    let existing = set_up.get_cloud_configuration().await.unwrap();
    assert!(
        existing.is_some(),
        "a set-up iPad has a cloud configuration"
    );
    match set_up.set_cloud_configuration(&cc).await {
        Err(McInstallError::AlreadyConfigured { description }) => {
            assert!(!description.is_empty())
        }
        other => panic!("expected AlreadyConfigured, got {other:?}"),
    }

    let mut ade = mcinstall(&cart, 4).await;
    match ade.set_cloud_configuration(&cc).await {
        Err(e @ McInstallError::MustUseAde { .. }) => {
            assert!(e.to_string().contains("DEP"), "{e}")
        }
        other => panic!("expected MustUseAde, got {other:?}"),
    }
    // The ADE path: the device needs a network (a Wi-Fi profile), then fetches its own
    // configuration, which takes its time.
    match ade.download_and_apply_cloud_configuration(None, None).await {
        Err(McInstallError::Device { chain, .. }) => {
            assert_eq!(chain[0].code, Some(-1009));
            assert_eq!(chain[0].domain.as_deref(), Some("NSURLErrorDomain"));
        }
        other => panic!("expected the offline error, got {other:?}"),
    }
    ade.install_profile(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
    ade.download_and_apply_cloud_configuration(None, None)
        .await
        .unwrap();
    let cc = ade.get_cloud_configuration().await.unwrap().unwrap();
    assert_eq!(
        cc["OrganizationName"].as_string(),
        Some("Springfield Schools")
    );
    assert_eq!(
        cc["ConfigurationURL"].as_string(),
        Some("https://mdm.example.org/enroll")
    );

    // DownloadAndApplyCloudConfiguration on an iPad that is not assigned: a general error,
    // with the device's chain.
    let mut fresh = mcinstall(&cart, 1).await;
    fresh
        .install_profile(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
    match fresh
        .download_and_apply_cloud_configuration(Some("teacher"), Some("secret"))
        .await
    {
        Err(McInstallError::Device { status, chain, .. }) => {
            assert_eq!(status, "Error");
            assert_eq!(chain[0].code, Some(33005));
        }
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_types_and_malformed_requests() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 1).await;
    let mut cc = Dictionary::new();
    cc.insert("IsSupervised".into(), "yes".into());
    match mc.set_cloud_configuration(&cc).await {
        Err(McInstallError::CloudConfigInvalid { description }) => {
            assert!(!description.is_empty())
        }
        other => panic!("expected CloudConfigInvalid, got {other:?}"),
    }
    // Raw requests: an unknown type, and StoreProfile with another purpose.
    let mut unknown = Dictionary::new();
    unknown.insert("RequestType".into(), "NoSuchRequest".into());
    let reply = mc
        .exchange("NoSuchRequest", &unknown, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(
        mcinstall::error::check_reply("NoSuchRequest", &reply),
        Err(McInstallError::CommandFormatError { .. })
    ));
    let mut store = Dictionary::new();
    store.insert("RequestType".into(), "StoreProfile".into());
    store.insert("ProfileData".into(), Value::Data(wifi_profile("a.b", "c")));
    store.insert("Purpose".into(), "Later".into());
    let reply = mc
        .exchange("StoreProfile", &store, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(
        mcinstall::error::check_reply("StoreProfile", &reply),
        Err(McInstallError::CommandFormatError { .. })
    ));
    // An unparsable profile: a general device error that keeps the device's text.
    match mc.install_profile(b"not a profile").await {
        Err(e @ McInstallError::Device { .. }) => assert!(e.to_string().contains("profile"), "{e}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // The connection still works.
    mc.hello_host_identifier().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_profile_round_trip() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 1).await;
    let profile = wifi_profile("org.springfield.later", "Later");
    mc.store_profile(&profile).await.unwrap();
    assert_eq!(mc.get_stored_profile().await.unwrap(), Some(profile));
    assert!(
        mc.get_profile_list().await.unwrap().is_empty(),
        "stored, not installed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_install_on_an_unsupervised_set_up_ipad_only_downloads() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 3).await;
    mc.install_profile(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
    assert!(
        mc.get_profile_list()
            .await
            .unwrap()
            .get("org.springfield.wifi")
            .is_none(),
        "the user must approve it in Settings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_device_succeeds_and_the_ipad_comes_back_fresh() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let before = cart.device(5).await.device_id;
    let mut mc = mcinstall(&cart, 5).await;
    mc.set_cloud_configuration(&cloud_configuration(identity.certificate_der()))
        .await
        .unwrap();
    let outcome = mc.erase_device(true, false).await.unwrap();
    assert!(
        matches!(
            outcome,
            EraseOutcome::Acknowledged | EraseOutcome::ConnectionClosed
        ),
        "{outcome:?}"
    );
    // Back on USB after the reset (a new DeviceID), in Setup Assistant, unactivated (so
    // lockdownd refuses MCInstall again), with no configuration; it pairs again.
    let device = cart.device_after_reattach(5, before).await;
    let (session, record) = lockdown::trusted_session(device, None, Duration::from_secs(10))
        .await
        .unwrap();
    let provider = session.provider(record);
    assert!(matches!(
        McInstallClient::connect(&provider).await,
        Err(McInstallError::Lockdown(lockdown::LockdownError::Device { name, .. })) if name == "InvalidService"
    ));
    cart.sim.cart.device(5).unwrap().state().activated = true;
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    assert_eq!(mc.get_cloud_configuration().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_is_a_timeout_with_configurable_deadlines() {
    let scenario = format!(
        "{SCENARIO}\n{}",
        r#"
[[fault]]
slot = 1
request = "GetProfileList"
nth = 1
action = "delay"
ms = 2000
"#
    );
    let cart = Cart::start(&scenario).await;
    let (provider, _) = cart.provider(1).await;
    let timeouts = Timeouts {
        reply: Duration::from_millis(500),
        ..Timeouts::default()
    };
    let mut mc = McInstallClient::connect_with_timeouts(&provider, timeouts)
        .await
        .unwrap();
    match mc.get_profile_list().await {
        Err(McInstallError::Timeout { request, after }) => {
            assert_eq!(request, "GetProfileList");
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A new connection works (the second GetProfileList has no fault).
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    assert!(mc.get_profile_list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_pairing_false_then_supervised_pairing_end_to_end() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let (provider, first) = cart.provider(1).await;
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    let mut cc = cloud_configuration(identity.certificate_der());
    cc.insert("AllowPairing".into(), false.into());
    mc.set_cloud_configuration(&cc).await.unwrap();
    drop(mc);

    // The device deleted every pairing record: our first record no longer opens a session.
    let device = cart.device(1).await;
    let mut s = lockdown::DeviceSession::connect(device.clone())
        .await
        .unwrap();
    assert!(matches!(
        s.start_session(&first).await,
        Err(lockdown::LockdownError::InvalidHostId)
    ));

    // Supervised pairing gets us back in, and MCInstall works with the new record.
    let mut s = lockdown::DeviceSession::connect(device.clone())
        .await
        .unwrap();
    let record =
        lockdown::pair_supervised_and_save(&mut s, Some(&cart.store), Some("cartprep"), &identity)
            .await
            .unwrap();
    let (session, _) = lockdown::trusted_session(device, Some(&cart.store), Duration::from_secs(3))
        .await
        .unwrap();
    let mut mc = McInstallClient::connect(&session.provider(record))
        .await
        .unwrap();
    mc.escalate_with(&identity).await.unwrap();
    mc.install_profile_silent(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_device_counts_a_dropped_link_as_success() {
    // The link drops instead of the acknowledgement (the reset won the race).
    let scenario = format!(
        "{SCENARIO}\n{}",
        r#"
[[fault]]
slot = 1
request = "EraseDevice"
nth = 1
action = "drop"
"#
    );
    let cart = Cart::start(&scenario).await;
    let mc = mcinstall(&cart, 1).await;
    assert_eq!(
        mc.erase_device(false, true).await.unwrap(),
        EraseOutcome::ConnectionClosed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ade_download_takes_its_time_and_a_short_deadline_gives_up_on_it() {
    assert!(
        Timeouts::default().cloud_configuration_download
            >= mcinstall::MIN_CLOUD_CONFIGURATION_DOWNLOAD,
        "the default deadline outlasts a slow ADE download"
    );
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(4).await;
    let timeouts = Timeouts {
        cloud_configuration_download: Duration::from_millis(300),
        ..Timeouts::default()
    };
    let mut mc = McInstallClient::connect_with_timeouts(&provider, timeouts)
        .await
        .unwrap();
    mc.install_profile(&wifi_profile("org.springfield.wifi", "Springfield"))
        .await
        .unwrap();
    match mc.download_and_apply_cloud_configuration(None, None).await {
        Err(McInstallError::Timeout { request, after }) => {
            assert_eq!(request, "DownloadAndApplyCloudConfiguration");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The device finishes the download it started; a new connection finds it applied.
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    let mut held = None;
    for _ in 0..40 {
        held = mc.get_cloud_configuration().await.unwrap();
        if held.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = held.expect("the configuration arrives once the device is done");
    assert_eq!(held["ConfigurationSource"].as_unsigned_integer(), Some(1));
}
