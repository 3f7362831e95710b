//! The usbmuxd socket protocol (plist flavour): frames, requests and replies, device properties,
//! a Listen loop and client helpers. Used by the station's client and by the simulator's server.

pub mod address;
pub mod bounded_plist;
pub mod client;
pub mod device;
pub mod error;
pub mod frame;
pub mod listen;
pub mod message;
pub mod plist_guard;
pub mod plist_service;
pub mod redact;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod transcript;

pub use address::{UsbmuxAddress, UsbmuxStream};
pub use bounded_plist::{BoundedPlistError, Limits};
pub use client::UsbmuxClient;
pub use device::{DeviceEvent, DeviceProperties};
pub use error::UsbmuxError;
pub use frame::{Frame, Header};
pub use listen::{ListenMessage, Listener, Oddity, listen_loop};
pub use message::{ClientInfo, Request, ResultCode};
pub use transcript::{Tap, Transcript};

/// lockdownd's TCP port on the device.
pub const LOCKDOWN_PORT: u16 = 62078;
