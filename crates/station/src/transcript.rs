//! Field transcripts (`[debug] transcript`, `cartprep run --transcript DIR`): one file per iPad's
//! job, named by its UDID and the time the job began, holding every plist the station and the
//! iPad exchanged, secrets already replaced by markers (`docs/protocol.md` §9).
//!
//! The recording itself is in the protocol crates (`usbmux::transcript`); this module only
//! decides where a job's transcript goes.

use std::path::{Path, PathBuf};

use usbmux::DeviceProperties;
use usbmux::transcript::{FileSink, Header, Transcript};

use crate::clock;

/// The file name of a transcript: the UDID (anything but letters, digits and `-` replaced,
/// since a UDID comes from the device) and the UTC start time.
pub fn file_name(udid: &str, started_ms: u64) -> String {
    let udid: String = udid
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{udid}-{}.transcript", clock::compact_utc(started_ms))
}

/// Starts the transcript of a job on `device` in `dir` (made 0700 if missing).
pub fn start(dir: &Path, device: &DeviceProperties) -> std::io::Result<(Transcript, PathBuf)> {
    crate::private::create_private_dir(dir)?;
    let now = clock::now_ms();
    let mut path = dir.join(file_name(&device.udid, now));
    // Two jobs of one iPad within the same second (a quick replug) get their own files.
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(file_name(&format!("{}-{n}", device.udid), now));
    }
    let header = Header {
        udid: device.udid.clone(),
        started: clock::rfc3339_utc(now),
        device: device.properties_dict(),
    };
    let sink = FileSink::create(&path, &header)?;
    Ok((Transcript::new(sink), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_udid_and_the_time_and_nothing_else() {
        let cases = [
            ("00008101-000A1C2E3F", "00008101-000A1C2E3F-"),
            ("../../etc/passwd", "______etc_passwd-"),
            ("a b/c", "a_b_c-"),
        ];
        for (udid, prefix) in cases {
            let name = file_name(udid, 1_764_576_000_000);
            assert!(name.starts_with(prefix), "{udid}: {name}");
            assert!(name.ends_with(".transcript"), "{name}");
            assert!(!name.contains('/'), "{name}");
        }
        assert_ne!(file_name("x", 0), file_name("x", 1_000));
    }

    #[test]
    fn a_transcript_file_starts_with_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceProperties::usb(7, "00008101-ABC");
        let (transcript, path) = start(&dir.path().join("t"), &device).unwrap();
        assert!(transcript.is_on());
        let (header, entries) = usbmux::transcript::read(&path).unwrap();
        assert_eq!(header.udid, "00008101-ABC");
        assert!(entries.is_empty());
        let (_, second) = start(&dir.path().join("t"), &device).unwrap();
        assert_ne!(path, second, "a second job gets its own file");
    }
}
