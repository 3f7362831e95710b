//! Passwords (PKCS#12, Wi-Fi) read from a file or an environment variable, never from the
//! command line where `ps` shows them, and held as [`Secret`]s so they never reach a log.

use std::path::Path;

use profiles::{ProfileError, Secret};

use super::bad_input;

/// The password from `file`, else from the environment variable `env`; `None` when neither is
/// given.
pub fn read_password(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        return Ok(Some(password_from_file(path)?));
    }
    if let Some(var) = env {
        return password_from_env(var).map(Some);
    }
    Ok(None)
}

/// A missing or unreadable file is the profiles crate's input error.
pub fn password_from_file(path: &Path) -> Result<Secret, ProfileError> {
    Secret::from_file(path)
}

pub fn password_from_env(var: &str) -> anyhow::Result<Secret> {
    match std::env::var(var) {
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => {
            Err(bad_input(format!("environment variable {var} is not set")))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(bad_input(format!(
            "environment variable {var} is not valid UTF-8"
        ))),
    }
}
