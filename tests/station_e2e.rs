//! The station daemon against the simulated cart, in-process: the happy cart one iPad at a
//! time, resuming after an unplug and after the daemon stops, a usbmuxd restart, and an iPad
//! already prepared being left alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use plist::Value;
use station::status::Light;
use station::{Outcome, Step};

/// The order the pipeline records a fresh iPad's steps in (crates/station/src/prepare: pairing comes before
/// identification, because an iPad gives its serial number only to a paired host). Issue 11:
/// escalation is no longer an entry of its own; it is part of the Wi-Fi step, which names the
/// network.
const FRESH_IPAD_HISTORY: [Step; 9] = [
    Step::Detected,
    Step::Paired,
    Step::Identified,
    Step::Assessed,
    Step::Activated,
    Step::Supervised,
    Step::WifiInstalled,
    Step::Named,
    Step::Done,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_of_three_fresh_ipads_is_prepared_one_at_a_time() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), fresh()])).await;
        let udids: Vec<String> = (1..=3).map(|s| h.udid(s)).collect();

        // Watch the board from outside while the daemon works: never two iPads at once.
        let most_working = Arc::new(AtomicUsize::new(0));
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let (board, most, watching) = (h.board.clone(), most_working.clone(), watching.clone());
            tokio::spawn(async move {
                while watching.load(Ordering::SeqCst) {
                    let working = board.summary().working;
                    most.fetch_max(working, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let report = h
            .spawn_daemon(false, when_all(udids.clone(), &[Light::Done]))
            .await
            .unwrap()
            .expect("the daemon runs");
        watching.store(false, Ordering::SeqCst);
        watcher.await.unwrap();
        eprintln!("{}", h.out.text());

        assert_eq!(report.summary.done, 3, "{}", h.out.text());
        assert_eq!(
            (report.summary.attention, report.summary.failed),
            (0, 0),
            "{}",
            h.out.text()
        );
        assert_eq!(
            most_working.load(Ordering::SeqCst),
            1,
            "one iPad at a time, never two"
        );

        // The printed lines tell the same story: slot 2 waits while slot 1 works, and no
        // WORKING line of one iPad comes while another is still working.
        let lines = h.out.lines();
        let waiting_2 = lines
            .iter()
            .position(|l| slot_of_line(l).as_deref() == Some("2") && l.contains("WAITING"))
            .unwrap_or_else(|| panic!("slot 2 is shown waiting:\n{}", h.out.text()));
        assert!(
            lines[waiting_2].contains("waiting — 1 ahead of it (one iPad at a time)"),
            "{}",
            lines[waiting_2]
        );
        let done_1 = lines
            .iter()
            .position(|l| slot_of_line(l).as_deref() == Some("1") && l.contains("DONE — UNPLUG"))
            .expect("slot 1 is done");
        let first_working_2 = lines
            .iter()
            .position(|l| slot_of_line(l).as_deref() == Some("2") && l.contains("WORKING"))
            .expect("slot 2 works");
        assert!(
            waiting_2 < done_1 && done_1 < first_working_2,
            "slot 2 waits while slot 1 works, and starts once slot 1 is done:\n{}",
            h.out.text()
        );
        let mut current: std::collections::BTreeMap<String, bool> = Default::default();
        for line in &lines {
            if let Some(slot) = slot_of_line(line) {
                current.insert(slot, line.contains("WORKING"));
                let working: Vec<_> = current.iter().filter(|(_, w)| **w).collect();
                assert!(
                    working.len() <= 1,
                    "two iPads working at once at line {line:?}:\n{}",
                    h.out.text()
                );
            }
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cart: 3 done · 0 working")),
            "the summary line is printed:\n{}",
            h.out.text()
        );

        // The ledger: three records, done, their steps in pipeline order, named in order.
        let records = h.records();
        assert_eq!(records.len(), 3);
        let our_cert = h.our_certificate();
        for slot in 1..=3u32 {
            let r = h.record(slot);
            let name = format!("Cart A - {slot:02}");
            assert_eq!(r.outcome, Outcome::Done, "slot {slot}");
            assert_eq!(r.completed, Step::Done);
            assert_eq!(r.attempts, 1);
            assert_eq!(steps(&r), FRESH_IPAD_HISTORY, "slot {slot}");
            assert!(
                r.history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
                "history in time order"
            );
            assert_eq!(r.name.as_deref(), Some(name.as_str()));
            assert_eq!(r.udid, h.udid(slot));
            assert_eq!(r.slot.as_deref(), Some(slot.to_string().as_str()));
            assert!(r.settings_fingerprint.is_some());
            assert_eq!(r.erase_reason, None);
            // Every entry is a step completed in this attempt, and the last names what the
            // iPad now is.
            assert!(
                r.history
                    .iter()
                    .all(|e| e.kind() == station::EventKind::Completed),
                "{:#?}",
                r.history
            );
            let done = r.history.last().unwrap().note.clone().unwrap_or_default();
            assert_eq!(
                done,
                format!("prepared as “{name}”, Wi-Fi “{SSID}”, MDM {ENROLLMENT_URL}")
            );
            let wifi = r
                .history
                .iter()
                .find(|e| e.step == Step::WifiInstalled)
                .and_then(|e| e.note.clone())
                .unwrap_or_default();
            assert!(wifi.contains(&format!("“{SSID}”")), "{wifi}");
            assert!(
                h.lines_of(slot).iter().any(
                    |l| l.contains("DONE — UNPLUG") && l.ends_with(&format!("{done} — unplug"))
                ),
                "{}",
                h.out.text()
            );

            // The iPad itself.
            let ipad = h.sim().cart.device(slot).unwrap();
            let state = ipad.state();
            assert!(state.activated, "slot {slot} is activated");
            let cc = state.cloud_config.as_ref().expect("a cloud configuration");
            assert_eq!(
                cc.get("IsSupervised").and_then(Value::as_boolean),
                Some(true)
            );
            let supervisors = cc
                .get("SupervisorHostCertificates")
                .and_then(Value::as_array)
                .expect("supervisor certificates");
            assert!(
                supervisors
                    .iter()
                    .any(|c| c.as_data() == Some(our_cert.as_slice())),
                "supervised by our certificate"
            );
            assert_eq!(
                cc.get("ConfigurationURL").and_then(Value::as_string),
                Some(ENROLLMENT_URL)
            );
            assert_eq!(
                cc.get("OrganizationName").and_then(Value::as_string),
                Some(ORGANIZATION)
            );
            assert!(
                !cc.contains_key("CloudConfigurationUIComplete"),
                "Setup Assistant still runs, to enroll in the MDM: {cc:?}"
            );
            let ids: Vec<&str> = state
                .profiles
                .iter()
                .map(|p| p.identifier.as_str())
                .collect();
            assert_eq!(ids, [WIFI_PROFILE_ID], "our Wi-Fi profile, installed");
            assert!(
                state.downloaded.is_empty(),
                "nothing left for the user to approve"
            );
            assert_eq!(state.device_name, name);
            assert_eq!(state.time_zone, "America/Chicago");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_pulled_out_mid_way_resumes_when_plugged_back_in() {
    within(async {
        let mut ipad = fresh();
        ipad.latency_ms = 20;
        let h = Harness::new(cart(vec![ipad])).await;
        let udid = h.udid(1);
        let daemon = h.spawn_daemon(false, when_all(vec![udid.clone()], &[Light::Done]));

        // Pulled out once activated, while it is being supervised or later.
        h.wait_for("slot 1 working at “supervised” or later", |h| {
            h.status(1).is_some_and(|s| {
                s.light == Light::Working && s.current.is_some_and(|st| st >= Step::Supervised)
            })
        })
        .await;
        let pulled_at = h.status(1).unwrap().current.unwrap();
        let lines_before_unplug = h.lines_of(1).len();
        h.sim().cart.unplug(1).unwrap();
        h.wait_for("slot 1 shown unplugged", |h| {
            h.light(1) == Some(Light::Unplugged)
        })
        .await;
        let unplugged = h.status(1).unwrap();
        assert!(
            unplugged.message.starts_with("unplugged during")
                && unplugged.message.ends_with("plug it back in to continue"),
            "{}",
            unplugged.message
        );
        let midway = h.record(1);
        assert_eq!(midway.outcome, Outcome::Waiting, "waits for the iPad");
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.sim().cart.plug(1).unwrap();

        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 1, "{}", h.out.text());

        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(
            r.attempts, 2,
            "the replug is a second attempt of the same record"
        );
        assert_eq!(h.records().len(), 1, "no second record");
        let interrupted: Vec<_> = r
            .history
            .iter()
            .filter(|e| e.note.as_deref() == Some("interrupted: unplugged"))
            .collect();
        assert_eq!(interrupted.len(), 1, "{:#?}", r.history);
        assert_eq!(interrupted[0].attempt, 1);
        assert_eq!(interrupted[0].kind(), station::EventKind::Interrupted);
        let (what, detail) = interrupted[0].describe();
        assert_eq!(what, "interrupted");
        assert!(
            detail.starts_with(&format!("during “{}”", interrupted[0].step.doing())),
            "{detail}"
        );
        assert!(
            r.history
                .iter()
                .any(|e| e.attempt == 2 && e.step == Step::Done),
            "finished in the second attempt"
        );
        assert!(
            pulled_at >= Step::Supervised,
            "pulled out at “{}”",
            pulled_at.label()
        );
        let after_replug = &h.lines_of(1)[lines_before_unplug..];
        assert!(
            !after_replug.iter().any(|l| l.ends_with("— activating")),
            "activated once only:\n{}",
            h.out.text()
        );
        assert!(
            after_replug
                .iter()
                .any(|l| l.contains("unplugged during “")),
            "{}",
            h.out.text()
        );

        // Prepared once, not twice: one cloud configuration of ours, one Wi-Fi profile.
        let state = h.sim().cart.device(1).unwrap().state();
        assert!(state.activated);
        assert!(state.is_supervisor(&h.our_certificate()));
        assert_eq!(state.profiles.len(), 1);
        assert_eq!(state.profiles[0].identifier, WIFI_PROFILE_ID);
        assert_eq!(state.device_name, "Cart A - 01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stopped_with_the_daemon_resumes_when_it_starts_again() {
    within(async {
        let mut ipad = fresh();
        ipad.latency_ms = 40;
        let h = Harness::new(cart(vec![ipad])).await;
        let udid = h.udid(1);

        // First run: stop as soon as the iPad is being supervised (or later), like a crash.
        let stop_udid = udid.clone();
        let first = h
            .spawn_daemon(
                false,
                Box::new(move |board, _| {
                    board.get(&stop_udid).is_some_and(|s| {
                        s.light == Light::Working && s.current >= Some(Step::Supervised)
                    })
                }),
            )
            .await
            .unwrap()
            .expect("the first run");
        assert_eq!(first.summary.done, 0);
        let after_first = h.record(1);
        assert_eq!(after_first.outcome, Outcome::Waiting);
        assert_eq!(after_first.attempts, 1);
        assert!(
            after_first.completed >= Step::Activated && after_first.completed < Step::Done,
            "stopped mid-way, at {:?}",
            after_first.completed
        );
        assert!(
            after_first
                .history
                .iter()
                .any(|e| e.note.as_deref() == Some("interrupted: the station stopped")),
            "{:#?}",
            after_first.history
        );
        assert!(
            h.out
                .text()
                .contains("work in progress resumes when the station starts again")
                || h.out.text().contains("the station stopped"),
            "{}",
            h.out.text()
        );

        // Second run, same state folder, a new board.
        let second_out = Captured::default();
        let board = station::status::Board::new(Box::new(second_out.clone()), false);
        let second = spawn_daemon(
            h.settings(),
            board,
            Arc::new(h.topology()),
            false,
            when_all(vec![udid.clone()], &[Light::Done]),
        )
        .await
        .unwrap()
        .expect("the second run");
        assert_eq!(second.summary.done, 1, "{}", second_out.text());

        let records = h.records();
        assert_eq!(records.len(), 1, "no duplicate record");
        let r = &records[0];
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.attempts, 2);
        let first_steps: Vec<Step> = r
            .history
            .iter()
            .filter(|e| {
                e.attempt == 1
                    && e.note
                        .as_deref()
                        .is_none_or(|n| !n.starts_with("interrupted"))
            })
            .map(|e| e.step)
            .collect();
        assert!(
            first_steps.starts_with(&[
                Step::Paired,
                Step::Identified,
                Step::Assessed,
                Step::Activated
            ]),
            "the first run's steps are kept: {first_steps:?}"
        );
        assert!(!first_steps.contains(&Step::Done));
        let second_steps: Vec<Step> = r
            .history
            .iter()
            .filter(|e| e.attempt == 2)
            .map(|e| e.step)
            .collect();
        assert_eq!(second_steps.last(), Some(&Step::Done));
        for s in [Step::Supervised, Step::WifiInstalled, Step::Named] {
            assert!(second_steps.contains(&s), "{s:?} in the second run");
        }
        let state = h.sim().cart.device(1).unwrap().state();
        assert!(state.is_supervisor(&h.our_certificate()));
        assert_eq!(state.profiles.len(), 1);
        assert_eq!(state.device_name, "Cart A - 01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_already_prepared_with_these_settings_is_not_touched() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let udid = h.udid(1);
        let daemon = h.spawn_daemon(false, when_recognised(udid.clone()));
        h.wait_for("slot 1 prepared", |h| h.light(1) == Some(Light::Done))
            .await;

        let before = snapshot(&h, 1);
        let record_before = h.record(1);
        h.sim().cart.unplug(1).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.sim().cart.plug(1).unwrap();
        h.wait_for("slot 1 recognised", |h| {
            h.status(1)
                .is_some_and(|s| s.light == Light::Done && s.message.contains("already prepared"))
        })
        .await;
        daemon.await.unwrap().expect("the daemon runs");

        let line = h
            .lines_of(1)
            .into_iter()
            .rfind(|l| l.contains("DONE"))
            .unwrap();
        assert!(
            line.contains("already prepared with these settings — unplug"),
            "{line}"
        );
        assert_eq!(snapshot(&h, 1), before, "the iPad is left as it was");

        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.attempts, 2);
        let last = r.history.last().unwrap();
        assert_eq!(last.step, Step::Done);
        assert_eq!(last.attempt, 2);
        assert!(
            last.note
                .as_deref()
                .is_some_and(|n| n.contains("not touched")),
            "{last:?}"
        );
        let second: Vec<Step> = r
            .history
            .iter()
            .filter(|e| e.attempt == 2)
            .map(|e| e.step)
            .collect();
        assert_eq!(
            second,
            [Step::Paired, Step::Identified, Step::Assessed, Step::Done],
            "only looked at, nothing written"
        );
        assert_eq!(r.name, record_before.name);
        assert_eq!(r.settings_fingerprint, record_before.settings_fingerprint);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_ipad_new_to_the_station_is_read_after_its_refusal() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let udid = h.udid(1);
        let daemon = h.spawn_daemon(false, when_all(vec![udid.clone()], &[Light::Done]));
        daemon.await.unwrap().expect("the daemon runs");
        // The ledger is lost (a new station, a wiped disk): the prepared iPad is new to it.
        h.sim().cart.unplug(1).unwrap();
        std::fs::remove_dir_all(h.station_dir.join(station::ledger::DB_DIR)).unwrap();
        std::fs::remove_file(h.station_dir.join(station::ledger::AUDIT_FILE)).unwrap();
        let before = snapshot(&h, 1);
        let daemon = h.spawn_daemon(false, when_recognised(udid.clone()));
        h.sim().cart.plug(1).unwrap();
        daemon.await.unwrap().expect("the daemon runs");

        assert_eq!(snapshot(&h, 1), before, "the refusal changed nothing");
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        let steps: Vec<(Step, bool)> = r
            .history
            .iter()
            .filter(|e| e.attempt == 1)
            .map(|e| (e.step, e.error.is_some()))
            .collect();
        let assessed: Vec<&str> = r
            .history
            .iter()
            .filter(|e| e.step == Step::Assessed)
            .filter_map(|e| e.note.as_deref())
            .collect();
        assert_eq!(assessed.len(), 2, "{assessed:?}");
        assert!(assessed[0].contains("new to this station"), "{assessed:?}");
        assert!(
            assessed[1].contains("cloud configuration ours"),
            "{assessed:?}"
        );
        assert_eq!(
            steps.last(),
            Some(&(Step::Done, false)),
            "recognised as prepared: {steps:?}"
        );
        let done = r.history.last().and_then(|e| e.note.clone()).unwrap();
        assert!(done.contains("already prepared"), "{done}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_station_reconnects_when_usbmuxd_restarts_and_finishes_the_cart() {
    within(async {
        // Activated iPads (still in Setup Assistant): the restarted simulator's activation
        // server would listen on another port than the configuration names.
        let activated = || simulator::scenario::DeviceEntry {
            activated: Some(true),
            latency_ms: 20,
            ..fresh()
        };
        let port = free_port();
        let mut h = Harness::listening(
            cart(vec![activated(), activated()]),
            &format!("127.0.0.1:{port}"),
        )
        .await;
        let udids = vec![h.udid(1), h.udid(2)];
        let daemon = h.spawn_daemon(false, when_all(udids, &[Light::Done]));

        h.wait_for("slot 1 being supervised", |h| {
            h.status(1).is_some_and(|s| {
                s.light == Light::Working && s.current.is_some_and(|st| st >= Step::Activated)
            })
        })
        .await;
        let addr = h.stop_usbmuxd();
        assert_eq!(addr, format!("127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        while !h.out.text().contains("lost usbmuxd") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the daemon did not notice usbmuxd going away within 10 s:\n{}",
                h.out.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.wait_for("slot 1 shown interrupted", |h| {
            h.status(1).is_some_and(|s| {
                s.light == Light::Unplugged && s.message.starts_with("usbmuxd went away")
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.start_usbmuxd(&addr).await;

        let report = daemon.await.unwrap().expect("the daemon runs");
        eprintln!("{}", h.out.text());
        assert_eq!(report.summary.done, 2, "{}", h.out.text());

        let text = h.out.text();
        let lost = text.find("lost usbmuxd").unwrap();
        let reconnected = text[lost..]
            .find(&format!("connected to usbmuxd at 127.0.0.1:{port}"))
            .map(|i| i + lost);
        assert!(reconnected.is_some(), "reconnected after the loss:\n{text}");

        let r1 = h.record(1);
        assert_eq!(r1.outcome, Outcome::Done);
        assert_eq!(r1.attempts, 2);
        assert!(
            r1.history
                .iter()
                .any(|e| e.note.as_deref() == Some("interrupted: usbmuxd went away")),
            "{:#?}",
            r1.history
        );
        assert_eq!(h.record(2).outcome, Outcome::Done);
        assert_eq!(h.records().len(), 2);
        for slot in 1..=2 {
            let state = h.sim().cart.device(slot).unwrap().state();
            assert!(state.is_supervisor(&h.our_certificate()), "slot {slot}");
            assert_eq!(state.profiles.len(), 1);
            assert_eq!(state.device_name, format!("Cart A - {slot:02}"));
        }
    })
    .await;
}

/// What preparing writes to an iPad, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct DeviceSnapshot {
    activated: bool,
    name: String,
    cloud_config: Option<plist::Dictionary>,
    profiles: Vec<(String, String, Vec<u8>)>,
    downloaded: usize,
    hosts: Vec<String>,
    language: String,
    locale: String,
    time_zone: String,
}

fn snapshot(h: &Harness, slot: u32) -> DeviceSnapshot {
    let s = h.sim().cart.device(slot).unwrap().state();
    DeviceSnapshot {
        activated: s.activated,
        name: s.device_name.clone(),
        cloud_config: s.cloud_config.clone(),
        profiles: s
            .profiles
            .iter()
            .map(|p| (p.identifier.clone(), p.uuid.clone(), p.bytes.clone()))
            .collect(),
        downloaded: s.downloaded.len(),
        hosts: s.hosts.keys().cloned().collect(),
        language: s.language.clone(),
        locale: s.locale.clone(),
        time_zone: s.time_zone.clone(),
    }
}
