//! lockdownd device rules of `docs/fidelity.md` §3 that a host meets while preparing an iPad:
//! what SetValue takes for the time, zone, language and locale, and GetValue's strict types.

use std::time::Duration;

use lockdown::{DeviceSession, LockdownError};
use plist::{Dictionary, Value};
use testcart::Cart;

const SCENARIO: &str = r#"
seed = 41

[[device]]            # fresh, unactivated, in Setup Assistant
"#;

async fn session(cart: &Cart) -> DeviceSession {
    let (s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    s
}

fn refused(r: Result<(), LockdownError>) -> String {
    match r {
        Err(LockdownError::Device { name, .. }) => name,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_zone_is_an_iana_name_and_the_offset_follows_it() {
    let cart = Cart::start(SCENARIO).await;
    let mut s = session(&cart).await;
    s.set_value("TimeZone", "Asia/Kolkata".into(), None)
        .await
        .unwrap();
    assert_eq!(s.get_string("TimeZone").await.unwrap(), "Asia/Kolkata");
    let offset = s
        .get_value(Some("TimeZoneOffsetFromUTC"), None)
        .await
        .unwrap();
    assert_eq!(offset.as_real(), Some(19_800.0), "India has no summer time");

    let name = refused(
        s.set_value("TimeZone", "Mars/Olympus_Mons".into(), None)
            .await,
    );
    assert_eq!(name, "SetProhibited");
    assert_eq!(s.get_string("TimeZone").await.unwrap(), "Asia/Kolkata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_and_locale_must_look_like_ios_names() {
    let cart = Cart::start(SCENARIO).await;
    let mut s = session(&cart).await;
    let intl = Some("com.apple.international");
    s.set_value("Language", "fr".into(), intl).await.unwrap();
    s.set_value("Locale", "fr_FR".into(), intl).await.unwrap();
    for (key, bad) in [
        ("Language", "French"),
        ("Language", "fr_FR"),
        ("Locale", "fr-FR"),
        ("Locale", ""),
    ] {
        let name = refused(s.set_value(key, bad.into(), intl).await);
        assert_eq!(name, "SetProhibited", "{key} = {bad:?}");
    }
    let state = cart.sim.cart.device(1).unwrap().state().clone();
    assert_eq!(
        (state.language.as_str(), state.locale.as_str()),
        ("fr", "fr_FR")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_can_be_set_before_activation() {
    let cart = Cart::start(SCENARIO).await;
    let mut s = session(&cart).await;
    assert_eq!(
        s.get_string("ActivationState").await.unwrap(),
        "Unactivated"
    );
    // 2030-01-01T00:00:00Z, as go-ios sends it (an integer).
    let set = 1_893_456_000u64;
    s.set_value("TimeIntervalSince1970", Value::Integer(set.into()), None)
        .await
        .unwrap();
    let read = s
        .get_value(Some("TimeIntervalSince1970"), None)
        .await
        .unwrap()
        .as_real()
        .unwrap();
    assert!(read >= set as f64 && read < set as f64 + 3600.0, "{read}");
    let name = refused(
        s.set_value("TimeIntervalSince1970", "tomorrow".into(), None)
            .await,
    );
    assert_eq!(name, "SetProhibited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_value_with_a_key_or_domain_that_is_not_a_string_is_refused() {
    let cart = Cart::start(SCENARIO).await;
    let mut s = session(&cart).await;
    let idevice = &mut s.client().idevice;
    for (field, value) in [
        ("Key", Value::Integer(7.into())),
        ("Domain", Value::Boolean(true)),
    ] {
        let mut req = Dictionary::new();
        req.insert("Label".into(), "device_rules".into());
        req.insert("Request".into(), "GetValue".into());
        req.insert(field.into(), value);
        idevice
            .send_raw(&usbmux::plist_service::encode(&req).unwrap())
            .await
            .unwrap();
        let head = idevice.read_raw(4).await.unwrap();
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let body = idevice.read_raw(len).await.unwrap();
        let reply = usbmux::plist_service::decode_body(&body).unwrap();
        assert_eq!(
            reply.get("Error").and_then(Value::as_string),
            Some("InvalidRequest"),
            "{field}: {reply:?}"
        );
        assert!(!reply.contains_key("Value"), "{field}");
    }
}
