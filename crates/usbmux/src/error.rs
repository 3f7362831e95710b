//! Errors of the usbmuxd protocol layer.

use crate::bounded_plist::BoundedPlistError;
use crate::message::ResultCode;

#[derive(Debug, thiserror::Error)]
pub enum UsbmuxError {
    #[error("usbmuxd I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("usbmuxd did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("usbmuxd frame length {0} is shorter than its 16-byte header")]
    FrameTooShort(u32),
    #[error("usbmuxd frame length {length} exceeds the limit of {max} bytes")]
    FrameTooLarge { length: u32, max: u32 },
    #[error("usbmuxd frame truncated: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    #[error("usbmuxd connection closed")]
    Closed,
    /// A plist we could not encode.
    #[error("usbmuxd plist: {0}")]
    Plist(String),
    /// A plist the peer sent that is malformed, too large, too deep or not a dictionary.
    #[error("unreadable plist from the peer: {0}")]
    BadPlist(#[from] BoundedPlistError),
    #[error("usbmuxd message lacks {0}")]
    MissingKey(&'static str),
    #[error("unexpected usbmuxd reply: {0}")]
    UnexpectedReply(String),
    #[error("usbmuxd reply tag {got} does not match request tag {expected}")]
    TagMismatch { expected: u32, got: u32 },
    #[error("usbmuxd refused the request: {0}")]
    Refused(ResultCode),
    #[error("bad usbmuxd address {0:?}: expected a unix socket path or IP:PORT")]
    BadAddress(String),
}
