//! Assignment in Apple School Manager across station restarts: an iPad journaled as done
//! (assignment pending) before the station stopped is assigned once when it starts again, an
//! activity already submitted is polled rather than sent again, and nothing is sent twice.

use std::sync::Arc;
use std::time::Duration;

use station::asm_sync::{AsmLookup, AsmRecord, AsmSync, Assignment};
use station::status::Board;
use station::{DeviceRecord, Event, Ledger, Settings, Step};

use simulator::activation::ActivationAuthority;
use simulator::asm_server::{self, AsmDevice, AsmScenario, AsmServer, AsmService};

const OURS: &str = "1F97349736CF4614A94F624E705841AD";
const SERIAL: &str = "DMPWAAAA0001";

struct Station {
    dir: tempfile::TempDir,
    server: AsmServer,
    settings: Settings,
}

async fn station() -> Station {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = ActivationAuthority::load_or_create(&dir.path().join("ca")).expect("authority");
    let key = asm::PrivateKey::generate();
    let mut scenario = AsmScenario::new("SCHOOLAPI.t", "k1", &key.public_key_pem().expect("pem"));
    scenario.services = vec![AsmService {
        id: OURS.into(),
        name: "Mosyle".into(),
    }];
    scenario.devices = vec![AsmDevice {
        serial: SERIAL.into(),
        product_type: "iPad12,1".into(),
        assigned_to: None,
    }];
    let server = asm_server::start(&authority, scenario)
        .await
        .expect("server");
    let write = |name: &str, bytes: &[u8]| {
        profiles::files::write_private(&dir.path().join(name), bytes).expect("write")
    };
    write("asm-key.pem", key.to_pem().expect("pem").as_bytes());
    write("asm-ca.pem", &server.ca_pem);
    let config = format!(
        r#"state_dir = "state"
[organization]
name = "Springfield Elementary"
[wifi]
ssid = "Students"
security = "wpa2"
password = "correct horse"
[mdm]
name = "Mosyle"
enrollment_url = "https://mdm.example.org/enroll"
mode = "ade"
[asm]
client_id = "SCHOOLAPI.t"
key_id = "k1"
private_key_file = "asm-key.pem"
mdm_server = "Mosyle"
api_url = "{api}"
token_url = "{token}"
extra_ca_file = "asm-ca.pem"
"#,
        api = server.api_url,
        token = server.token_url,
    );
    write("station.toml", config.as_bytes());
    let settings = Settings::load(&dir.path().join("station.toml")).expect("config loads");
    Station {
        dir,
        server,
        settings,
    }
}

impl Station {
    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// What the ledger holds when the station stopped right after journaling DONE.
    async fn journal_done(&self, assignment: Assignment) {
        std::fs::create_dir_all(self.state()).expect("state folder");
        let (ledger, _) = Ledger::open(&self.state()).expect("ledger");
        let mut r = DeviceRecord::new(SERIAL, "00008030-0000000000000001");
        r.begin_attempt();
        r.advance(Step::Done, None);
        r.asm = Some(AsmRecord {
            lookup: AsmLookup::InOrganization {
                server: None,
                server_id: None,
            },
            assignment: Some(assignment),
        });
        ledger.save(&r, Event::Done).await.expect("saved");
    }

    /// Starts the station's ASM link as the daemon does, resumes, and waits for the work.
    async fn restart(&self) -> (usize, Option<Assignment>) {
        let (ledger, _) = Ledger::open(&self.state()).expect("ledger");
        let ledger = Arc::new(ledger);
        let board = Board::new(Box::new(std::io::sink()), false);
        let sync = AsmSync::start(&self.settings, ledger.clone(), board)
            .await
            .expect("credentials and server name accepted")
            .expect("[asm] is configured");
        let resumed = sync.resume().await.expect("ledger readable");
        sync.settle(Duration::from_secs(60)).await;
        let record = ledger.get(SERIAL).expect("read").expect("record");
        (resumed, record.asm.and_then(|a| a.assignment))
    }
}

#[tokio::test]
async fn a_restart_between_done_and_assignment_assigns_once() {
    let s = station().await;
    s.journal_done(Assignment::Pending {
        server: "Mosyle".into(),
    })
    .await;

    let (resumed, assignment) = s.restart().await;
    assert_eq!(resumed, 1);
    let activities = s.server.stats().activities;
    assert_eq!(activities.len(), 1, "one ASSIGN_DEVICES activity");
    assert_eq!(activities[0].1, vec![SERIAL.to_owned()]);
    assert_eq!(
        assignment,
        Some(Assignment::Assigned {
            server: "Mosyle".into(),
            activity_id: Some(activities[0].0.clone()),
        })
    );
    assert_eq!(s.server.assigned(SERIAL).as_deref(), Some(OURS));

    let (resumed, _) = s.restart().await;
    assert_eq!(resumed, 0, "nothing left open");
    assert_eq!(s.server.stats().activities.len(), 1, "never sent twice");
}

#[tokio::test]
async fn a_submitted_activity_is_polled_after_a_restart_not_sent_again() {
    let s = station().await;
    let client =
        asm::AsmClient::new(s.settings.asm.clone().expect("asm settings")).expect("client");
    let activity = client
        .assign(&[SERIAL.to_owned()], &asm::ServerId(OURS.into()))
        .await
        .expect("created");
    s.journal_done(Assignment::Submitted {
        server: "Mosyle".into(),
        activity_id: activity.id.clone(),
    })
    .await;

    let (_, assignment) = s.restart().await;
    assert_eq!(
        assignment,
        Some(Assignment::Assigned {
            server: "Mosyle".into(),
            activity_id: Some(activity.id),
        })
    );
    assert_eq!(s.server.stats().activities.len(), 1);
}

#[tokio::test]
async fn a_pending_assignment_already_done_in_asm_is_recorded_without_a_new_activity() {
    let s = station().await;
    let client =
        asm::AsmClient::new(s.settings.asm.clone().expect("asm settings")).expect("client");
    let activity = client
        .assign(&[SERIAL.to_owned()], &asm::ServerId(OURS.into()))
        .await
        .expect("created");
    client
        .wait_for(&activity.id, Duration::from_millis(10), 5)
        .await
        .expect("done");
    // Sent, and finished, but the station stopped before journaling it.
    s.journal_done(Assignment::Pending {
        server: "Mosyle".into(),
    })
    .await;
    let (_, assignment) = s.restart().await;
    assert_eq!(
        assignment,
        Some(Assignment::Assigned {
            server: "Mosyle".into(),
            activity_id: None,
        })
    );
    assert_eq!(s.server.stats().activities.len(), 1);
}

#[tokio::test]
async fn verify_checks_the_credentials_and_the_server_name() {
    let s = station().await;
    assert_eq!(
        station::asm_sync::verify(&s.settings)
            .await
            .expect("verified"),
        Some(asm::ServerId(OURS.into()))
    );
    let mut wrong = s.settings.clone();
    if let Some(c) = wrong.config.asm.as_ref() {
        let mut c = c.clone();
        c.mdm_server = "Mosyl".into();
        std::sync::Arc::make_mut(&mut wrong.config).asm = Some(c);
    }
    match station::asm_sync::verify(&wrong).await {
        Err(asm::AsmError::ServerNotFound { wanted, found }) => {
            assert_eq!(wanted, "Mosyl");
            assert_eq!(found, vec!["Mosyle".to_owned()]);
        }
        other => panic!("expected server not found, got {other:?}"),
    }
}
