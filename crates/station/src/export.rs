//! Exports of the ledger: the serial-number CSV for Apple School Manager, the serials another
//! organisation must release from theirs, a full CSV for the MDM and the school's records, and
//! JSONL.
//!
//! Apple School Manager format. Apple's guide says that when assigning (or releasing) devices
//! by "Upload CSV File" you upload "a comma-separated value (.csv) file that contains a list of
//! device serial numbers":
//! - <https://support.apple.com/en-gb/guide/apple-school-manager/asmf500c0851/web>
//!   (Assign, reassign or unassign devices)
//! - <https://support.apple.com/en-gw/guide/apple-school-manager/asmec4d28461/web>
//!   (Release devices: "a comma-separated value (.csv) file that contains a list of device
//!   serial numbers")
//!
//! Apple does not document a column layout or a header row for this upload, so we could not
//! confirm one. We write the conservative form: one column headed `Serial Number`, one serial
//! per line. ASM's other CSV uploads (SIS templates,
//! <https://support.apple.com/en-kw/guide/apple-school-manager/tes46d50f6bf/web>) require UTF-8
//! and Unix newlines (`\n`), so every export here uses `\n` and no byte-order mark.
//!
//! CSV quoting is written here (RFC 4180: quote a field holding a comma, quote, CR or LF, and
//! double the quotes inside) rather than adding the `csv` crate for two writers.

use std::io::{self, Write};

use tracing::warn;

use crate::clock;
use crate::record::{Attention, DeviceRecord, Outcome};

/// Header of the Apple School Manager serial-number CSV.
pub const ASM_HEADER: &str = "Serial Number";

/// Header of the full CSV.
pub const FULL_HEADER: [&str; 8] = [
    "serial",
    "name",
    "model",
    "ios",
    "slot",
    "outcome",
    "prepared_at",
    "asm",
];

/// Writes the serial-number CSV for assigning devices to an MDM server in Apple School Manager:
/// a `Serial Number` header, then one serial per line. Only prepared (`Done`) devices unless
/// `include_all`. Returns how many serials were written.
///
/// Apple serial numbers are letters and digits; a record whose serial is anything else (a
/// damaged record, a test entry) is left out with a warning rather than written in a form ASM
/// would reject as a whole.
pub fn asm_csv<W: Write>(
    records: &[DeviceRecord],
    include_all: bool,
    writer: W,
) -> io::Result<usize> {
    asm_csv_with(records, include_all, true, writer)
}

/// [`asm_csv`], with or without the `Serial Number` header row (the header is unconfirmed:
/// `cartprep ledger export --format asm --no-header` writes serials only, should Apple School
/// Manager refuse the header).
pub fn asm_csv_with<W: Write>(
    records: &[DeviceRecord],
    include_all: bool,
    header: bool,
    mut writer: W,
) -> io::Result<usize> {
    if header {
        writeln!(writer, "{ASM_HEADER}")?;
    }
    let mut written = 0;
    for record in records {
        if !include_all && record.outcome != Outcome::Done {
            continue;
        }
        if record.serial.is_empty() || !record.serial.chars().all(|c| c.is_ascii_alphanumeric()) {
            warn!(serial = %record.serial, "not a serial number; left out of the Apple School Manager CSV");
            continue;
        }
        writeln!(writer, "{}", record.serial)?;
        written += 1;
    }
    writer.flush()?;
    Ok(written)
}

/// The organisation an iPad is still assigned to, when that is why it needs attention.
pub fn assigned_elsewhere(record: &DeviceRecord) -> Option<&str> {
    match &record.outcome {
        Outcome::NeedsAttention(Attention::AssignedElsewhere { organization }) => {
            Some(organization)
        }
        _ => None,
    }
}

/// Writes the serials of the iPads still assigned in another organisation's Apple School
/// Manager, for that organisation to release them (Apple's "Release devices" takes the same
/// serial-number CSV, see above): a `Serial Number` header, one serial per line. With
/// `organization`, only the iPads assigned to it (names compared without case), so each
/// previous owner gets its own list. Returns how many serials were written.
pub fn release_csv<W: Write>(
    records: &[DeviceRecord],
    organization: Option<&str>,
    mut writer: W,
) -> io::Result<usize> {
    writeln!(writer, "{ASM_HEADER}")?;
    let mut written = 0;
    for record in records {
        let Some(owner) = assigned_elsewhere(record) else {
            continue;
        };
        if organization.is_some_and(|o| !o.trim().eq_ignore_ascii_case(owner.trim())) {
            continue;
        }
        if record.serial.is_empty() || !record.serial.chars().all(|c| c.is_ascii_alphanumeric()) {
            warn!(serial = %record.serial, "not a serial number; left out of the release CSV");
            continue;
        }
        writeln!(writer, "{}", record.serial)?;
        written += 1;
    }
    writer.flush()?;
    Ok(written)
}

/// Writes every record as CSV with the columns of [`FULL_HEADER`]: serial, device name, model
/// ("iPad12,1 iPad (9th generation)"), iOS version, slot, outcome ("done", "needs attention: …",
/// "failed: …"), when it was prepared (RFC 3339 UTC; empty if it is not done) and what Apple
/// School Manager says of it ("assigned in ASM to Mosyle (activity …)", "not in ASM"; empty
/// without `[asm]`). Returns the number of rows.
pub fn full_csv<W: Write>(records: &[DeviceRecord], mut writer: W) -> io::Result<usize> {
    write_row(&mut writer, FULL_HEADER)?;
    for record in records {
        let model = [record.product_type.as_str(), record.marketing_name.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let prepared_at = record
            .done_at_ms()
            .map(clock::rfc3339_utc)
            .unwrap_or_default();
        write_row(
            &mut writer,
            [
                record.serial.as_str(),
                record.name.as_deref().unwrap_or(""),
                &model,
                &record.ios_version,
                record.slot.as_deref().unwrap_or(""),
                &record.outcome.describe(),
                &prepared_at,
                &record.asm.as_ref().map(|a| a.summary()).unwrap_or_default(),
            ],
        )?;
    }
    writer.flush()?;
    Ok(records.len())
}

/// Writes each record as one JSON object per line. Returns the number of lines.
pub fn jsonl<W: Write>(records: &[DeviceRecord], mut writer: W) -> io::Result<usize> {
    for record in records {
        serde_json::to_writer(&mut writer, record)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(records.len())
}

fn write_row<W: Write, const N: usize>(writer: &mut W, fields: [&str; N]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            writer.write_all(b",")?;
        }
        write_field(writer, field)?;
    }
    writer.write_all(b"\n")
}

fn write_field<W: Write>(writer: &mut W, field: &str) -> io::Result<()> {
    // A leading space is quoted too: some spreadsheet imports trim unquoted fields.
    let needs_quotes =
        field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if !needs_quotes {
        return writer.write_all(field.as_bytes());
    }
    writer.write_all(b"\"")?;
    writer.write_all(field.replace('"', "\"\"").as_bytes())?;
    writer.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attention, Step};

    fn done(serial: &str) -> DeviceRecord {
        let mut r = DeviceRecord::new_at(serial, format!("udid-{serial}"), 1_000);
        r.product_type = "iPad12,1".into();
        r.marketing_name = "iPad (9th generation)".into();
        r.ios_version = "18.5".into();
        r.begin_attempt();
        r.advance(Step::Done, None);
        r
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("exports are UTF-8")
    }

    #[test]
    fn asm_csv_lists_only_prepared_devices_under_a_serial_number_header() {
        let mut waiting = done("DMPWAITING01");
        waiting.outcome = Outcome::Waiting;
        let mut locked = done("DMPLOCKED001");
        locked.attention(Attention::ActivationLocked);
        let records = vec![done("DMPAAAAAAAA1"), waiting, locked, done("DMPBBBBBBBB2")];

        let mut out = Vec::new();
        assert_eq!(asm_csv(&records, false, &mut out).expect("write"), 2);
        assert_eq!(text(out), "Serial Number\nDMPAAAAAAAA1\nDMPBBBBBBBB2\n");

        let mut out = Vec::new();
        assert_eq!(asm_csv(&records, true, &mut out).expect("write"), 4);
        assert_eq!(text(out).lines().count(), 5);
    }

    #[test]
    fn asm_csv_without_a_header_is_serials_only() {
        let records = vec![done("DMPAAAAAAAA1"), done("DMPBBBBBBBB2")];
        let mut out = Vec::new();
        assert_eq!(
            asm_csv_with(&records, false, false, &mut out).expect("write"),
            2
        );
        assert_eq!(text(out), "DMPAAAAAAAA1\nDMPBBBBBBBB2\n");
    }

    #[test]
    fn release_csv_lists_the_ipads_another_organisation_still_holds() {
        let held = |serial: &str, org: &str| {
            let mut r = done(serial);
            r.attention(Attention::AssignedElsewhere {
                organization: org.into(),
            });
            r
        };
        let mut locked = done("DMPLOCKED001");
        locked.attention(Attention::ActivationLocked);
        let records = vec![
            done("DMPAAAAAAAA1"),
            held("DMPSHELBY001", "Shelbyville Academy"),
            locked,
            held("DMPOGDEN0001", "Ogdenville High"),
            held("DMPSHELBY002", "Shelbyville Academy"),
        ];

        let mut out = Vec::new();
        assert_eq!(release_csv(&records, None, &mut out).expect("write"), 3);
        assert_eq!(
            text(out),
            "Serial Number\nDMPSHELBY001\nDMPOGDEN0001\nDMPSHELBY002\n"
        );

        let mut out = Vec::new();
        let n = release_csv(&records, Some("shelbyville academy"), &mut out).expect("write");
        assert_eq!(n, 2);
        assert_eq!(text(out), "Serial Number\nDMPSHELBY001\nDMPSHELBY002\n");

        let mut out = Vec::new();
        assert_eq!(
            release_csv(&[done("DMPAAAAAAAA1")], None, &mut out).expect("write"),
            0
        );
        assert_eq!(text(out), "Serial Number\n");
    }

    #[test]
    fn asm_csv_leaves_out_what_is_not_a_serial_number() {
        let records = vec![done("DMP,INJECT"), done("DMPAAAAAAAA1")];
        let mut out = Vec::new();
        assert_eq!(asm_csv(&records, false, &mut out).expect("write"), 1);
        assert_eq!(text(out), "Serial Number\nDMPAAAAAAAA1\n");
    }

    #[test]
    fn full_csv_quotes_fields_that_need_it_and_dates_prepared_devices() {
        let mut a = done("DMPAAAAAAAA1");
        a.name = Some("Cart \"A\", 01".into());
        a.slot = Some("1".into());
        a.history.last_mut().expect("done event").at_ms = 1_773_483_300_000;
        let mut b = DeviceRecord::new_at("DMPBBBBBBBB2", "u2", 1_000);
        b.fail("pairing timed out\nafter 3 tries");

        let mut out = Vec::new();
        assert_eq!(full_csv(&[a, b], &mut out).expect("write"), 2);
        // The model holds a comma ("iPad12,1"), so it is quoted as well.
        let expected = concat!(
            "serial,name,model,ios,slot,outcome,prepared_at,asm\n",
            "DMPAAAAAAAA1,\"Cart \"\"A\"\", 01\",\"iPad12,1 iPad (9th generation)\",18.5,1,done,2026-03-14T10:15:00Z,\n",
            "DMPBBBBBBBB2,,,,,\"failed: pairing timed out\nafter 3 tries\",,\n",
        );
        assert_eq!(text(out), expected);
    }

    #[test]
    fn full_csv_says_what_apple_school_manager_says_of_each_ipad() {
        use crate::asm_sync::{AsmLookup, AsmRecord, Assignment};
        let mut a = done("DMPAAAAAAAA1");
        a.asm = Some(AsmRecord {
            lookup: AsmLookup::InOrganization {
                server: None,
                server_id: None,
            },
            assignment: Some(Assignment::Assigned {
                server: "Mosyle".into(),
                activity_id: Some("84d7f133".into()),
            }),
        });
        let mut b = done("DMPBBBBBBBB2");
        b.asm = Some(AsmRecord {
            lookup: AsmLookup::NotInOrganization,
            assignment: None,
        });
        let mut out = Vec::new();
        full_csv(&[a, b], &mut out).expect("write");
        let text = text(out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].ends_with(",assigned in ASM to Mosyle (activity 84d7f133)"),
            "{text}"
        );
        assert!(lines[2].ends_with(",not in ASM"), "{text}");
    }

    #[test]
    fn jsonl_writes_one_parseable_record_per_line() {
        let records = vec![done("DMPAAAAAAAA1"), done("DMPBBBBBBBB2")];
        let mut out = Vec::new();
        assert_eq!(jsonl(&records, &mut out).expect("write"), 2);
        let back: Vec<DeviceRecord> = text(out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a record"))
            .collect();
        assert_eq!(back, records);
    }
}
