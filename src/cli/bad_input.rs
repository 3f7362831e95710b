//! The mark on an error that says "the input was wrong and nothing was touched", which the exit
//! status reports apart from failures met while working.

use std::fmt;

/// Bad usage or bad input: an invalid value, a malformed file, an invalid configuration.
#[derive(Debug)]
pub struct BadInput(String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An error saying what is wrong with the input.
pub fn bad_input(what: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(what.to_string()))
}
