//! iPads the station cannot prepare by itself — it says what a person must do —, the trust
//! prompt, ADE mode and the erase policy, against the simulated cart.

mod common;

use std::time::Duration;

use common::*;
use plist::Value;
use simulator::scenario::{DeviceEntry, PairingKind};
use station::status::Light;
use station::{Attention, Outcome, Step};

/// A cloud configuration as another organisation's Apple Configurator leaves it.
fn supervised_elsewhere(cert: Vec<u8>, allow_pairing: bool) -> plist::Dictionary {
    let mut cc = plist::Dictionary::new();
    cc.insert("IsSupervised".into(), true.into());
    cc.insert("AllowPairing".into(), allow_pairing.into());
    cc.insert(
        "SupervisorHostCertificates".into(),
        Value::Array(vec![Value::Data(cert)]),
    );
    cc.insert("OrganizationName".into(), "Shelbyville Academy".into());
    cc.insert(
        "ConfigurationURL".into(),
        "https://mdm.shelbyville.example/enroll".into(),
    );
    cc.insert("ConfigurationSource".into(), 2u64.into());
    cc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ipad_that_needs_a_person_says_what_to_do() {
    within(async {
        let entry = |f: fn(&mut DeviceEntry)| {
            let mut d = fresh();
            f(&mut d);
            d
        };
        // Slot by slot, what is wrong with it and what the operator must read. (A locked
        // iPad steps aside and waits for its passcode instead of ending: see
        // `a_locked_ipad_steps_aside_and_is_prepared_once_unlocked`.)
        let cases: Vec<(DeviceEntry, Attention, &str)> = vec![
            (
                entry(|d| d.pairing = PairingKind::Deny),
                Attention::TrustDenied,
                "“Don’t Trust” was tapped: unplug, replug, tap Trust",
            ),
            (
                entry(|d| d.activation_lock = true),
                Attention::ActivationLocked,
                "Activation Lock: remove it from the owner’s Apple ID / Find My",
            ),
            (
                entry(|d| {
                    d.setup_done = true;
                    d.activated = Some(true);
                    d.pairing = PairingKind::Accept;
                }),
                Attention::AlreadySetUp,
                "already set up; erase is not allowed by policy",
            ),
            // Slots 4 and 5 get another organisation's cloud configuration below.
            (
                fresh(),
                Attention::SupervisedByOther,
                "supervised by another organization",
            ),
            (
                fresh(),
                Attention::SupervisedByOther,
                "supervised by another organization",
            ),
            (
                entry(|d| d.ade = true),
                Attention::AssignedToAde,
                "assigned to ADE in Apple School Manager: use mode = \"ade\" or release it",
            ),
        ];
        let h = Harness::new(cart(cases.iter().map(|c| c.0.clone()).collect())).await;
        let other = tokio::task::spawn_blocking(|| {
            profiles::SupervisionIdentity::create("Shelbyville Academy").unwrap()
        })
        .await
        .unwrap();
        for (slot, allow_pairing) in [(4, true), (5, false)] {
            let mut state = h.sim().cart.device(slot).unwrap().state();
            state.activated = true;
            state.cloud_config = Some(supervised_elsewhere(
                other.certificate_der().to_vec(),
                allow_pairing,
            ));
        }
        let before: Vec<_> = (1..=cases.len() as u32)
            .map(|s| {
                let st = h.sim().cart.device(s).unwrap().state();
                (
                    st.cloud_config.clone(),
                    st.profiles.len(),
                    st.device_name.clone(),
                )
            })
            .collect();

        let udids: Vec<String> = (1..=cases.len() as u32).map(|s| h.udid(s)).collect();
        let report = h
            .spawn_daemon(
                false,
                when_all(udids, &[Light::Attention, Light::Done, Light::Failed]),
            )
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.attention, cases.len(), "{}", h.out.text());

        for (i, (_, attention, message)) in cases.iter().enumerate() {
            let slot = i as u32 + 1;
            let why = format!("slot {slot} ({attention:?}):\n{}", h.out.text());
            assert_eq!(attention.message(), *message, "{why}");
            let s = h.status(slot).unwrap();
            assert_eq!(s.light, Light::Attention, "{why}");
            assert_eq!(s.attention, Some(attention.clone()), "{why}");
            assert_eq!(s.message, *message, "{why}");
            let line = h.lines_of(slot).pop().unwrap();
            // Issue 11: where a command moves the iPad on, the line ends with it.
            let tail = match &s.action {
                Some(action) => format!("— {message} — {action}"),
                None => format!("— {message}"),
            };
            assert!(
                line.contains("▲ ATTENTION") && line.ends_with(&tail),
                "{line}"
            );
            if attention.is_refused_erase() {
                let action = s.action.clone().unwrap_or_default();
                assert!(
                    action.starts_with("to erase it: cartprep erase "),
                    "{action}"
                );
            }

            // The iPad was not changed.
            let st = h.sim().cart.device(slot).unwrap().state();
            assert_eq!(
                (
                    st.cloud_config.clone(),
                    st.profiles.len(),
                    st.device_name.clone()
                ),
                before[i],
                "{why}"
            );
        }

        // An iPad gives its serial number only to a host it trusts: one that refused us, and
        // one that lets only its supervisor pair (slot 5, AllowPairing false) are recorded by
        // UDID, with what they need.
        let records = h.records();
        let never_paired = [1u32, 5];
        for slot in never_paired {
            let (_, attention, _) = &cases[slot as usize - 1];
            let r = records
                .iter()
                .find(|r| r.udid == h.udid(slot))
                .unwrap_or_else(|| panic!("slot {slot} is in the ledger by UDID"));
            assert_eq!(r.serial, "", "slot {slot}: its serial is not known");
            assert_eq!(
                r.outcome,
                Outcome::NeedsAttention(attention.clone()),
                "slot {slot}"
            );
            assert_eq!(
                r.product_type,
                h.sim().cart.device(slot).unwrap().spec.model.product_type
            );
            assert_eq!(station::ledger::key_of(r), format!("udid:{}", h.udid(slot)));
        }
        assert_eq!(records.len(), cases.len(), "one record per iPad");
        for slot in [2u32, 3, 4, 6] {
            let (_, attention, message) = &cases[slot as usize - 1];
            let r = h.record(slot);
            assert_eq!(
                r.outcome,
                Outcome::NeedsAttention(attention.clone()),
                "slot {slot}"
            );
            let last = r.history.last().unwrap();
            assert_eq!(last.note.as_deref(), Some(*message), "slot {slot}");
            // Issue 11: an iPad set up by someone else is recorded as "not erased" (the erase
            // the policy refused), not against the step after the assessment.
            if attention.is_refused_erase() {
                assert_eq!(last.step, Step::Erased, "slot {slot}");
                assert_eq!(last.describe().0, "not erased", "slot {slot}");
            } else {
                assert_eq!(last.step, r.attempted_step());
                assert_eq!(last.describe().0, "needs attention", "slot {slot}");
            }
            assert!(r.settings_fingerprint.is_none(), "not prepared");
        }
        assert_eq!(
            h.record(2).completed,
            Step::Assessed,
            "activation is what failed"
        );
        assert_eq!(
            h.record(6).completed,
            Step::Activated,
            "supervision is what failed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_prompt_is_shown_until_someone_taps_trust() {
    within(async {
        // The iPad shows "Trust This Computer?" for four Pair requests (about four seconds).
        let ipad = DeviceEntry {
            pairing: PairingKind::Dialog,
            dialog_attempts: Some(4),
            ..fresh()
        };
        let h = Harness::new(cart(vec![ipad])).await;
        let daemon = h.spawn_daemon(false, when_all(vec![h.udid(1)], &[Light::Done]));
        h.wait_for("the trust prompt shown", |h| {
            h.status(1).is_some_and(|s| s.light == Light::Attention)
        })
        .await;
        let s = h.status(1).unwrap();
        assert_eq!(s.message, "tap Trust on the iPad");
        assert_eq!(s.current, Some(Step::Paired));
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 1, "{}", h.out.text());

        let lines = h.lines_of(1);
        let prompt = lines
            .iter()
            .position(|l| l.contains("▲ ATTENTION") && l.ends_with("— tap Trust on the iPad"))
            .expect("an ATTENTION line");
        let done = lines.iter().position(|l| l.contains("DONE")).unwrap();
        assert!(prompt < done);
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.attempts, 1, "waiting for a tap is not a new attempt");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_ipad_steps_aside_and_is_prepared_once_unlocked() {
    within(async {
        // Slot 1 is locked with a passcode; slot 2 is a fresh iPad behind it in the queue.
        let locked = DeviceEntry {
            pairing: PairingKind::Locked,
            passcode: true,
            ..fresh()
        };
        let h = Harness::new(cart(vec![locked, fresh()])).await;
        let daemon = h.spawn_daemon(false, when_all(vec![h.udid(1), h.udid(2)], &[Light::Done]));

        h.wait_for("slot 2 done while slot 1 waits for its passcode", |h| {
            h.light(2) == Some(Light::Done)
        })
        .await;
        let s = h.status(1).expect("slot 1 is on the board");
        assert_eq!(s.light, Light::Attention, "{}", h.out.text());
        assert_eq!(s.attention, Some(Attention::Locked));
        assert_eq!(s.message, "unlock the iPad (passcode)");
        assert_eq!(s.current, Some(Step::Paired));
        // The station keeps asking on its own; nothing is paired while it is locked.
        let ipad = h.sim().cart.device(1).unwrap().clone();
        h.wait_for("pairing asked again", |_| {
            ipad.state().pair_request_host_ids.len() >= 2
        })
        .await;
        assert!(ipad.state().hosts.is_empty());
        assert_eq!(h.record(2).outcome, Outcome::Done);

        // Someone enters the passcode: no one touches the station.
        h.sim().cart.unlock(1).unwrap();
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 2, "{}", h.out.text());
        assert_eq!(report.summary.attention, 0, "{}", h.out.text());

        let lines = h.out.lines();
        let position = |slot: &str, what: &str| {
            lines
                .iter()
                .position(|l| slot_of_line(l).as_deref() == Some(slot) && l.contains(what))
                .unwrap_or_else(|| panic!("slot {slot}: no line with {what:?}:\n{}", h.out.text()))
        };
        let asked_to_unlock = position("1", "— unlock the iPad (passcode)");
        let second_done = position("2", "DONE");
        let first_done = position("1", "DONE");
        assert!(
            asked_to_unlock < second_done && second_done < first_done,
            "slot 1 asks for its passcode, slot 2 finishes meanwhile, then slot 1:\n{}",
            h.out.text()
        );

        // The journal: one record each, by serial; slot 1's says what it waited for, and the
        // wait was no new attempt.
        assert_eq!(h.records().len(), 2, "{:#?}", h.records());
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.attempts, 1);
        let paired = r
            .history
            .iter()
            .find(|e| e.step == Step::Paired)
            .and_then(|e| e.note.clone())
            .unwrap_or_default();
        assert_eq!(paired, "slot 1; waited for the passcode to be entered");
        assert_ne!(r.name, h.record(2).name, "two names");
        let unwaited = h
            .record(2)
            .history
            .iter()
            .find(|e| e.step == Step::Paired)
            .and_then(|e| e.note.clone());
        assert_eq!(unwaited.as_deref(), Some("slot 2"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ade_mode_has_assigned_ipads_fetch_their_configuration() {
    within(async {
        let assigned = DeviceEntry {
            ade: true,
            ade_organization: Some("Springfield School District".into()),
            ade_configuration_url: Some("https://mdm.springfield.example/ade".into()),
            ..fresh()
        };
        let h = Harness::new(cart(vec![assigned, fresh()])).await;
        h.write_config(&ConfigSpec {
            mode: "ade",
            ..ConfigSpec::default()
        });
        let udids = vec![h.udid(1), h.udid(2)];
        let report = h
            .spawn_daemon(
                false,
                when_all(udids, &[Light::Done, Light::Attention, Light::Failed]),
            )
            .await
            .unwrap()
            .expect("the daemon runs");
        assert!(h.out.text().contains("(ade mode)"), "{}", h.out.text());
        assert_eq!(
            (report.summary.done, report.summary.attention),
            (1, 1),
            "{}",
            h.out.text()
        );

        // Slot 1: assigned in Apple School Manager, so it configured itself from Apple.
        assert_eq!(h.light(1), Some(Light::Done));
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(r.name.as_deref(), Some("Cart A - 01"));
        {
            let state = h.sim().cart.device(1).unwrap().state();
            assert!(state.activated);
            let cc = state.cloud_config.as_ref().expect("a cloud configuration");
            assert_eq!(
                cc.get("ConfigurationSource")
                    .and_then(Value::as_unsigned_integer),
                Some(1),
                "from ADE, not from us"
            );
            assert_eq!(
                cc.get("OrganizationName").and_then(Value::as_string),
                Some("Springfield School District")
            );
            assert_eq!(
                cc.get("ConfigurationURL").and_then(Value::as_string),
                Some("https://mdm.springfield.example/ade")
            );
            assert_eq!(
                cc.get("IsSupervised").and_then(Value::as_boolean),
                Some(true)
            );
            assert_eq!(state.device_name, "Cart A - 01");
            let installed: Vec<&str> = state
                .profiles
                .iter()
                .map(|p| p.identifier.as_str())
                .collect();
            assert_eq!(
                installed,
                [WIFI_PROFILE_ID],
                "our Wi-Fi profile is installed"
            );
            assert!(
                state.downloaded.is_empty(),
                "nothing left waiting for approval in Settings"
            );
        }

        // Slot 2: not assigned.
        let s = h.status(2).unwrap();
        assert_eq!(s.attention, Some(Attention::NotAssignedToAde));
        assert_eq!(s.message, Attention::NotAssignedToAde.message());
        assert_eq!(
            h.record(2).outcome,
            Outcome::NeedsAttention(Attention::NotAssignedToAde)
        );
        assert!(
            h.sim()
                .cart
                .device(2)
                .unwrap()
                .state()
                .cloud_config
                .is_none()
        );
    })
    .await;
}

/// An unsupervised iPad only *downloads* a profile sent with InstallProfile; the Wi-Fi must
/// really be installed once the ADE configuration has made the iPad supervised, and a replugged
/// iPad is then recognised as already prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ade_mode_installs_the_wifi_profile_and_recognises_a_replugged_ipad() {
    within(async {
        let assigned = DeviceEntry {
            ade: true,
            ..fresh()
        };
        let h = Harness::new(cart(vec![assigned])).await;
        h.write_config(&ConfigSpec {
            mode: "ade",
            ..ConfigSpec::default()
        });
        let replugged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = {
            let (udid, replugged) = (h.udid(1), replugged.clone());
            Box::new(
                move |board: &station::status::Board, idle: &station::daemon::Idle| {
                    replugged.load(std::sync::atomic::Ordering::SeqCst)
                        && idle.running == 0
                        && idle.queued == 0
                        && board.get(&udid).is_some_and(|s| s.light != Light::Working)
                },
            )
        };
        let daemon = h.spawn_daemon(false, stop);
        h.wait_for("slot 1 done", |h| h.light(1) == Some(Light::Done))
            .await;
        {
            let state = h.sim().cart.device(1).unwrap().state();
            let installed: Vec<&str> = state
                .profiles
                .iter()
                .map(|p| p.identifier.as_str())
                .collect();
            assert_eq!(
                installed,
                [WIFI_PROFILE_ID],
                "installed, not only downloaded"
            );
        }
        h.sim().cart.unplug(1).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.sim().cart.plug(1).unwrap();
        h.wait_for("slot 1 seen again", |h| {
            h.lines_of(1).iter().filter(|l| l.contains("READY")).count() >= 2
        })
        .await;
        replugged.store(true, std::sync::atomic::Ordering::SeqCst);
        daemon.await.unwrap().unwrap();
        assert!(
            h.status(1).unwrap().message.contains("already prepared"),
            "{}",
            h.out.text()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ade_mode_runs_without_a_supervision_identity() {
    within(async {
        // config/station.example.toml: the identity is "required when mdm.mode = \"manual\";
        // not used in \"ade\" mode".
        let assigned = DeviceEntry {
            ade: true,
            ..fresh()
        };
        let h = Harness::new(cart(vec![assigned])).await;
        std::fs::remove_dir_all(h.identity_dir()).unwrap();
        h.write_config(&ConfigSpec {
            mode: "ade",
            identity: false,
            ..ConfigSpec::default()
        });
        let config = h.config();
        assert_eq!(config.organization.identity, None);
        let result = h
            .spawn_daemon(
                false,
                when_all(
                    vec![h.udid(1)],
                    &[Light::Done, Light::Attention, Light::Failed],
                ),
            )
            .await
            .unwrap();
        let report = result.expect("the daemon starts in ADE mode without an identity");
        assert_eq!(report.summary.done, 1, "{}", h.out.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_on_the_erase_allowlist_is_erased_and_prepared_as_one_job() {
    within(async {
        let set_up = DeviceEntry {
            setup_done: true,
            activated: Some(true),
            pairing: PairingKind::Accept,
            name: Some("Ms Krabappel’s iPad".into()),
            erase_reattach_ms: Some(500),
            latency_ms: 5,
            ..fresh()
        };
        let h = Harness::new(cart(vec![set_up])).await;
        let serial = h.serial(1);
        h.write_config(&ConfigSpec {
            erase: format!("policy = \"rules\"\nallow_serials = [\"{serial}\"]"),
            ..ConfigSpec::default()
        });
        let mut erased = h.sim().cart.notices();
        let report = h
            .spawn_daemon(
                false,
                when_all(
                    vec![h.udid(1)],
                    &[Light::Done, Light::Attention, Light::Failed],
                ),
            )
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.done, 1, "{}", h.out.text());

        // The simulator saw the erase.
        let mut saw_erase = false;
        while let Ok(n) = erased.try_recv() {
            saw_erase |= matches!(n, simulator::Notice::Erased { slot: 1, .. });
        }
        assert!(saw_erase, "the iPad was erased");

        let records = h.records();
        assert_eq!(records.len(), 1, "the erase continues the same record");
        let r = &records[0];
        assert_eq!(r.outcome, Outcome::Done);
        assert_eq!(
            r.erase_reason.as_deref(),
            Some("serial is on erase.allow_serials"),
            "{:#?}",
            r.history
        );
        let erased_at = r
            .history
            .iter()
            .position(|e| e.step == Step::Erased)
            .expect("an erased step");
        assert_eq!(
            r.history[erased_at].note.as_deref(),
            Some("serial is on erase.allow_serials")
        );
        let done_at = r
            .history
            .iter()
            .rposition(|e| e.step == Step::Done)
            .unwrap();
        assert!(erased_at < done_at);
        assert_eq!(r.name.as_deref(), Some("Cart A - 01"));

        let lines = h.lines_of(1);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("erasing (serial is on erase.allow_serials)")),
            "{}",
            h.out.text()
        );
        assert!(
            lines.iter().any(|l| l.contains("back after the erase")),
            "the board says it came back from the erase:\n{}",
            h.out.text()
        );

        let state = h.sim().cart.device(1).unwrap().state();
        assert!(state.is_supervisor(&h.our_certificate()));
        assert!(!state.setup_done);
        assert_eq!(state.device_name, "Cart A - 01");
        assert_eq!(state.profiles.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_is_never_done_by_default() {
    within(async {
        let set_up = DeviceEntry {
            setup_done: true,
            activated: Some(true),
            pairing: PairingKind::Accept,
            ..fresh()
        };
        let h = Harness::new(cart(vec![set_up])).await;
        let mut notices = h.sim().cart.notices();
        h.spawn_daemon(
            false,
            when_all(
                vec![h.udid(1)],
                &[Light::Done, Light::Attention, Light::Failed],
            ),
        )
        .await
        .unwrap()
        .expect("the daemon runs");
        assert_eq!(
            h.status(1).unwrap().attention,
            Some(Attention::AlreadySetUp)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(n) = notices.try_recv() {
            assert!(!matches!(n, simulator::Notice::Erased { .. }), "no erase");
        }
        assert_eq!(h.record(1).erase_reason, None);
        assert!(h.sim().cart.device(1).unwrap().state().setup_done);
    })
    .await;
}

/// An iPad in recovery mode never reaches usbmuxd; the station sees it on the USB bus and says
/// what to do, against its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_in_recovery_mode_is_reported_from_the_usb_bus() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let mut bus = h.topology().0;
        bus.push(station::slots::AppleUsbDevice {
            chain: simulator::bus::port_chain(7),
            bus: 1,
            address: 40,
            product_id: 0x1281,
            mode: station::slots::UsbMode::Recovery,
            serial: Some("CPID:8030 CPRV:11 ECID:000D543C1A30C02E SRNM:[DMPXX]".into()),
        });
        let recovery_key = format!("usb:{}", simulator::bus::port_chain(7));
        let stop_key = recovery_key.clone();
        let udid = h.udid(1);
        let report = spawn_daemon(
            h.settings(),
            h.board.clone(),
            std::sync::Arc::new(station::slots::FixedTopology(bus)),
            false,
            Box::new(move |board, idle| {
                idle.running == 0
                    && board.get(&udid).is_some_and(|s| s.light == Light::Done)
                    && board.get(&stop_key).is_some()
            }),
        )
        .await
        .unwrap()
        .expect("the daemon runs");
        assert_eq!(report.summary.done, 1);
        let s = h
            .board
            .get(&recovery_key)
            .expect("the recovery-mode iPad is on the board");
        assert_eq!(s.light, Light::Attention);
        assert_eq!(s.attention, Some(Attention::RecoveryMode));
        assert!(
            s.message.contains("recovery mode — restore it"),
            "{}",
            s.message
        );
        assert!(
            h.out
                .text()
                .lines()
                .any(|l| l.contains("▲ ATTENTION") && l.contains("recovery mode")),
            "{}",
            h.out.text()
        );
    })
    .await;
}

/// An iPad first seen when it would only let its supervisor pair is recorded by UDID; when it
/// comes back free (its organisation released it), the same iPad is prepared and its earlier
/// attempt joins the record of its serial — one record per iPad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_recorded_by_udid_joins_its_serial_record_once_it_pairs() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let other = tokio::task::spawn_blocking(|| {
            profiles::SupervisionIdentity::create("Shelbyville Academy").unwrap()
        })
        .await
        .unwrap();
        {
            let mut state = h.sim().cart.device(1).unwrap().state();
            state.activated = true;
            state.cloud_config = Some(supervised_elsewhere(
                other.certificate_der().to_vec(),
                false,
            ));
        }
        let udid = h.udid(1);
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = {
            let (udid, released) = (udid.clone(), released.clone());
            Box::new(
                move |board: &station::status::Board, idle: &station::daemon::Idle| {
                    idle.running == 0
                        && released.load(std::sync::atomic::Ordering::SeqCst)
                        && board.get(&udid).is_some_and(|s| s.light == Light::Done)
                },
            )
        };
        let daemon = h.spawn_daemon(false, stop);
        h.wait_for("attention: supervised by another organization", |h| {
            h.status(1)
                .is_some_and(|s| s.attention == Some(Attention::SupervisedByOther))
        })
        .await;
        let provisional = h.records();
        assert_eq!(provisional.len(), 1);
        assert_eq!(provisional[0].serial, "", "the serial is not known yet");
        assert_eq!(provisional[0].udid, udid);

        // The other school releases it (its cloud configuration is gone), and it is replugged.
        h.sim().cart.unplug(1).unwrap();
        {
            let mut state = h.sim().cart.device(1).unwrap().state();
            state.cloud_config = None;
        }
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        h.sim().cart.plug(1).unwrap();
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!(report.summary.done, 1);

        let records = h.records();
        assert_eq!(records.len(), 1, "one record per iPad: {records:?}");
        let r = &records[0];
        assert_eq!(r.serial, h.serial(1));
        assert_eq!(r.outcome, Outcome::Done);
        assert!(
            r.history
                .iter()
                .any(|e| e.note.as_deref() == Some(&*Attention::SupervisedByOther.message())),
            "the earlier attempt is in its history: {:?}",
            r.history
        );
        assert!(r.attempts >= 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipad_another_organisation_has_not_released_is_theirs_to_release() {
    within(async {
        let held = DeviceEntry {
            other_organization: Some("Shelbyville Academy".into()),
            ..fresh()
        };
        let h = Harness::new(cart(vec![held, fresh()])).await;
        // Even a policy that may erase it: an erase would not help (the iPad gets the same
        // configuration at its next activation).
        h.write_config(&ConfigSpec {
            erase: format!("policy = \"rules\"\nallow_serials = [\"{}\"]", h.serial(1)),
            ..ConfigSpec::default()
        });
        let udids = vec![h.udid(1), h.udid(2)];
        let report = h
            .spawn_daemon(
                false,
                when_all(udids, &[Light::Done, Light::Attention, Light::Failed]),
            )
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(
            (report.summary.done, report.summary.attention),
            (1, 1),
            "{}",
            h.out.text()
        );

        let message =
            "assigned to Shelbyville Academy in Apple School Manager: ask them to release it";
        let attention = Attention::AssignedElsewhere {
            organization: "Shelbyville Academy".into(),
        };
        let s = h.status(1).unwrap();
        assert_eq!(s.light, Light::Attention);
        assert_eq!(s.attention, Some(attention.clone()));
        assert_eq!(s.message, message);
        let line = h.lines_of(1).pop().unwrap();
        assert!(
            line.contains("▲ ATTENTION")
                && line.contains(message)
                && line.ends_with(&format!("then: cartprep retry {}", h.record(1).serial)),
            "{line}"
        );
        let r = h.record(1);
        assert_eq!(r.outcome, Outcome::NeedsAttention(attention));
        assert_eq!(r.completed, Step::Activated, "activation is when it learnt");
        assert_eq!(r.erase_reason, None, "not erased");
        {
            // Their configuration is left as Apple gave it; nothing of ours went on it.
            let state = h.sim().cart.device(1).unwrap().state();
            let cc = state.cloud_config.as_ref().expect("their configuration");
            assert_eq!(
                cc.get("OrganizationName").and_then(Value::as_string),
                Some("Shelbyville Academy")
            );
            assert!(state.profiles.is_empty());
        }
        assert_eq!(h.record(2).outcome, Outcome::Done);

        // The list the school sends to Shelbyville Academy.
        let records = h.records();
        let mut csv = Vec::new();
        assert_eq!(
            station::export::release_csv(&records, None, &mut csv).unwrap(),
            1
        );
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            format!("Serial Number\n{}\n", h.serial(1))
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cartprep"))
            .args(["ledger", "export", "--format", "release", "--organization"])
            .arg("shelbyville academy")
            .arg("--state")
            .arg(&h.station_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("Serial Number\n{}\n", h.serial(1))
        );
    })
    .await;
}
