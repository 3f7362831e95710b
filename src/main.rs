//! cartprep: the command line. This file parses, dispatches to the command groups in `cli/`,
//! and decides the exit status, here and nowhere else. Everything the commands run lives in the
//! crates under crates/.

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;

use cli::{Cli, Command};

/// The exit statuses, as `cartprep --help` lists them.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  done (also when the reader of the output stops early, as `| head` does)
  1  failed while working (the error says what happened)
  2  bad usage or bad input: an unknown option, an invalid configuration, a malformed input
     file, a state folder the station cannot use; nothing was touched";

/// What the process tells whoever started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Success,
    Failure,
    BadInput,
}

impl Exit {
    fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::BadInput => 2,
        }
    }
}

/// The exit status for a command's error.
fn exit_for(error: &anyhow::Error) -> Exit {
    let mut bad_input = false;
    for cause in error.chain() {
        // The reader went away (`cartprep ledger list | head -1`): nobody is left to tell.
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
        {
            return Exit::Success;
        }
        bad_input |= cause.is::<cli::BadInput>()
            || cause.is::<station::ConfigError>()
            // A server name or credentials Apple School Manager refuses: fix the [asm] section.
            || cause.downcast_ref::<asm::AsmError>().is_some_and(|e| {
                matches!(
                    e,
                    asm::AsmError::ServerNotFound { .. }
                        | asm::AsmError::Auth { .. }
                        | asm::AsmError::Key(_)
                        | asm::AsmError::Config(_)
                )
            })
            // The station could not start (state folder, ledger, usbmuxd address): a restart
            // loop would not fix it, the message says what will.
            || cause.is::<station::daemon::DaemonError>()
            || cause
                .downcast_ref::<profiles::ProfileError>()
                .is_some_and(profiles::ProfileError::is_input_error);
    }
    if bad_input {
        Exit::BadInput
    } else {
        Exit::Failure
    }
}

/// The exit status for a command line clap refused, or answered itself (`--help`, `--version`).
fn exit_for_parse(error: &clap::Error) -> Exit {
    if error.use_stderr() {
        Exit::BadInput
    } else {
        Exit::Success
    }
}

/// The error and its causes on one line, each cause said once (many errors already include
/// their source's text in their own).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn parse() -> Result<Cli, clap::Error> {
    let matches = Cli::command()
        .after_help(EXIT_STATUS_HELP)
        .try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Sim(args) => cli::sim::sim(args).await,
        Command::Identity(args) => cli::identity::identity(args),
        Command::Profile(args) => cli::profile::profile(args),
        Command::Run(args) => cli::station::run(args).await,
        Command::Demo(args) => cli::demo::demo(args).await,
        Command::Status(args) => cli::station::status(args).await,
        Command::Ledger(args) => cli::station::ledger(args).await,
        Command::Slots(args) => cli::station::slots(args).await,
        Command::Asm(args) => cli::asm::asm(args).await,
        Command::Erase(args) => cli::operator::erase(args).await,
        Command::Retry(args) => cli::operator::retry(args).await,
        Command::Forget(args) => cli::operator::forget(args).await,
        Command::Check(args) => cli::check::check(args).await,
    }
}

/// How many blocking threads a command's runtime may keep (`None`: tokio's default, 512).
///
/// Few for everything that runs a station: the ledger's saves, their main use, take the audit
/// log's lock one at a time, so more threads would only wait, and each thread keeps a stack
/// and an allocator arena resident after the work (issue 9's memory reading: +1.6-1.7 MB
/// after 1,000 iPads with 4, +1.9-2.6 MB with 512). Not for `sim`: each virtual iPad makes
/// its RSA key on a blocking thread at its first connection, and its stdin reader holds one
/// for good, so a limit would queue many first connections on a machine with many cores.
fn blocking_threads(command: &Command) -> Option<usize> {
    match command {
        Command::Sim(_) => None,
        _ => Some(4),
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help or a usage error; a closed pipe while printing it changes nothing.
            let _ = e.print();
            return ExitCode::from(exit_for_parse(&e).code());
        }
    };
    cli::logging::init(cli.verbose);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = blocking_threads(&cli.command) {
        runtime.max_blocking_threads(n);
    }
    let result = match runtime.build() {
        Ok(runtime) => runtime.block_on(dispatch(cli.command)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let exit = exit_for(&error);
    if exit != Exit::Success {
        eprintln!("error: {}", describe(&error));
    }
    ExitCode::from(exit.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    fn io(kind: ErrorKind) -> anyhow::Error {
        std::io::Error::from(kind).into()
    }

    fn config_error() -> anyhow::Error {
        station::ConfigError::Read {
            path: "station.toml".into(),
            source: std::io::Error::from(ErrorKind::NotFound),
        }
        .into()
    }

    #[test]
    fn only_the_simulator_keeps_tokios_blocking_threads() {
        for (args, want) in [
            (&["cartprep", "sim"][..], None),
            (&["cartprep", "run"][..], Some(4)),
            (&["cartprep", "demo"][..], Some(4)),
            (&["cartprep", "status"][..], Some(4)),
        ] {
            let cli = Cli::try_parse_from(args.iter().copied()).expect("parses");
            assert_eq!(blocking_threads(&cli.command), want, "{args:?}");
        }
    }

    #[test]
    fn errors_map_to_exit_statuses() {
        let missing_password_file = cli::password::password_from_file(Path::new("/nonexistent"))
            .map(|_| ())
            .expect_err("missing file");
        let cases: Vec<(&str, anyhow::Error, Exit)> = vec![
            ("an invalid configuration", config_error(), Exit::BadInput),
            (
                "an invalid configuration, with context",
                config_error().context("loading"),
                Exit::BadInput,
            ),
            (
                "bad input",
                cli::bad_input("--devices must be at least 1"),
                Exit::BadInput,
            ),
            (
                "a missing password file",
                missing_password_file.into(),
                Exit::BadInput,
            ),
            (
                "a profile that does not validate",
                profiles::ProfileError::validation("ssid", "empty").into(),
                Exit::BadInput,
            ),
            (
                "a failure of the cryptography",
                profiles::ProfileError::Crypto("rng".into()).into(),
                Exit::Failure,
            ),
            ("a closed pipe", io(ErrorKind::BrokenPipe), Exit::Success),
            (
                "a closed pipe, with context",
                io(ErrorKind::BrokenPipe).context("writing the ledger"),
                Exit::Success,
            ),
            (
                "another I/O error",
                io(ErrorKind::PermissionDenied),
                Exit::Failure,
            ),
            (
                "a failure while working",
                anyhow::anyhow!("usbmuxd went away"),
                Exit::Failure,
            ),
        ];
        for (what, error, expected) in cases {
            assert_eq!(exit_for(&error), expected, "{what}: {error:#}");
        }
    }

    #[test]
    fn the_exit_statuses_are_listed_in_the_help() {
        for exit in [Exit::Success, Exit::Failure, Exit::BadInput] {
            assert!(
                EXIT_STATUS_HELP.contains(&format!("\n  {}  ", exit.code())),
                "{exit:?}"
            );
        }
        let help = Cli::command()
            .after_help(EXIT_STATUS_HELP)
            .render_help()
            .to_string();
        assert!(help.contains("Exit status:"), "{help}");
    }

    #[test]
    fn help_and_version_succeed_and_usage_errors_are_bad_input() {
        let cases: [(&[&str], Exit); 4] = [
            (&["cartprep", "--help"], Exit::Success),
            (&["cartprep", "--version"], Exit::Success),
            (&["cartprep", "ledger", "list", "--colour"], Exit::BadInput),
            (&["cartprep", "sim", "--devices", "many"], Exit::BadInput),
        ];
        for (args, expected) in cases {
            let error = Cli::try_parse_from(args.iter().copied())
                .map(|_| ())
                .expect_err("clap answers");
            assert_eq!(exit_for_parse(&error), expected, "{args:?}");
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io_error = std::io::Error::new(ErrorKind::NotFound, "no such file");
        let cases: Vec<(anyhow::Error, &str)> = vec![
            (anyhow::anyhow!("plain"), "plain"),
            (
                anyhow::Error::new(std::io::Error::new(ErrorKind::NotFound, "no such file"))
                    .context("starting the simulator"),
                "starting the simulator: no such file",
            ),
            (
                // A typed error whose message already holds its source's.
                station::ConfigError::Read {
                    path: "station.toml".into(),
                    source: io_error,
                }
                .into(),
                "cannot read the config file station.toml: no such file",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(describe(&error), expected);
        }
    }
}
