//! What a job tells others while it runs: the board (for people) and the scheduler (the step
//! in progress and what the iPad is). The scheduler never reads the board.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::record::{Attention, DeviceRecord, Step};
use crate::status::{Board, DeviceStatus, Label, Light};

/// A running job's progress, as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The step being worked on.
    pub current: Option<Step>,
    pub label: Label,
}

/// Shared between a job and the scheduler.
#[derive(Debug, Clone, Default)]
pub struct SharedProgress(Arc<Mutex<Progress>>);

impl SharedProgress {
    pub fn new(label: Label) -> Self {
        SharedProgress(Arc::new(Mutex::new(Progress {
            current: None,
            label,
        })))
    }

    pub fn get(&self) -> Progress {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, progress: Progress) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }
}

/// A job's place among the iPads worked on at once (`max_concurrent`). Dropping it frees the
/// place and wakes the scheduler to start the next iPad.
pub struct Seat {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Seat {
    pub fn new(permit: OwnedSemaphorePermit, freed: Arc<Notify>) -> Self {
        Seat {
            _permit: permit,
            freed,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// The places themselves, for a job that gave its seat up and wants one back.
#[derive(Clone)]
pub struct Room {
    pub places: Arc<Semaphore>,
    pub freed: Arc<Notify>,
}

/// Shows a job's status on the board and keeps its [`SharedProgress`] current.
pub struct Reporter {
    board: Board,
    status: DeviceStatus,
    progress: SharedProgress,
    /// The job's place, while it holds one (see [`Reporter::step_aside`]).
    seat: Option<Seat>,
    room: Option<Room>,
}

impl Reporter {
    pub fn new(board: Board, udid: &str, progress: SharedProgress) -> Self {
        let label = progress.get().label;
        Reporter {
            status: DeviceStatus::labelled(udid, &label, Light::Working, "plugged in"),
            board,
            progress,
            seat: None,
            room: None,
        }
    }

    /// The job holds `seat` in `room` (the scheduler's places).
    pub fn seated(mut self, seat: Seat, room: Room) -> Self {
        self.seat = Some(seat);
        self.room = Some(room);
        self
    }

    /// The iPad waits for a person (the Trust prompt): its place goes to the next iPad in the
    /// queue meanwhile.
    pub fn step_aside(&mut self) {
        self.seat = None;
    }

    /// The person answered: waits for a place again (first in line) before going on.
    pub async fn come_back(&mut self) {
        if self.seat.is_some() {
            return;
        }
        let Some(room) = self.room.clone() else {
            return;
        };
        if room.places.available_permits() == 0 {
            self.show(
                Light::Waiting,
                Some(Step::Paired),
                "trusted \u{2014} waiting for the iPad being worked on",
            );
        }
        if let Ok(permit) = room.places.acquire_owned().await {
            self.seat = Some(Seat::new(permit, room.freed));
        }
    }

    /// What the ledger knows of the iPad, shown from now on.
    pub fn learn(&mut self, record: &DeviceRecord) {
        let mut label = self.status.label();
        label.merge(&Label {
            serial: Some(record.serial.clone()).filter(|s| !s.is_empty()),
            slot: None,
            model: Some(record.marketing_name.clone()).filter(|m| !m.is_empty()),
            name: record.name.clone(),
        });
        self.status.serial = label.serial;
        self.status.model = label.model;
        self.status.name = label.name;
    }

    /// A model known before the serial (public values).
    pub fn learn_model(&mut self, model: &str) {
        if !model.is_empty() {
            self.status.model = Some(model.to_owned());
        }
    }

    /// Shows `message` with `light`, at `step`.
    pub fn show(&mut self, light: Light, step: Option<Step>, message: impl Into<String>) {
        self.status.light = light;
        self.status.current = step;
        self.status.message = message.into();
        self.status.since_ms = crate::clock::now_ms();
        self.status.attention = None;
        self.status.action = None;
        self.publish();
    }

    /// Shows what a person must do, at `step`.
    pub fn attention(&mut self, attention: Attention, step: Option<Step>) {
        self.status.light = Light::Attention;
        self.status.current = step;
        self.status.message = attention.message().into_owned();
        self.status.since_ms = crate::clock::now_ms();
        let target = match (&self.status.serial, &self.status.slot) {
            (Some(serial), _) => serial.clone(),
            (None, Some(slot)) => format!("--slot {slot}"),
            (None, None) => "SERIAL".into(),
        };
        self.status.action = attention.command(&target);
        self.status.attention = Some(attention);
        self.publish();
    }

    fn publish(&self) {
        self.progress.set(Progress {
            current: self.status.current,
            label: self.status.label(),
        });
        self.board.update(self.status.clone());
    }
}
