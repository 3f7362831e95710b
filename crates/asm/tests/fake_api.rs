//! The client against the simulator's fake Apple School Manager API: authentication, token
//! expiry, paging, rate limiting, device look-ups and assignment activities.

use std::collections::HashSet;
use std::time::Duration;

use asm::{
    ActivityState, AsmClient, AsmError, AsmSettings, Kind, PrivateKey, RetryPolicy, ServerId,
};
use simulator::activation::ActivationAuthority;
use simulator::asm_server::{self, AsmDevice, AsmScenario, AsmServer, AsmService};

const CLIENT_ID: &str = "SCHOOLAPI.3f2b7c1e-test";
const KEY_ID: &str = "d136aa66-test";
const OURS: &str = "1F97349736CF4614A94F624E705841AD";
const OTHER: &str = "2A00000000000000000000000000000B";

struct Fixture {
    _dir: tempfile::TempDir,
    server: AsmServer,
    key: PrivateKey,
}

fn device(serial: &str, assigned_to: Option<&str>) -> AsmDevice {
    AsmDevice {
        serial: serial.into(),
        product_type: "iPad12,1".into(),
        assigned_to: assigned_to.map(str::to_owned),
    }
}

async fn fixture(edit: impl FnOnce(&mut AsmScenario)) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = ActivationAuthority::load_or_create(dir.path()).expect("authority");
    let key = PrivateKey::generate();
    let mut scenario = AsmScenario::new(CLIENT_ID, KEY_ID, &key.public_key_pem().expect("public"));
    scenario.services = vec![
        AsmService {
            id: OURS.into(),
            name: "Mosyle".into(),
        },
        AsmService {
            id: OTHER.into(),
            name: "Previous owner's MDM".into(),
        },
    ];
    scenario.devices = vec![
        device("DMPWAAAA0001", None),
        device("DMPWAAAA0002", Some(OTHER)),
        device("DMPWAAAA0003", Some(OURS)),
    ];
    edit(&mut scenario);
    let server = asm_server::start(&authority, scenario)
        .await
        .expect("server");
    Fixture {
        _dir: dir,
        server,
        key,
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        backoff: Duration::from_millis(10),
        max_wait: Duration::from_secs(5),
    }
}

impl Fixture {
    fn settings(&self, key: PrivateKey) -> AsmSettings {
        let mut s = AsmSettings::new(Kind::School, CLIENT_ID.into(), KEY_ID.into(), key);
        s.api_url = Some(self.server.api_url.clone());
        s.token_url = Some(self.server.token_url.clone());
        s.extra_ca_pem = Some(self.server.ca_pem.clone());
        s.timeout = Duration::from_secs(10);
        s
    }

    fn client(&self) -> AsmClient {
        AsmClient::with_retry(self.settings(self.key.clone()), quick()).expect("client")
    }
}

#[tokio::test]
async fn a_wrong_private_key_is_an_authentication_error_that_says_so() {
    let f = fixture(|_| {}).await;
    let client =
        AsmClient::with_retry(f.settings(PrivateKey::generate()), quick()).expect("client");
    let e = client.devices().await.expect_err("refused");
    match &e {
        AsmError::Auth { code, .. } => assert_eq!(code, "invalid_client"),
        other => panic!("expected an authentication error, got {other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("refused the API credentials"), "{text}");
    assert!(text.contains("private_key_file"), "{text}");
    assert_eq!(f.server.stats().assertions_refused, 1);
    assert_eq!(f.server.stats().tokens_issued, 0);
}

#[tokio::test]
async fn a_token_is_reused_until_it_expires_and_then_renewed() {
    let f = fixture(|_| {}).await;
    let client = f.client();
    assert_eq!(client.devices().await.expect("first").len(), 3);
    assert_eq!(client.servers().await.expect("second").len(), 2);
    assert_eq!(f.server.stats().tokens_issued, 1, "the token is cached");
    f.server.expire_tokens();
    assert_eq!(client.devices().await.expect("after expiry").len(), 3);
    let stats = f.server.stats();
    assert_eq!(stats.expired_tokens_refused, 1);
    assert_eq!(stats.tokens_issued, 2, "one new token after the expiry");
}

#[tokio::test]
async fn every_page_of_devices_is_read() {
    let f = fixture(|s| {
        s.devices = (0..250)
            .map(|i| device(&format!("DMPWB{i:07}"), None))
            .collect();
    })
    .await;
    let devices = f.client().devices().await.expect("devices");
    assert_eq!(devices.len(), 250);
    let unique: HashSet<_> = devices.iter().map(|d| d.id.clone()).collect();
    assert_eq!(unique.len(), 250, "no page read twice");
    assert_eq!(f.server.stats().pages_served, 3, "100 + 100 + 50");
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_it_gives() {
    let f = fixture(|s| {
        s.rate_limit_every = Some(2);
        s.retry_after = Duration::from_secs(1);
    })
    .await;
    let client = f.client();
    for serial in ["DMPWAAAA0001", "DMPWAAAA0002", "DMPWAAAA0003"] {
        assert!(client.device(serial).await.expect("answered").is_some());
    }
    let stats = f.server.stats();
    assert!(stats.rate_limited >= 1, "{stats:?}");
    assert_eq!(stats.early_retries, 0, "never came back before Retry-After");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_client_waits_is_returned_as_rate_limited() {
    let f = fixture(|s| {
        s.rate_limit_every = Some(1);
        s.retry_after = Duration::from_secs(30);
    })
    .await;
    let mut policy = quick();
    policy.max_wait = Duration::from_secs(1);
    let client = AsmClient::with_retry(f.settings(f.key.clone()), policy).expect("client");
    match client.device("DMPWAAAA0001").await {
        Err(AsmError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Duration::from_secs(30))
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_outside_the_organization_and_assignments_are_told_apart() {
    let f = fixture(|_| {}).await;
    let client = f.client();
    assert!(
        client
            .device("NOTOURS00001")
            .await
            .expect("answered")
            .is_none()
    );
    assert_eq!(
        client
            .assigned_server("DMPWAAAA0001")
            .await
            .expect("unassigned"),
        None
    );
    assert_eq!(
        client
            .assigned_server("DMPWAAAA0002")
            .await
            .expect("assigned"),
        Some(ServerId(OTHER.into()))
    );
    assert!(matches!(
        client.assigned_server("NOTOURS00001").await,
        Err(AsmError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_assignment_activity_assigns_the_devices() {
    let f = fixture(|_| {}).await;
    let client = f.client();
    let ours = ServerId(OURS.into());
    let activity = client
        .assign(&["DMPWAAAA0001".into(), "DMPWAAAA0002".into()], &ours)
        .await
        .expect("created");
    assert_eq!(activity.state(), ActivityState::InProgress);
    let state = client
        .wait_for(&activity.id, Duration::from_millis(10), 5)
        .await
        .expect("polled");
    assert_eq!(state, ActivityState::Succeeded);
    assert_eq!(
        client.assigned_server("DMPWAAAA0002").await.expect("read"),
        Some(ours)
    );
    assert_eq!(f.server.stats().activities.len(), 1);
}

#[tokio::test]
async fn an_activity_that_fails_is_reported_failed_and_assigns_nothing() {
    let f = fixture(|s| {
        s.failing_serials.insert("DMPWAAAA0001".into());
    })
    .await;
    let client = f.client();
    let activity = client
        .assign(&["DMPWAAAA0001".into()], &ServerId(OURS.into()))
        .await
        .expect("created");
    let state = client
        .wait_for(&activity.id, Duration::from_millis(10), 5)
        .await
        .expect("polled");
    assert_eq!(
        state,
        ActivityState::Failed {
            status: "FAILED".into(),
            sub_status: "COMPLETED_WITH_FAILURE".into()
        }
    );
    assert_eq!(f.server.assigned("DMPWAAAA0001"), None);
}

#[tokio::test]
async fn verify_resolves_the_server_name_or_lists_the_names_there_are() {
    let f = fixture(|_| {}).await;
    let settings = f.settings(f.key.clone());
    assert_eq!(
        asm::verify(&settings, "Mosyle").await.expect("found"),
        ServerId(OURS.into())
    );
    match asm::verify(&settings, "Mosyl").await {
        Err(e @ AsmError::ServerNotFound { .. }) => {
            let text = e.to_string();
            assert!(text.contains("\"Mosyl\""), "{text}");
            assert!(text.contains("Mosyle, Previous owner's MDM"), "{text}");
        }
        other => panic!("expected server not found, got {other:?}"),
    }
}
