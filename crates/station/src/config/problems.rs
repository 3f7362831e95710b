//! What is wrong with a config file: each [`Problem`] names the setting (dotted path) and its
//! line; [`ConfigError`] holds all of them, so one run reports every mistake.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the setting (`mdm.enrollment_url`, `slots."1-1.2"`); empty when the
    /// problem is with the file as a whole (a TOML syntax error outside any setting).
    pub field: String,
    /// Line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, in plain words. A problem with a file the setting names says which file.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The config file concerned.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The problems found (empty when the file could not be read at all).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }

    /// The dotted paths of the settings with problems.
    pub fn fields(&self) -> Vec<&str> {
        self.problems().iter().map(|p| p.field.as_str()).collect()
    }
}

fn describe_problems(path: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", path.display()),
        many => {
            let mut s = format!("{} has {} problems:", path.display(), many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// Collects problems while checking, so one run reports all of them. Lines are filled in at
/// the end, from the field paths.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            line: None,
            reason: reason.into(),
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// io errors in words a volunteer understands.
pub(super) fn plain_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it does not exist".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (check who owns it and its mode)".into()
        }
        _ => e.to_string(),
    }
}

/// A profiles error in the same words: unreadable files say which file and why.
pub(super) fn plain_profile_error(e: &profiles::ProfileError) -> String {
    match e {
        profiles::ProfileError::Io { path, source } => {
            format!("cannot read {}: {}", path.display(), plain_io(source))
        }
        other => other.to_string(),
    }
}
