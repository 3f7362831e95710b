//! Typed errors of the profiles crate.

use std::path::{Path, PathBuf};

/// Result with [`ProfileError`] as the default error.
pub type Result<T, E = ProfileError> = std::result::Result<T, E>;

/// Everything that can go wrong while making, reading or writing identities and profiles.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input data (a file's content, a certificate, a key) is not what it should be.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A value given by the user fails validation (`field` names it).
    #[error("{field}: {reason}")]
    Validation { field: &'static str, reason: String },
    /// The private key is not the one of the certificate.
    #[error("{what}: the private key does not match the certificate's public key")]
    KeyMismatch { what: String },
    /// The PKCS#12 password is wrong (its integrity check failed).
    #[error("{what}: wrong PKCS#12 password (the integrity check failed)")]
    Pkcs12WrongPassword { what: String },
    /// The PKCS#12 file uses algorithms the `p12` crate cannot read (PBES2/AES, SHA-256 MAC, …).
    #[error(
        "{what}: the PKCS#12 file uses {algorithm}, which cartprep cannot read; convert it with \
         `openssl pkcs12 -in FILE -nodes -out identity.pem` and import the PEM (--pem), re-export \
         it with `openssl pkcs12 -legacy`, or export the certificate and key as DER (--cert/--key)"
    )]
    Pkcs12Unsupported { what: String, algorithm: String },
    /// The file is a plist or CMS message but not a configuration profile.
    #[error("{what}: not a configuration profile: {reason}")]
    NotAProfile { what: String, reason: String },
    /// The property list is too large, nested too deep or expands too much to read safely.
    #[error("{what}: property list refused: {source}")]
    Plist {
        what: String,
        #[source]
        source: usbmux::BoundedPlistError,
    },
    /// Key generation, signing or encoding failed (not caused by the input).
    #[error("{0}")]
    Crypto(String),
}

impl ProfileError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ProfileError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Invalid input data described by `what` (usually a file name).
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ProfileError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A validation error on a named field.
    pub fn validation(field: &'static str, reason: impl Into<String>) -> Self {
        ProfileError::Validation {
            field,
            reason: reason.into(),
        }
    }

    /// True when the error is caused by the input (bad file content, bad value, missing input
    /// file): a command line maps these to exit status 2, everything else to 1.
    pub fn is_input_error(&self) -> bool {
        match self {
            ProfileError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            ),
            ProfileError::Invalid { .. }
            | ProfileError::Validation { .. }
            | ProfileError::KeyMismatch { .. }
            | ProfileError::Pkcs12WrongPassword { .. }
            | ProfileError::Pkcs12Unsupported { .. }
            | ProfileError::NotAProfile { .. }
            | ProfileError::Plist { .. } => true,
            ProfileError::Crypto(_) => false,
        }
    }

    /// Replaces the subject of a data error (`what`, e.g. "PEM input") with a file name,
    /// keeping the reason; other errors are returned unchanged.
    pub fn in_file(self, path: &Path) -> Self {
        let what = path.display().to_string();
        match self {
            ProfileError::Invalid { reason, .. } => ProfileError::Invalid { what, reason },
            ProfileError::KeyMismatch { .. } => ProfileError::KeyMismatch { what },
            ProfileError::Pkcs12WrongPassword { .. } => ProfileError::Pkcs12WrongPassword { what },
            ProfileError::Pkcs12Unsupported { algorithm, .. } => {
                ProfileError::Pkcs12Unsupported { what, algorithm }
            }
            ProfileError::NotAProfile { reason, .. } => ProfileError::NotAProfile { what, reason },
            ProfileError::Plist { source, .. } => ProfileError::Plist { what, source },
            other => other,
        }
    }
}

/// Maps any displayable crypto-library error to [`ProfileError::Crypto`] with context.
pub(crate) fn crypto<E: std::fmt::Display>(
    context: &'static str,
) -> impl FnOnce(E) -> ProfileError {
    move |e| ProfileError::Crypto(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_are_classified() {
        assert!(ProfileError::validation("ssid", "empty").is_input_error());
        assert!(ProfileError::invalid("x.pem", "no key").is_input_error());
        assert!(!ProfileError::Crypto("rng".into()).is_input_error());
        let missing = ProfileError::io(
            Path::new("/nonexistent"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(missing.is_input_error());
        let denied = ProfileError::io(
            Path::new("/root/x"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!denied.is_input_error());
    }

    #[test]
    fn in_file_names_the_file() {
        let e = ProfileError::invalid("PEM input", "no certificate").in_file(Path::new("a.pem"));
        assert_eq!(e.to_string(), "a.pem: no certificate");
        let e = ProfileError::KeyMismatch { what: "x".into() }.in_file(Path::new("k.der"));
        assert!(e.to_string().starts_with("k.der: "), "{e}");
    }
}
