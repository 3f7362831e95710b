//! usbmuxd builds differ: a Listen message of a type this station does not know, an `Attached`
//! event without the properties clients treat as optional, and the `Paired` event usbmuxd sends
//! after our SavePairRecord all reach the station while it prepares a cart, and none of them
//! interrupts an iPad (issue 10; `docs/fidelity.md` §1).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
use simulator::cart::Broadcast;
use station::Outcome;
use station::status::Light;
use usbmux::DeviceEvent;

const UNKNOWN: &str = "DeviceListChanged";

/// What the station logs (the usbmux crate's Listen reader logs through `tracing`).
fn capture_logs() -> Captured {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_listen_messages_interrupt_no_ipad() {
    let logs = capture_logs();
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), unplugged()])).await;
        let cart = h.sim().cart.clone();

        // Every Paired event usbmuxd sends, by DeviceID.
        let paired = Arc::new(Mutex::new(BTreeSet::new()));
        let (_, mut events) = cart.subscribe();
        let watcher = {
            let paired = paired.clone();
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    if let Broadcast::Event(DeviceEvent::Paired { device_id }) = event {
                        paired.lock().unwrap().insert(device_id);
                    }
                }
            })
        };

        let udids: Vec<String> = (1..=3).map(|s| h.udid(s)).collect();
        let daemon = h.spawn_daemon(false, when_all(udids, &[Light::Done]));
        h.wait_for("the station listening to usbmuxd", |h| {
            h.out.text().contains("connected to usbmuxd")
        })
        .await;

        // While slots 1 and 2 are worked on: three messages of an unknown type, then slot 3
        // arrives with an Attached event that has only DeviceID, LocationID and SerialNumber.
        for _ in 0..3 {
            let mut message = plist::Dictionary::new();
            message.insert("MessageType".into(), UNKNOWN.into());
            cart.send_to_listeners(message);
        }
        cart.set_sparse_attached(true);
        let third = cart.plug(3).expect("slot 3 plugs in");

        let report = daemon.await.unwrap().expect("the daemon runs");
        watcher.abort();
        let out = h.out.text();
        assert_eq!(report.summary.done, 3, "{out}");
        assert_eq!(
            (report.summary.attention, report.summary.failed),
            (0, 0),
            "{out}"
        );

        // The link to usbmuxd was never dropped, and no iPad was told to plug back in.
        assert_eq!(out.matches("connected to usbmuxd").count(), 1, "{out}");
        assert!(!out.contains("lost usbmuxd"), "{out}");
        assert!(!out.contains("UNPLUGGED"), "{out}");

        // One record each, done in one attempt, named in the order they came.
        let records = h.records();
        assert_eq!(records.len(), 3, "{records:#?}");
        for slot in 1..=3u32 {
            let r = h.record(slot);
            let name = format!("Cart A - {slot:02}");
            assert_eq!(r.outcome, Outcome::Done, "slot {slot}");
            assert_eq!(r.attempts, 1, "slot {slot}: {r:#?}");
            assert_eq!(r.name.as_deref(), Some(name.as_str()), "slot {slot}");
            assert_eq!(r.slot.as_deref(), Some(slot.to_string().as_str()));
            let ipad = cart.device(slot).unwrap();
            assert_eq!(ipad.state().device_name, name, "slot {slot}");
        }

        // usbmuxd told listeners each iPad was paired (our SavePairRecord names its DeviceID).
        let paired = paired.lock().unwrap().clone();
        assert_eq!(paired, BTreeSet::from([1, 2, third]), "{out}");
    })
    .await;

    // Skipped, and said once however often it came.
    let logs = logs.text();
    let said = format!("skipping an unknown MessageType {UNKNOWN:?} (logged once)");
    assert_eq!(logs.matches(&said).count(), 1, "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains(&said) && l.contains("WARN")),
        "{logs}"
    );
}
