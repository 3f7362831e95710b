//! Field transcripts end to end (issue 14, item 5): the station prepares a fresh iPad of a
//! simulated cart with transcripts on; the transcript is then served back by the replayer
//! (`cartprep sim --replay`) and a second station, with a state of its own, prepares the
//! replayed iPad: done, one record, the same steps.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use simulator::replay::{self, Replay};
use station::slots::FixedTopology;
use station::status::Light;
use station::{Outcome, Step};

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

fn transcripts_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_ipad_replays_and_the_station_prepares_it() {
    within(async {
        // 1. Record: a fresh iPad prepared with transcripts on.
        let recording = Harness::new(cart(vec![fresh()])).await;
        let udid = recording.udid(1);
        let serial = recording.serial(1);
        let dir = recording.root.path().join("transcripts");
        let mut settings = recording.settings();
        Arc::make_mut(&mut settings.config).transcript = Some(dir.clone());
        let report = spawn_daemon(
            settings,
            recording.board.clone(),
            Arc::new(recording.topology()),
            false,
            when_all(vec![udid.clone()], &[Light::Done]),
        )
        .await
        .unwrap()
        .expect("the recording run ends");
        assert_eq!(report.summary.done, 1, "{}", recording.out.text());
        let files = transcripts_in(&dir);
        assert_eq!(files.len(), 1, "one job, one transcript: {files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&udid), "named by the UDID: {name}");

        // 2. Replay it, next to a cart whose activation server knows the iPad.
        let replayed = Arc::new(Replay::load(&files[0]).expect("the transcript loads"));
        assert_eq!(replayed.header.udid, udid);
        assert_eq!(replayed.serial.as_deref(), Some(serial.as_str()));
        let companion = Harness::new(replayed.companion_scenario()).await;
        let (replay_addr, _serving) =
            replay::start(replayed.clone(), &"127.0.0.1:0".parse().unwrap())
                .await
                .expect("the replayer listens");
        // The same organisation identity as the recording station, as at the school.
        for file in ["supervision.crt.der", "supervision.key.pem"] {
            let bytes = std::fs::read(recording.identity_dir().join(file)).unwrap();
            profiles::files::write_private(&companion.identity_dir().join(file), &bytes).unwrap();
        }
        write_atomically(
            &companion.config_path,
            config_text(
                &ConfigSpec::default(),
                &companion.station_dir,
                &replay_addr.to_string(),
                &companion.sim().activation_server_url(),
                1,
            )
            .as_bytes(),
        );

        // 3. The station prepares the replayed iPad.
        let report = spawn_daemon(
            companion.settings(),
            companion.board.clone(),
            Arc::new(FixedTopology(Vec::new())),
            false,
            when_all(vec![udid.clone()], &[Light::Done]),
        )
        .await
        .unwrap()
        .expect("the replay run ends");
        eprintln!("{}", companion.out.text());
        assert_eq!(report.summary.done, 1, "{}", companion.out.text());
        assert_eq!((report.summary.attention, report.summary.failed), (0, 0));
        let records = companion.records();
        assert_eq!(records.len(), 1, "one record: {records:?}");
        assert_eq!(records[0].serial, serial);
        assert_eq!(records[0].outcome, Outcome::Done);
        assert_eq!(steps(&records[0]), FRESH_IPAD_HISTORY);
        assert_eq!(
            replayed.misses(),
            0,
            "every request of the replay run had a recorded reply"
        );
    })
    .await;
}

/// `cartprep sim --replay FILE`: the replayed iPad is listed by its recorded properties and
/// answers lockdownd with the recorded reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cartprep_sim_replay_serves_the_recorded_ipad() {
    use std::io::BufRead;
    use usbmux::transcript::{Direction, FileSink, Header, LOCKDOWND, Transcript};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ipad.transcript");
    let udid = "00008101-000A1C2E3F4A5B6C";
    let header = Header {
        udid: udid.into(),
        started: "2026-12-01T08:00:00Z".into(),
        device: usbmux::DeviceProperties::usb(9, udid).properties_dict(),
    };
    let transcript = Transcript::new(FileSink::create(&file, &header).unwrap());
    let tap = transcript.tap(LOCKDOWND).unwrap();
    let message = |pairs: &[(&str, &str)]| -> plist::Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), plist::Value::from(*v)))
            .collect()
    };
    tap.record(Direction::Request, &message(&[("Request", "QueryType")]));
    tap.record(
        Direction::Reply,
        &message(&[
            ("Request", "QueryType"),
            ("Type", "com.apple.mobile.lockdown"),
        ]),
    );
    tap.record(
        Direction::Request,
        &message(&[("Request", "GetValue"), ("Key", "SerialNumber")]),
    );
    tap.record(
        Direction::Reply,
        &message(&[
            ("Request", "GetValue"),
            ("Key", "SerialNumber"),
            ("Value", "F9FS33GDN4QW"),
        ]),
    );
    drop((tap, transcript));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cartprep"))
        .arg("sim")
        .arg("--replay")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("sim"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cartprep sim starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let announced = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(90))
            .expect("cartprep sim says where it replays");
        if line.starts_with("replaying ") {
            break line;
        }
    };
    assert!(
        announced.contains(udid) && announced.contains("serial F9FS33GDN4QW"),
        "{announced}"
    );
    let addr: usbmux::UsbmuxAddress = announced
        .rsplit(" on ")
        .next()
        .unwrap()
        .parse()
        .expect("an address");
    let result = async {
        let devices = usbmux::UsbmuxClient::connect(&addr)
            .await?
            .list_devices()
            .await?;
        let listed: Vec<(u32, String)> = devices
            .iter()
            .map(|d| (d.device_id, d.udid.clone()))
            .collect();
        assert_eq!(listed, [(9, udid.to_owned())]);
        let mut session =
            lockdown::DeviceSession::connect(lockdown::DeviceRef::new(addr.clone(), &devices[0]))
                .await?;
        assert_eq!(session.query_type().await?, "com.apple.mobile.lockdown");
        assert_eq!(session.get_string("SerialNumber").await?, "F9FS33GDN4QW");
        // Never recorded: the replayed iPad drops the connection rather than make one up.
        assert!(session.get_string("DeviceName").await.is_err());
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.expect("the replayed iPad answers");
}
