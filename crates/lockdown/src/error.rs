//! Typed errors of device sessions.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LockdownError {
    #[error(transparent)]
    Usbmux(#[from] usbmux::UsbmuxError),
    #[error("the device did not answer {operation} within {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("the user tapped \"Don't Trust\" on the iPad")]
    UserDeniedPairing,
    #[error("the iPad is locked with a passcode: unlock it to pair")]
    PasswordProtected,
    #[error("nobody answered the \"Trust This Computer?\" prompt within {0:?}")]
    TrustPromptUnanswered(Duration),
    #[error("the iPad does not know this host (InvalidHostID): pair again")]
    InvalidHostId,
    #[error("the device answered {request} with error {name}")]
    Device { request: &'static str, name: String },
    #[error("malformed reply from the device: {0}")]
    MalformedReply(String),
    #[error("pair record: {0}")]
    PairRecord(String),
    #[error("unreadable pair record: {0}")]
    PairRecordPlist(usbmux::BoundedPlistError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("device connection failed: {0}")]
    Idevice(String),
}

impl LockdownError {
    /// Worth another try on a new connection: the link or the device was slow or went away,
    /// not a refusal. Pairing answers (denied, locked, prompt unanswered) are never transient:
    /// a person has to act first.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LockdownError::Timeout { .. } | LockdownError::Io(_) | LockdownError::Usbmux(_)
        )
    }

    /// Maps an idevice error, keeping the cases callers act on typed.
    pub fn from_idevice(request: &'static str, e: idevice::IdeviceError) -> Self {
        use idevice::IdeviceError as E;
        match e {
            E::UserDeniedPairing => LockdownError::UserDeniedPairing,
            E::PasswordProtected => LockdownError::PasswordProtected,
            E::InvalidHostID => LockdownError::InvalidHostId,
            E::PairingDialogResponsePending => LockdownError::Device {
                request,
                name: "PairingDialogResponsePending".into(),
            },
            E::GetProhibited => LockdownError::Device {
                request,
                name: "GetProhibited".into(),
            },
            E::SessionInactive => LockdownError::Device {
                request,
                name: "SessionInactive".into(),
            },
            E::UnknownErrorType(name) => LockdownError::Device { request, name },
            E::Plist(p) => LockdownError::MalformedReply(p.to_string()),
            E::UnexpectedResponse(r) => LockdownError::MalformedReply(r.to_string()),
            E::Socket(io) => LockdownError::Io(io),
            other => LockdownError::Idevice(other.to_string()),
        }
    }
}
