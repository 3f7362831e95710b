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

/// lockdownd error names about the connection's session, not about what was asked: a new
/// connection and session may well succeed (names from libimobiledevice's
/// `lockdownd_strtoerr`; `docs/protocol.md` §2.8).
pub const TRANSIENT_DEVICE_ERRORS: &[&str] =
    &["SessionInactive", "InvalidSessionID", "ServiceLimit"];

impl LockdownError {
    /// Worth another try on a new connection: the link or the device was slow or went away,
    /// not a refusal. Pairing answers (denied, locked, prompt unanswered) are never transient:
    /// a person has to act first.
    ///
    /// Transient: a timeout, a dropped link, a reply that did not parse (a torn or garbled
    /// frame: the next connection starts clean), and the lockdownd errors that describe the
    /// session rather than the request ([`TRANSIENT_DEVICE_ERRORS`]). The table in
    /// `docs/ARCHITECTURE.md` ("Retry policy") lists every kind.
    pub fn is_transient(&self) -> bool {
        match self {
            LockdownError::Timeout { .. }
            | LockdownError::Io(_)
            | LockdownError::Usbmux(_)
            | LockdownError::MalformedReply(_) => true,
            LockdownError::Device { name, .. } => TRANSIENT_DEVICE_ERRORS.contains(&name.as_str()),
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_worth_another_try() {
        let device = |name: &str| LockdownError::Device {
            request: "GetValue",
            name: name.into(),
        };
        let cases: Vec<(LockdownError, bool)> = vec![
            (
                LockdownError::Timeout {
                    operation: "GetValue",
                    after: Duration::from_secs(5),
                },
                true,
            ),
            (
                LockdownError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                true,
            ),
            (LockdownError::MalformedReply("torn frame".into()), true),
            (device("SessionInactive"), true),
            (device("InvalidSessionID"), true),
            (device("ServiceLimit"), true),
            (device("GetProhibited"), false),
            (device("InvalidService"), false),
            (device("MCProtected"), false),
            (LockdownError::UserDeniedPairing, false),
            (LockdownError::PasswordProtected, false),
            (
                LockdownError::TrustPromptUnanswered(Duration::from_secs(600)),
                false,
            ),
            (LockdownError::InvalidHostId, false),
            (LockdownError::PairRecord("unreadable".into()), false),
        ];
        for (error, transient) in cases {
            assert_eq!(error.is_transient(), transient, "{error:?}");
        }
    }
}
