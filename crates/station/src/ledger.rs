//! The ledger: every transition appended to a JSONL audit log, `<state>/audit.jsonl`, and a
//! sled database, `<state>/ledger.sled`, that says where the latest line of each serial is.
//!
//! The audit log is the source of truth and sled the index: it holds for each key a location
//! in the log, in a few buckets (`crate::ledger_index`), not a copy of the record, so neither
//! memory nor the open grows with the history. `save` appends and fsyncs the log line first
//! (saves from many tasks share an fsync: a group commit), then writes sled, so when `save`
//! returns the transition survives a killed process or a power cut: sled is flushed only at a
//! close in good order, and any other end makes the next open rebuild it from the log (and the
//! log survives a sled database that does not). sled 0.34 has open reports of corruption
//! after abrupt stops (`docs/ARCHITECTURE.md`, "Durability"), so opening treats a database that
//! will not open as a normal event: it is moved aside for diagnosis and rebuilt from the log.
//!
//! Audit line format, one per transition:
//! `{"at_ms":1773483300000,"serial":"F9FZ…","event":"advance","record":{…full record…}}`.
//! Do not rotate or truncate `audit.jsonl`: a rebuild only knows what it still holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::clean_close::{self, CleanClose};
use crate::clock;
use crate::ledger_index::{self, INDEX_FORMAT, IndexError, LineAt};
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
    /// Bytes of a last line torn by a crash or a full disk (no final newline), cut off the
    /// audit log at start-up: that transition was never reported as saved.
    pub torn_bytes: u64,
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
    /// The index entry of `key` does not lead to its record: the audit log was changed under
    /// a running station, or damaged. The close leaves no clean-close note, so the next start
    /// rebuilds the index from the log.
    #[error(
        "the ledger's index is out of step with the audit log ({key}: {source}); restart cartprep: the next start rebuilds the index from the log"
    )]
    Index { key: String, source: IndexError },
    #[error("the record of {serial} cannot be encoded: {source}")]
    Encode {
        serial: String,
        source: serde_json::Error,
    },
    #[error(
        "the record of {serial} has grown to {len} bytes, more than an audit line may hold ({MAX_AUDIT_LINE}); it was not saved"
    )]
    TooLong { serial: String, len: usize },
    #[error("no iPad with serial {serial} in the ledger")]
    NotFound { serial: String },
    #[error("the audit log writer stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl LedgerError {
    /// An index failure about `key`: a database error stays one, anything else is `Index`.
    fn from_index(key: &str, source: IndexError) -> LedgerError {
        match source {
            IndexError::Db(e) => LedgerError::Db(e),
            source => LedgerError::Index {
                key: key.to_owned(),
                source,
            },
        }
    }
}

/// The device ledger. Cheap to share behind an `Arc`; `save` may be called from many tasks.
pub struct Ledger {
    db: sled::Db,
    log: Arc<AuditLog>,
    /// The naming counter: the number the next iPad named takes. Restored at open from the
    /// highest number any audit line ever carried and the database's copy of the counter, so a
    /// number is never given twice.
    next_number: Mutex<u32>,
    state_dir: PathBuf,
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
#[derive(Debug, Deserialize)]
pub struct AuditLine {
    pub serial: String,
    #[serde(default)]
    pub event: Option<String>,
    pub record: DeviceRecord,
}

/// The longest audit line read; a longer one is skipped as damaged. A record's line grows
/// with its history (a few hundred bytes per event), far below this.
pub const MAX_AUDIT_LINE: usize = 4 * 1024 * 1024;

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
        Self::open_with_faults(state_dir, None)
    }

    /// [`Ledger::open`] with audit log writes that fail where `faults` says (tests: a full disk,
    /// an I/O error, at any write).
    pub fn open_with_faults(
        state_dir: &Path,
        faults: Option<Arc<dyn WriteFaults>>,
    ) -> Result<(Ledger, OpenReport), LedgerError> {
        crate::private::create_private_dir(state_dir).map_err(|source| LedgerError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let audit_path = state_dir.join(AUDIT_FILE);
        let (audit, torn_bytes) = open_audit(&audit_path, state_dir)?;
        let db_path = state_dir.join(DB_DIR);
        let mut report = OpenReport {
            torn_bytes,
            ..OpenReport::default()
        };

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

        // Reconcile with the audit log unless the last close says the database holds all of
        // it: a ledger closed in good order leaves a note of the log's length (and of what a
        // replay would otherwise compute), taken here. A note and a log of the same length
        // (its torn tail already cut back) mean a start that does not grow with the history.
        // Anything else replays the whole log: a crash or kill, a failed write, a database
        // deleted by hand or rebuilt. Records are never deleted from the ledger, so everything
        // in the log must be in the database.
        let audit_len = audit
            .metadata()
            .map_err(|source| LedgerError::AuditRead {
                path: audit_path.clone(),
                source,
            })?
            .len();
        let note = clean_close::take(state_dir).filter(|note| {
            db.was_recovered() && note.audit_len == audit_len && note.index == INDEX_FORMAT
        });
        let (next_number, working) = match note {
            Some(note) => (note.next_number, note.working.into_iter().collect()),
            None => replay(&db, &audit_path, &mut report)?,
        };
        // The database keeps the counter too: a log that lost lines (an edit against the
        // rules) must not make a number be given twice.
        let next_number = next_number.max(stored_next_number(&db));
        crate::private::restrict_tree(&db_path);
        if report.rebuilt || report.repaired > 0 || report.skipped_lines > 0 {
            info!(
                rebuilt = report.rebuilt,
                repaired = report.repaired,
                skipped_lines = report.skipped_lines,
                moved_aside = ?report.moved_aside,
                "ledger restored from the audit log"
            );
        }

        let open_err = |source| LedgerError::AuditOpen {
            path: audit_path.clone(),
            source,
        };
        let good_len = audit.metadata().map(|m| m.len()).map_err(open_err)?;
        let sync_handle = audit.try_clone().map_err(open_err)?;
        let reader = audit.try_clone().map_err(open_err)?;
        let ledger = Ledger {
            db,
            log: Arc::new(AuditLog {
                writer: Mutex::new(AuditWriter {
                    good_len,
                    synced_len: good_len,
                    file: audit,
                    torn: false,
                    faults,
                    appended: 0,
                    synced: 0,
                    pending: VecDeque::new(),
                    failures: HashMap::new(),
                }),
                syncer: Mutex::new(sync_handle),
                reader,
                working: Mutex::new(working),
                replay_next_open: AtomicBool::new(false),
                path: audit_path,
            }),
            next_number: Mutex::new(next_number),
            state_dir: state_dir.to_owned(),
        };
        Ok((ledger, report))
    }

    /// Records a transition durably: appends the audit line, fsyncs it, then writes the
    /// line's location to sled (in memory; flushed at close, rebuilt from the log after any
    /// other end). Only when this returns `Ok` may the caller act on the transition (start the
    /// next step, print the status line). Saves from many tasks share fsyncs: one covers every line
    /// appended before it (a group commit), so 32 iPads at once do not queue behind 32 × 9
    /// fsyncs; each save still returns only once its own line is on disk.
    pub async fn save(&self, record: &DeviceRecord, event: Event) -> Result<(), LedgerError> {
        let key = key_of(record);
        let entry = Pending {
            seq: 0,
            at: None,
            forget: event == Event::Forget,
            working: event != Event::Forget && record.outcome == Outcome::Working,
            key: key.clone(),
        };
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
        if line.len() > MAX_AUDIT_LINE {
            // It could never be read back: a rebuild skips it, the index cannot point at it.
            return Err(LedgerError::TooLong {
                serial: record.serial.clone(),
                len: line.len(),
            });
        }

        let log = Arc::clone(&self.log);
        // Writing and fsyncing a file blocks; keep it off the async worker threads.
        let seq = tokio::task::spawn_blocking(move || log.save(&line, entry)).await??;
        // sled is written here, on the runtime's threads, not on the blocking thread that
        // happened to fsync: sled frees a record's old versions through per-thread garbage
        // lists, and those of short-lived blocking threads were seen to pile up (+2 MB per
        // 1,000 iPads).
        self.log.apply_durable(&self.db);
        self.log.outcome(seq).unwrap_or(Ok(()))
    }

    /// The iPad's number in the naming order: the one it has, or the next from the counter,
    /// saved in its record (an `update` audit line) before this returns. A number is taken
    /// once and never given to another iPad, even if the record that took it is later
    /// replaced or the save fails.
    pub async fn allocate_number(&self, record: &mut DeviceRecord) -> Result<u32, LedgerError> {
        if let Some(n) = record.number {
            return Ok(n);
        }
        let n = {
            let mut next = lock(&self.next_number);
            let n = *next;
            *next = next.saturating_add(1);
            n
        };
        if let Err(e) = self
            .db
            .insert(NEXT_NUMBER_KEY, &n.saturating_add(1).to_le_bytes()[..])
        {
            // The audit line below carries the number too; this copy only guards edits.
            warn!(error = %e, "could not keep the naming counter in the ledger database");
        }
        record.number = Some(n);
        if let Err(e) = self.save(record, Event::Update).await {
            record.number = None;
            return Err(e);
        }
        Ok(n)
    }

    /// Takes an iPad's number away at the operator's request, so its next preparation names it
    /// with a new one. The old number stays used: the counter never goes back. Returns the old
    /// number, or `None` if the iPad had none. Unknown serial: [`LedgerError::NotFound`].
    pub async fn release_number(&self, serial: &str) -> Result<Option<u32>, LedgerError> {
        let mut record = self.get(serial)?.ok_or_else(|| LedgerError::NotFound {
            serial: serial.to_owned(),
        })?;
        let old = record.number.take();
        if old.is_some() {
            self.save(&record, Event::Update).await?;
        }
        Ok(old)
    }

    /// The number [`Ledger::allocate_number`] would give now (for planning; not taken).
    pub fn peek_next_number(&self) -> u32 {
        *lock(&self.next_number)
    }

    /// Drops a record that another replaces (see [`Event::Forget`]); the audit log keeps it.
    pub async fn forget(&self, record: &DeviceRecord) -> Result<(), LedgerError> {
        self.save(record, Event::Forget).await
    }

    /// The record of `serial`, if the ledger has one.
    pub fn get(&self, serial: &str) -> Result<Option<DeviceRecord>, LedgerError> {
        match ledger_index::lookup(&self.db, serial) {
            Ok(Some(at)) => self.read(serial, at).map(Some),
            Ok(None) => Ok(None),
            Err(source) => Err(self.index_error(serial, source)),
        }
    }

    /// The record an index entry points at.
    fn read(&self, key: &str, at: LineAt) -> Result<DeviceRecord, LedgerError> {
        ledger_index::read_record(&self.log.reader, key, at)
            .map_err(|source| self.index_error(key, source))
    }

    /// An index that does not lead to a record makes the close leave no clean-close note, so
    /// the next open rebuilds the index.
    fn index_error(&self, key: &str, source: IndexError) -> LedgerError {
        let error = LedgerError::from_index(key, source);
        if let LedgerError::Index { source, .. } = &error {
            self.log.replay_next_open.store(true, Ordering::Relaxed);
            warn!(key, error = %source, "the ledger's index does not lead to a record");
        }
        error
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
            // A number stays with the iPad whichever record held it.
            record.number = record.number.or(p.number);
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

    /// The records of iPads being worked on (outcome `Working`): at start-up, work a crash or
    /// a stop interrupted.
    ///
    /// From an index kept by `save` (and across a clean close): as fast with 10,000 iPads of
    /// history as with none.
    pub fn working(&self) -> Result<Vec<DeviceRecord>, LedgerError> {
        let keys: Vec<String> = lock(&self.log.working).iter().cloned().collect();
        let mut records = Vec::new();
        for key in keys {
            if let Some(record) = self.get(&key)?
                && record.outcome == Outcome::Working
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Every record, oldest first (by first seen, then serial).
    pub fn list(&self) -> Result<Vec<DeviceRecord>, LedgerError> {
        let mut records = ledger_index::all(&self.db)
            .map_err(|source| self.index_error("listing", source))?
            .into_iter()
            .map(|(key, at)| self.read(&key, at))
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
        let scan = read_audit(&state_dir.join(AUDIT_FILE))?;
        let mut records: Vec<DeviceRecord> = scan.latest.into_values().map(|(r, _)| r).collect();
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
        &self.log.path
    }
}

/// How long an open waits for a lock held by a closing database: sled releases its file lock
/// when the last of its background references drops, a moment after the `Db` itself.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Where the database keeps the naming counter (beside the index; see `crate::ledger_index`).
const NEXT_NUMBER_KEY: &[u8] = b"meta/next_number";

/// The naming counter as the database last kept it (0 when it has none).
fn stored_next_number(db: &sled::Db) -> u32 {
    match db.get(NEXT_NUMBER_KEY) {
        Ok(Some(v)) => <[u8; 4]>::try_from(v.as_ref()).map_or(0, u32::from_le_bytes),
        _ => 0,
    }
}

/// sled's page cache, in bytes (see `open_db`).
const CACHE_BYTES: u64 = 1024 * 1024;

impl Drop for Ledger {
    /// A close in good order: the database flushed, every write since the open went through
    /// and the audit log ends on a whole line. Then the note lets the next open skip the
    /// replay; otherwise there is none and it replays.
    fn drop(&mut self) {
        // Lines a save appended but did not see through (its task was dropped) are made
        // durable and applied now, or the close is not in good order.
        let last = lock(&self.log.writer).appended;
        if self.log.commit(last).is_err() {
            return;
        }
        self.log.apply_durable(&self.db);
        let audit = lock(&self.log.writer);
        if audit.torn || self.log.replay_next_open.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.db.flush() {
            warn!(error = %e, "ledger database did not flush at close; the next start replays the audit log");
            return;
        }
        let note = CleanClose {
            index: INDEX_FORMAT,
            audit_len: audit.good_len,
            next_number: *lock(&self.next_number),
            working: lock(&self.log.working).iter().cloned().collect(),
        };
        if let Err(e) = clean_close::write(&self.state_dir, &note) {
            warn!(error = %e, "cannot write the ledger's clean-close note; the next start replays the audit log");
        }
    }
}

/// A mutex's value, also after a panic elsewhere poisoned it (the values here stay whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Replays the audit log into the database (see `Ledger::open`): afterwards it holds, for
/// each key the log has, the location of its latest line, and nothing else (keys of an
/// earlier format included). Returns what a clean close would have noted: the naming counter
/// and the keys of the records being worked on.
fn replay(
    db: &sled::Db,
    audit_path: &Path,
    report: &mut OpenReport,
) -> Result<(u32, BTreeSet<String>), LedgerError> {
    let scan = read_audit(audit_path)?;
    report.skipped_lines = scan.skipped;
    if !db.was_recovered() && !scan.latest.is_empty() {
        report.rebuilt = true;
    }
    let want = scan
        .latest
        .iter()
        .map(|(key, (_, at))| (key.clone(), *at))
        .collect();
    report.repaired = ledger_index::rebuild(db, &want)
        .map_err(|source| LedgerError::from_index("rebuilding", source))?;
    if report.repaired > 0 {
        db.flush()?;
    }
    let working = scan
        .latest
        .iter()
        .filter(|(_, (record, _))| record.outcome == Outcome::Working)
        .map(|(key, _)| key.clone())
        .collect();
    Ok((scan.next_number, working))
}

fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        // No periodic flusher: durability comes from the audit log (see `save`), and its
        // thread would wake an idle station several times a second. A small page cache: sled's
        // default is 1 GiB, and the index it holds is a few pages (`crate::ledger_index`).
        match sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_GRACE => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as ErrorKind::Other with this text (0.34.7 config.rs).
fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

/// False for the open failures that say nothing about the database's contents.
fn moving_aside_helps(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(e) => {
            !is_lock_held(error)
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

/// Opens the audit log for appending (mode 0600), creating it if needed.
///
/// A last line torn by a crash or a full disk (no final newline) is a transition that was never
/// reported saved (`save` returns only after the whole line is fsynced): it is cut off, after a
/// copy is kept in `audit.jsonl.torn-<UTC time>` for diagnosis, so the next append starts a line
/// of its own. Returns the file and how many bytes were cut.
fn open_audit(path: &Path, state_dir: &Path) -> Result<(File, u64), LedgerError> {
    let existed = path.exists();
    let open_err = |source| LedgerError::AuditOpen {
        path: path.to_owned(),
        source,
    };
    let mut file = crate::private::open_options()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(open_err)?;
    crate::private::restrict_file(&file, path);
    if !existed {
        // The new file's directory entry must be durable too, or a crash can lose the whole log.
        sync_dir(state_dir);
    }
    let len = file.metadata().map_err(open_err)?.len();
    let keep = end_of_last_full_line(&mut file, len).map_err(|source| LedgerError::AuditRead {
        path: path.to_owned(),
        source,
    })?;
    if keep < len {
        warn!(path = %path.display(), bytes = len - keep, "audit log ends in a torn line; cutting it off");
        keep_torn_tail(&mut file, keep, len, state_dir);
        file.set_len(keep)
            .and_then(|()| file.sync_data())
            .map_err(|source| LedgerError::AuditWrite {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok((file, len - keep))
}

/// Where the last `\n` of the first `len` bytes of `file` ends (0 if there is none).
fn end_of_last_full_line(file: &mut File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Best effort: copies a torn tail (up to 1 MiB of it) next to the log before it is cut off.
fn keep_torn_tail(file: &mut File, from: u64, len: u64, state_dir: &Path) {
    let n = (len - from).min(1024 * 1024);
    let mut tail = vec![0u8; n as usize];
    let copied = file
        .seek(SeekFrom::Start(from))
        .and_then(|_| file.read_exact(&mut tail))
        .and_then(|()| {
            let stamp = clock::compact_utc(clock::now_ms());
            let aside = state_dir.join(format!("{AUDIT_FILE}.torn-{stamp}"));
            let mut out = crate::private::open_options()
                .create(true)
                .append(true)
                .open(aside)?;
            out.write_all(&tail)?;
            out.sync_data()
        });
    if let Err(e) = copied {
        warn!(error = %e, "could not keep a copy of the torn audit line");
    }
}

/// Seam for tests: makes audit log appends fail as a full disk or a failing device would.
pub trait WriteFaults: Send + Sync {
    /// Called before each append of `len` bytes. `Some((n, error))`: only the first `n` bytes
    /// reach the file, then the append fails with `error`.
    fn on_append(&self, len: usize) -> Option<(usize, io::Error)>;

    /// Called before each fsync of the log. `Some(error)`: the fsync fails with it.
    fn on_sync(&self) -> Option<io::Error> {
        None
    }
}

/// The audit log and what its lines do once they are on disk: appends are short (under
/// `writer`); one thread at a time fsyncs (holding `syncer`) while others go on appending, and
/// the fsync covers them all; then the records of the lines it made durable go to sled, in the
/// log's order.
struct AuditLog {
    writer: Mutex<AuditWriter>,
    /// A second descriptor of the log, for fsync without holding `writer`.
    syncer: Mutex<File>,
    /// A third, for reading the records the index points at (positioned reads: no lock).
    reader: File,
    /// Keys of the records whose outcome is `Working` (see [`Ledger::working`]).
    working: Mutex<BTreeSet<String>>,
    /// A database write failed, or an index entry did not lead to its record, since the open:
    /// the close leaves no clean-close note (see `crate::clean_close`) and the next open
    /// rebuilds the index from the log.
    replay_next_open: AtomicBool,
    path: PathBuf,
}

/// A line written to the log, not yet known to be on disk, and what to do with sled then.
struct Pending {
    seq: u64,
    key: String,
    /// Where the line is in the log: set when it is appended.
    at: Option<LineAt>,
    /// The record is forgotten (its key removed from sled) rather than pointed at.
    forget: bool,
    working: bool,
}

/// Why a save whose line was appended did not go through.
enum Failure {
    /// The fsync failed: the line was cut off again with every other line not yet on disk.
    Audit(io::ErrorKind, String),
    /// The line is on disk, but the index could not be written.
    Index(String, IndexError),
}

impl AuditLog {
    /// Appends `line` and waits until it is on disk; `entry` waits for [`Self::apply_durable`].
    /// Returns the line's number.
    fn save(&self, line: &[u8], entry: Pending) -> Result<u64, LedgerError> {
        let seq =
            lock(&self.writer)
                .append(line, entry)
                .map_err(|source| LedgerError::AuditWrite {
                    path: self.path.clone(),
                    source,
                })?;
        self.commit(seq).map(|()| seq)
    }

    /// Returns once line `seq` is on disk (or failed), fsyncing if no one else has yet.
    fn commit(&self, seq: u64) -> Result<(), LedgerError> {
        let handle = lock(&self.syncer);
        if let Some(done) = self.outcome(seq) {
            return done;
        }
        let (target, target_len, fault) = {
            let w = lock(&self.writer);
            let fault = w.faults.as_ref().and_then(|f| f.on_sync());
            (w.appended, w.good_len, fault)
        };
        let synced = match fault {
            Some(e) => Err(e),
            None => handle.sync_data(),
        };
        let mut w = lock(&self.writer);
        match synced {
            Ok(()) => {
                w.synced = target;
                w.synced_len = target_len;
            }
            Err(e) => {
                // Every line written since the last fsync that worked may be lost: each of
                // their saves fails, and they are cut off so none is read back as saved.
                // Lines an earlier fsync covered stay (they wait only to be applied).
                let durable = w.synced;
                for p in std::mem::take(&mut w.pending) {
                    if p.seq <= durable {
                        w.pending.push_back(p);
                    } else {
                        w.failures
                            .insert(p.seq, Failure::Audit(e.kind(), e.to_string()));
                    }
                }
                w.good_len = w.synced_len;
                w.torn = true;
                if let Err(cut) = w.cut_back() {
                    warn!(error = %cut, "could not cut unsynced audit lines back yet; retried before the next append");
                }
            }
        }
        drop(w);
        self.outcome(seq).unwrap_or(Ok(()))
    }

    /// Writes to sled, in the log's order, the records of every line now on disk (whoever
    /// saved them: a save whose task was dropped still reaches sled).
    fn apply_durable(&self, db: &sled::Db) {
        let mut w = lock(&self.writer);
        while w.pending.front().is_some_and(|p| p.seq <= w.synced) {
            let Some(p) = w.pending.pop_front() else {
                break;
            };
            if let Err(e) = self.apply(db, &p) {
                self.replay_next_open.store(true, Ordering::Relaxed);
                w.failures.insert(p.seq, Failure::Index(p.key.clone(), e));
            }
        }
    }

    /// How line `seq` ended, if it has: `None` while it waits for an fsync.
    fn outcome(&self, seq: u64) -> Option<Result<(), LedgerError>> {
        let mut w = lock(&self.writer);
        match w.failures.remove(&seq) {
            Some(Failure::Audit(kind, text)) => Some(Err(LedgerError::AuditWrite {
                path: self.path.clone(),
                source: io::Error::new(kind, text),
            })),
            Some(Failure::Index(key, source)) => Some(Err(LedgerError::from_index(&key, source))),
            None if seq <= w.synced => Some(Ok(())),
            None => None,
        }
    }

    fn apply(&self, db: &sled::Db, p: &Pending) -> Result<(), IndexError> {
        ledger_index::set(db, &p.key, p.at.filter(|_| !p.forget))?;
        let mut working = lock(&self.working);
        if p.working {
            working.insert(p.key.clone());
        } else {
            working.remove(&p.key);
        }
        Ok(())
    }
}

/// The audit log's appender: keeps the file ending at a full line whatever a write does.
struct AuditWriter {
    file: File,
    /// Length of the log up to its last full line.
    good_len: u64,
    /// Length of the log known to be on disk.
    synced_len: u64,
    /// An append failed and its fragment could not be cut off yet.
    torn: bool,
    faults: Option<Arc<dyn WriteFaults>>,
    /// Number of the last line appended since the open (1, 2, …), and of the last known on disk.
    appended: u64,
    synced: u64,
    /// Lines appended, not yet on disk, in order.
    pending: VecDeque<Pending>,
    /// Lines whose save failed after they were appended, until their saver reads it.
    failures: HashMap<u64, Failure>,
}

impl AuditWriter {
    /// Appends one line (not yet fsynced) and returns its number. On failure the file is cut
    /// back to its last full line (now, or before the next append if the cut fails too), so a
    /// half-written transition never glues itself to the next one.
    fn append(&mut self, line: &[u8], mut entry: Pending) -> io::Result<u64> {
        if self.torn {
            self.cut_back()?;
        }
        match self.write(line) {
            Ok(()) => {
                entry.at = Some(LineAt {
                    offset: self.good_len,
                    len: line.len() as u32,
                });
                self.good_len += line.len() as u64;
                self.appended += 1;
                entry.seq = self.appended;
                self.pending.push_back(entry);
                Ok(self.appended)
            }
            Err(e) => {
                self.torn = true;
                if let Err(cut) = self.cut_back() {
                    warn!(error = %cut, "could not cut a failed audit write back yet; retried before the next");
                }
                Err(e)
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some((n, error)) = self.faults.as_ref().and_then(|f| f.on_append(line.len())) {
            // What a full disk does: part of the line lands, then the write fails.
            let _ = self.file.write_all(&line[..n.min(line.len())]);
            return Err(error);
        }
        self.file.write_all(line)
    }

    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.good_len)?;
        self.file.sync_data()?;
        self.torn = false;
        Ok(())
    }
}

/// What reading the audit log found.
struct AuditScan {
    /// The last record of each key, and where its line is.
    latest: BTreeMap<String, (DeviceRecord, LineAt)>,
    /// Lines that could not be read.
    skipped: usize,
    /// One past the highest naming number any line carries (records later replaced included).
    next_number: u32,
}

/// Reads the audit log: the last record of each serial, how many lines were unreadable, and
/// where the naming counter stands.
fn read_audit(path: &Path) -> Result<AuditScan, LedgerError> {
    let read_err = |source| LedgerError::AuditRead {
        path: path.to_owned(),
        source,
    };
    let mut scan = AuditScan {
        latest: BTreeMap::new(),
        skipped: 0,
        next_number: 0,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(read_err(e)),
    };
    let mut latest: HashMap<String, (DeviceRecord, LineAt)> = HashMap::new();
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut offset = 0u64;
    loop {
        buf.clear();
        // Bytes, not `lines()`: a line with invalid UTF-8 is one bad line, not the end of the log.
        let consumed =
            read_bounded_line(&mut reader, &mut buf, MAX_AUDIT_LINE).map_err(read_err)?;
        if consumed == 0 {
            break;
        }
        let at = LineAt {
            offset,
            // A line read whole is at most MAX_AUDIT_LINE + 1 bytes; a longer one is skipped.
            len: u32::try_from(consumed).unwrap_or(u32::MAX),
        };
        offset += consumed as u64;
        line_no += 1;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match parse_audit_line(text) {
            Ok(line) if line.serial == key_of(&line.record) && !line.record.udid.is_empty() => {
                if let Some(n) = line.record.number {
                    scan.next_number = scan.next_number.max(n.saturating_add(1));
                }
                if line.event.as_deref() == Some(Event::Forget.as_str()) {
                    latest.remove(&line.serial);
                } else {
                    latest.insert(line.serial, (line.record, at));
                }
            }
            Ok(_) => {
                warn!(
                    line = line_no,
                    "audit line's serial does not match its record; skipped"
                );
                scan.skipped += 1;
            }
            Err(e) => {
                warn!(line = line_no, error = %e, "unreadable audit line skipped");
                scan.skipped += 1;
            }
        }
    }
    scan.latest = latest.into_iter().collect();
    Ok(scan)
}

/// One audit line, parsed (the audit log is outside input: an edit, a torn write, a disk error).
/// Public for the fuzz tests.
/// serde_json bounds nesting depth (128) itself; the length bound is [`MAX_AUDIT_LINE`].
pub fn parse_audit_line(text: &[u8]) -> Result<AuditLine, AuditLineError> {
    if text.len() > MAX_AUDIT_LINE {
        return Err(AuditLineError::TooLong(text.len()));
    }
    Ok(serde_json::from_slice::<AuditLine>(text)?)
}

/// Why an audit line was not read.
#[derive(Debug, thiserror::Error)]
pub enum AuditLineError {
    #[error("longer than {MAX_AUDIT_LINE} bytes ({0})")]
    TooLong(usize),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Reads up to and including the next `\n` into `buf`, keeping at most `max + 1` bytes of it
/// (a longer line is read to its end but not kept). Returns the bytes consumed.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

/// Best effort: fsync a directory so a new or renamed entry in it survives a crash.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), error = %e, "could not sync the state folder");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails the fsyncs numbered in `fail` (from 0).
    struct FailSyncs(&'static [usize], std::sync::atomic::AtomicUsize);

    impl WriteFaults for FailSyncs {
        fn on_append(&self, _len: usize) -> Option<(usize, io::Error)> {
            None
        }
        fn on_sync(&self) -> Option<io::Error> {
            let n = self.1.fetch_add(1, Ordering::SeqCst);
            self.0.contains(&n).then(|| io::Error::from_raw_os_error(5))
        }
    }

    fn entry(key: &str) -> Pending {
        Pending {
            seq: 0,
            key: key.into(),
            at: None,
            forget: false,
            working: false,
        }
    }

    #[test]
    fn a_failed_fsync_does_not_fail_a_line_an_earlier_fsync_covered() {
        let dir = tempfile::tempdir().expect("dir");
        let faults = Arc::new(FailSyncs(&[1], Default::default()));
        let (ledger, _) = Ledger::open_with_faults(dir.path(), Some(faults)).expect("open");
        let log = &ledger.log;
        // A's line is on disk, but its record is not in sled yet when B's fsync fails.
        let a = log.save(b"{\"a\":1}\n", entry("A")).expect("A is on disk");
        assert!(
            log.save(b"{\"b\":1}\n", entry("B")).is_err(),
            "B's fsync failed"
        );
        log.apply_durable(&ledger.db);
        assert!(matches!(log.outcome(a), Some(Ok(()))), "A was saved");
        assert!(
            ledger_index::lookup(&ledger.db, "A")
                .expect("get")
                .is_some(),
            "A is live"
        );
        assert!(
            ledger_index::lookup(&ledger.db, "B")
                .expect("get")
                .is_none(),
            "B is not"
        );
        let text = fs::read_to_string(dir.path().join(AUDIT_FILE)).expect("log");
        assert_eq!(text, "{\"a\":1}\n", "A's line stays, B's is cut off");
    }
}
