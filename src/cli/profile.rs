//! `cartprep profile …`: configuration profiles, today a Wi-Fi .mobileconfig.

use std::io::Write;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use profiles::{Secret, Security, WifiProfile, files};

use super::bad_input;
use super::password::read_password;

#[derive(Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Write a Wi-Fi configuration profile (.mobileconfig). Installing it again for the same
    /// SSID replaces the previous one.
    Wifi(WifiArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("secret").args(["password_file", "password_env", "password"])))]
struct WifiArgs {
    /// Network name (1 to 32 bytes).
    #[arg(long)]
    ssid: String,
    /// Network security: none (or open: no password), wep (5 or 13 characters, or 10 or 26 hex
    /// digits), wpa (WPA or WPA2 Personal), wpa2, wpa3, or any (the iPad picks; the password
    /// is optional).
    #[arg(long, default_value = "wpa2")]
    security: Security,
    /// Read the Wi-Fi password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Read the Wi-Fi password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The Wi-Fi password itself. Other users can see it in `ps` and it stays in the shell
    /// history: prefer --password-file or --password-env.
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// The network does not broadcast its SSID.
    #[arg(long)]
    hidden: bool,
    /// Do not join the network automatically.
    #[arg(long)]
    no_auto_join: bool,
    /// Organisation shown with the profile on the iPad.
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
    /// Output file (mode 0600 when it holds a password).
    #[arg(long, value_name = "FILE.mobileconfig")]
    out: PathBuf,
}

/// `cartprep profile …`
pub fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    match args.command {
        ProfileCommand::Wifi(a) => wifi(a),
    }
}

fn wifi(args: WifiArgs) -> anyhow::Result<()> {
    let password = if let Some(p) = &args.password {
        Some(Secret::new(p.as_str()))
    } else {
        read_password(args.password_file.as_deref(), args.password_env.as_deref())?
    };
    let security = args.security;
    if password.is_none() && security.requires_password() {
        return Err(bad_input(format!(
            "a {security} network needs a password: give --password-file FILE or --password-env \
             VAR"
        )));
    }
    let profile = WifiProfile {
        ssid: args.ssid,
        security,
        password,
        hidden: args.hidden,
        auto_join: !args.no_auto_join,
        organization: args.org,
    };
    let bytes = profile.to_mobileconfig()?;
    if profile.password.is_some() {
        files::write_private(&args.out, &bytes)?;
    } else {
        files::write_public(&args.out, &bytes)?;
    }
    writeln!(
        std::io::stdout(),
        "wrote {}: Wi-Fi {:?} ({}), identifier {}, UUID {}",
        args.out.display(),
        profile.ssid,
        profile.security,
        profile.identifier(),
        profile.uuid()
    )?;
    Ok(())
}
