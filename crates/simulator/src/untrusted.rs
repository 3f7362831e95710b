//! Plists the simulator did not write itself (clients' messages, plists nested in them as data,
//! HTTP bodies, files in its state folder), read within bounds so that no client can crash the
//! whole simulator with a deeply nested plist.

use plist::Dictionary;
use usbmux::{BoundedPlistError, Limits};

/// Nothing a client sends in one message is larger than a lockdownd message may be.
pub const LIMITS: Limits = Limits::new(usbmux::plist_service::MAX_MESSAGE_LEN as usize);

/// A dictionary plist (XML or binary) from untrusted bytes.
pub fn dictionary(bytes: &[u8]) -> Result<Dictionary, BoundedPlistError> {
    usbmux::bounded_plist::dictionary_from_bytes(bytes, LIMITS)
}

/// A dictionary plist from a file of the state folder, refusing one larger than [`LIMITS`].
pub fn dictionary_file(path: &std::path::Path) -> Result<Dictionary, BoundedPlistError> {
    let bytes = usbmux::bounded_plist::read_file(path, LIMITS.max_bytes)?;
    dictionary(&bytes)
}
