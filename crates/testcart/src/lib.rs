//! Test setup shared by the lockdown and mcinstall suites: a simulated cart in a temporary
//! folder, handles to its iPads as usbmuxd lists them, a supervised cloud configuration and signers
//! for supervision tests.
//!
//! A dev-dependency only. It lives in its own crate because the simulator must not depend on
//! lockdown (the two share only message types), while both suites need the two together.
//! Being test code, it panics with a message where setup fails: that fails the calling test.

mod cart;
mod cloud_configuration;
mod signers;

pub use cart::Cart;
pub use cloud_configuration::supervised_cloud_configuration;
pub use signers::{SignsWrongBytes, new_identity};
