//! Activation (`docs/protocol.md` §4, session flow) against virtual iPads and the
//! simulator's HTTPS activation server on loopback; HTTP failures against tiny local servers.

use std::time::Duration;

use lockdown::activation::{
    self, ActivationError, ActivationOptions, ActivationOutcome, ActivationServer,
    MobileActivationd,
};
use testcart::Cart;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCENARIO: &str = r#"
seed = 41

[[device]]            # 1: fresh, not activated
activated = false

[[device]]            # 2: Find My still on with someone's Apple ID
activated = false
activation_lock = true

[[device]]            # 3: already activated
activated = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unactivated_ipad_is_activated_through_the_session_flow() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(1).await;
    let device = MobileActivationd::new(&provider);
    assert_eq!(device.state().await.unwrap(), "Unactivated");

    let outcome = activation::activate(&provider, &cart.activation_server())
        .await
        .unwrap();
    assert_eq!(outcome, ActivationOutcome::Activated);
    assert_eq!(device.state().await.unwrap(), "Activated");
    assert!(cart.sim.cart.device(1).unwrap().state().activated);

    // lockdown agrees.
    let (mut s, _) = lockdown::trusted_session(cart.device(1).await, None, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.get_string("ActivationState").await.unwrap(), "Activated");

    // A second run sends nothing.
    assert_eq!(
        activation::activate(&provider, &cart.activation_server())
            .await
            .unwrap(),
        ActivationOutcome::AlreadyActivated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_ipad_is_left_alone() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(3).await;
    // Even an unreachable server is never contacted.
    let server = ActivationServer {
        base_url: "https://127.0.0.1:9/deviceservices/".parse().unwrap(),
        extra_root_certificates: vec![],
        timeout: Duration::from_secs(2),
    };
    assert_eq!(
        activation::activate(&provider, &server).await.unwrap(),
        ActivationOutcome::AlreadyActivated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_lock_is_typed_and_leaves_the_ipad_unactivated() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(2).await;
    match activation::activate(&provider, &cart.activation_server()).await {
        Err(ActivationError::ActivationLocked) => {}
        other => panic!("expected ActivationLocked, got {other:?}"),
    }
    assert_eq!(
        MobileActivationd::new(&provider).state().await.unwrap(),
        "Unactivated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_must_be_trusted() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(1).await;
    let mut server = cart.activation_server();
    server.extra_root_certificates.clear();
    match activation::activate(&provider, &server).await {
        Err(ActivationError::Http(msg)) => assert!(msg.contains("drmHandshake"), "{msg}"),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    // A DER root works as well as PEM.
    let pem = String::from_utf8(cart.sim.activation_ca_pem()).unwrap();
    let der = pem_to_der(&pem);
    server.extra_root_certificates = vec![der];
    assert_eq!(
        activation::activate(&provider, &server).await.unwrap(),
        ActivationOutcome::Activated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_refusals_keep_the_daemons_words() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(1).await;
    let device = MobileActivationd::new(&provider);
    let info = device.create_session_info().await.unwrap();
    assert!(info.contains_key("HandshakeRequestMessage"));
    match device
        .create_activation_info_with_session(b"not a handshake response")
        .await
    {
        Err(ActivationError::DeviceRefused { request, name }) => {
            assert_eq!(request, "CreateTunnel1ActivationInfoRequest");
            assert!(!name.is_empty());
        }
        other => panic!("expected DeviceRefused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_failures_are_typed() {
    let cart = Cart::start(SCENARIO).await;
    let (provider, _) = cart.provider(1).await;
    let options = ActivationOptions::default();

    // A server in maintenance.
    let (url, task) = tiny_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nmaintenance",
    ))
    .await;
    let server = ActivationServer::new(&url).unwrap();
    match activation::activate_with(&provider, &server, &options).await {
        Err(ActivationError::ServerError { status, body }) => {
            assert_eq!(status, 503);
            assert_eq!(body, "maintenance");
        }
        other => panic!("expected ServerError, got {other:?}"),
    }
    task.abort();

    // A server that accepts and never answers.
    let (url, task) = tiny_server(None).await;
    let mut server = ActivationServer::new(&url).unwrap();
    server.timeout = Duration::from_millis(700);
    match activation::activate_with(&provider, &server, &options).await {
        Err(ActivationError::Timeout { operation, after }) => {
            assert_eq!(operation, "drmHandshake");
            assert_eq!(after, Duration::from_millis(700));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    task.abort();

    // Nobody listening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let server =
        ActivationServer::new(&format!("http://127.0.0.1:{port}/deviceservices/")).unwrap();
    assert!(matches!(
        activation::activate_with(&provider, &server, &options).await,
        Err(ActivationError::Http(_))
    ));
    assert_eq!(
        MobileActivationd::new(&provider).state().await.unwrap(),
        "Unactivated"
    );
}

/// A plain-HTTP server on loopback: answers every request with `reply`, or holds the
/// connection without answering. Stops when the task is aborted.
async fn tiny_server(reply: Option<&'static str>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/deviceservices/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..16 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
            match reply {
                Some(r) => {
                    let _ = stream.write_all(r.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                None => held.push(stream),
            }
        }
    });
    (url, task)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64_decode(&b64)
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
