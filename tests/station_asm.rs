//! The station with Apple School Manager configured, against the simulated cart and the
//! simulator's fake ASM: each iPad is looked up when identified, an iPad the organization does
//! not hold is shown as needing attention (and prepared, unless the config says to stop), and
//! each prepared iPad ends assigned to our server, with its activity in the ledger.

mod common;

use common::*;
use simulator::asm_server::{self, AsmDevice, AsmScenario, AsmServer, AsmService};
use station::asm_sync::Assignment;
use station::status::Light;
use station::{Attention, Outcome};

const OURS: &str = "1F97349736CF4614A94F624E705841AD";
const OTHER: &str = "2A00000000000000000000000000000B";
const NOT_IN_ASM: &str = "not in your Apple School Manager: ask the seller or the previous owner";

/// Slot 1 in the organization and unassigned, slot 2 not in it, slot 3 assigned elsewhere.
async fn with_asm(h: &Harness, extra: &str) -> AsmServer {
    let key = asm::PrivateKey::generate();
    let mut scenario = AsmScenario::new("SCHOOLAPI.e2e", "k1", &key.public_key_pem().expect("pem"));
    scenario.services = vec![
        AsmService {
            id: OURS.into(),
            name: "Mosyle".into(),
        },
        AsmService {
            id: OTHER.into(),
            name: "Old MDM".into(),
        },
    ];
    scenario.devices = vec![
        AsmDevice {
            serial: h.serial(1),
            product_type: "iPad12,1".into(),
            assigned_to: None,
        },
        AsmDevice {
            serial: h.serial(3),
            product_type: "iPad12,1".into(),
            assigned_to: Some(OTHER.into()),
        },
    ];
    let server = asm_server::start(&h.sim().cart.authority, scenario)
        .await
        .expect("fake ASM");
    let dir = &h.station_dir;
    profiles::files::write_private(
        &dir.join("asm-key.pem"),
        key.to_pem().expect("pem").as_bytes(),
    )
    .expect("key");
    profiles::files::write_private(&dir.join("asm-ca.pem"), &server.ca_pem).expect("ca");
    let text = format!(
        "{}\n[asm]\nclient_id = \"SCHOOLAPI.e2e\"\nkey_id = \"k1\"\nprivate_key_file = \"asm-key.pem\"\nmdm_server = \"Mosyle\"\napi_url = \"{}\"\ntoken_url = \"{}\"\nextra_ca_file = \"asm-ca.pem\"\n{extra}",
        h.config_text(&ConfigSpec::default()),
        server.api_url,
        server.token_url
    );
    profiles::files::write_private(&h.config_path, text.as_bytes()).expect("config");
    server
}

fn assignment(h: &Harness, slot: u32) -> Option<Assignment> {
    h.record(slot).asm.and_then(|a| a.assignment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_ipads_end_assigned_to_our_server_and_one_not_in_asm_needs_attention() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), fresh()])).await;
        let server = with_asm(&h, "").await;
        let udids: Vec<String> = (1..=3).map(|s| h.udid(s)).collect();
        let report = h
            .spawn_daemon(false, when_all(udids, &[Light::Done]))
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.done, 3, "{}", h.out.text());

        // The iPad ASM does not hold: shown as needing attention, then prepared.
        assert!(
            h.lines_of(2)
                .iter()
                .any(|l| l.contains("ATTENTION") && l.contains(NOT_IN_ASM)),
            "{}",
            h.out.text()
        );
        assert_eq!(h.record(2).outcome, Outcome::Done);
        assert!(matches!(
            assignment(&h, 2),
            Some(Assignment::NotAssigned { .. })
        ));

        // The others: assigned by one activity each, recorded with its ID.
        let activities = server.stats().activities;
        assert_eq!(activities.len(), 2, "{activities:?}");
        for slot in [1, 3] {
            let serial = h.serial(slot);
            let (id, _, _) = activities
                .iter()
                .find(|(_, serials, _)| serials == &vec![serial.clone()])
                .expect("an activity for it");
            assert_eq!(
                assignment(&h, slot),
                Some(Assignment::Assigned {
                    server: "Mosyle".into(),
                    activity_id: Some(id.clone())
                })
            );
            assert_eq!(server.assigned(&serial).as_deref(), Some(OURS));
            let history = h.record(slot).history;
            let last = history
                .last()
                .and_then(|e| e.note.clone())
                .unwrap_or_default();
            assert_eq!(last, format!("assigned in ASM to Mosyle (activity {id})"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_can_ask_to_stop_at_an_ipad_not_in_asm() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), fresh()])).await;
        let server = with_asm(&h, "stop_if_not_in_organization = true\n").await;
        let udids: Vec<String> = (1..=3).map(|s| h.udid(s)).collect();
        let report = h
            .spawn_daemon(false, when_all(udids, &[Light::Done, Light::Attention]))
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.done, 2, "{}", h.out.text());
        assert_eq!(
            h.record(2).outcome,
            Outcome::NeedsAttention(Attention::NotInOrganization)
        );
        assert_eq!(server.stats().activities.len(), 2);
    })
    .await
}
