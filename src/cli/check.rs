//! `cartprep check --config FILE`: the pre-flight check before a cart is plugged in. Each
//! check gets a row (ok, warning, FAIL, or skipped, and why); any failure exits with status 2.
//! A warning (something the check cannot prove either way) leaves the status at 0.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use station::{ConfigError, Settings};

use super::bad_input;

#[derive(Args)]
pub struct CheckArgs {
    /// The station configuration to check.
    #[arg(long, value_name = "FILE", default_value_os_t = station::paths::default_config_path())]
    pub config: PathBuf,
}

/// How long each network check may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub check: &'static str,
    pub result: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Not proven wrong; the detail says what to do.
    Warn,
    Fail,
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warning",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skipped",
        }
    }
}

fn row(check: &'static str, result: Verdict, detail: impl Into<String>) -> Row {
    Row {
        check,
        result,
        detail: detail.into(),
    }
}

/// The table, as printed.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!("{:<24} {:<8} {}\n", "CHECK", "RESULT", "DETAIL");
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<8} {}\n",
            r.check,
            r.result.word(),
            r.detail
        ));
    }
    out
}

/// The rows for a configuration that did not load: each problem under the check it belongs
/// to (identity, Wi-Fi, or the rest), so "identity missing" reads as such.
pub fn config_rows(error: &ConfigError) -> Vec<Row> {
    let mut rows = Vec::new();
    let problems = error.problems();
    if problems.is_empty() {
        return vec![row("configuration", Verdict::Fail, error.to_string())];
    }
    let part = |prefixes: &[&str]| -> Vec<String> {
        problems
            .iter()
            .filter(|p| prefixes.iter().any(|x| p.field.starts_with(x)))
            .map(|p| p.to_string())
            .collect()
    };
    let identity = part(&["organization.identity"]);
    let wifi = part(&["wifi"]);
    let rest: Vec<String> = problems
        .iter()
        .filter(|p| !p.field.starts_with("organization.identity") && !p.field.starts_with("wifi"))
        .map(|p| p.to_string())
        .collect();
    for (check, found) in [
        ("configuration", rest),
        ("identity", identity),
        ("Wi-Fi profile", wifi),
    ] {
        rows.push(if found.is_empty() {
            row(check, Verdict::Ok, "")
        } else {
            row(check, Verdict::Fail, found.join("; "))
        });
    }
    for check in [
        "usbmuxd",
        "activation server",
        "MDM enrollment URL",
        "MDM enrollment profile",
    ] {
        rows.push(row(
            check,
            Verdict::Skipped,
            "the configuration does not load",
        ));
    }
    rows
}

/// The rows for a configuration that loaded.
pub async fn settings_rows(path: &std::path::Path, settings: &Settings) -> Vec<Row> {
    let config = &settings.config;
    let mut rows = vec![row(
        "configuration",
        Verdict::Ok,
        format!("{} ({} mode)", path.display(), config.mdm.mode.as_str()),
    )];
    rows.push(match &settings.identity {
        Some(id) => row(
            "identity",
            Verdict::Ok,
            format!("{}, SHA-256 {}", id.subject(), id.fingerprint_sha256()),
        ),
        None => row(
            "identity",
            Verdict::Skipped,
            "none: ADE mode, Apple School Manager supervises",
        ),
    });
    rows.push(row(
        "Wi-Fi profile",
        Verdict::Ok,
        format!(
            "\u{201c}{}\u{201d} ({}, {} bytes)",
            settings.wifi_name(),
            settings.wifi.identifier,
            settings.wifi.bytes.len()
        ),
    ));
    rows.push(usbmuxd_row(&config.usbmuxd).await);
    let activation = &settings.activation;
    rows.push(tls_row("activation server", settings, activation.base_url.as_str()).await);
    rows.push(tls_row("MDM enrollment URL", settings, &config.mdm.enrollment_url).await);
    rows.push(asm_row(settings).await);
    rows.push(enrollment_row(settings).await);
    rows
}

/// The enrollment URL answers the request an iPad sends at the end of Setup Assistant with a
/// signed profile holding an MDM payload (`station::enrollment_check`).
async fn enrollment_row(settings: &Settings) -> Row {
    const CHECK: &str = "MDM enrollment profile";
    let client = match settings.activation.client() {
        Ok(c) => c,
        Err(e) => return row(CHECK, Verdict::Fail, e.to_string()),
    };
    let config = &settings.config;
    let language = config.setup.language.as_deref().unwrap_or("en");
    let found = station::enrollment_check::check(
        &client,
        &config.mdm.enrollment_url,
        language,
        NETWORK_TIMEOUT,
    )
    .await;
    let verdict = match found.level {
        station::enrollment_check::Level::Pass => Verdict::Ok,
        station::enrollment_check::Level::Warn => Verdict::Warn,
        station::enrollment_check::Level::Fail => Verdict::Fail,
    };
    row(CHECK, verdict, found.detail)
}

/// Apple School Manager, when `[asm]` is set: the API account signs in and the MDM server's
/// name is found among the organization's servers.
async fn asm_row(settings: &Settings) -> Row {
    const CHECK: &str = "Apple School Manager";
    match tokio::time::timeout(NETWORK_TIMEOUT, station::asm_sync::verify(settings)).await {
        Ok(Ok(Some(server))) => row(
            CHECK,
            Verdict::Ok,
            format!("signed in; MDM server found (id {server})"),
        ),
        Ok(Ok(None)) => row(CHECK, Verdict::Skipped, "no [asm] in the configuration"),
        Ok(Err(e)) => row(CHECK, Verdict::Fail, e.to_string()),
        Err(_) => row(
            CHECK,
            Verdict::Fail,
            format!("no answer within {NETWORK_TIMEOUT:?}"),
        ),
    }
}

async fn usbmuxd_row(address: &str) -> Row {
    let addr: usbmux::UsbmuxAddress = match address.parse() {
        Ok(a) => a,
        Err(e) => return row("usbmuxd", Verdict::Fail, format!("{address}: {e}")),
    };
    let listed = async {
        let mut client = usbmux::UsbmuxClient::connect_with_timeout(&addr, NETWORK_TIMEOUT).await?;
        client.list_devices().await
    };
    match tokio::time::timeout(NETWORK_TIMEOUT, listed).await {
        Ok(Ok(devices)) => row(
            "usbmuxd",
            Verdict::Ok,
            format!("{addr}: {} iPad(s) attached", devices.len()),
        ),
        Ok(Err(e)) => row("usbmuxd", Verdict::Fail, format!("{addr}: {e}")),
        Err(_) => row(
            "usbmuxd",
            Verdict::Fail,
            format!("{addr}: no answer within {} s", NETWORK_TIMEOUT.as_secs()),
        ),
    }
}

/// Reachable over TLS: a certificate the station trusts (the built-in roots and
/// `activation.ca_file`) and any HTTP answer at all.
async fn tls_row(check: &'static str, settings: &Settings, url: &str) -> Row {
    // Shown without a query, where MDMs put enrollment tokens.
    let shown = station::enrollment_check::shown_url(url);
    if !url.starts_with("https://") {
        return row(
            check,
            Verdict::Fail,
            format!("{shown}: not an https:// URL"),
        );
    }
    let client = match settings.activation.client() {
        Ok(c) => c,
        Err(e) => return row(check, Verdict::Fail, e.to_string()),
    };
    match tokio::time::timeout(NETWORK_TIMEOUT, client.get(url).send()).await {
        Ok(Ok(answer)) => row(
            check,
            Verdict::Ok,
            format!("{shown}: TLS ok, HTTP {}", answer.status().as_u16()),
        ),
        Ok(Err(e)) => {
            // reqwest's own text is "error sending request"; the cause says what failed.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            row(check, Verdict::Fail, format!("{shown}: {why}"))
        }
        Err(_) => row(
            check,
            Verdict::Fail,
            format!("{shown}: no answer within {} s", NETWORK_TIMEOUT.as_secs()),
        ),
    }
}

/// `cartprep check`
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let rows = match Settings::load(&args.config) {
        Ok(settings) => settings_rows(&args.config, &settings).await,
        Err(e) => config_rows(&e),
    };
    let mut out = std::io::stdout();
    write!(out, "{}", render(&rows))?;
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.result == Verdict::Fail)
        .map(|r| r.check)
        .collect();
    let warned: Vec<&str> = rows
        .iter()
        .filter(|r| r.result == Verdict::Warn)
        .map(|r| r.check)
        .collect();
    if failed.is_empty() && !warned.is_empty() {
        writeln!(
            out,
            "ready: plug the cart in (but read the warning above: {})",
            warned.join(", ")
        )?;
        Ok(())
    } else if failed.is_empty() {
        writeln!(out, "ready: plug the cart in")?;
        Ok(())
    } else {
        Err(bad_input(format!("not ready: {}", failed.join(", "))))
    }
}
