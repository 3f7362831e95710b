//! The preparation station daemon.
//!
//! The data path, one way: a usbmuxd event → the [`scheduler`] → [`prepare`] (assess → plan →
//! execute) → the [`ledger`] → the [`status`] board and the [`export`]s.
//!
//! - [`daemon`]: the wiring: opens the state, follows usbmuxd, hands events to the scheduler,
//!   follows configuration edits, serves `cartprep status`, stops on a signal.
//! - [`scheduler`]: which iPad is worked on when (a queue, `max_concurrent` jobs, unplug,
//!   erase and usbmuxd restarts).
//! - [`prepare`]: one iPad's job: [`prepare::assess`] reads it, [`prepare::plan`] decides (a
//!   pure function), [`prepare::execute`] carries the plan out and journals each step.
//! - [`record`]: the per-device record (steps, outcome, history); [`ledger`]: records kept in
//!   sled plus an append-only JSONL audit log, rebuilt from the log when the database is
//!   damaged.
//! - [`status`]: the LED-style board (display only) and the snapshot `cartprep status` reads.
//!   [`forget`]: when the board lets go of an unplugged iPad's line.
//! - [`export`]: the Apple School Manager serial CSV, a full CSV and JSONL.
//! - [`config`]: the station configuration file, checked field by field; [`settings`]: what
//!   jobs use from it (identity, Wi-Fi profile bytes…); [`watch`]: reloading it on edits.
//! - [`slots`]: USB port chains and slot names, recovery/DFU iPads on the bus.
//! - [`paths`]: the default state folder and configuration file, one rule for every command.
//! - [`asm_sync`]: Apple School Manager: each iPad's owner looked up when it is identified,
//!   and its assignment to our MDM server after it is done, journaled and resumed.
//! - [`services`]: what `[web]` and `[notify]` switch on: [`web`] (the live page, JSON,
//!   `/metrics` from [`metrics`]) and [`notify`] (the webhook); they follow the board's changes
//!   and never decide anything.
//! - [`private`]: folder and file modes (0700/0600); [`memory`]: freed memory handed back when
//!   the station goes idle.
//! - [`models`]: marketing names of iPad models; [`clock`]: Unix milliseconds and RFC 3339.

pub mod asm_sync;
pub mod clean_close;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod enrollment_check;
pub mod export;
pub mod forget;
pub mod ledger;
pub mod ledger_index;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod paths;
pub mod prepare;
pub mod private;
pub mod record;
pub mod scheduler;
pub mod services;
pub mod settings;
pub mod slots;
pub mod status;
pub mod sysfs_topology;
pub mod transcript;
pub mod usb_events;
pub mod watch;
pub mod web;

pub use config::{ConfigError, Secret, StationConfig};
pub use ledger::{Event, Ledger, LedgerError, OpenReport, WriteFaults};
pub use record::{Attention, DeviceRecord, EventKind, Outcome, Step, StepEvent};
pub use settings::Settings;
pub use watch::{ConfigWatcher, WatchError};
