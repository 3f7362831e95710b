//! Errors of the simulator.

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Usbmux(#[from] usbmux::UsbmuxError),
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("bad pair record: {0}")]
    BadPairRecord(String),
    #[error("scenario {path}: {reason}")]
    Scenario { path: String, reason: String },
    #[error("key error: {0}")]
    Key(String),
    #[error("plist error: {0}")]
    Plist(String),
}
