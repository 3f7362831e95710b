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
