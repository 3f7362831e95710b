//! The redaction test (issue 14, item 5): a demo-like cart (fresh iPads paired, activated,
//! supervised, given the Wi-Fi and named; one pulled out in the middle and plugged back in)
//! prepared with transcripts on, then every secret the run used — the Wi-Fi password, the
//! supervision identity's private key, every pair record's private keys and escrow bag — is
//! looked for in every transcript file, as text, as base64 and hex, and inside every data
//! value (opened recursively, as a reader of the transcript would).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use common::*;
use plist::Value;
use station::Step;
use station::status::Light;
use usbmux::transcript::{self, Direction};

/// A PEM file's body, decoded (the key's DER).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}

/// Every byte string a transcript holds: strings, and data values, opening data that is a plist.
fn payloads(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::String(s) => out.push(s.as_bytes().to_vec()),
        Value::Data(d) => {
            out.push(d.clone());
            if let Ok(inner) = plist::from_bytes::<Value>(d) {
                payloads(&inner, out);
            }
        }
        Value::Dictionary(d) => d.values().for_each(|v| payloads(v, out)),
        Value::Array(a) => a.iter().for_each(|v| payloads(v, out)),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn transcript_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the transcript folder exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Runs a cart of `n` fresh iPads to DONE with transcripts in `dir`; the iPad in slot 2 is
/// pulled out while it is being supervised and plugged back in.
async fn prepare_cart(n: u32) -> (Harness, PathBuf) {
    let h = Harness::new(cart((0..n).map(|_| fresh()).collect())).await;
    let dir = h.root.path().join("transcripts");
    let mut settings = h.settings();
    Arc::make_mut(&mut settings.config).transcript = Some(dir.clone());
    let udids: Vec<String> = (1..=n).map(|s| h.udid(s)).collect();
    let daemon = spawn_daemon(
        settings,
        h.board.clone(),
        Arc::new(h.topology()),
        false,
        when_all(udids, &[Light::Done]),
    );
    // Pulled out once activated, while it is being supervised or later (as
    // `tests/station_e2e.rs` does), so its first transcript ends in the middle of MCInstall.
    h.wait_for("slot 2 working at “supervised” or later", |h| {
        h.status(2).is_some_and(|s| {
            s.light == Light::Working && s.current.is_some_and(|st| st >= Step::Supervised)
        })
    })
    .await;
    h.sim().cart.unplug(2).expect("slot 2 unplugs");
    h.wait_for("slot 2 shown unplugged", |h| {
        h.light(2) == Some(Light::Unplugged)
    })
    .await;
    h.sim().cart.plug(2).expect("slot 2 plugs back in");
    let report = daemon.await.unwrap().expect("the station runs");
    assert_eq!(report.summary.done, n as usize, "{}", h.out.text());
    (h, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_a_cart_reaches_a_transcript() {
    let (h, transcripts) = within(prepare_cart(4)).await;
    let station = h.station_dir.clone();

    // Every secret of the run, as raw bytes.
    let mut secrets: Vec<(String, Vec<u8>)> = vec![(
        "the Wi-Fi password".into(),
        WIFI_PASSWORD.as_bytes().to_vec(),
    )];
    let identity_key =
        std::fs::read_to_string(station.join("identity/supervision.key.pem")).unwrap();
    secrets.push(("the identity key (DER)".into(), pem_der(&identity_key)));
    let mut pair_records = 0;
    for entry in std::fs::read_dir(station.join("pair-records")).unwrap() {
        let record: plist::Dictionary = plist::from_file(entry.unwrap().path()).unwrap();
        pair_records += 1;
        for name in ["HostPrivateKey", "RootPrivateKey"] {
            let pem = record.get(name).and_then(Value::as_data).unwrap();
            let pem = String::from_utf8_lossy(pem).into_owned();
            secrets.push((format!("a pair record's {name} (DER)"), pem_der(&pem)));
            let line = pem.lines().nth(2).unwrap().as_bytes().to_vec();
            secrets.push((format!("a line of a pair record's {name} (PEM)"), line));
        }
        let bag = record.get("EscrowBag").and_then(Value::as_data).unwrap();
        secrets.push(("a pair record's EscrowBag".into(), bag.to_vec()));
    }
    assert_eq!(pair_records, 4, "the station paired its iPads");

    // The forms a secret could take in a transcript's text.
    let mut forms: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, bytes) in &secrets {
        // A distinctive middle part: the start of a DER key is the same in every key.
        let middle = if bytes.len() > 96 {
            bytes[bytes.len() / 2..bytes.len() / 2 + 48].to_vec()
        } else {
            bytes.clone()
        };
        assert!(middle.len() >= 8, "{what} is distinctive");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&middle);
        let hex: String = middle.iter().map(|b| format!("{b:02x}")).collect();
        forms.push((format!("{what} (raw)"), middle.clone()));
        // Base64 of a middle part: trim the ends, which depend on the alignment.
        forms.push((
            format!("{what} (base64)"),
            b64.as_bytes()[4..b64.len() - 4].to_vec(),
        ));
        forms.push((format!("{what} (hex)"), hex.into_bytes()));
    }

    let files = transcript_files(&transcripts);
    assert!(
        files.len() >= 5,
        "one transcript per iPad's job, the replugged iPad's two: {files:?}"
    );
    let mut channels = std::collections::BTreeSet::new();
    let mut all_text = String::new();
    for file in &files {
        let text = std::fs::read(file).unwrap();
        let squeezed: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let (_, entries) =
            transcript::read(file).unwrap_or_else(|e| panic!("{} reads back: {e}", file.display()));
        let mut inside = Vec::new();
        for e in &entries {
            channels.insert((e.channel.clone(), e.direction));
            payloads(&Value::Dictionary(e.message.clone()), &mut inside);
        }
        for (what, form) in &forms {
            assert!(
                !contains(&text, form) && !contains(&squeezed, form),
                "{what} appears in {}",
                file.display()
            );
            assert!(
                !inside.iter().any(|p| contains(p, form)),
                "{what} appears inside a value of {}",
                file.display()
            );
        }
        assert!(!contains(&text, b"PRIVATE KEY"), "{}", file.display());
        all_text.push_str(&String::from_utf8_lossy(&text));
    }

    // The secrets' places were there, and redacted: not an empty or partial transcript.
    for marker in [
        "REDACTED:EscrowBag",
        "REDACTED:HostPrivateKey",
        "REDACTED:RootPrivateKey",
    ] {
        assert!(all_text.contains(marker), "no {marker} in the transcripts");
    }
    assert!(
        all_text.contains("REDACTED:Password") || all_text.contains("signed profile of"),
        "the Wi-Fi profile was recorded with its password redacted"
    );
    for channel in [
        transcript::USBMUXD,
        transcript::LOCKDOWND,
        "com.apple.mobile.MCInstall",
        "com.apple.mobileactivationd",
    ] {
        for direction in [Direction::Request, Direction::Reply] {
            assert!(
                channels.contains(&(channel.to_owned(), direction)),
                "no {direction:?} on {channel}: {channels:?}"
            );
        }
    }
}
