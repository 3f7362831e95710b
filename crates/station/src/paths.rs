//! Where the station keeps its files when nobody says otherwise.
//!
//! The station runs as a system service, so its state (ledger, audit log, pair records, the
//! supervision identity, slot names) lives in one system folder, and every command
//! (`run`, `status`, `ledger`, `slots`, `identity`) defaults to that same folder: an operator
//! who types `sudo cartprep status` sees the service's station without naming the folder.
//! `$CARTPREP_STATE`, when set, replaces that folder for every command alike.

use std::ffi::OsString;
use std::path::PathBuf;

/// Environment variable naming another state folder, for every command.
pub const STATE_ENV: &str = "CARTPREP_STATE";

/// The platforms whose system folders differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    MacOs,
    /// Linux and every other Unix: the Filesystem Hierarchy Standard's folders.
    Other,
}

impl Platform {
    /// The platform this binary was built for.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Other
        }
    }
}

/// The state folder for `platform`, or `override_dir` (from [`STATE_ENV`]) when it is set and
/// not empty.
pub fn state_dir_for(platform: Platform, override_dir: Option<OsString>) -> PathBuf {
    if let Some(dir) = override_dir.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match platform {
        Platform::MacOs => PathBuf::from("/Library/Application Support/cartprep"),
        Platform::Other => PathBuf::from("/var/lib/cartprep"),
    }
}

/// The configuration file for `platform`: beside the state on macOS (launchd has no `/etc`
/// convention for daemons), in `/etc/cartprep` elsewhere.
pub fn config_path_for(platform: Platform) -> PathBuf {
    match platform {
        Platform::MacOs => PathBuf::from("/Library/Application Support/cartprep/station.toml"),
        Platform::Other => PathBuf::from("/etc/cartprep/station.toml"),
    }
}

/// The state folder every command uses when none is given: `$CARTPREP_STATE`, else
/// `/var/lib/cartprep` (Linux) or `/Library/Application Support/cartprep` (macOS).
pub fn default_state_dir() -> PathBuf {
    state_dir_for(Platform::current(), std::env::var_os(STATE_ENV))
}

/// The configuration `cartprep run` reads when none is given: `/etc/cartprep/station.toml`
/// (Linux) or `/Library/Application Support/cartprep/station.toml` (macOS).
pub fn default_config_path() -> PathBuf {
    config_path_for(Platform::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_folder_is_the_system_folder_unless_the_environment_names_another() {
        let cases: [(Platform, Option<&str>, &str); 6] = [
            (Platform::Other, None, "/var/lib/cartprep"),
            (
                Platform::MacOs,
                None,
                "/Library/Application Support/cartprep",
            ),
            (Platform::Other, Some(""), "/var/lib/cartprep"),
            (
                Platform::MacOs,
                Some(""),
                "/Library/Application Support/cartprep",
            ),
            (Platform::Other, Some("/srv/cart"), "/srv/cart"),
            (Platform::MacOs, Some("/Users/it/cart"), "/Users/it/cart"),
        ];
        for (platform, env, expected) in cases {
            assert_eq!(
                state_dir_for(platform, env.map(OsString::from)),
                PathBuf::from(expected),
                "{platform:?} with {STATE_ENV}={env:?}"
            );
        }
    }

    #[test]
    fn the_configuration_file_is_in_the_platforms_system_folder() {
        let cases = [
            (Platform::Other, "/etc/cartprep/station.toml"),
            (
                Platform::MacOs,
                "/Library/Application Support/cartprep/station.toml",
            ),
        ];
        for (platform, expected) in cases {
            assert_eq!(
                config_path_for(platform),
                PathBuf::from(expected),
                "{platform:?}"
            );
        }
    }

    #[test]
    fn on_macos_the_state_folder_holds_the_configuration() {
        // One folder to create, back up and protect on a Mac.
        let config = config_path_for(Platform::MacOs);
        assert_eq!(
            config.parent(),
            Some(state_dir_for(Platform::MacOs, None).as_path())
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn on_linux_run_reads_the_configuration_in_etc() {
        assert_eq!(
            default_config_path(),
            PathBuf::from("/etc/cartprep/station.toml")
        );
    }
}
