//! The station on a Mac, whose usbmuxd also lists iPads reached over Wi-Fi (the simulator's macOS
//! flavour), and the "Trust This Computer?" prompt coming back after a replug.

mod common;

use common::*;
use simulator::flavour::Flavour;
use simulator::scenario::{Connection, DeviceEntry, PairingKind};
use simulator::trust_prompt::Tap;
use station::status::Light;
use station::{Attention, Outcome, Step};

/// A set-up iPad (someone's, erasable by the allow list), answering Pair without a prompt.
fn set_up() -> DeviceEntry {
    DeviceEntry {
        setup_done: true,
        activated: Some(true),
        pairing: PairingKind::Accept,
        erase_reattach_ms: Some(500),
        ..fresh()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_mac_only_ipads_on_a_cable_are_prepared_once_and_the_wifi_only_ipad_is_never_erased() {
    within(async {
        let mut scenario = cart(vec![
            // Slot 1: set up, on the cable and on Wi-Fi: erased, then prepared.
            DeviceEntry {
                also_network: true,
                ..set_up()
            },
            // Slot 2: fresh, on the cable and on Wi-Fi.
            DeviceEntry {
                also_network: true,
                ..fresh()
            },
            // Slot 3: a teacher's iPad on the school's Wi-Fi, never on the cart.
            DeviceEntry {
                connection: Connection::Network,
                ..set_up()
            },
        ]);
        scenario.flavour = Flavour::Macos;
        let h = Harness::new(scenario).await;
        let cart = h.sim().cart.clone();
        assert!(cart.network_id(1).is_some() && cart.network_id(3).is_some());
        // The erase policy would allow erasing both set-up iPads, the teacher's included.
        h.write_config(&ConfigSpec {
            erase: format!(
                "policy = \"rules\"\nallow_serials = [\"{}\", \"{}\"]",
                h.serial(1),
                h.serial(3)
            ),
            ..ConfigSpec::default()
        });
        let mut notices = cart.notices();
        let report = h
            .spawn_daemon(
                false,
                when_all(vec![h.udid(1), h.udid(2)], &[Light::Done, Light::Failed]),
            )
            .await
            .unwrap()
            .expect("the daemon runs");
        let out = h.out.text();
        assert_eq!(report.summary.done, 2, "{out}");
        assert_eq!(report.summary, h.board.summary());
        let snapshot = h.board.snapshot();
        assert_eq!(snapshot.devices.len(), 2, "one line per iPad: {out}");
        assert!(h.status(3).is_none(), "the teacher's iPad has no line");
        assert!(
            out.contains(&format!(
                "{}: seen over Wi-Fi \u{2014} not touched",
                h.udid(3)
            )),
            "{out}"
        );
        for slot in [1, 2] {
            assert!(
                !out.contains(&format!("{}: seen over", h.udid(slot))),
                "the Wi-Fi listing of slot {slot} is the iPad on the cable: {out}"
            );
        }

        // Slot 1 erased once; nothing else.
        let mut erased = Vec::new();
        while let Ok(n) = notices.try_recv() {
            if let simulator::Notice::Erased { slot, .. } = n {
                erased.push(slot);
            }
        }
        assert_eq!(erased, [1]);
        let teacher = cart.device(3).unwrap();
        {
            let state = teacher.state();
            assert!(state.setup_done && state.activated, "untouched");
            assert!(state.hosts.is_empty() && state.pair_request_host_ids.is_empty());
            assert!(!state.is_supervisor(&h.our_certificate()));
        }
        assert_eq!(teacher.traffic.counts().1, 0, "no connection to it at all");
        for slot in [1, 2] {
            assert_eq!(
                cart.device(slot).unwrap().traffic.wifi_connections(),
                0,
                "slot {slot} was worked on over its cable only"
            );
        }

        // The ledger, and what is made of it, knows two iPads, each prepared once.
        let records = h.records();
        let mut serials: Vec<_> = records.iter().map(|r| r.serial.clone()).collect();
        serials.sort();
        let mut want = vec![h.serial(1), h.serial(2)];
        want.sort();
        assert_eq!(serials, want);
        for r in &records {
            assert_eq!(r.outcome, Outcome::Done);
            let done = r.history.iter().filter(|e| e.step == Step::Done).count();
            assert_eq!(done, 1, "{} prepared once: {:#?}", r.serial, r.history);
        }
        let mut csv = Vec::new();
        assert_eq!(
            station::export::asm_csv(&records, false, &mut csv).unwrap(),
            2
        );
        let metrics = station::metrics::render(&station::metrics::Inputs {
            snapshot: &snapshot,
            usbmuxd_up: true,
            records: &records,
            audit_log_bytes: None,
        })
        .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cartprep_prepared_total") && l.ends_with(" 2")),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replugged_dont_trust_ipad_asks_again_and_is_prepared_once_trust_is_tapped() {
    within(async {
        let denied = DeviceEntry {
            pairing: PairingKind::Deny,
            ..set_up()
        };
        let h = Harness::new(cart(vec![denied])).await;
        h.write_config(&ConfigSpec {
            erase: format!("policy = \"rules\"\nallow_serials = [\"{}\"]", h.serial(1)),
            ..ConfigSpec::default()
        });
        let cart = h.sim().cart.clone();
        let daemon = h.spawn_daemon(false, when_all(vec![h.udid(1)], &[Light::Done]));
        let denied_message = Attention::TrustDenied.message().into_owned();
        h.wait_for("Don't Trust reported", |h| {
            h.status(1).is_some_and(|s| s.message == denied_message)
        })
        .await;
        assert_eq!(h.light(1), Some(Light::Attention));

        cart.unplug(1).unwrap();
        cart.plug(1).unwrap();
        let prompt_message = Attention::TrustPrompt.message().into_owned();
        h.wait_for("the trust prompt asked again", |h| {
            h.status(1).is_some_and(|s| s.message == prompt_message)
        })
        .await;
        assert!(cart.device(1).unwrap().state().trust_prompt.is_showing());
        cart.tap_trust_prompt(1, Tap::Trust)
            .expect("the alert is showing");
        // The person taps Trust whenever the iPad asks again: the simulator also shows the alert
        // on the erased iPad back in Setup Assistant (`docs/fidelity.md` §10 item 21).
        let mut daemon = daemon;
        let report = loop {
            tokio::select! {
                ended = &mut daemon => break ended.unwrap().expect("the daemon runs"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                    let _ = cart.tap_trust_prompt(1, Tap::Trust);
                }
            }
        };
        assert_eq!(report.summary.done, 1, "{}", h.out.text());
        let lines = h.lines_of(1);
        let denied_at = lines
            .iter()
            .position(|l| l.ends_with(&denied_message))
            .expect("a Don't Trust line");
        let asked_at = lines
            .iter()
            .rposition(|l| l.ends_with(&prompt_message))
            .expect("a tap Trust line after the replug");
        let done_at = lines.iter().rposition(|l| l.contains("DONE")).unwrap();
        assert!(denied_at < asked_at && asked_at < done_at, "{lines:#?}");
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert!(
            cart.device(1)
                .unwrap()
                .state()
                .is_supervisor(&h.our_certificate())
        );
    })
    .await;
}
