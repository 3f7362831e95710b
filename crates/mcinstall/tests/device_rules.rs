//! MCInstall device rules of `docs/fidelity.md` (§5, §6, §7) that the client has to live with:
//! the "wait" reply after a data migration, profiled's rewrite of the cloud configuration, skip
//! keys the device does not know, and escalation without a certificate.

use std::time::Duration;

use mcinstall::{McInstallClient, McInstallError, Timeouts};
use plist::{Dictionary, Value};
use testcart::{Cart, new_identity, supervised_cloud_configuration};

const SCENARIO: &str = r#"
seed = 31

[[device]]            # 1: a data migration is pending since boot: two requests get "wait"
activated = true
migration_wait_replies = 2

[[device]]            # 2: activated, in Setup Assistant
activated = true

[[device]]            # 3: activated, in Setup Assistant
activated = true
"#;

async fn mcinstall(cart: &Cart, slot: u32) -> McInstallClient {
    let (provider, _) = cart.provider(slot).await;
    McInstallClient::connect(&provider).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_reply_of_a_pending_migration_is_waited_out_and_the_request_sent_again() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 1).await;
    // Two "wait" answers, then the profile list (the device ran the request only then).
    assert!(mc.get_profile_list().await.unwrap().is_empty());
    assert_eq!(
        cart.sim
            .cart
            .device(1)
            .unwrap()
            .state()
            .migration_waits_left,
        0
    );
    // Not a broken stream: the next request on the same connection works.
    mc.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_keeps_saying_wait_is_a_typed_transient_error() {
    let cart = Cart::start(SCENARIO).await;
    cart.sim
        .cart
        .device(1)
        .unwrap()
        .state()
        .migration_waits_left = u32::MAX;
    let (provider, _) = cart.provider(1).await;
    let timeouts = Timeouts {
        migration_wait: Duration::from_millis(1000),
        ..Timeouts::default()
    };
    let mut mc = McInstallClient::connect_with_timeouts(&provider, timeouts)
        .await
        .unwrap();
    match mc.get_cloud_configuration().await {
        Err(e @ McInstallError::StillWaiting { request, .. }) => {
            assert_eq!(request, "GetCloudConfiguration");
            assert!(e.is_transient());
            assert!(e.to_string().contains("unlock the iPad"), "{e}");
        }
        other => panic!("expected StillWaiting, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiled_drops_is_multi_user_unless_supervised_and_clears_only_a_true_await_device_configured()
 {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");

    let mut supervised = supervised_cloud_configuration(identity.certificate_der());
    supervised.insert("IsMultiUser".into(), false.into());
    let mut mc = mcinstall(&cart, 2).await;
    mc.set_cloud_configuration(&supervised).await.unwrap();
    let held = mc.get_cloud_configuration().await.unwrap().unwrap();
    assert_eq!(held["IsMultiUser"].as_boolean(), Some(false), "kept");
    assert!(!held.contains_key("AwaitDeviceConfigured"), "nothing added");

    let mut unsupervised = Dictionary::new();
    unsupervised.insert("AllowPairing".into(), true.into());
    unsupervised.insert("IsSupervised".into(), false.into());
    unsupervised.insert("IsMultiUser".into(), true.into());
    unsupervised.insert("AwaitDeviceConfigured".into(), true.into());
    let mut mc = mcinstall(&cart, 3).await;
    mc.set_cloud_configuration(&unsupervised).await.unwrap();
    let held = mc.get_cloud_configuration().await.unwrap().unwrap();
    assert!(
        !held.contains_key("IsMultiUser"),
        "dropped when unsupervised"
    );
    assert_eq!(held["AwaitDeviceConfigured"].as_boolean(), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_skip_key_on_every_release_is_accepted() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let keys = profiles::expand(&profiles::SkipSelection::All, "15.7").unwrap();
    assert!(
        keys.iter().any(|k| k == "LiquidGlass"),
        "a key newer than 15.7"
    );
    let mut cc = supervised_cloud_configuration(identity.certificate_der());
    let mut skip: Vec<Value> = keys.into_iter().map(Value::String).collect();
    skip.push(Value::String("NoSuchPaneAnywhere".into()));
    cc.insert("SkipSetup".into(), Value::Array(skip.clone()));
    let mut mc = mcinstall(&cart, 2).await;
    mc.set_cloud_configuration(&cc).await.unwrap();
    let held = mc.get_cloud_configuration().await.unwrap().unwrap();
    assert_eq!(held["SkipSetup"].as_array(), Some(&skip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalate_without_a_certificate_is_certificate_rejected() {
    let cart = Cart::start(SCENARIO).await;
    let mut mc = mcinstall(&cart, 2).await;
    let mut request = Dictionary::new();
    request.insert("RequestType".into(), "Escalate".into());
    let reply = mc
        .exchange("Escalate", &request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply["Status"].as_string(), Some("CertificateRejected"));

    let mut request = Dictionary::new();
    request.insert("RequestType".into(), "EscalateResponse".into());
    let reply = mc
        .exchange("EscalateResponse", &request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply["Status"].as_string(), Some("SignedRequestRejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_pairing_as_an_integer_is_stored_as_sent_and_read_as_a_flag() {
    let cart = Cart::start(SCENARIO).await;
    let identity = new_identity("Springfield Elementary");
    let mut cc = supervised_cloud_configuration(identity.certificate_der());
    cc.insert("AllowPairing".into(), Value::Integer(0.into()));
    let (provider, _) = cart.provider(2).await;
    let mut mc = McInstallClient::connect(&provider).await.unwrap();
    mc.set_cloud_configuration(&cc).await.unwrap();
    drop(mc);
    // Stored as sent (an NSNumber on the device)…
    let ipad = cart.sim.cart.device(2).unwrap();
    let held = ipad.state().cloud_config.clone().unwrap();
    assert_eq!(held["AllowPairing"], Value::Integer(0.into()));
    // …and read as "pairing not allowed": the pairing records are gone, and ordinary pairing
    // is refused.
    assert!(ipad.state().hosts.is_empty());
    let device = cart.device(2).await;
    match lockdown::trusted_session(device, None, Duration::from_secs(5)).await {
        Err(lockdown::LockdownError::Device { name, .. }) => assert_eq!(name, "MCProtected"),
        other => panic!("expected MCProtected, got {:?}", other.map(|_| ())),
    }
}
