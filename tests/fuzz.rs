//! Fuzzing, on stable Rust, of every parser that reads bytes from outside: usbmux frames and the
//! messages in them, plist service messages (lockdownd and its services), MCInstall replies,
//! pair records, the station configuration (TOML), .mobileconfig and PKCS#12/PEM identity import,
//! and the audit log.
//!
//! Each target is a time-budgeted loop (`arbtest`): inputs are valid seeds mutated by
//! `arbitrary` data (bytes flipped, inserted, deleted, truncated, spliced) or plain arbitrary
//! bytes. The property is the same everywhere: the parser returns (a value or an error) without
//! panicking, hanging or allocating without bound. A failure prints the seed to replay with
//! `ARBTEST_SEED=<seed> cargo test --test fuzz <target>`.
//!
//! `CARTPREP_FUZZ_SECONDS` is the budget per target (default 2: CI's short run). The README
//! gives the 10-minute run.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbitrary::Unstructured;
use plist::{Dictionary, Value};

fn budget() -> Duration {
    let seconds = std::env::var("CARTPREP_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `property` on inputs made from `seeds` for the budget, and says how many it tried.
fn fuzz(target: &str, seeds: &[Vec<u8>], mut property: impl FnMut(&[u8])) {
    let runs = AtomicU64::new(0);
    arbtest::arbtest(|u| {
        let input = input(u, seeds)?;
        property(&input);
        runs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })
    .size_max(8 * 1024)
    .budget(budget())
    .run();
    eprintln!(
        "fuzz {target}: {} inputs in {:?}, no crash",
        runs.load(Ordering::Relaxed),
        budget()
    );
}

/// A seed mutated a few times, or (one time in eight) arbitrary bytes.
fn input(u: &mut Unstructured<'_>, seeds: &[Vec<u8>]) -> arbitrary::Result<Vec<u8>> {
    if seeds.is_empty() || u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let mut bytes = u.choose(seeds)?.clone();
    for _ in 0..u.int_in_range(0..=8)? {
        mutate(u, &mut bytes, seeds)?;
    }
    Ok(bytes)
}

/// Bytes that often sit on a parser's edges.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'<', b'>', b'"', b'=', b'[', b']', b'{', b'}', b'\n', b'\\',
];

fn mutate(
    u: &mut Unstructured<'_>,
    bytes: &mut Vec<u8>,
    seeds: &[Vec<u8>],
) -> arbitrary::Result<()> {
    let at = |u: &mut Unstructured<'_>, len: usize| u.int_in_range(0..=len);
    match u.int_in_range(0..=6)? {
        0 if !bytes.is_empty() => {
            let i = at(u, bytes.len() - 1)?;
            bytes[i] ^= 1 << u.int_in_range(0..=7)?;
        }
        1 if !bytes.is_empty() => {
            let i = at(u, bytes.len() - 1)?;
            bytes[i] = *u.choose(INTERESTING)?;
        }
        2 => {
            let i = at(u, bytes.len())?;
            let n = u.int_in_range(1..=16)?;
            let insert: Vec<u8> = (0..n).map(|_| u.arbitrary()).collect::<Result<_, _>>()?;
            bytes.splice(i..i, insert);
        }
        3 if !bytes.is_empty() => {
            let i = at(u, bytes.len() - 1)?;
            let n = u.int_in_range(1..=64)?.min(bytes.len() - i);
            bytes.drain(i..i + n);
        }
        4 => {
            let i = at(u, bytes.len())?;
            bytes.truncate(i);
        }
        5 if !bytes.is_empty() => {
            // A chunk of the input repeated: deep nesting, long runs.
            let i = at(u, bytes.len() - 1)?;
            let n = u.int_in_range(1..=32)?.min(bytes.len() - i);
            let chunk = bytes[i..i + n].to_vec();
            for _ in 0..u.int_in_range(1..=64)? {
                bytes.splice(i..i, chunk.iter().copied());
            }
        }
        _ => {
            // Part of another seed spliced in.
            let other = u.choose(seeds)?;
            if !other.is_empty() {
                let from = at(u, other.len() - 1)?;
                let to = at(u, other.len() - from)? + from;
                let i = at(u, bytes.len())?;
                bytes.splice(i..i, other[from..to].iter().copied());
            }
        }
    }
    Ok(())
}

fn xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, dict).expect("xml");
    out
}

fn binary(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::to_writer_binary(&mut out, dict).expect("binary");
    out
}

fn dict(pairs: &[(&str, Value)]) -> Dictionary {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Messages as usbmuxd, lockdownd and MCInstall send them.
fn message_seeds() -> Vec<Dictionary> {
    let props = dict(&[
        ("DeviceID", 3u64.into()),
        ("SerialNumber", "00008030-000D543C1A30C02E".into()),
        ("ConnectionType", "USB".into()),
        ("LocationID", 0x14100000u64.into()),
        ("ProductID", 0x12abu64.into()),
    ]);
    let failure = dict(&[
        ("ErrorCode", 33004u64.into()),
        ("ErrorDomain", "MCCloudConfigErrorDomain".into()),
        ("LocalizedDescription", "must use ADE".into()),
    ]);
    vec![
        dict(&[
            ("MessageType", "Attached".into()),
            ("DeviceID", 3u64.into()),
            ("Properties", Value::Dictionary(props.clone())),
        ]),
        dict(&[("MessageType", "Result".into()), ("Number", 0u64.into())]),
        dict(&[(
            "DeviceList",
            Value::Array(vec![Value::Dictionary(dict(&[
                ("DeviceID", 3u64.into()),
                ("MessageType", "Attached".into()),
                ("Properties", Value::Dictionary(props)),
            ]))]),
        )]),
        dict(&[
            ("MessageType", "Connect".into()),
            ("DeviceID", 3u64.into()),
            ("PortNumber", 0x7ef2u64.into()),
            ("ClientVersionString", "cartprep".into()),
            ("ProgName", "cartprep".into()),
        ]),
        dict(&[
            ("Request", "GetValue".into()),
            ("Key", "SerialNumber".into()),
            ("Value", "F9FZ1234ABCD".into()),
        ]),
        dict(&[
            ("Status", "Error".into()),
            ("ErrorChain", Value::Array(vec![Value::Dictionary(failure)])),
        ]),
        dict(&[
            ("Status", "Acknowledged".into()),
            (
                "ProfileMetadata",
                Value::Dictionary(dict(&[(
                    "org.example.wifi",
                    Value::Dictionary(dict(&[
                        ("PayloadDisplayName", "Wi-Fi".into()),
                        ("PayloadUUID", "6E1D3C52".into()),
                    ])),
                )])),
            ),
            (
                "OrderedIdentifiers",
                Value::Array(vec!["org.example.wifi".into()]),
            ),
        ]),
    ]
}

fn plist_seeds() -> Vec<Vec<u8>> {
    message_seeds()
        .iter()
        .flat_map(|d| [xml(d), binary(d)])
        .collect()
}

#[test]
fn usbmux_frames_and_the_messages_they_carry() {
    let seeds: Vec<Vec<u8>> = message_seeds()
        .iter()
        .map(|d| usbmux::Frame::plist(7, d).expect("frame").to_bytes())
        .collect();
    fuzz("usbmux frames", &seeds, |bytes| {
        let Ok((frame, _rest)) = usbmux::Frame::parse(bytes, usbmux::frame::MAX_REPLY_LEN) else {
            return;
        };
        if let Ok(d) = frame.plist_dict() {
            let _ = usbmux::DeviceProperties::from_attached(&d);
            let _ = usbmux::Request::from_dict(&d);
            let _ = usbmux::message::result_number(&d);
        }
    });
}

#[test]
fn plist_service_messages() {
    let seeds: Vec<Vec<u8>> = plist_seeds()
        .into_iter()
        .map(|body| {
            let mut framed = (body.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&body);
            framed
        })
        .collect();
    fuzz("plist services", &seeds, |bytes| {
        let mut rest = bytes;
        // Several messages back to back, as a stream holds them.
        for _ in 0..4 {
            match usbmux::plist_service::parse(rest) {
                Ok((_, more)) => rest = more,
                Err(_) => break,
            }
        }
    });
}

#[test]
fn mcinstall_replies() {
    fuzz("MCInstall replies", &plist_seeds(), |bytes| {
        if let Ok(d) = usbmux::plist_service::decode_body(bytes) {
            let _ = mcinstall::error::check_reply("Fuzz", &d);
            let _ = mcinstall::error::parse_chain(&d);
            let _ = mcinstall::profile_list::parse(&d);
        }
    });
}

#[test]
fn pair_records() {
    let record = dict(&[
        (
            "DeviceCertificate",
            Value::Data(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec()),
        ),
        (
            "HostCertificate",
            Value::Data(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec()),
        ),
        (
            "RootCertificate",
            Value::Data(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec()),
        ),
        (
            "HostPrivateKey",
            Value::Data(b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_vec()),
        ),
        (
            "RootPrivateKey",
            Value::Data(b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_vec()),
        ),
        ("HostID", "6E1D3C52-4D0A-4C57-9F35-0F2B5C1E7A11".into()),
        ("SystemBUID", "2B0F6C0B-0D71-4E1A-9D4B-5B8B2D7A1C33".into()),
        ("EscrowBag", Value::Data(vec![0; 32])),
        ("WiFiMACAddress", "aa:bb:cc:dd:ee:ff".into()),
        ("UDID", "00008030-000D543C1A30C02E".into()),
    ]);
    fuzz("pair records", &[xml(&record), binary(&record)], |bytes| {
        let _ = lockdown::pair_records::parse(bytes);
    });
}

#[test]
fn mobileconfig_import() {
    let profile = profiles::WifiProfile::new(
        "School-iPads",
        profiles::wifi::Security::Wpa2,
        Some(profiles::wifi::Secret::new("correct horse battery staple")),
    )
    .to_mobileconfig()
    .expect("a profile");
    fuzz(".mobileconfig", &[profile], |bytes| {
        let _ = profiles::wifi::parse_mobileconfig(bytes.to_vec());
    });
}

/// One identity for the identity targets (key generation is the slow part).
fn identity() -> &'static profiles::SupervisionIdentity {
    static ID: OnceLock<profiles::SupervisionIdentity> = OnceLock::new();
    ID.get_or_init(|| profiles::SupervisionIdentity::create("Fuzz School").expect("identity"))
}

#[test]
fn pkcs12_and_pem_identity_import() {
    let id = identity();
    let p12 = id.to_pkcs12("secret", "Fuzz School").expect("p12");
    let pem = id.to_keybag_pem().expect("pem").as_bytes().to_vec();
    fuzz("PKCS#12 and PEM import", &[p12, pem], |bytes| {
        let _ = profiles::SupervisionIdentity::from_pkcs12(bytes, "secret");
        let _ = profiles::SupervisionIdentity::from_pem(bytes);
    });
}

#[test]
fn station_configuration() {
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/station.example.toml"))
            .expect("the example config");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("station.toml");
    fuzz("config TOML", &[example], |bytes| {
        std::fs::write(&path, bytes).expect("write");
        if let Err(e) = station::Settings::load(&path) {
            // Every message names the file.
            assert!(e.to_string().contains("station.toml"), "{e}");
        }
    });
}

#[test]
fn audit_log() {
    let mut record = station::DeviceRecord::new_at("F9FZ1234ABCD", "00008030-000D543C1A30C02E", 1);
    record.begin_attempt();
    record.advance(station::Step::Paired, Some("slot 1".into()));
    record.number = Some(0);
    record.name = Some("Cart A - 01".into());
    let line = format!(
        "{{\"at_ms\":2,\"serial\":\"F9FZ1234ABCD\",\"event\":\"advance\",\"record\":{}}}\n",
        serde_json::to_string(&record).expect("json")
    );
    let log = line.repeat(3).into_bytes();
    let dir = tempfile::tempdir().expect("temp dir");
    fuzz("audit log", &[line.into_bytes(), log], |bytes| {
        let _ = station::ledger::parse_audit_line(bytes);
        std::fs::write(dir.path().join(station::ledger::AUDIT_FILE), bytes).expect("write");
        let _ = station::Ledger::read_only(dir.path());
    });
}
