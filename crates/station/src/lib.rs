//! The preparation station daemon's foundation.
//!
//! - [`record`]: the per-device record (pipeline step, outcome, history).
//! - [`ledger`]: records kept durably in sled plus an append-only JSONL audit log, rebuilt from
//!   the log when the database is damaged.
//! - [`export`]: the Apple School Manager serial CSV, a full CSV and JSONL.
//! - [`config`]: the station configuration file, checked field by field.
//! - [`paths`]: the default state folder and configuration file, one rule for every command.
//! - [`watch`]: reloading the configuration when the file is edited.
//! - [`clock`]: Unix milliseconds and RFC 3339.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod export;
pub mod ledger;
pub mod models;
pub mod paths;
pub mod pipeline;
pub mod record;
pub mod settings;
pub mod slots;
pub mod status;
pub mod watch;

pub use config::{ConfigError, Secret, StationConfig};
pub use ledger::{Event, Ledger, LedgerError, OpenReport};
pub use record::{Attention, DeviceRecord, Outcome, Step, StepEvent};
pub use watch::{ConfigWatcher, WatchError};
