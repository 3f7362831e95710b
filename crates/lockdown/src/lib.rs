//! Device sessions on top of the idevice crate: connecting through any usbmuxd address,
//! lockdownd requests with timeouts, pairing with a trust-prompt deadline, pair records, TLS
//! sessions and services, supervised pairing and activation.

pub mod activation;
pub mod error;
pub mod host_key;
pub mod pair_records;
pub mod pairing;
mod pending_pair;
pub mod provider;
pub mod services;
pub mod session;
mod session_tls;
pub mod signer;
pub mod supervised_pairing;

pub use error::LockdownError;
pub use idevice::pairing_file::PairingFile;
pub use pair_records::PairRecordStore;
pub use pairing::{pair, pair_and_save, trusted_session};
pub use provider::UsbmuxProvider;
pub use session::{DeviceRef, DeviceSession};
pub use signer::ChallengeSigner;
pub use supervised_pairing::{pair_supervised, pair_supervised_and_save};
