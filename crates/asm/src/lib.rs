//! A client for the Apple School Manager API and its Apple Business twin: OAuth 2 client
//! credentials with an ES256 client assertion, the organization's devices and device
//! management services, a device's assigned service, and ASSIGN_DEVICES activities.
//!
//! The requests, their answers and the public pages they come from are in `docs/protocol.md`
//! (Apple School Manager API). The private key stays in [`PrivateKey`], whose `Debug` prints
//! `***`; no token or assertion is logged.

mod assertion;
mod client;
mod error;
mod model;
mod settings;

pub use assertion::{ASSERTION_LIFETIME, Claims, client_assertion};
pub use client::{AsmClient, MAX_BODY, MAX_PAGES, PAGE_LIMIT, RetryPolicy};
pub use error::AsmError;
pub use model::{
    Activity, ActivityAttributes, ActivityState, Device, DeviceAttributes, Server,
    ServerAttributes, ServerId,
};
pub use settings::{
    AsmSettings, DEFAULT_AUDIENCE, DEFAULT_TIMEOUT, DEFAULT_TOKEN_URL, Kind, PrivateKey,
};

/// Checks the credentials and the device management service's name: gets a token, lists the
/// services, and returns the ID of the one named `server_name` (for `cartprep check` and the
/// station's start-up).
pub async fn verify(settings: &AsmSettings, server_name: &str) -> Result<ServerId, AsmError> {
    let client = AsmClient::new(settings.clone())?;
    Ok(ServerId(client.server_named(server_name).await?.id))
}
