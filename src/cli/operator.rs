//! `cartprep erase`, `retry` and `forget`: the operator's next steps, sent to the running
//! station through `<state>/control.sock` (`station::control`), which acts on them.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::{ArgGroup, Args};
use station::control::{self, ControlError, Reply, Request, Target};
use station::paths::default_state_dir;

use super::bad_input;

/// Which iPad: its serial, or the slot it is plugged into.
#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).args(["serial", "slot"])))]
pub struct Which {
    /// The iPad's serial number.
    serial: Option<String>,
    /// The slot it is plugged into, as the board names it.
    #[arg(long, value_name = "N")]
    slot: Option<String>,
}

impl Which {
    fn target(&self) -> Target {
        match (&self.serial, &self.slot) {
            (Some(serial), _) => Target::Serial(serial.clone()),
            (None, Some(slot)) => Target::Slot(slot.clone()),
            // clap's group requires one of them.
            (None, None) => Target::Slot(String::new()),
        }
    }
}

#[derive(Args)]
pub struct EraseArgs {
    #[command(flatten)]
    which: Which,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Why it is erased, for the audit log.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "asked for from the terminal"
    )]
    reason: String,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

#[derive(Args)]
pub struct RetryArgs {
    #[command(flatten)]
    which: Which,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

#[derive(Args)]
pub struct ForgetArgs {
    /// The iPad's serial number.
    serial: String,
    /// The station's state folder [default: $CARTPREP_STATE, else /var/lib/cartprep, or
    /// /Library/Application Support/cartprep on macOS].
    #[arg(long = "state", value_name = "DIR")]
    state: Option<PathBuf>,
}

/// `cartprep erase`: asks, then has the station erase the iPad and prepare it.
pub async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let target = args.which.target();
    if !args.yes && !confirmed(&target)? {
        writeln!(std::io::stdout(), "not erased")?;
        return Ok(());
    }
    let dir = args.state.unwrap_or_else(default_state_dir);
    let request = Request::Erase {
        target,
        reason: args.reason,
        user: user_name(),
    };
    answer(control::send(&dir, &request).await?)
}

/// `cartprep retry`
pub async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let request = Request::Retry {
        target: args.which.target(),
    };
    answer(control::send(&dir, &request).await?)
}

/// `cartprep forget`: through the station when it runs (it holds the ledger), else directly.
pub async fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    let dir = args.state.unwrap_or_else(default_state_dir);
    let request = Request::Forget {
        serial: args.serial.clone(),
    };
    match control::send(&dir, &request).await {
        Ok(reply) => answer(reply),
        Err(ControlError::NotRunning { .. }) => {
            let (ledger, _) = station::Ledger::open(&dir)?;
            let serial = args.serial.to_ascii_uppercase();
            let Some(record) = ledger.get(&serial)?.or(ledger.get(&args.serial)?) else {
                return Err(bad_input(format!(
                    "no iPad with serial {} in {}",
                    args.serial,
                    dir.display()
                )));
            };
            ledger.forget(&record).await?;
            writeln!(
                std::io::stdout(),
                "{}: forgotten (the audit log keeps its history)",
                record.serial
            )?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn answer(reply: Reply) -> anyhow::Result<()> {
    if reply.ok {
        writeln!(std::io::stdout(), "{}", reply.message)?;
        Ok(())
    } else {
        Err(bad_input(reply.message))
    }
}

/// Asks on the terminal; without one, `--yes` is needed.
fn confirmed(target: &Target) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(bad_input(
            "erasing needs a confirmation: run it on a terminal, or pass --yes",
        ));
    }
    let mut out = std::io::stdout();
    write!(
        out,
        "Erase the iPad ({target})? Everything on it is lost. Type yes to erase: "
    )?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().take(256).read_line(&mut line)?;
    Ok(is_yes(&line))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "y")
}

/// Who is asking, for the audit log: the user behind sudo, else the login name.
fn user_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown user".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for (answer, expected) in [
            ("yes\n", true),
            ("Y\n", true),
            ("\n", false),
            ("no\n", false),
            ("yess\n", false),
        ] {
            assert_eq!(is_yes(answer), expected, "{answer:?}");
        }
    }
}
