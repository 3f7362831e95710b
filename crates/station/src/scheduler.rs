//! The scheduler: which iPad is worked on when. usbmuxd's events come in one method each
//! (`on_attached`, `on_detached`, `on_mux_up`, `on_mux_down`), jobs report their end
//! (`on_job_end`), and `start_ready` starts queued iPads while there is room
//! (`max_concurrent`, one at a time by default as the school guide asks).
//!
//! It keeps its own knowledge of every iPad (what runs, what waits, what was erased and is
//! expected back, and what each iPad is); the status board only displays.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use usbmux::DeviceProperties;

use crate::control::{Reply, Request, Target};
use crate::forget::Forgetting;
use crate::ledger::{Event, Ledger};
use crate::prepare::progress::{Reporter, Room, Seat, SharedProgress};
use crate::prepare::{self, Context, JobEnd, Plugged};
use crate::record::{Attention, DeviceRecord, EraseRequest, Outcome, Step};
use crate::settings::Settings;
use crate::slots::{AppleUsbDevice, SlotLabels, Topology, UsbMode};
use crate::status::{Board, DeviceStatus, Label, Light};

/// How long stopping waits for aborted jobs to be dropped (they are, at their next pause).
const JOBS_DROPPED: std::time::Duration = std::time::Duration::from_secs(5);

/// What the scheduler is doing (for the demo's and tests' stop condition).
#[derive(Debug, Clone, Copy, Default)]
pub struct Idle {
    pub running: usize,
    pub queued: usize,
    pub erasing: usize,
}

/// A job in progress.
struct Running {
    /// Tells this job's end from that of an earlier job of the same iPad (unplugged, then
    /// plugged back in before the old job noticed).
    job: u64,
    /// The usbmuxd device id it runs on (a replug gets a new one).
    device_id: u32,
    abort: AbortHandle,
    /// The step it is on and what the iPad is, as the job reports them.
    progress: SharedProgress,
}

/// Which iPad is worked on when.
pub struct Scheduler {
    /// What jobs share: usbmuxd's address, the ledger, the pair records.
    ctx: Arc<Context>,
    /// The settings the next job starts with (a reload swaps them; running jobs keep theirs).
    settings: Arc<Settings>,
    /// Where statuses are shown; never read back.
    board: Board,
    /// The USB bus, to name slots and spot iPads in recovery.
    topology: Arc<dyn Topology>,
    /// Slot names learnt with `cartprep slots learn`.
    labels: SlotLabels,
    /// The devices usbmuxd reports now, by device id.
    attached: HashMap<u32, DeviceProperties>,
    /// Device ids waiting for room, first come first served.
    queue: VecDeque<u32>,
    /// Jobs in progress, by UDID.
    running: HashMap<String, Running>,
    /// UDIDs erased by a job and expected back.
    erasing: HashSet<String>,
    /// UDIDs whose last job prepared them (unplugging one frees its slot).
    prepared: HashSet<String>,
    /// What is known of each iPad (serial, model, name, slot), by UDID, so every status line
    /// names it.
    known: HashMap<String, Label>,
    /// Recovery/DFU devices already reported, by port chain.
    recovery_seen: HashSet<String>,
    /// UDIDs already noted as seen over the network (never touched).
    network_seen: HashSet<String>,
    /// The jobs themselves; each returns its number, its UDID and how it ended.
    jobs: JoinSet<(u64, String, JobEnd)>,
    /// The number of the last job started.
    last_job: u64,
    /// usbmuxd is connected.
    mux_up: bool,
    /// Places for iPads worked on at once (`max_concurrent`): a job holds one, except while it
    /// waits for someone to tap Trust.
    room: Room,
    /// The number of places `room` was made with (a reload may change it).
    places: usize,
    /// Unplugged iPads still on the board, and when to let their lines go.
    forgetting: Forgetting,
}

impl Scheduler {
    pub fn new(
        ctx: Arc<Context>,
        settings: Arc<Settings>,
        board: Board,
        topology: Arc<dyn Topology>,
        labels: SlotLabels,
    ) -> Self {
        Scheduler {
            ctx,
            board,
            topology,
            labels,
            attached: HashMap::new(),
            queue: VecDeque::new(),
            running: HashMap::new(),
            erasing: HashSet::new(),
            prepared: HashSet::new(),
            known: HashMap::new(),
            recovery_seen: HashSet::new(),
            network_seen: HashSet::new(),
            jobs: JoinSet::new(),
            last_job: 0,
            mux_up: false,
            room: Room {
                places: Arc::new(Semaphore::new(settings.config.max_concurrent.max(1))),
                freed: Arc::new(Notify::new()),
            },
            places: settings.config.max_concurrent.max(1),
            forgetting: Forgetting::new(settings.config.board.forget_after),
            settings,
        }
    }

    /// Notified when a job gives up its place (it ended, or stepped aside for a person).
    pub fn room_freed(&self) -> Arc<Notify> {
        self.room.freed.clone()
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// New settings for the jobs that start from now on.
    pub fn set_settings(&mut self, settings: Arc<Settings>) {
        let wanted = settings.config.max_concurrent.max(1);
        if wanted > self.places {
            self.room.places.add_permits(wanted - self.places);
            self.places = wanted;
        } else if wanted < self.places {
            // Places held by running jobs are taken back as they end.
            let taken = self.room.places.forget_permits(self.places - wanted);
            self.places -= taken;
        }
        self.forgetting
            .set_after(settings.config.board.forget_after);
        self.settings = settings;
    }

    pub fn mux_up(&self) -> bool {
        self.mux_up
    }

    pub fn idle(&self) -> Idle {
        Idle {
            running: self.running.len(),
            queued: self.queue.len(),
            erasing: self.erasing.len(),
        }
    }

    pub fn on_mux_up(&mut self) {
        self.mux_up = true;
    }

    /// usbmuxd went away: device ids die with it, so every job stops (its record waits for the
    /// iPad); Listen re-adopts the iPads when usbmuxd is back.
    pub async fn on_mux_down(&mut self) {
        self.mux_up = false;
        let running: Vec<String> = self.running.keys().cloned().collect();
        for udid in running {
            self.interrupt(&udid, "usbmuxd went away").await;
        }
        for id in std::mem::take(&mut self.queue) {
            if let Some(p) = self.attached.get(&id) {
                self.show(
                    &p.udid.clone(),
                    Light::Unplugged,
                    "usbmuxd went away — waiting for it to come back",
                );
            }
        }
        self.attached.clear();
    }

    /// An iPad appeared: it queues unless it is already being worked on. Only iPads on a USB
    /// cable are prepared: one usbmuxd reaches over the network (a teacher's iPad paired for
    /// Wi-Fi sync, or a second listing of a plugged iPad) is never touched.
    pub fn on_attached(&mut self, props: DeviceProperties) {
        let listing = classify(&props, |udid| {
            self.attached.values().any(|p| same_ipad(&p.udid, udid))
        });
        match listing {
            Listing::Cable => {}
            // The iPad on the cable is the one worked on; its Wi-Fi listing is not another.
            Listing::Duplicate => return,
            Listing::NetworkOnly => {
                let udid = props.udid;
                if self.network_seen.insert(udid.clone()) {
                    self.board.note(format!(
                        "{udid}: seen over {} \u{2014} not touched (only iPads on a USB cable are prepared)",
                        link_name(props.connection_type.as_deref().unwrap_or_default())
                    ));
                }
                return;
            }
        }
        let (id, udid) = (props.device_id, props.udid.clone());
        let location = props.location_id;
        self.attached.insert(id, props);
        if self.running.contains_key(&udid) || self.queue.contains(&id) {
            return;
        }
        if let Some(slot) = self.slot_of(&udid, location) {
            self.known.entry(udid.clone()).or_default().slot = Some(slot);
        }
        let message = if self.erasing.contains(&udid) {
            "back after the erase"
        } else {
            "plugged in"
        };
        // Back on the cable first, so its own slot does not make it forgotten.
        self.forgetting.back(&udid);
        let slot = self.known.get(&udid).and_then(|l| l.slot.clone());
        self.forget_due(slot.as_deref());
        self.show(&udid, Light::Ready, message);
        self.queue.push_back(id);
    }

    /// An iPad went away: its job stops and its record waits for it to come back — unless it
    /// was just erased, which makes it restart.
    pub async fn on_detached(&mut self, device_id: u32) {
        self.forget_due(None);
        let was_queued = self.queue.contains(&device_id);
        self.queue.retain(|q| *q != device_id);
        let Some(props) = self.attached.remove(&device_id) else {
            return;
        };
        let udid = props.udid;
        if let Some(r) = self.running.get(&udid).filter(|r| r.device_id == device_id) {
            // An erased iPad restarts as soon as it has acknowledged, often before its job has
            // ended (the erase is journaled before it is sent): expected back, not interrupted.
            if r.progress.get().current == Some(Step::Erased) {
                self.stop_job(&udid);
                self.erasing.insert(udid);
            } else {
                self.interrupt(&udid, "unplugged").await;
            }
        } else if was_queued && !self.erasing.contains(&udid) {
            self.show(&udid, Light::Unplugged, "unplugged before it started");
        } else if self.prepared.remove(&udid) {
            self.show(&udid, Light::Free, "free \u{2014} plug the next iPad");
        }
    }

    /// A job ended: its place is free.
    pub fn on_job_end(&mut self, (job, udid, end): (u64, String, JobEnd)) {
        if self.running.get(&udid).is_none_or(|r| r.job != job) {
            // Stopped from outside (unplug, usbmuxd gone) before it ended: already handled.
            return;
        }
        if let Some(r) = self.running.remove(&udid) {
            self.learn(&udid, &r.progress);
        }
        self.forget_due(None);
        match end {
            JobEnd::Erasing => {
                self.erasing.insert(udid);
            }
            JobEnd::Done { .. } => {
                self.prepared.insert(udid);
                self.board.print_summary();
            }
            JobEnd::Attention(_) | JobEnd::Failed(_) => {
                self.board.print_summary();
            }
        }
    }

    /// At each event, before it is handled: lets go of the board lines of iPads unplugged long
    /// enough ago, or whose slot `taken_slot` another iPad was just plugged into (`forget.rs`),
    /// and of what the scheduler knew of them: the ledger has it, and a job learns it again if
    /// the iPad comes back.
    fn forget_due(&mut self, taken_slot: Option<&str>) {
        for udid in self.forgetting.due(std::time::Instant::now(), taken_slot) {
            let here = self.running.contains_key(&udid)
                || self.erasing.contains(&udid)
                || self.attached.values().any(|p| p.udid == udid);
            if !here && self.board.forget(&udid) {
                self.known.remove(&udid);
            }
        }
    }

    /// Starts queued iPads while there is room, and shows the rest their place in the queue.
    pub fn start_ready(&mut self) {
        while !self.queue.is_empty() {
            let Ok(permit) = self.room.places.clone().try_acquire_owned() else {
                break;
            };
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let Some(props) = self.attached.get(&id).cloned() else {
                continue;
            };
            if !self.running.contains_key(&props.udid) {
                self.start(props, Seat::new(permit, self.room.freed.clone()));
            }
        }
        let waiting: Vec<(usize, String)> = self
            .queue
            .iter()
            .enumerate()
            .filter_map(|(i, id)| self.attached.get(id).map(|p| (i, p.udid.clone())))
            .collect();
        for (i, udid) in waiting {
            let ahead = i + self.running.len();
            let message = format!("waiting — {ahead} ahead of it (one iPad at a time)");
            self.show(&udid, Light::Waiting, message);
        }
    }

    fn start(&mut self, props: DeviceProperties, seat: Seat) {
        let udid = props.udid.clone();
        self.erasing.remove(&udid);
        self.prepared.remove(&udid);
        let label = self.known.get(&udid).cloned().unwrap_or_default();
        let plugged = Plugged {
            slot: label.slot.clone(),
            props,
        };
        let progress = SharedProgress::new(label);
        let reporter = Reporter::new(self.board.clone(), &udid, progress.clone())
            .seated(seat, self.room.clone());
        let (ctx, settings) = (self.ctx.clone(), self.settings.clone());
        let device_id = plugged.props.device_id;
        self.last_job += 1;
        let (job, key) = (self.last_job, udid.clone());
        let abort = self.jobs.spawn(async move {
            let end = prepare::run(&ctx, &settings, plugged, reporter).await;
            (job, key, end)
        });
        self.running.insert(
            udid,
            Running {
                job,
                device_id,
                abort,
                progress,
            },
        );
    }

    /// The next job to end; pending for ever when none runs (for `select!`).
    pub async fn next_job_end(&mut self) -> (u64, String, JobEnd) {
        loop {
            match self.jobs.join_next().await {
                Some(Ok(ended)) => return ended,
                // Aborted (its end was handled when it was stopped) or panicked.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stopping the station: jobs finishing their last step get `grace` to say so; the rest
    /// are recorded as interrupted and resume next time.
    pub async fn shut_down(&mut self, grace: std::time::Duration) {
        let _ = tokio::time::timeout(grace, async {
            while !self.running.is_empty() {
                let (job, udid, _) = self.next_job_end().await;
                if self.running.get(&udid).is_some_and(|r| r.job == job) {
                    self.stop_job(&udid);
                }
            }
        })
        .await;
        let running: Vec<String> = self.running.keys().cloned().collect();
        for udid in running {
            self.interrupt(&udid, "the station stopped").await;
        }
        // An aborted job holds the ledger until its task is dropped: let them go, so the state
        // folder is free once the daemon returns (an iPad waiting for its passcode is still
        // running when the station stops).
        self.jobs.abort_all();
        let _ = tokio::time::timeout(JOBS_DROPPED, async {
            while self.jobs.join_next().await.is_some() {}
        })
        .await;
    }

    /// An operator's command (`cartprep erase|retry|forget`, through `control.sock`); `uid`
    /// is who sent it, as the kernel says.
    pub async fn on_command(&mut self, request: Request, uid: Option<u32>) -> Reply {
        match request {
            Request::Erase {
                target,
                reason,
                user,
            } => {
                let by = match uid {
                    Some(uid) => format!("{user} (uid {uid})"),
                    None => user,
                };
                self.erase(&target, by, reason).await
            }
            Request::Retry { target } => self.retry(&target),
            Request::Forget { serial } => self.forget(&serial).await,
        }
    }

    /// Records an operator's erase request (who, why) and starts the iPad's job again if it is
    /// plugged in; the plan then erases it (`prepare::plan`), and it is prepared when it is
    /// back.
    async fn erase(&mut self, target: &Target, by: String, reason: String) -> Reply {
        let (udid, mut record) = match self.find(target) {
            Ok(found) => found,
            Err(why) => return Reply::refused(why),
        };
        if self.running.contains_key(&udid) {
            return Reply::refused(format!(
                "{} is being worked on; ask again once it has stopped",
                who(&record)
            ));
        }
        record.erase_request = Some(EraseRequest {
            by: by.clone(),
            reason: reason.clone(),
            at_ms: crate::clock::now_ms(),
        });
        record.updated_ms = record.updated_ms.max(crate::clock::now_ms());
        if let Err(e) = self.ctx.ledger.save(&record, Event::OperatorRequest).await {
            return Reply::refused(format!("the request could not be recorded: {e}"));
        }
        tracing::warn!(serial = %record.serial, "erase requested by {by}: {reason}");
        if self.requeue(&udid) {
            self.show(&udid, Light::Ready, format!("erase requested by {by}"));
            Reply::ok(format!(
                "{}: erase recorded (by {by}: {reason}); it is erased, then prepared",
                who(&record)
            ))
        } else {
            Reply::ok(format!(
                "{}: erase recorded (by {by}: {reason}); it is erased when it is plugged in",
                who(&record)
            ))
        }
    }

    /// Works on an iPad again now (its attention dealt with: Activation Lock removed, the
    /// assignment fixed…).
    fn retry(&mut self, target: &Target) -> Reply {
        let (udid, record) = match self.find(target) {
            Ok(found) => found,
            Err(why) => return Reply::refused(why),
        };
        if self.running.contains_key(&udid) {
            return Reply::ok(format!("{} is being worked on already", who(&record)));
        }
        if self.requeue(&udid) {
            self.show(&udid, Light::Ready, "retry asked for");
            Reply::ok(format!("{}: queued again", who(&record)))
        } else {
            Reply::refused(format!(
                "{} is not plugged in; plugging it in starts it again",
                who(&record)
            ))
        }
    }

    /// Drops an iPad's record from the ledger (the audit log keeps it): the next time it is
    /// plugged in, it is a new iPad to the station.
    async fn forget(&mut self, serial: &str) -> Reply {
        let record = match self.ctx.ledger.get(&serial.to_ascii_uppercase()) {
            Ok(Some(r)) => r,
            Ok(None) => match self.ctx.ledger.get(serial) {
                Ok(Some(r)) => r,
                _ => return Reply::refused(format!("no iPad with serial {serial} in the ledger")),
            },
            Err(e) => return Reply::refused(format!("reading the ledger: {e}")),
        };
        if self.running.contains_key(&record.udid) {
            return Reply::refused(format!(
                "{} is being worked on; ask again once it has stopped",
                who(&record)
            ));
        }
        match self.ctx.ledger.forget(&record).await {
            Ok(()) => Reply::ok(format!(
                "{}: forgotten (the audit log keeps its history)",
                who(&record)
            )),
            Err(e) => Reply::refused(format!("the ledger refused: {e}")),
        }
    }

    /// The UDID and record of the iPad a command names.
    fn find(&self, target: &Target) -> Result<(String, DeviceRecord), String> {
        let ledger = &self.ctx.ledger;
        match target {
            Target::Serial(serial) => {
                let found = ledger
                    .get(&serial.to_ascii_uppercase())
                    .ok()
                    .flatten()
                    .or_else(|| ledger.get(serial).ok().flatten());
                found
                    .map(|r| (r.udid.clone(), r))
                    .ok_or_else(|| format!("no iPad with serial {serial} in the ledger"))
            }
            Target::Slot(slot) => {
                let udid = self
                    .attached
                    .values()
                    .map(|p| &p.udid)
                    .find(|u| {
                        self.known
                            .get(*u)
                            .and_then(|l| l.slot.as_deref())
                            .is_some_and(|s| s == slot)
                    })
                    .cloned()
                    .ok_or_else(|| format!("no iPad is plugged into slot {slot}"))?;
                match ledger.by_udid(&udid) {
                    Ok(Some(r)) if !r.serial.is_empty() => Ok((udid, r)),
                    _ => Err(format!(
                        "the iPad in slot {slot} has not paired yet: the station does not know it"
                    )),
                }
            }
        }
    }

    /// Queues a plugged-in iPad that is not running; `false` when it is not plugged in.
    fn requeue(&mut self, udid: &str) -> bool {
        let Some(id) = self
            .attached
            .iter()
            .find(|(_, p)| p.udid == udid)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if !self.queue.contains(&id) {
            self.queue.push_back(id);
        }
        true
    }

    /// iPads on the USB bus that usbmuxd cannot see (recovery, DFU) need a person.
    pub fn on_usb_devices(&mut self, devices: &[AppleUsbDevice]) {
        for d in devices
            .iter()
            .filter(|d| !matches!(d.mode, UsbMode::Normal))
        {
            let key = format!("usb:{}", d.chain);
            if self.recovery_seen.insert(key.clone()) {
                let mut s = DeviceStatus::new(key, Light::Attention, d.mode.describe());
                s.slot = Some(self.slot_label(&d.chain));
                s.attention = Some(Attention::RecoveryMode);
                self.board.update(s);
            }
        }
    }

    /// Stops a job from outside and records it as interrupted at the step it was on.
    async fn interrupt(&mut self, udid: &str, why: &str) {
        let Some(r) = self.stop_job(udid) else {
            return;
        };
        let step = r.progress.get().current;
        mark_interrupted(&self.ctx.ledger, udid, step, why).await;
        // The step in progress, in words ("activating"), not the last one completed.
        let at = step
            .map(|s| format!(" during \u{201c}{}\u{201d}", s.doing()))
            .unwrap_or_default();
        self.show(
            udid,
            Light::Unplugged,
            format!("{why}{at} — plug it back in to continue"),
        );
    }

    fn stop_job(&mut self, udid: &str) -> Option<Running> {
        let r = self.running.remove(udid)?;
        r.abort.abort();
        self.learn(udid, &r.progress);
        Some(r)
    }

    /// Keeps what a job learnt of its iPad for the next status lines.
    fn learn(&mut self, udid: &str, progress: &SharedProgress) {
        let label = progress.get().label;
        self.known.entry(udid.to_owned()).or_default().merge(&label);
    }

    fn show(&mut self, udid: &str, light: Light, message: impl Into<String>) {
        let label = self.known.get(udid).cloned().unwrap_or_default();
        if matches!(light, Light::Free | Light::Unplugged) {
            self.forgetting
                .unplugged(udid, label.slot.as_deref(), std::time::Instant::now());
        } else {
            self.forgetting.back(udid);
        }
        self.board
            .update(DeviceStatus::labelled(udid, &label, light, message));
    }

    /// The operator's name for the slot a device is in: the configuration's `[slots]`, else a
    /// label learnt with `cartprep slots learn`, else the port chain.
    fn slot_of(&self, udid: &str, location: Option<u64>) -> Option<String> {
        let topology = self.topology.as_ref();
        let chain =
            crate::slots::chain_for(topology, udid, location, topology.location_encoding())?;
        Some(self.slot_label(&chain))
    }

    fn slot_label(&self, chain: &str) -> String {
        self.settings
            .config
            .slots
            .get(chain)
            .cloned()
            .unwrap_or_else(|| self.labels.label(chain))
    }
}

/// What a usbmuxd listing is to the station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// An iPad on a USB cable: worked on.
    Cable,
    /// The Wi-Fi listing of an iPad that is also on a cable (macOS lists it under a second
    /// DeviceID with the same SerialNumber): the same iPad, not another.
    Duplicate,
    /// Reached over the network only: shown once, never touched.
    NetworkOnly,
}

/// Sorts a listing; `on_cable` says whether an iPad with that UDID is listed on a cable now.
fn classify(props: &DeviceProperties, on_cable: impl Fn(&str) -> bool) -> Listing {
    if over_usb(props) {
        Listing::Cable
    } else if on_cable(&props.udid) {
        Listing::Duplicate
    } else {
        Listing::NetworkOnly
    }
}

/// Two SerialNumbers name the same iPad: usbmuxd builds differ in the hyphen of 24-digit
/// UDIDs and in case (`docs/protocol.md` §1).
fn same_ipad(a: &str, b: &str) -> bool {
    let plain = |s: &str| {
        s.chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect::<String>()
    };
    plain(a) == plain(b)
}

/// Whether usbmuxd reaches the device over a USB cable (`ConnectionType` `USB`); `Network`
/// (Wi-Fi sync on macOS) and any other type are not prepared. A listing without the key comes
/// from a usbmuxd that knows only USB: every build that lists network devices says which is
/// which.
fn over_usb(props: &DeviceProperties) -> bool {
    props.over_usb()
}

fn link_name(connection_type: &str) -> &str {
    if connection_type.eq_ignore_ascii_case("Network") {
        "Wi-Fi"
    } else if connection_type.is_empty() {
        "an unknown link"
    } else {
        connection_type
    }
}

/// How replies name an iPad.
fn who(record: &DeviceRecord) -> String {
    match &record.slot {
        Some(slot) => format!("{} (slot {slot})", record.serial),
        None => record.serial.clone(),
    }
}

/// A job stopped from outside (unplug, usbmuxd gone, shutdown) during `step`: its record
/// waits for the iPad.
async fn mark_interrupted(ledger: &Ledger, udid: &str, step: Option<Step>, why: &str) {
    if let Ok(Some(mut r)) = ledger.by_udid(udid)
        && r.outcome == Outcome::Working
    {
        // The job's step counts only once the record knows the iPad by serial (before that
        // the record is the UDID one, still at pairing).
        let step = step.filter(|s| *s > r.completed);
        r.interrupt(step, why);
        let _ = ledger.save(&r, Event::Update).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipads_on_a_usb_cable_are_prepared() {
        for (connection_type, prepared) in [
            (Some("USB"), true),
            (Some("usb"), true),
            (None, true),
            (Some("Network"), false),
            (Some(""), false),
            (Some("Bluetooth"), false),
        ] {
            let mut props = DeviceProperties::usb(7, "00008030-000D543C1A30C02E");
            props.connection_type = connection_type.map(str::to_owned);
            assert_eq!(over_usb(&props), prepared, "{connection_type:?}");
        }
        assert_eq!(link_name("Network"), "Wi-Fi");
    }

    #[test]
    fn a_network_listing_is_a_second_listing_of_a_cabled_ipad_or_an_ipad_left_alone() {
        let udid = "00008030-000D543C1A30C02E";
        let listing = |connection_type: Option<&str>, serial: &str| {
            let mut p = DeviceProperties::usb(9, serial);
            p.connection_type = connection_type.map(str::to_owned);
            p
        };
        let cabled = |u: &str| same_ipad(u, udid);
        let nothing_cabled = |_: &str| false;
        for (props, on_cable, want) in [
            (
                listing(Some("USB"), udid),
                &cabled as &dyn Fn(&str) -> bool,
                Listing::Cable,
            ),
            (listing(None, udid), &nothing_cabled, Listing::Cable),
            (listing(Some("Network"), udid), &cabled, Listing::Duplicate),
            // macOS may give the UDID without its hyphen, or in another case.
            (
                listing(Some("Network"), "00008030000d543c1a30c02e"),
                &cabled,
                Listing::Duplicate,
            ),
            (
                listing(Some("Network"), udid),
                &nothing_cabled,
                Listing::NetworkOnly,
            ),
            (
                listing(Some("Network"), "00008101-001E30C02E543C1A"),
                &cabled,
                Listing::NetworkOnly,
            ),
        ] {
            assert_eq!(
                classify(&props, on_cable),
                want,
                "{:?} {}",
                props.connection_type,
                props.udid
            );
        }
    }
}
