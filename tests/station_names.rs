//! Names are allocated, not computed: an iPad takes the next free number when it is first
//! named and keeps it for good. The sequence from issue 10 — an iPad that fails before pairing
//! (recorded by UDID, with an earlier first-seen time) and pairs later — used to give two
//! iPads "Cart A - 01".

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use plist::Value;
use simulator::scenario::PairingKind;
use station::status::Light;
use station::{Attention, Outcome};

/// A cloud configuration from another organisation that lets only its supervisor pair.
fn supervised_elsewhere(cert: Vec<u8>) -> plist::Dictionary {
    let mut cc = plist::Dictionary::new();
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("AllowPairing".into(), false.into());
    cc.insert(
        "SupervisorHostCertificates".into(),
        Value::Array(vec![Value::Data(cert)]),
    );
    cc.insert("OrganizationName".into(), "Shelbyville Academy".into());
    cc.insert("ConfigurationSource".into(), 2u64.into());
    cc
}

fn device_name(h: &Harness, slot: u32) -> String {
    h.sim()
        .cart
        .device(slot)
        .unwrap()
        .state()
        .device_name
        .clone()
}

/// Replugs `slot` and waits until its new attempt has ended done.
async fn replug_and_wait(h: &Harness, slot: u32) {
    let attempts = h.record(slot).attempts;
    h.sim().cart.unplug(slot).unwrap();
    h.sim().cart.plug(slot).unwrap();
    h.wait_for("the replugged iPad is done again", |h| {
        h.records().iter().any(|r| {
            r.serial == h.serial(slot) && r.attempts > attempts && r.outcome == Outcome::Done
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_that_pairs_late_takes_the_next_number_and_nobody_is_ever_renamed() {
    within(async {
        let mut set_up = fresh();
        set_up.setup_done = true;
        set_up.activated = Some(true);
        set_up.pairing = PairingKind::Accept;
        let mut locked = fresh();
        locked.pairing = PairingKind::Locked;
        // Slot 1 fails before pairing first; 2 and 3 come later; 4 and 5 need attention (5
        // waits for its passcode all along).
        let h = Harness::new(cart(vec![
            fresh(),
            unplugged(),
            unplugged(),
            set_up,
            locked,
        ]))
        .await;
        let other = tokio::task::spawn_blocking(|| {
            profiles::SupervisionIdentity::create("Shelbyville Academy").unwrap()
        })
        .await
        .unwrap();
        {
            let mut state = h.sim().cart.device(1).unwrap().state();
            state.activated = true;
            state.cloud_config = Some(supervised_elsewhere(other.certificate_der().to_vec()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));

        h.wait_for("slots 1, 4 and 5 need attention", |h| {
            h.status(1)
                .is_some_and(|s| s.attention == Some(Attention::SupervisedByOther))
                && h.status(4)
                    .is_some_and(|s| s.attention == Some(Attention::AlreadySetUp))
                && h.status(5)
                    .is_some_and(|s| s.attention == Some(Attention::Locked))
        })
        .await;

        h.sim().cart.plug(2).unwrap();
        h.wait_for("slot 2 done", |h| h.light(2) == Some(Light::Done))
            .await;

        // Slot 1's school releases it; replugged, it pairs and is prepared.
        h.sim().cart.unplug(1).unwrap();
        h.sim().cart.device(1).unwrap().state().cloud_config = None;
        h.sim().cart.plug(1).unwrap();
        h.wait_for("slot 1 done", |h| h.light(1) == Some(Light::Done))
            .await;

        h.sim().cart.plug(3).unwrap();
        h.wait_for("slot 3 done", |h| h.light(3) == Some(Light::Done))
            .await;

        let expected = [
            (2u32, "Cart A - 01"),
            (1, "Cart A - 02"),
            (3, "Cart A - 03"),
        ];
        let check = |when: &str| {
            for (slot, name) in expected {
                assert_eq!(device_name(&h, slot), name, "slot {slot} {when}");
                assert_eq!(
                    h.record(slot).name.as_deref(),
                    Some(name),
                    "slot {slot} {when}"
                );
            }
        };
        check("after the first run");
        assert_eq!(
            h.records().iter().filter(|r| r.number.is_some()).count(),
            3,
            "attention iPads take no number: {:?}",
            h.records()
        );

        // Re-plugs, in an order that used to shuffle the numbers, rename nobody.
        for slot in [1, 2, 3, 1] {
            replug_and_wait(&h, slot).await;
            check(&format!("after replugging slot {slot}"));
        }

        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");

        // The operator asks for a new name for slot 2 (`cartprep ledger renumber`, station
        // stopped): it takes the next free number; nobody else changes.
        {
            let (ledger, _) = station::Ledger::open(&h.station_dir).unwrap();
            assert_eq!(ledger.release_number(&h.serial(2)).await.unwrap(), Some(0));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        h.wait_for("slot 2 renamed", |h| {
            h.record(2).name.as_deref() == Some("Cart A - 04") && h.light(2) == Some(Light::Done)
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(device_name(&h, 2), "Cart A - 04");
        assert_eq!(device_name(&h, 1), "Cart A - 02");
        assert_eq!(device_name(&h, 3), "Cart A - 03");

        // Slot 5 is still waiting for its passcode, as an iPad waiting for Trust does: it is
        // journaled once it pairs (or the wait ends), so the other four have a record each.
        let records = h.records();
        assert_eq!(records.len(), 4, "one record per iPad: {records:?}");
        assert!(records.iter().all(|r| r.udid != h.udid(5)), "{records:?}");

        // What the station made is its own: folders 0700, files 0600.
        let mode = |p: &std::path::Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&h.station_dir), 0o700);
        assert_eq!(
            mode(&h.station_dir.join(station::ledger::AUDIT_FILE)),
            0o600
        );
        for dir in [station::ledger::DB_DIR, "pair-records"] {
            let dir = h.station_dir.join(dir);
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let want = if path.is_dir() { 0o700 } else { 0o600 };
                assert_eq!(mode(&path), want, "{}", path.display());
            }
        }
    })
    .await;
}
