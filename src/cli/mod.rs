//! The command line's commands, one module per group. `main.rs` parses, dispatches and turns
//! errors into exit statuses; the modules here do the work and return errors, marking bad input
//! with [`BadInput`].

use clap::{Parser, Subcommand};

pub mod asm;
pub mod bad_input;
pub mod board_screen;
pub mod board_view;
pub mod check;
pub mod demo;
pub mod demo_web;
pub mod identity;
pub mod ledger_table;
pub mod logging;
pub mod operator;
pub mod password;
pub mod profile;
pub mod sim;
pub mod station;

pub use bad_input::{BadInput, bad_input};

#[derive(Parser)]
#[command(
    name = "cartprep",
    version,
    about = "Headless iPad preparation station"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on standard error: -v info, -vv debug, -vvv trace (CARTPREP_LOG, when
    /// set, takes precedence).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a simulated cart: a usbmuxd server hosting virtual iPads that speak lockdownd.
    Sim(sim::SimArgs),
    /// The supervision identity: create, import, export, show.
    Identity(identity::IdentityArgs),
    /// Configuration profiles: write a Wi-Fi profile.
    Profile(profile::ProfileArgs),
    /// Run the station: prepare every iPad plugged in, as the configuration says.
    Run(station::RunArgs),
    /// The station preparing a simulated cart (no iPad needed).
    Demo(demo::DemoArgs),
    /// What a running station is doing.
    Status(station::StatusArgs),
    /// The record of every iPad prepared: list, show, export.
    Ledger(station::LedgerArgs),
    /// Name the cart's USB slots.
    Slots(station::SlotsArgs),
    /// Apple School Manager: the organization's devices, one device, assign iPads.
    Asm(asm::AsmArgs),
    /// Have the running station erase an iPad, then prepare it (asks first; recorded with who
    /// and why).
    Erase(operator::EraseArgs),
    /// Have the running station work on an iPad again (after its attention was dealt with).
    Retry(operator::RetryArgs),
    /// Drop an iPad's record from the ledger (the audit log keeps it).
    Forget(operator::ForgetArgs),
    /// Pre-flight: the configuration, identity, Wi-Fi profile, usbmuxd, the activation server
    /// and the MDM enrollment URL, as a table (exit 2 when something fails).
    Check(check::CheckArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and subcommand under `cmd` without help text, by its path.
    fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, missing);
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_subcommand_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "cartprep", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn every_state_option_says_what_its_default_is() {
        let mut seen = 0;
        let mut stack = vec![("cartprep".to_owned(), Cli::command())];
        while let Some((path, cmd)) = stack.pop() {
            for arg in cmd.get_arguments().filter(|a| a.get_id() == "state") {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if !matches!(
                    path.as_str(),
                    "cartprep sim" | "cartprep demo" | "cartprep run"
                ) {
                    assert!(
                        help.contains("/var/lib/cartprep")
                            && help.contains("/Library/Application Support/cartprep"),
                        "{path} --state: {help}"
                    );
                }
                seen += 1;
            }
            for sub in cmd.get_subcommands() {
                stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
        }
        assert!(seen >= 7, "found {seen} --state options");
    }

    #[test]
    fn verbose_is_repeatable_anywhere_on_the_line() {
        for (args, expected) in [
            (&["cartprep", "status"][..], 0),
            (&["cartprep", "-v", "status"][..], 1),
            (&["cartprep", "status", "-vv"][..], 2),
            (&["cartprep", "ledger", "list", "-vvv"][..], 3),
        ] {
            let cli = Cli::try_parse_from(args.iter().copied()).expect("parses");
            assert_eq!(cli.verbose, expected, "{args:?}");
        }
    }

    #[test]
    fn run_reads_the_platforms_configuration_file_by_default() {
        let cli = Cli::try_parse_from(["cartprep", "run"]).expect("run parses without --config");
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.config, ::station::paths::default_config_path());
    }
}
