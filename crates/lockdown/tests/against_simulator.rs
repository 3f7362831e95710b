//! The lockdown layer against virtual iPads: sessions, values, pairing behaviours, pair-record
//! storage, the Listen loop and injected faults.

use std::time::Duration;

use lockdown::{DeviceSession, LockdownError};
use testcart::Cart;
use usbmux::{DeviceEvent, UsbmuxClient};

/// One iPad, activated and still in Setup Assistant: it pairs silently and lockdownd starts
/// MCInstall for it (a new one is refused MCInstall until activated).
const ACTIVATED: &str = r#"
seed = 11

[[device]]
model = "iPad12,1"
ios = "17.6.1"
activated = true
"#;

const SCENARIO: &str = r#"
seed = 11

[[device]]            # 1: fresh, in Setup Assistant: pairs silently
model = "iPad12,1"
ios = "17.6.1"

[[device]]            # 2: set up, asks "Trust This Computer?" twice, then trusted
model = "iPad13,18"
setup_done = true
activated = true
pairing = "dialog"
dialog_attempts = 2
name = "Room 12 iPad"

[[device]]            # 3: the user taps Don't Trust
pairing = "deny"
setup_done = true

[[device]]            # 4: locked with a passcode (Trust asked twice once unlocked)
pairing = "locked"
passcode = true
setup_done = true

[[device]]            # 5: nobody ever answers the prompt
pairing = "dialog"
dialog_attempts = 1000
setup_done = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_values_before_pairing_and_protected_ones_refused() {
    let cart = Cart::start(SCENARIO).await;
    let ipad = cart.sim.cart.device(1).unwrap().clone();
    let mut s = DeviceSession::connect(cart.device(1).await).await.unwrap();
    assert_eq!(s.query_type().await.unwrap(), "com.apple.mobile.lockdown");
    assert_eq!(s.get_string("ProductType").await.unwrap(), "iPad12,1");
    assert_eq!(s.get_string("ProductVersion").await.unwrap(), "17.6.1");
    assert_eq!(s.get_string("UniqueDeviceID").await.unwrap(), ipad.udid());
    assert_eq!(s.get_string("DeviceClass").await.unwrap(), "iPad");
    let all = s.get_value(None, None).await.unwrap();
    let all = all.as_dictionary().unwrap();
    assert!(all.get("SerialNumber").is_none(), "serial is not public");
    assert_eq!(all["HardwareModel"].as_string(), Some("J181AP"));
    match s.get_value(Some("SerialNumber"), None).await {
        Err(LockdownError::Device { name, .. }) => assert_eq!(name, "GetProhibited"),
        other => panic!("expected GetProhibited, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_a_fresh_ipad_saves_the_record_everywhere_and_opens_a_tls_session() {
    let cart = Cart::start(SCENARIO).await;
    let ipad = cart.sim.cart.device(1).unwrap().clone();
    let device = cart.device(1).await;
    let (mut s, record) =
        lockdown::trusted_session(device.clone(), Some(&cart.store), Duration::from_secs(10))
            .await
            .unwrap();
    assert!(s.in_session());
    assert_eq!(
        s.get_string("SerialNumber").await.unwrap(),
        ipad.spec.identity.serial_number
    );
    assert_eq!(
        s.get_string("ActivationState").await.unwrap(),
        "Unactivated"
    );
    let intl = s
        .get_value(None, Some("com.apple.international"))
        .await
        .unwrap();
    assert_eq!(
        intl.as_dictionary().unwrap()["Language"].as_string(),
        Some("en")
    );

    // usbmuxd has it (other tools find it there) and so does our state folder, 0600.
    let from_mux = UsbmuxClient::connect(&device.addr)
        .await
        .unwrap()
        .read_pair_record(&device.udid)
        .await
        .unwrap()
        .expect("usbmuxd stored the record");
    assert_eq!(
        lockdown::pair_records::parse(&from_mux).unwrap().host_id,
        record.host_id
    );
    let ours = cart.store.dir().join(format!("{}.plist", device.udid));
    assert_eq!(std::fs::read(&ours).unwrap(), from_mux);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        ipad.state().hosts.contains_key(&record.host_id),
        "the iPad trusts our HostID"
    );
    s.stop_session().await.unwrap();
    // Without a session, a new connection sees the public values only.
    let mut s = DeviceSession::connect(device).await.unwrap();
    assert_eq!(s.get_string("ProductType").await.unwrap(), "iPad12,1");
    assert!(s.get_string("SerialNumber").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_name_set_in_one_session_is_read_back_in_the_next() {
    let cart = Cart::start(SCENARIO).await;
    let device = cart.device(1).await;
    let (mut s, _) =
        lockdown::trusted_session(device.clone(), Some(&cart.store), Duration::from_secs(10))
            .await
            .unwrap();
    s.set_value("DeviceName", "Cart A - 01".into(), None)
        .await
        .unwrap();
    s.set_value("Language", "fr".into(), Some("com.apple.international"))
        .await
        .unwrap();
    drop(s);
    // The second session reuses the stored record: no new pairing.
    let hosts_before = cart.sim.cart.device(1).unwrap().state().hosts.len();
    let (mut s, _) = lockdown::trusted_session(device, Some(&cart.store), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        cart.sim.cart.device(1).unwrap().state().hosts.len(),
        hosts_before
    );
    assert_eq!(s.get_string("DeviceName").await.unwrap(), "Cart A - 01");
    let lang = s
        .get_value(Some("Language"), Some("com.apple.international"))
        .await
        .unwrap();
    assert_eq!(lang.as_string(), Some("fr"));
    match s.set_value("SerialNumber", "X".into(), None).await {
        Err(LockdownError::Device { name, .. }) => assert_eq!(name, "ImmutableValue"),
        other => panic!("expected ImmutableValue, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_prompt_is_retried_until_the_user_taps_trust() {
    let cart = Cart::start(SCENARIO).await;
    let (mut s, _) = lockdown::trusted_session(
        cart.device(2).await,
        Some(&cart.store),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(s.get_string("DeviceName").await.unwrap(), "Room 12 iPad");
    assert!(
        !cart
            .sim
            .cart
            .device(2)
            .unwrap()
            .state()
            .trust_prompt
            .is_showing(),
        "prompt answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_trust_prompt_is_pending_one_pairing_request_is_sent_again() {
    let cart = Cart::start(SCENARIO).await;
    // Asks twice: the first call gives up after one "pending", the second after another, the
    // third is trusted. Each call asks again as the station does while showing "tap Trust".
    let mut outcomes = Vec::new();
    let record = loop {
        match lockdown::trusted_session(
            cart.device(2).await,
            Some(&cart.store),
            Duration::from_millis(500),
        )
        .await
        {
            Ok((_, record)) => break record,
            Err(e) => {
                assert!(
                    matches!(e, LockdownError::TrustPromptUnanswered(_)),
                    "{e:?}"
                );
                outcomes.push(e);
                assert!(outcomes.len() < 5, "trusted after two prompts");
            }
        }
    };
    let sent = cart
        .sim
        .cart
        .device(2)
        .unwrap()
        .state()
        .pair_request_host_ids
        .clone();
    assert_eq!(sent.len(), 3, "two pending answers, then trusted: {sent:?}");
    assert!(
        sent.iter().all(|h| *h == record.host_id),
        "one HostID: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors() {
    let cart = Cart::start(SCENARIO).await;
    let wait = Duration::from_secs(3);
    let denied = lockdown::trusted_session(cart.device(3).await, None, wait).await;
    assert!(
        matches!(denied, Err(LockdownError::UserDeniedPairing)),
        "{denied:?}"
    );
    let locked = lockdown::trusted_session(cart.device(4).await, None, wait).await;
    assert!(
        matches!(locked, Err(LockdownError::PasswordProtected)),
        "{locked:?}"
    );
    let unanswered = lockdown::trusted_session(cart.device(5).await, None, wait).await;
    assert!(
        matches!(unanswered, Err(LockdownError::TrustPromptUnanswered(w)) if w == wait),
        "{unanswered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_ipad_refuses_pairing_until_unlocked_then_asks_for_trust() {
    let cart = Cart::start(SCENARIO).await;
    let wait = Duration::from_secs(10);
    for _ in 0..2 {
        let locked = lockdown::trusted_session(cart.device(4).await, None, wait).await;
        assert!(
            matches!(locked, Err(LockdownError::PasswordProtected)),
            "{locked:?}"
        );
    }
    let ipad = cart.sim.cart.device(4).unwrap().clone();
    assert!(ipad.state().hosts.is_empty(), "nothing paired while locked");

    cart.sim.cart.unlock(4).unwrap();
    let (mut s, _) = lockdown::trusted_session(cart.device(4).await, None, wait)
        .await
        .expect("pairs once unlocked");
    assert!(s.get_string("SerialNumber").await.is_ok());
    // Unlocked, it asked "Trust This Computer?" first (its two prompts, then trusted).
    let pairs = ipad.state().pair_request_host_ids.len();
    assert_eq!(pairs, 2 + 3, "two refusals, two prompts, one success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_pairing_is_repaired() {
    let cart = Cart::start(SCENARIO).await;
    let device = cart.device(1).await;
    let (_, first) =
        lockdown::trusted_session(device.clone(), Some(&cart.store), Duration::from_secs(10))
            .await
            .unwrap();
    cart.sim.cart.device(1).unwrap().state().hosts.clear();
    let (mut s, second) =
        lockdown::trusted_session(device, Some(&cart.store), Duration::from_secs(10))
            .await
            .unwrap();
    assert_ne!(first.host_id, second.host_id);
    assert!(s.get_string("SerialNumber").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_loop_runs_in_a_spawned_task_with_every_property() {
    let cart = Cart::start(SCENARIO).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let addr = cart.sim.address().clone();
    let task = tokio::spawn(async move { usbmux::listen_loop(&addr, tx).await });
    let mut present = Vec::new();
    for _ in 0..5 {
        match next(&mut rx).await {
            DeviceEvent::Attached(p) => present.push(p),
            other => panic!("expected Attached, got {other:?}"),
        }
    }
    let first = present
        .iter()
        .find(|p| p.udid == cart.sim.cart.device(1).unwrap().udid())
        .unwrap();
    assert_eq!(first.connection_type.as_deref(), Some("USB"));
    assert_eq!(first.product_id, Some(0x12AB));
    assert_eq!(first.location_id, Some((1 << 16) | 3));
    assert_eq!(first.connection_speed, Some(480_000_000));

    cart.sim.cart.unplug(1).unwrap();
    assert_eq!(
        next(&mut rx).await,
        DeviceEvent::Detached {
            device_id: first.device_id
        }
    );
    let new_id = cart.sim.cart.plug(1).unwrap();
    match next(&mut rx).await {
        DeviceEvent::Attached(p) => assert_eq!(p.device_id, new_id),
        other => panic!("expected Attached, got {other:?}"),
    }
    // Pairing saves the record with the DeviceID: listeners hear Paired.
    let _ = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        DeviceEvent::Paired { device_id: new_id }
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_become_errors_not_hangs_or_panics() {
    let scenario = format!(
        "{SCENARIO}\n{}",
        r#"
[[fault]]
slot = 1
request = "QueryType"
nth = 1
action = "drop"

[[fault]]
slot = 1
request = "QueryType"
nth = 2
action = "malformed"

[[fault]]
slot = 1
request = "QueryType"
nth = 3
action = "delay"
ms = 3000
"#
    );
    let cart = Cart::start(&scenario).await;
    let device = cart.device(1).await;

    let mut s = DeviceSession::connect(device.clone()).await.unwrap();
    let dropped = s.query_type().await;
    assert!(
        dropped.is_err(),
        "a dropped connection is an error: {dropped:?}"
    );

    let mut s = DeviceSession::connect(device.clone()).await.unwrap();
    let malformed = s.query_type().await;
    assert!(
        matches!(
            malformed,
            Err(LockdownError::MalformedReply(_)) | Err(LockdownError::Io(_))
        ),
        "{malformed:?}"
    );

    let mut s = DeviceSession::connect_with_timeout(device.clone(), Duration::from_millis(500))
        .await
        .unwrap();
    let slow = s.query_type().await;
    assert!(
        matches!(
            slow,
            Err(LockdownError::Timeout {
                operation: "QueryType",
                ..
            })
        ),
        "{slow:?}"
    );

    // The fourth QueryType has no fault: the device still works.
    let mut s = DeviceSession::connect(device).await.unwrap();
    assert_eq!(s.query_type().await.unwrap(), "com.apple.mobile.lockdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_nested_ten_thousand_levels_is_refused_before_idevice_parses_it() {
    let scenario = format!(
        "{SCENARIO}\n{}",
        r#"
[[fault]]
slot = 1
request = "GetValue"
nth = 1
action = "deep"
"#
    );
    let cart = Cart::start(&scenario).await;
    let device = cart.device(1).await;

    let mut s = DeviceSession::connect(device.clone()).await.unwrap();
    match s.get_string("ProductType").await {
        Err(LockdownError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains("nests deeper"), "{e}");
        }
        other => panic!("expected a refused reply, got {other:?}"),
    }

    // The next GetValue has no fault: the device (and this process) still work.
    let mut s = DeviceSession::connect(device).await.unwrap();
    assert_eq!(s.get_string("ProductType").await.unwrap(), "iPad12,1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_reply_inside_the_tls_session_is_refused_too() {
    let scenario = format!(
        "{ACTIVATED}\n{}",
        r#"
[[fault]]
slot = 1
request = "StartService"
nth = 1
action = "deep"
"#
    );
    let cart = Cart::start(&scenario).await;
    let (mut s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(s.in_session());
    match s.start_service("com.apple.mobile.MCInstall").await {
        Err(LockdownError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains("nests deeper"), "{e}");
        }
        other => panic!("expected a refused reply, got {other:?}"),
    }

    // A new session gets its service.
    let (mut s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(s.start_service("com.apple.mobile.MCInstall").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_connections_refuse_a_deep_start_service_reply() {
    let scenario = format!(
        "{ACTIVATED}\n{}",
        r#"
[[fault]]
slot = 1
request = "StartService"
nth = 1
action = "deep"
"#
    );
    let cart = Cart::start(&scenario).await;
    let (s, record) =
        lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
            .await
            .unwrap();
    let provider = s.provider(record);
    let service = "com.apple.mobile.MCInstall";
    let after = Duration::from_secs(10);
    match lockdown::services::connect_plist_service(&provider, service, after).await {
        Err(LockdownError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        other => panic!(
            "expected a refused reply, got {:?}",
            other.map(|_| "a connection")
        ),
    }
    assert!(
        lockdown::services::connect_plist_service(&provider, service, after)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_mid_session_is_an_error_on_the_next_request() {
    let cart = Cart::start(SCENARIO).await;
    let (mut s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    cart.sim.cart.unplug(1).unwrap();
    assert!(s.get_string("SerialNumber").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_service_hands_out_a_port_with_tls() {
    let cart = Cart::start(SCENARIO).await;
    let (mut s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    // (Slot 1 is unactivated: MCInstall would be refused, mobileactivationd is not.)
    let (port, ssl) = s
        .start_service("com.apple.mobileactivationd")
        .await
        .unwrap();
    assert!(port >= 49152);
    assert!(ssl);
    match s.start_service("com.apple.no.such.service").await {
        Err(LockdownError::Device { name, .. }) => assert_eq!(name, "InvalidService"),
        other => panic!("expected InvalidService, got {other:?}"),
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the listen loop is running")
}
