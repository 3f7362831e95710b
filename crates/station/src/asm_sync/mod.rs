//! Apple School Manager from the station: each iPad's serial is looked up when it is
//! identified (in our organization? assigned to which server?), and once it is done it is
//! assigned to our MDM server in the background, so the next iPad never waits for it.
//!
//! The assignment is journaled in the iPad's ledger record before anything is sent (pending),
//! when the activity is created (submitted, with its ID) and when it ends (assigned, or why
//! not). At start-up every open assignment is resumed from the ledger: a submitted one is
//! polled rather than sent again, and a pending one is first checked against the device's
//! assigned server, so a restart does not assign twice. The decisions are in [`state`].

pub mod state;

use std::sync::Arc;
use std::time::Duration;

use asm::{ActivityState, AsmClient, AsmError, ServerId};
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinSet;

use crate::config::{AsmConfig, MdmMode};
use crate::ledger::{Event, Ledger, LedgerError};
use crate::record::DeviceRecord;
use crate::settings::Settings;
use crate::status::Board;

pub use state::{AfterDone, AsmLookup, AsmRecord, Assignment, Verdict};

/// Longest a look-up may hold up an iPad's preparation.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(20);
/// How often, and how many times, an activity is polled before leaving it to the next start.
const POLL_EVERY: Duration = Duration::from_secs(2);
const POLLS: u32 = 150;
/// Tries of an assignment that meets transient errors, and the first pause between them.
const TRIES: u32 = 5;
const TRY_PAUSE: Duration = Duration::from_secs(5);

/// Checks the station's `[asm]` section against Apple School Manager: the credentials, and the
/// server name resolved to its ID. `Ok(None)` without `[asm]` (for `cartprep check`).
pub async fn verify(settings: &Settings) -> Result<Option<ServerId>, AsmError> {
    match (&settings.config.asm, &settings.asm) {
        (Some(config), Some(client)) => Ok(Some(asm::verify(client, &config.mdm_server).await?)),
        _ => Ok(None),
    }
}

/// The station's Apple School Manager link: one client, our server's ID, background tasks.
pub struct AsmSync {
    client: AsmClient,
    config: AsmConfig,
    server: OnceCell<ServerId>,
    ledger: Arc<Ledger>,
    board: Board,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for AsmSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsmSync")
            .field("mdm_server", &self.config.mdm_server)
            .finish_non_exhaustive()
    }
}

impl AsmSync {
    /// The link for these settings (`None` without `[asm]`). The server's name is resolved now:
    /// a name Apple School Manager does not know is an error (it lists the names found), and so
    /// are refused credentials; a network failure only postpones the resolution.
    pub async fn start(
        settings: &Settings,
        ledger: Arc<Ledger>,
        board: Board,
    ) -> Result<Option<Arc<AsmSync>>, AsmError> {
        let (Some(config), Some(client_settings)) = (&settings.config.asm, &settings.asm) else {
            return Ok(None);
        };
        let sync = Arc::new(AsmSync {
            client: AsmClient::new(client_settings.clone())?,
            config: config.clone(),
            server: OnceCell::new(),
            ledger,
            board,
            tasks: Mutex::new(JoinSet::new()),
        });
        match sync.server_id().await {
            Ok(id) => sync.board.note(format!(
                "{}: assigning prepared iPads to \"{}\" ({id})",
                config.kind.product(),
                config.mdm_server
            )),
            Err(e) if e.is_transient() => sync.board.note(format!(
                "{}: {e}; trying again when an iPad needs it",
                config.kind.product()
            )),
            Err(e) => return Err(e),
        }
        Ok(Some(sync))
    }

    /// Our server's ID, resolved once.
    async fn server_id(&self) -> Result<ServerId, AsmError> {
        self.server
            .get_or_try_init(|| async {
                Ok(ServerId(
                    self.client.server_named(&self.config.mdm_server).await?.id,
                ))
            })
            .await
            .cloned()
    }

    /// Looks the iPad up, records the answer in `record.asm` (the caller saves it) and says
    /// what to do.
    pub async fn on_identified(&self, record: &mut DeviceRecord, mode: MdmMode) -> Verdict {
        let lookup = match tokio::time::timeout(LOOKUP_DEADLINE, self.lookup(&record.serial)).await
        {
            Ok(l) => l,
            Err(_) => AsmLookup::Unknown {
                error: "no answer in time".into(),
            },
        };
        let our = self.server.get().map(|s| s.0.as_str());
        let verdict = state::verdict(mode, &lookup, our, self.config.stop_if_not_in_organization);
        let assignment = record.asm.take().and_then(|a| a.assignment);
        record.asm = Some(AsmRecord { lookup, assignment });
        verdict
    }

    async fn lookup(&self, serial: &str) -> AsmLookup {
        let unknown = |e: AsmError| AsmLookup::Unknown {
            error: e.to_string(),
        };
        // Resolving our server first lets ADE mode compare IDs.
        let _ = self.server_id().await;
        match self.client.device(serial).await {
            Ok(None) => AsmLookup::NotInOrganization,
            Err(e) => unknown(e),
            Ok(Some(_)) => match self.client.assigned_server(serial).await {
                Err(e) => unknown(e),
                Ok(id) => AsmLookup::InOrganization {
                    server: id.as_ref().map(|i| self.server_name(i)),
                    server_id: id.map(|i| i.0),
                },
            },
        }
    }

    fn server_name(&self, id: &ServerId) -> String {
        if self.server.get() == Some(id) {
            self.config.mdm_server.clone()
        } else {
            id.0.clone()
        }
    }

    /// After DONE: journals what is to be done about the assignment and starts it in the
    /// background. Returns once the decision is saved (a ledger write), never waiting for
    /// Apple School Manager.
    pub async fn after_done(self: &Arc<Self>, record: &mut DeviceRecord) {
        match record.asm.as_ref().and_then(|a| a.assignment.as_ref()) {
            // Re-plugged after its assignment: nothing new to journal.
            Some(Assignment::Assigned { server, .. }) if *server == self.config.mdm_server => {
                return;
            }
            // Already under way (or left by a restart): carry it on, do not start another.
            Some(open) if open.is_open() => {
                self.spawn(record.serial.clone()).await;
                return;
            }
            _ => {}
        }
        let lookup = record
            .asm
            .as_ref()
            .map(|a| a.lookup.clone())
            .unwrap_or(AsmLookup::Unknown {
                error: "not looked up".into(),
            });
        let our = self.server.get().map(|s| s.0.clone());
        let server = self.config.mdm_server.clone();
        let assignment =
            match state::assignment_after_done(self.config.assign, &lookup, our.as_deref()) {
                AfterDone::Nothing => return,
                AfterDone::AlreadyAssigned => Assignment::Assigned {
                    server,
                    activity_id: None,
                },
                AfterDone::CannotAssign => Assignment::NotAssigned {
                    server,
                    reason: "not in your Apple School Manager".into(),
                    activity_id: None,
                },
                AfterDone::Assign => Assignment::Pending { server },
            };
        let open = assignment.is_open();
        record.remark(assignment.describe());
        record.asm = Some(AsmRecord {
            lookup,
            assignment: Some(assignment),
        });
        if let Err(e) = self.ledger.save(record, Event::Update).await {
            self.board.note(format!(
                "{}: ASM assignment not journaled: {e}",
                record.serial
            ));
            return;
        }
        if open {
            self.spawn(record.serial.clone()).await;
        }
    }

    /// Resumes every open assignment in the ledger (at start-up).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, LedgerError> {
        let open: Vec<String> = self
            .ledger
            .list()?
            .into_iter()
            .filter(|r| {
                r.asm
                    .as_ref()
                    .and_then(|a| a.assignment.as_ref())
                    .is_some_and(Assignment::is_open)
            })
            .map(|r| r.serial)
            .collect();
        for serial in &open {
            self.spawn(serial.clone()).await;
        }
        Ok(open.len())
    }

    async fn spawn(self: &Arc<Self>, serial: String) {
        let me = self.clone();
        self.tasks
            .lock()
            .await
            .spawn(async move { me.assign(serial).await });
    }

    /// Waits for the background assignments, at most `max`; those left are resumed at the
    /// next start.
    pub async fn settle(&self, max: Duration) {
        let mut tasks = self.tasks.lock().await;
        let _ =
            tokio::time::timeout(max, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    }

    /// Stops the background assignments (they resume from the journal at the next start).
    pub async fn stop(&self) {
        self.tasks.lock().await.abort_all();
    }

    /// Carries one open assignment to its end, journaling each stage.
    async fn assign(&self, serial: String) {
        let mut pause = TRY_PAUSE;
        for attempt in 1..=TRIES {
            match self.assign_once(&serial).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && attempt < TRIES => {
                    if let AsmError::RateLimited { retry_after } = &e {
                        pause = pause.max(*retry_after);
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) if e.is_transient() => {
                    self.board.note(format!(
                        "{serial}: ASM assignment postponed to the next start: {e}"
                    ));
                    return;
                }
                Err(e) => {
                    let server = self.config.mdm_server.clone();
                    let activity_id = self.open_assignment(&serial).and_then(|a| match a {
                        Assignment::Submitted { activity_id, .. } => Some(activity_id),
                        _ => None,
                    });
                    self.journal(
                        &serial,
                        Assignment::NotAssigned {
                            server,
                            reason: e.to_string(),
                            activity_id,
                        },
                    )
                    .await;
                    return;
                }
            }
        }
    }

    fn open_assignment(&self, serial: &str) -> Option<Assignment> {
        let record = self.ledger.get(serial).ok()??;
        record.asm?.assignment.filter(Assignment::is_open)
    }

    async fn assign_once(&self, serial: &str) -> Result<(), AsmError> {
        let Some(open) = self.open_assignment(serial) else {
            return Ok(());
        };
        let ours = self.server_id().await?;
        let server = self.config.mdm_server.clone();
        let activity_id = match open {
            Assignment::Submitted { activity_id, .. } => activity_id,
            _ => {
                // Perhaps sent before a restart and done since: never assign twice.
                if self.client.assigned_server(serial).await?.as_ref() == Some(&ours) {
                    self.journal(
                        serial,
                        Assignment::Assigned {
                            server,
                            activity_id: None,
                        },
                    )
                    .await;
                    return Ok(());
                }
                let activity = self.client.assign(&[serial.to_owned()], &ours).await?;
                self.journal(
                    serial,
                    Assignment::Submitted {
                        server: server.clone(),
                        activity_id: activity.id.clone(),
                    },
                )
                .await;
                activity.id
            }
        };
        let end = match self
            .client
            .wait_for(&activity_id, POLL_EVERY, POLLS)
            .await?
        {
            ActivityState::InProgress => {
                return Err(AsmError::Transport(format!(
                    "activity {activity_id} still in progress"
                )));
            }
            ActivityState::Succeeded => Assignment::Assigned {
                server,
                activity_id: Some(activity_id),
            },
            ActivityState::Failed { status, sub_status } => Assignment::NotAssigned {
                server,
                reason: format!("the activity ended {status} ({sub_status})"),
                activity_id: Some(activity_id),
            },
        };
        self.journal(serial, end).await;
        Ok(())
    }

    /// Saves a stage of the assignment on the latest record, with a history note.
    async fn journal(&self, serial: &str, assignment: Assignment) {
        let Ok(Some(mut record)) = self.ledger.get(serial) else {
            return;
        };
        let text = assignment.describe();
        record.remark(text.clone());
        let lookup = record
            .asm
            .take()
            .map(|a| a.lookup)
            .unwrap_or(AsmLookup::Unknown {
                error: "not looked up".into(),
            });
        record.asm = Some(AsmRecord {
            lookup,
            assignment: Some(assignment),
        });
        match self.ledger.save(&record, Event::Update).await {
            Ok(()) => self.board.note(format!("{serial}: {text}")),
            Err(e) => self
                .board
                .note(format!("{serial}: ASM assignment not journaled: {e}")),
        }
    }
}
