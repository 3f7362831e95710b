//! The operator's next steps against a running station: `cartprep erase --slot 3 --yes` on
//! the demo's iPad already set up by a teacher leads to a prepared iPad; `retry` and `forget`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use simulator::scenario::{DeviceEntry, PairingKind};
use station::status::Light;
use station::{Attention, Outcome, Step};

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");

/// Runs the binary off the async threads; its exit status and output.
async fn cartprep(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(CARTPREP)
            .args(&args)
            .env_remove("CARTPREP_LOG")
            .env("USER", "technician")
            .env_remove("SUDO_USER")
            .output()
            .expect("cartprep runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The demo's slot 3: set up by a teacher, asks "Trust" once.
fn set_up_by_a_teacher() -> DeviceEntry {
    DeviceEntry {
        setup_done: true,
        activated: Some(true),
        name: Some("Ms Lovelace’s iPad".into()),
        pairing: PairingKind::Dialog,
        dialog_attempts: Some(1),
        erase_reattach_ms: Some(500),
        ..fresh()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_by_slot_turns_an_ipad_set_up_by_a_teacher_into_a_prepared_one() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), set_up_by_a_teacher()])).await;
        let serial = h.serial(3);
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));

        h.wait_for("slot 3 needs attention", |h| {
            h.status(3)
                .is_some_and(|s| s.attention == Some(Attention::AlreadySetUp))
        })
        .await;
        let s = h.status(3).unwrap();
        assert_eq!(
            s.action.as_deref(),
            Some(format!("to erase it: cartprep erase {serial}").as_str()),
            "the attention names the command"
        );
        assert!(
            h.lines_of(3)
                .iter()
                .any(|l| l.ends_with(&format!("— to erase it: cartprep erase {serial}"))),
            "{}",
            h.out.text()
        );

        let state = h.station_dir.to_str().unwrap().to_owned();
        let (code, out, err) = cartprep(
            [
                "erase",
                "--slot",
                "3",
                "--yes",
                "--reason",
                "moving the cart to the new MDM",
                "--state",
                &state,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("erase recorded"), "{out}");

        h.wait_for("slot 3 prepared", |h| h.light(3) == Some(Light::Done))
            .await;
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");

        let r = h.record(3);
        assert_eq!(r.outcome, Outcome::Done, "{:#?}", r.history);
        assert_eq!(r.name.as_deref(), Some("Cart A - 03"));
        let reason = r.erase_reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with("requested by technician (uid ")
                && reason.ends_with("): moving the cart to the new MDM"),
            "{reason}"
        );
        assert_eq!(r.erase_request, None, "the request is spent");
        let erased = r
            .history
            .iter()
            .position(|e| e.step == Step::Erased && e.kind() == station::EventKind::Completed)
            .expect("an erase entry");
        let not_erased = r
            .history
            .iter()
            .position(|e| e.describe().0 == "not erased")
            .expect("the refusal before it");
        assert!(not_erased < erased);
        let state = h.sim().cart.device(3).unwrap().state();
        assert!(state.is_supervisor(&h.our_certificate()));
        assert_eq!(state.device_name, "Cart A - 03");

        // The audit log holds the request with who and why.
        let audit = std::fs::read_to_string(h.station_dir.join("audit.jsonl")).unwrap();
        let request = audit
            .lines()
            .find(|l| l.contains("\"event\":\"operator_request\""))
            .expect("the request is in the audit log");
        assert!(
            request.contains("technician") && request.contains("moving the cart to the new MDM"),
            "{request}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_name_what_they_cannot_do() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        h.wait_for("slot 1 prepared", |h| h.light(1) == Some(Light::Done))
            .await;
        let state = h.station_dir.to_str().unwrap().to_owned();
        let run = |args: &[&str]| {
            let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            v.extend(["--state".into(), state.clone()]);
            cartprep(v)
        };
        let (code, _, err) = run(&["erase", "--slot", "9", "--yes"]).await;
        assert_eq!(code, 2);
        assert!(err.contains("no iPad is plugged into slot 9"), "{err}");

        let (code, _, err) = run(&["erase", "--slot", "1"]).await;
        assert_eq!(code, 2, "no terminal and no --yes");
        assert!(err.contains("--yes"), "{err}");

        let (code, out, err) = run(&["retry", "--slot", "1"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("queued again"), "{out}");
        h.wait_for("slot 1 done again", |h| {
            h.light(1) == Some(Light::Done) && h.record(1).attempts == 2
        })
        .await;

        let serial = h.serial(1);
        let (code, out, err) = run(&["forget", &serial]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("forgotten"), "{out}");
        assert!(h.records().is_empty(), "the ledger no longer lists it");
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_waiting_for_trust_steps_aside_and_comes_back_when_it_is_tapped() {
    within(async {
        // Slot 1 shows "Trust This Computer?" for many Pair requests; slot 2 is plugged in
        // behind it. One iPad at a time (the default).
        let slow_to_trust = DeviceEntry {
            pairing: PairingKind::Dialog,
            dialog_attempts: Some(12),
            ..fresh()
        };
        let h = Harness::new(cart(vec![slow_to_trust, fresh()])).await;
        let udids = vec![h.udid(1), h.udid(2)];
        let report = h
            .spawn_daemon(false, when_all(udids, &[Light::Done]))
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.done, 2, "{}", h.out.text());

        // Slot 2 was prepared while slot 1 waited for Trust, and slot 1 finished after.
        let lines = h.out.lines();
        let find = |slot: &str, what: &str| {
            lines
                .iter()
                .position(|l| slot_of_line(l).as_deref() == Some(slot) && l.contains(what))
                .unwrap_or_else(|| panic!("slot {slot} {what}:\n{}", h.out.text()))
        };
        let trust_1 = find("1", "tap Trust on the iPad");
        let done_2 = find("2", "DONE — UNPLUG");
        let done_1 = find("1", "DONE — UNPLUG");
        assert!(
            trust_1 < done_2 && done_2 < done_1,
            "slot 2 goes ahead while slot 1 waits for Trust:\n{}",
            h.out.text()
        );
        assert_eq!(h.record(1).attempts, 1, "slot 1 came back in the same job");
    })
    .await;
}

/// Waits until the iPad in slot 1 is prepared, unplugs it, and waits for its FREE line.
async fn prepare_then_unplug_slot_1(h: &Harness) {
    h.wait_for("slot 1 prepared", |h| h.light(1) == Some(Light::Done))
        .await;
    h.sim().cart.unplug(1).expect("unplugs");
    h.wait_for("slot 1 free", |h| h.light(1) == Some(Light::Free))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lets_go_of_an_unplugged_ipad_and_still_counts_it() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh()])).await;
        h.write_config(&ConfigSpec {
            forget_after_minutes: Some(0),
            ..ConfigSpec::default()
        });
        h.sim().cart.unplug(2).expect("unplugs");
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        prepare_then_unplug_slot_1(&h).await;

        // The next plug-in is the next event: slot 1's line goes, its count stays.
        h.sim().cart.plug(2).expect("plugs");
        h.wait_for("slot 2 prepared", |h| h.light(2) == Some(Light::Done))
            .await;
        assert_eq!(h.light(1), None, "slot 1's line is gone:\n{}", h.out.text());
        assert_eq!(h.board.summary().done, 2);
        assert_eq!(h.record(1).outcome, Outcome::Done, "the ledger keeps it");

        // Back on the cable: shown again, recognised, and not counted twice.
        h.sim().cart.plug(1).expect("plugs");
        h.wait_for("slot 1 recognised", |h| {
            h.status(1)
                .is_some_and(|s| s.light == Light::Done && s.message.contains("already prepared"))
        })
        .await;
        assert_eq!(h.board.summary().done, 2, "{}", h.out.text());
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_a_prepared_ipad_frees_its_slot_for_the_next_one() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        prepare_then_unplug_slot_1(&h).await;
        let s = h.status(1).unwrap();
        assert_eq!(s.message, "free — plug the next iPad");
        assert_eq!(h.board.summary().done, 1, "still counted as done");
        assert_eq!(
            h.record(1).outcome,
            Outcome::Done,
            "the ledger is unchanged"
        );
        stop.store(true, Ordering::SeqCst);
        daemon.await.unwrap().expect("the daemon runs");
    })
    .await;
}
