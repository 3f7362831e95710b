//! The ledger: one [`DeviceRecord`] per serial in a sled database, `<state>/ledger.sled`, and
//! every transition appended to a JSONL audit log, `<state>/audit.jsonl`.
//!
//! The audit log is the source of truth and sled the index. `save` appends and fsyncs the log
//! line first, then writes sled and flushes it, so when `save` returns the transition survives
//! a killed process (and the log survives a sled database that does not). sled 0.34 has open
//! reports of corruption after abrupt stops (`docs/ARCHITECTURE.md`, "Durability"), so opening treats
//! a database that will not open as a normal event: it is moved aside for diagnosis and rebuilt
//! from the log.
//!
//! Audit line format, one per transition:
//! `{"at_ms":1773483300000,"serial":"F9FZ…","event":"advance","record":{…full record…}}`.
//! Do not rotate or truncate `audit.jsonl`: a rebuild only knows what it still holds.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::clock;
use crate::record::{DeviceRecord, Outcome};

/// Folder of the sled database inside the state folder.
pub const DB_DIR: &str = "ledger.sled";
/// The append-only audit log inside the state folder.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// What kind of transition a saved record went through (the audit line's `"event"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// First seen.
    Detected,
    /// A new attempt started (plug, replug, retry).
    Attempt,
    /// A step completed.
    Advance,
    /// Gave up on the device.
    Fail,
    /// Blocked until a person acts.
    Attention,
    /// Prepared.
    Done,
    /// Erased (the record's `erase_reason` says why).
    Erase,
    /// Anything else that changed the record (slot, name, device facts).
    Update,
    /// An operator asked for something (an erase, with who and why: the record's
    /// `erase_request`).
    OperatorRequest,
    /// A record replaced by another: an iPad first recorded by UDID (it never paired, so its
    /// serial was unknown) and now identified by serial.
    Forget,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Detected => "detected",
            Event::Attempt => "attempt",
            Event::Advance => "advance",
            Event::Fail => "fail",
            Event::Attention => "attention",
            Event::Done => "done",
            Event::Erase => "erase",
            Event::Update => "update",
            Event::OperatorRequest => "operator_request",
            Event::Forget => "forget",
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What opening the ledger had to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The database was (re)built from the audit log.
    pub rebuilt: bool,
    /// Where a database that would not open was moved.
    pub moved_aside: Option<PathBuf>,
    /// Audit lines that could not be read and were skipped (a line torn by a crash, an edit).
    pub skipped_lines: usize,
    /// Records that the database lacked or held in an older version than the audit log, and
    /// that were restored from the log (a crash between the two writes, or a database that
    /// opened but lost data).
    pub repaired: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot use the state folder {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the audit log {path}: {source}")]
    AuditOpen { path: PathBuf, source: io::Error },
    #[error("cannot read the audit log {path}: {source}")]
    AuditRead { path: PathBuf, source: io::Error },
    #[error("cannot write the audit log {path}: {source}")]
    AuditWrite { path: PathBuf, source: io::Error },
    /// The database would not open for a reason that moving it aside cannot fix (permissions,
    /// a missing folder, a full disk, another cartprep already running on this state folder).
    #[error("cannot open the ledger database {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the ledger database {path} is damaged ({cause}) and could not be moved aside: {source}"
    )]
    MoveAside {
        path: PathBuf,
        cause: sled::Error,
        source: io::Error,
    },
    #[error(
        "the ledger database {path} was moved aside to {aside} but a new one could not be created: {source}"
    )]
    Recreate {
        path: PathBuf,
        aside: PathBuf,
        source: sled::Error,
    },
    #[error("ledger database error: {0}")]
    Db(#[from] sled::Error),
    #[error("the ledger record of {serial} cannot be read: {source}")]
    Decode {
        serial: String,
        source: serde_json::Error,
    },
    #[error("the record of {serial} cannot be encoded: {source}")]
    Encode {
        serial: String,
        source: serde_json::Error,
    },
    #[error("the audit log writer stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The device ledger. Cheap to share behind an `Arc`; `save` may be called from many tasks.
pub struct Ledger {
    db: sled::Db,
    /// How much of the audit log the database holds (see `open`).
    meta: sled::Tree,
    /// Keys of the records being worked on (see [`Ledger::working`]).
    working: sled::Tree,
    audit: Arc<Mutex<File>>,
    audit_path: PathBuf,
    state_dir: PathBuf,
    /// Serialises `save` so the audit log and sled see transitions in the same order.
    write_order: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// One audit line as written.
#[derive(Serialize)]
struct AuditLineOut<'a> {
    at_ms: u64,
    serial: &'a str,
    event: Event,
    record: &'a DeviceRecord,
}

/// One audit line as read back: tolerant of fields and event names it does not know, so a
/// log written by a newer version still rebuilds.
#[derive(Deserialize)]
struct AuditLineIn {
    serial: String,
    #[serde(default)]
    event: Option<String>,
    record: DeviceRecord,
}

/// The sled tree of facts about the database itself, and its key for the audit log length
/// the database is known to hold.
const META_TREE: &str = "meta";
const AUDIT_LEN_KEY: &[u8] = b"audit_len";
/// The tree of the keys of records whose outcome is `Working` (work a stop interrupted), and
/// the meta key saying it is complete.
const WORKING_TREE: &str = "working";
const WORKING_INDEXED_KEY: &[u8] = b"working_indexed";

/// Prefix of the key of an iPad known only by UDID.
const UDID_PREFIX: &str = "udid:";

/// The key of a record: its serial, or `udid:<UDID>` for an iPad that never paired (an iPad
/// tells its serial number only to a host it trusts). Callers use [`Ledger::get`],
/// [`Ledger::unidentified`] and [`Ledger::identify`]; the scheme is public for tests.
pub fn key_of(record: &DeviceRecord) -> String {
    if record.serial.is_empty() {
        format!("{UDID_PREFIX}{}", record.udid)
    } else {
        record.serial.clone()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `state_dir`.
    ///
    /// A database that fails to open is moved aside to `ledger.sled.corrupt-<UTC time>` and
    /// rebuilt from `audit.jsonl` (the last record of each serial wins), unless the failure is
    /// one that moving cannot fix: permission denied, a missing folder, a full or read-only
    /// disk, or the database being locked by another running cartprep (moving a live database
    /// away would split the ledger in two).
    pub fn open(state_dir: &Path) -> Result<(Ledger, OpenReport), LedgerError> {
        fs::create_dir_all(state_dir).map_err(|source| LedgerError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let audit_path = state_dir.join(AUDIT_FILE);
        let audit = open_audit(&audit_path, state_dir)?;
        let db_path = state_dir.join(DB_DIR);
        let mut report = OpenReport::default();

        let db = match open_db(&db_path) {
            Ok(db) => db,
            Err(cause) if !moving_aside_helps(&cause) => {
                return Err(LedgerError::Open {
                    path: db_path,
                    source: cause,
                });
            }
            Err(cause) => {
                warn!(path = %db_path.display(), error = %cause, "ledger database will not open; moving it aside and rebuilding it from the audit log");
                let aside =
                    move_aside(&db_path, state_dir).map_err(|source| LedgerError::MoveAside {
                        path: db_path.clone(),
                        cause,
                        source,
                    })?;
                let db = open_db(&db_path).map_err(|source| LedgerError::Recreate {
                    path: db_path.clone(),
                    aside: aside.clone(),
                    source,
                })?;
                report.moved_aside = Some(aside);
                report.rebuilt = true;
                db
            }
        };

        // Reconcile with the audit log unless the database says it holds all of it: `save`
        // records, with each write, how long the log was (the `meta` tree). Equal lengths mean
        // a healthy database and an O(1) start; anything else (a crash between the log append
        // and the sled write, a database deleted by hand or emptied by damage, a log written by
        // an older version) replays the whole log, as before. Records are never deleted from
        // the ledger, so everything in the log must be in the database.
        let meta = db.open_tree(META_TREE)?;
        let audit_len = audit
            .metadata()
            .map_err(|source| LedgerError::AuditRead {
                path: audit_path.clone(),
                source,
            })?
            .len();
        let covered = meta
            .get(AUDIT_LEN_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        let healthy = db.was_recovered() && covered == Some(audit_len);
        let (latest, skipped) = if healthy {
            (BTreeMap::new(), 0)
        } else {
            read_audit(&audit_path)?
        };
        report.skipped_lines = skipped;
        if !db.was_recovered() && !latest.is_empty() {
            report.rebuilt = true;
        }
        for (serial, record) in &latest {
            let encoded = encode(record)?;
            let current = db.get(serial.as_bytes())?;
            if current.as_deref() != Some(encoded.as_slice()) {
                db.insert(serial.as_bytes(), encoded)?;
                report.repaired += 1;
            }
        }
        // A provisional record (an iPad known only by UDID) the log says was replaced, but a
        // crash left in the database.
        if !healthy {
            for key in db.scan_prefix(UDID_PREFIX.as_bytes()).keys() {
                let key = key?;
                if !latest.contains_key(String::from_utf8_lossy(&key).as_ref()) {
                    db.remove(&key)?;
                    report.repaired += 1;
                }
            }
        }
        if !healthy {
            meta.insert(AUDIT_LEN_KEY, &audit_len.to_be_bytes())?;
        }
        // The index of records in progress: rebuilt by one scan after a replay or when the
        // database predates it, then kept by `save`.
        let working = db.open_tree(WORKING_TREE)?;
        if !healthy || meta.get(WORKING_INDEXED_KEY)?.is_none() {
            working.clear()?;
            for item in db.iter() {
                let (key, value) = item?;
                if decode(&String::from_utf8_lossy(&key), &value)?.outcome == Outcome::Working {
                    working.insert(key, &[])?;
                }
            }
            meta.insert(WORKING_INDEXED_KEY, &[1])?;
            db.flush()?;
        }
        if report.repaired > 0 || !healthy {
            db.flush()?;
        }
        if report.rebuilt || report.repaired > 0 || report.skipped_lines > 0 {
            info!(
                rebuilt = report.rebuilt,
                repaired = report.repaired,
                skipped_lines = report.skipped_lines,
                moved_aside = ?report.moved_aside,
                "ledger restored from the audit log"
            );
        }

        let ledger = Ledger {
            db,
            meta,
            working,
            audit: Arc::new(Mutex::new(audit)),
            audit_path,
            state_dir: state_dir.to_owned(),
            write_order: tokio::sync::Mutex::new(()),
        };
        Ok((ledger, report))
    }

    /// Records a transition durably: appends the audit line and fsyncs it, then writes the
    /// record to sled and flushes it. Only when this returns `Ok` may the caller act on the
    /// transition (start the next step, print the status line).
    pub async fn save(&self, record: &DeviceRecord, event: Event) -> Result<(), LedgerError> {
        let encoded = encode(record)?;
        let key = key_of(record);
        let mut line = serde_json::to_vec(&AuditLineOut {
            at_ms: clock::now_ms(),
            serial: &key,
            event,
            record,
        })
        .map_err(|source| LedgerError::Encode {
            serial: record.serial.clone(),
            source,
        })?;
        line.push(b'\n');

        let _order = self.write_order.lock().await;
        let audit = Arc::clone(&self.audit);
        let path = self.audit_path.clone();
        // Writing and fsyncing a file blocks; keep it off the async worker threads.
        let audit_len = tokio::task::spawn_blocking(move || {
            let mut file = audit
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .and_then(|()| file.metadata())
                .map(|m| m.len())
                .map_err(|source| LedgerError::AuditWrite { path, source })
        })
        .await??;

        if event == Event::Forget {
            self.db.remove(key.as_bytes())?;
        } else {
            self.db.insert(key.as_bytes(), encoded)?;
        }
        if event != Event::Forget && record.outcome == Outcome::Working {
            self.working.insert(key.as_bytes(), &[])?;
        } else {
            self.working.remove(key.as_bytes())?;
        }
        // After the record: sled recovers a prefix of its log, so a length that survived a
        // crash implies the record did.
        self.meta.insert(AUDIT_LEN_KEY, &audit_len.to_be_bytes())?;
        // A blocking flush on a blocking thread: sled's flush_async runs on sled's own thread
        // pool, whose 7 threads then wake every second for ever.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| LedgerError::Db(sled::Error::Io(std::io::Error::other(e))))??;
        Ok(())
    }

    /// Drops a record that another replaces (see [`Event::Forget`]); the audit log keeps it.
    pub async fn forget(&self, record: &DeviceRecord) -> Result<(), LedgerError> {
        self.save(record, Event::Forget).await
    }

    /// The record of `serial`, if the ledger has one.
    pub fn get(&self, serial: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        match self.db.get(serial.as_bytes())? {
            Some(bytes) => decode(serial, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The record of an iPad known only by its UDID (it never paired), if any.
    pub fn unidentified(&self, udid: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        self.get(&format!("{UDID_PREFIX}{udid}"))
    }

    /// The record an iPad just identified by `serial` continues: its own, or a new one; with
    /// the attempts it had while known only by UDID joined to it. Not saved: see
    /// [`Ledger::save_identified`].
    pub fn identify(&self, udid: &str, serial: &str) -> Result<DeviceRecord, LedgerError> {
        let mut record = self
            .get(serial)?
            .unwrap_or_else(|| DeviceRecord::new(serial, udid));
        if let Some(p) = self.unidentified(udid)? {
            for event in p.history {
                // Already joined once, if a crash came before the UDID record was forgotten.
                if !record.history.contains(&event) {
                    record.history.push(event);
                }
            }
            record.history.sort_by_key(|e| e.at_ms);
            record.first_seen_ms = record.first_seen_ms.min(p.first_seen_ms);
            record.attempts = record.attempts.max(p.attempts);
        }
        record.udid = udid.to_owned();
        Ok(record)
    }

    /// Saves a record returned by [`Ledger::identify`] (a new attempt) and forgets the record
    /// of the same iPad by UDID that it replaces, in that order: a crash between the two leaves
    /// both, which the next identification joins again.
    pub async fn save_identified(&self, record: &DeviceRecord) -> Result<(), LedgerError> {
        self.save(record, Event::Attempt).await?;
        if let Some(p) = self.unidentified(&record.udid)? {
            self.forget(&p).await?;
        }
        Ok(())
    }

    /// Every record, oldest first (by first seen, then serial).
    /// The records whose outcome is `Working` (a stop or a crash interrupted their work), from
    /// an index: as fast with 10,000 iPads of history as with none.
    pub fn working(&self) -> Result<Vec<DeviceRecord>, LedgerError> {
        let mut records = Vec::new();
        for key in self.working.iter().keys() {
            let key = key?;
            if let Some(value) = self.db.get(&key)? {
                let record = decode(&String::from_utf8_lossy(&key), &value)?;
                if record.outcome == Outcome::Working {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    pub fn list(&self) -> Result<Vec<DeviceRecord>, LedgerError> {
        let mut records = self
            .db
            .iter()
            .map(|item| {
                let (key, value) = item?;
                decode(&String::from_utf8_lossy(&key), &value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| (a.first_seen_ms, &a.serial).cmp(&(b.first_seen_ms, &b.serial)));
        Ok(records)
    }

    /// The record of the device with this UDID (the most recently updated one if, against
    /// expectations, two serials claim it).
    ///
    /// A scan: a cart's ledger holds hundreds of devices, not millions, and a second index
    /// would be one more thing to keep consistent after a rebuild.
    pub fn by_udid(&self, udid: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        let mut found: Option<DeviceRecord> = None;
        for record in self.list()? {
            if record.udid == udid
                && found
                    .as_ref()
                    .is_none_or(|f| record.updated_ms >= f.updated_ms)
            {
                found = Some(record);
            }
        }
        Ok(found)
    }

    /// The records as the audit log has them, without opening the database: for `cartprep
    /// ledger` while a station is running (sled allows one process at a time). The audit log
    /// gets every transition before the database does, so it is never behind.
    pub fn read_only(state_dir: &Path) -> Result<Vec<DeviceRecord>, LedgerError> {
        let (latest, _skipped) = read_audit(&state_dir.join(AUDIT_FILE))?;
        let mut records: Vec<DeviceRecord> = latest.into_values().collect();
        records.sort_by(|a, b| {
            a.first_seen_ms
                .cmp(&b.first_seen_ms)
                .then_with(|| a.serial.cmp(&b.serial))
        });
        Ok(records)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }
}

fn encode(record: &DeviceRecord) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(record).map_err(|source| LedgerError::Encode {
        serial: record.serial.clone(),
        source,
    })
}

fn decode(serial: &str, bytes: &[u8]) -> Result<DeviceRecord, LedgerError> {
    serde_json::from_slice(bytes).map_err(|source| LedgerError::Decode {
        serial: serial.to_owned(),
        source,
    })
}

fn open_db(path: &Path) -> sled::Result<sled::Db> {
    // No periodic flusher thread (sled's default wakes 2 times a second): `save` flushes after
    // every write, so an idle station has nothing to flush.
    sled::Config::new().path(path).flush_every_ms(None).open()
}

/// False for the open failures that say nothing about the database's contents.
fn moving_aside_helps(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(e) => {
            // sled reports a held lock as ErrorKind::Other with this text (0.34.7 config.rs).
            let locked = e.to_string().contains("could not acquire lock");
            !locked
                && !matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied
                        | io::ErrorKind::NotFound
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::StorageFull
                        | io::ErrorKind::ReadOnlyFilesystem
                )
        }
        _ => true,
    }
}

fn move_aside(db_path: &Path, state_dir: &Path) -> io::Result<PathBuf> {
    let stamp = clock::compact_utc(clock::now_ms());
    let mut aside = state_dir.join(format!("{DB_DIR}.corrupt-{stamp}"));
    let mut n = 2;
    while aside.exists() {
        aside = state_dir.join(format!("{DB_DIR}.corrupt-{stamp}-{n}"));
        n += 1;
    }
    fs::rename(db_path, &aside)?;
    sync_dir(state_dir);
    Ok(aside)
}

/// Opens the audit log for appending, creating it if needed. A last line torn by a crash (no
/// final newline) is closed with one, so the next append starts a line of its own instead of
/// gluing itself to the fragment.
fn open_audit(path: &Path, state_dir: &Path) -> Result<File, LedgerError> {
    let existed = path.exists();
    let open_err = |source| LedgerError::AuditOpen {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(open_err)?;
    if !existed {
        // The new file's directory entry must be durable too, or a crash can lose the whole log.
        sync_dir(state_dir);
    }
    let len = file.metadata().map_err(open_err)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|source| LedgerError::AuditRead {
                path: path.to_owned(),
                source,
            })?;
        if last[0] != b'\n' {
            warn!(path = %path.display(), "audit log ends in a torn line; closing it");
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(|source| LedgerError::AuditWrite {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    Ok(file)
}

/// Reads the audit log: the last record of each serial, and how many lines were unreadable.
fn read_audit(path: &Path) -> Result<(BTreeMap<String, DeviceRecord>, usize), LedgerError> {
    let read_err = |source| LedgerError::AuditRead {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
        Err(e) => return Err(read_err(e)),
    };
    let mut latest: HashMap<String, DeviceRecord> = HashMap::new();
    let mut skipped = 0;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        // Bytes, not `lines()`: a line with invalid UTF-8 is one bad line, not the end of the log.
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        line_no += 1;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<AuditLineIn>(text) {
            Ok(line) if line.serial == key_of(&line.record) && !line.record.udid.is_empty() => {
                if line.event.as_deref() == Some(Event::Forget.as_str()) {
                    latest.remove(&line.serial);
                } else {
                    latest.insert(line.serial, line.record);
                }
            }
            Ok(_) => {
                warn!(
                    line = line_no,
                    "audit line's serial does not match its record; skipped"
                );
                skipped += 1;
            }
            Err(e) => {
                warn!(line = line_no, error = %e, "unreadable audit line skipped");
                skipped += 1;
            }
        }
    }
    Ok((latest.into_iter().collect(), skipped))
}

/// Best effort: fsync a directory so a new or renamed entry in it survives a crash.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), error = %e, "could not sync the state folder");
    }
}
