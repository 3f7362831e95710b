//! `cartprep asm`: Apple School Manager from the command line, with the station's `[asm]`
//! account: the organization's devices, one device, and assigning iPads prepared before ASM
//! was configured.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ::asm::{ActivityState, AsmClient, AsmSettings, ServerId};
use anyhow::Context;

use super::bad_input;

#[derive(clap::Args)]
pub struct AsmArgs {
    /// The station configuration with the [asm] section (see config/station.example.toml).
    #[arg(long, value_name = "FILE", default_value_os_t = station::paths::default_config_path())]
    config: PathBuf,
    #[command(subcommand)]
    command: AsmCommand,
}

#[derive(clap::Subcommand)]
enum AsmCommand {
    /// Every device in the organization, with the server it is assigned to.
    Devices {
        /// One JSON array of the devices, as the API describes them.
        #[arg(long)]
        json: bool,
    },
    /// One device: in the organization or not, and its assigned server.
    Show {
        /// The iPad's serial number.
        serial: String,
    },
    /// Assign iPads to the MDM server (for iPads prepared before [asm] was configured).
    Assign {
        /// Serial numbers to assign.
        #[arg(required = true)]
        serials: Vec<String>,
        /// The server's name as Apple School Manager shows it (default: asm.mdm_server).
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
    },
}

/// How often, and how many times, `assign` reads the activity before leaving it.
const POLL_EVERY: Duration = Duration::from_secs(2);
const POLLS: u32 = 60;

pub async fn asm(args: AsmArgs) -> anyhow::Result<()> {
    let settings = super::station::load_config(&args.config, None)?;
    let (Some(client_settings), Some(config)) = (settings.asm.clone(), settings.config.asm.clone())
    else {
        return Err(bad_input(format!(
            "{} has no [asm] section (see README: Apple School Manager)",
            args.config.display()
        )));
    };
    let client = AsmClient::new(client_settings.clone())?;
    let mut out = std::io::stdout().lock();
    match args.command {
        AsmCommand::Devices { json } => {
            let devices = client.devices().await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &devices)?;
                writeln!(out)?;
                return Ok(());
            }
            let names = server_names(&client).await?;
            for d in &devices {
                let a = &d.attributes;
                writeln!(
                    out,
                    "{:<14} {:<12} {:<10} {}",
                    d.id,
                    a.product_type.as_deref().unwrap_or(""),
                    a.status.as_deref().unwrap_or(""),
                    assigned_name(&client, &names, &d.id, a.status.as_deref()).await?
                )?;
            }
            writeln!(out, "{} device(s)", devices.len())?;
        }
        AsmCommand::Show { serial } => {
            let serial = serial.trim().to_ascii_uppercase();
            match client.device(&serial).await? {
                None => writeln!(
                    out,
                    "{serial}: {}",
                    station::Attention::NotInOrganization.message()
                )?,
                Some(d) => {
                    let names = server_names(&client).await?;
                    let a = &d.attributes;
                    writeln!(out, "serial          {}", d.id)?;
                    writeln!(
                        out,
                        "model           {}",
                        a.device_model
                            .as_deref()
                            .or(a.product_type.as_deref())
                            .unwrap_or("")
                    )?;
                    writeln!(
                        out,
                        "added to org    {}",
                        a.added_to_org_date_time.as_deref().unwrap_or("")
                    )?;
                    writeln!(out, "status          {}", a.status.as_deref().unwrap_or(""))?;
                    let server = client.assigned_server(&serial).await?;
                    writeln!(
                        out,
                        "assigned to     {}",
                        server
                            .map(|s| name_of(&names, &s))
                            .unwrap_or_else(|| "(none)".into())
                    )?;
                }
            }
        }
        AsmCommand::Assign { serials, server } => {
            let name = server.unwrap_or(config.mdm_server.clone());
            let serials: Vec<String> = serials
                .iter()
                .map(|s| s.trim().to_ascii_uppercase())
                .collect();
            let id = verify(&client_settings, &name).await?;
            let activity = client.assign(&serials, &id).await?;
            writeln!(
                out,
                "activity {} created: assigning {} iPad(s) to {name}",
                activity.id,
                serials.len()
            )?;
            match client.wait_for(&activity.id, POLL_EVERY, POLLS).await? {
                ActivityState::Succeeded => {
                    writeln!(out, "assigned in ASM to {name} (activity {})", activity.id)?
                }
                ActivityState::InProgress => writeln!(
                    out,
                    "still in progress; see Activity in Apple School Manager"
                )?,
                ActivityState::Failed { status, sub_status } => anyhow::bail!(
                    "activity {} ended {status} ({sub_status}): not assigned",
                    activity.id
                ),
            }
        }
    }
    Ok(())
}

/// The server named `name`; a name ASM does not know is bad input, listing the names.
async fn verify(settings: &AsmSettings, name: &str) -> anyhow::Result<ServerId> {
    match ::asm::verify(settings, name).await {
        Err(e @ ::asm::AsmError::ServerNotFound { .. }) => Err(bad_input(e.to_string())),
        other => other.context("Apple School Manager"),
    }
}

async fn server_names(client: &AsmClient) -> anyhow::Result<Vec<(String, String)>> {
    Ok(client
        .servers()
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s.name().to_owned()))
        .collect())
}

fn name_of(names: &[(String, String)], id: &ServerId) -> String {
    names
        .iter()
        .find(|(i, _)| *i == id.0)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| id.0.clone())
}

/// The assigned server's name, asked only for devices whose status says they have one.
async fn assigned_name(
    client: &AsmClient,
    names: &[(String, String)],
    serial: &str,
    status: Option<&str>,
) -> anyhow::Result<String> {
    if status != Some("ASSIGNED") {
        return Ok(String::new());
    }
    Ok(client
        .assigned_server(serial)
        .await?
        .map(|s| name_of(names, &s))
        .unwrap_or_default())
}
