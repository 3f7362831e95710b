//! What can go wrong talking to Apple School Manager, by what the caller does about it.

use std::time::Duration;

/// An error from the Apple School Manager (or Apple Business) API.
#[derive(Debug, thiserror::Error)]
pub enum AsmError {
    /// The API account's private key file could not be used. Never includes key material.
    #[error("private key: {0}")]
    Key(String),
    /// The token endpoint refused the client assertion: wrong client_id, key_id or private key,
    /// or a revoked API account.
    #[error(
        "Apple School Manager refused the API credentials ({code}{detail}): check client_id, key_id and private_key_file"
    )]
    Auth { code: String, detail: String },
    /// The access token was accepted but does not allow this request (HTTP 403).
    #[error("Apple School Manager forbids this request for the API account (HTTP 403)")]
    Forbidden,
    /// No such resource: a serial the organization does not hold, an unknown server or activity.
    #[error("not found in Apple School Manager: {0}")]
    NotFound(String),
    /// HTTP 429 after every retry: wait `retry_after` before asking again.
    #[error("Apple School Manager is rate limiting requests (retry after {} s)", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// A 5xx, or another status the client does not expect.
    #[error("Apple School Manager answered HTTP {status}{detail}")]
    Server { status: u16, detail: String },
    /// No answer in time, or the connection failed.
    #[error("cannot reach Apple School Manager: {0}")]
    Transport(String),
    /// An answer that is not what the documentation describes (or larger than allowed).
    #[error("unexpected answer from Apple School Manager: {0}")]
    Protocol(String),
    /// The configured device management service does not exist in the organization.
    #[error("no device management service named \"{wanted}\" in Apple School Manager; the names found are: {}", found.join(", "))]
    ServerNotFound { wanted: String, found: Vec<String> },
    /// A bad setting (URL, client_id).
    #[error("{0}")]
    Config(String),
}

impl AsmError {
    /// Whether trying again later may succeed (the station retries these from its journal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AsmError::RateLimited { .. } | AsmError::Server { .. } | AsmError::Transport(_)
        )
    }
}
