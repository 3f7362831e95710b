//! `[notify] webhook`: a receiver gets one event per iPad that is DONE or needs ATTENTION, with
//! no secret in it; a receiver that never answers holds no job up; and without `[web]` or
//! `[notify]` the station starts nothing new.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::post;
use common::*;
use serde_json::Value;
use simulator::scenario::{DeviceEntry, PairingKind};
use station::status::Light;

/// Bodies posted to a receiver that answers 200.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<String>>>);

impl Received {
    fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .map(|b| serde_json::from_str(b).expect("JSON"))
            .collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// A webhook receiver on loopback; returns its address and what it received.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let received = received.clone();
            move |body: String| async move {
                received.0.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

fn already_set_up() -> DeviceEntry {
    DeviceEntry {
        setup_done: true,
        activated: Some(true),
        pairing: PairingKind::Accept,
        ..fresh()
    }
}

fn activation_locked() -> DeviceEntry {
    DeviceEntry {
        activation_lock: true,
        ..fresh()
    }
}

const WEB_TOKEN: &str = "3f9c2a7d5e1b8c4a6f0d2e9b7a5c3e1f";

/// The harness's configuration with `[notify]` (and a `[web]` with a token, whose token must
/// not leak either).
fn write_config_with_webhook(h: &Harness, webhook: &str) {
    profiles::files::write_private(&h.station_dir.join("web-token"), WEB_TOKEN.as_bytes()).unwrap();
    let text = format!(
        "{}\n[web]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"web-token\"\n\n[notify]\nwebhook = \"{webhook}\"\nstation = \"Test cart\"\n",
        h.config_text(&ConfigSpec::default())
    );
    write_atomically(&h.config_path, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_one_event_per_done_and_attention_ipad_and_no_secret() {
    within(async {
        let h = Harness::new(cart(vec![
            fresh(),
            already_set_up(),
            fresh(),
            activation_locked(),
        ]))
        .await;
        let (url, received) = receiver().await;
        write_config_with_webhook(&h, &url);
        let stop = Arc::new(AtomicBool::new(false));
        let daemon = h.spawn_daemon(false, when_flag(stop.clone()));
        h.wait_for(
            "2 done and 2 attention events, and the cart complete",
            |_| {
                received.of_kind("done").len() >= 2
                    && received.of_kind("attention").len() >= 2
                    && !received.of_kind("cart_complete").is_empty()
            },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        let report = daemon.await.unwrap().expect("the daemon runs");
        assert_eq!((report.summary.done, report.summary.attention), (2, 2));

        let serials = |kind: &str| {
            let mut s: Vec<String> = received
                .of_kind(kind)
                .iter()
                .map(|e| e["ipad"]["serial"].as_str().expect("a serial").to_owned())
                .collect();
            s.sort();
            s
        };
        let mut done = vec![h.serial(1), h.serial(3)];
        done.sort();
        let mut attention = vec![h.serial(2), h.serial(4)];
        attention.sort();
        assert_eq!(serials("done"), done, "one event per iPad done");
        assert_eq!(
            serials("attention"),
            attention,
            "one per iPad needing attention"
        );
        assert!(received.of_kind("failed").is_empty());
        let reason_of = |slot: u32| {
            received
                .of_kind("attention")
                .into_iter()
                .find(|e| e["ipad"]["serial"] == h.serial(slot).as_str())
                .map(|e| e["reason"].clone())
        };
        assert_eq!(reason_of(2), Some(Value::from("already_set_up")));
        assert_eq!(reason_of(4), Some(Value::from("activation_locked")));
        let complete = received.of_kind("cart_complete");
        let last = complete.last().unwrap();
        assert_eq!(last["summary"]["done"], 2);
        assert_eq!(last["station"], "Test cart");

        // The station's own output names neither the web token nor the webhook's address
        // (a chat webhook's address is its password), only the webhook's host.
        let printed = h.out.text();
        assert!(!printed.contains(WEB_TOKEN), "{printed}");
        assert!(!printed.contains(&url), "{printed}");
        assert!(printed.contains("notifications: events are posted to http://127.0.0.1"));

        // No secret in any body: not the Wi-Fi password, the identity's key, the web token.
        let key = std::fs::read_to_string(h.identity_dir().join("supervision.key.pem")).unwrap();
        let key_lines: Vec<&str> = key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .take(3)
            .collect();
        for body in received.bodies() {
            assert!(
                !body.contains(WIFI_PASSWORD),
                "the Wi-Fi password in {body}"
            );
            assert!(!body.contains(WEB_TOKEN), "the web token in {body}");
            assert!(!body.contains("PRIVATE KEY"), "{body}");
            for line in &key_lines {
                assert!(!body.contains(line), "the identity's key in {body}");
            }
        }
    })
    .await;
}

/// A receiver that accepts connections and never answers; it tells how many it accepted and
/// whether the first is still open (the station has not given up on it).
async fn dead_receiver() -> (String, Arc<AtomicUsize>, Arc<AtomicBool>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let first_closed = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (accepted, first_closed) = (accepted.clone(), first_closed.clone());
        async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                let first_closed = first_closed.clone();
                tokio::spawn(async move {
                    // Read (and ignore) until the station closes its side.
                    let mut buf = [0u8; 4096];
                    while matches!(socket.read(&mut buf).await, Ok(k) if k > 0) {}
                    if n == 0 {
                        first_closed.store(true, Ordering::SeqCst);
                    }
                });
            }
        }
    });
    (format!("http://{addr}/hook"), accepted, first_closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_no_job_up() {
    within(async {
        let h = Harness::new(cart(vec![fresh(), fresh(), fresh()])).await;
        let (url, accepted, first_closed) = dead_receiver().await;
        write_config_with_webhook(&h, &url);
        let udids: Vec<String> = (1..=3).map(|s| h.udid(s)).collect();
        // Whether the first post was still unanswered and open at the moment every iPad was
        // done (looked at then: stopping the station closes it).
        let open_when_done = Arc::new(AtomicBool::new(false));
        let report = h
            .spawn_daemon(false, {
                let (accepted, first_closed) = (accepted.clone(), first_closed.clone());
                let open_when_done = open_when_done.clone();
                let all_done = when_all(udids, &[Light::Done]);
                Box::new(move |board, idle| {
                    let stop = all_done(board, idle) && accepted.load(Ordering::SeqCst) > 0;
                    if stop {
                        open_when_done
                            .store(!first_closed.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    stop
                })
            })
            .await
            .unwrap()
            .expect("the daemon runs");
        assert_eq!(report.summary.done, 3);
        // The first iPad's event was posted when it was done, before the other two; the
        // receiver never answered it, and the station was still waiting for that answer when
        // the last iPad was done: the jobs went on without it.
        assert!(
            open_when_done.load(Ordering::SeqCst),
            "the first post was still waiting for its answer when every iPad was done"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_web_or_notify_the_station_starts_nothing_new() {
    within(async {
        let h = Harness::new(cart(vec![fresh()])).await;
        let config = h.config();
        assert!(config.web.is_none() && config.notify.is_none());
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = station::Ledger::open(dir.path()).unwrap();
        let services =
            station::services::Services::start(&config, &h.board, &Arc::new(ledger)).await;
        assert!(services.web.is_none() && services.notifier.is_none());
        assert_eq!(h.board.subscribers(), 0, "nobody follows the board");

        // With [notify], one subscriber: the notifier.
        let (url, _received) = receiver().await;
        write_config_with_webhook(&h, &url);
        let config = h.config();
        let (ledger, _) = station::Ledger::open(&dir.path().join("2")).unwrap();
        let services =
            station::services::Services::start(&config, &h.board, &Arc::new(ledger)).await;
        assert!(services.web.is_some() && services.notifier.is_some());
        assert_eq!(h.board.subscribers(), 1);
    })
    .await;
}
