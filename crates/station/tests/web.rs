//! The web server on its own: the token guards every page of data (not the script and style),
//! `/api/status` is the board's snapshot, and `/events` starts with the whole board.

use std::sync::Arc;
use std::time::Duration;

use station::Ledger;
use station::status::{Board, DeviceStatus, Light, Snapshot};
use station::web::WebServer;

const TOKEN: &str = "3f9c2a7d5e1b8c4a6f0d2e9b7a5c3e1f";

async fn server(token: Option<&str>) -> (WebServer, Board, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path()).expect("ledger");
    let board = Board::new(Box::new(std::io::sink()), false);
    board.update(DeviceStatus {
        serial: Some("DMPXK1234567".into()),
        slot: Some("1".into()),
        ..DeviceStatus::new("U1", Light::Done, "prepared — unplug")
    });
    let server = WebServer::start(
        "127.0.0.1:0".parse().unwrap(),
        token,
        board.clone(),
        Arc::new(ledger),
    )
    .await
    .expect("listens");
    (server, board, dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn status_of(url: String, bearer: Option<&str>) -> reqwest::StatusCode {
    let mut request = client().get(url);
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("answer").status()
}

#[tokio::test]
async fn with_a_token_only_its_holder_reads_the_board() {
    let (server, _board, _dir) = server(Some(TOKEN)).await;
    let base = format!("http://{}", server.addr);
    for path in ["/", "/api/status", "/api/devices", "/metrics", "/events"] {
        assert_eq!(
            status_of(format!("{base}{path}"), None).await,
            401,
            "{path}"
        );
        assert_eq!(
            status_of(format!("{base}{path}"), Some("wrong-token-wrong-token")).await,
            401,
            "{path}"
        );
        assert_eq!(
            status_of(format!("{base}{path}?token=wrong-token-wrong"), None).await,
            401,
            "{path}"
        );
    }
    for path in ["/", "/api/status", "/api/devices", "/metrics"] {
        assert_eq!(
            status_of(format!("{base}{path}"), Some(TOKEN)).await,
            200,
            "{path}"
        );
        assert_eq!(
            status_of(format!("{base}{path}?token={TOKEN}"), None).await,
            200,
            "{path}"
        );
    }
    // The script and the style hold no data: a `?token=` link loads them without it.
    for path in ["/app.js", "/app.css"] {
        assert_eq!(
            status_of(format!("{base}{path}"), None).await,
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_api_is_the_board_and_the_ledger() {
    let (server, board, _dir) = server(None).await;
    let base = format!("http://{}", server.addr);
    let text = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let snapshot: Snapshot = serde_json::from_str(&text("/api/status").await).expect("a snapshot");
    assert_eq!(snapshot, board.snapshot());
    let devices: Vec<station::DeviceRecord> =
        serde_json::from_str(&text("/api/devices").await).expect("records");
    assert!(devices.is_empty(), "nothing in this ledger yet");
    assert_eq!(
        status_of(format!("{base}/api/devices/NOSUCHSERIAL"), None).await,
        404
    );
    let page = client().get(format!("{base}/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("app.js") && !html.contains("https://"),
        "no CDN: {html}"
    );
}

#[tokio::test]
async fn events_start_with_the_board_and_follow_its_changes() {
    let (server, board, _dir) = server(None).await;
    let mut stream = client()
        .get(format!("http://{}/events", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    // The next complete event, as text.
    async fn next_event(stream: &mut reqwest::Response, text: &mut String) -> String {
        loop {
            if let Some(end) = text.find("\n\n") {
                let event = text[..end].to_owned();
                text.drain(..end + 2);
                if !event.starts_with(':') {
                    return event;
                }
                continue;
            }
            let chunk = stream.chunk().await.expect("stream").expect("more");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let first = next_event(&mut stream, &mut text).await;
    assert!(first.starts_with("event: board\n"), "{first}");
    assert!(first.contains("DMPXK1234567"), "{first}");
    board.update(DeviceStatus {
        serial: Some("DMPXK7654321".into()),
        ..DeviceStatus::new("U2", Light::Working, "pairing")
    });
    let second = next_event(&mut stream, &mut text).await;
    assert!(
        second.contains("DMPXK7654321"),
        "the change arrived: {second}"
    );
}

#[tokio::test]
async fn stopping_the_server_ends_open_event_streams() {
    let (server, _board, _dir) = server(None).await;
    let mut stream = client()
        .get(format!("http://{}/events", server.addr))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.expect("stream");
    assert!(first.is_some(), "the board arrived");
    drop(server);
    // The stream ends (rather than hanging until the client's timeout fails the test).
    loop {
        match stream.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => panic!("the stream did not end cleanly: {e}"),
        }
    }
}
