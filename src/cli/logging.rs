//! Diagnostics on standard error, filtered by `CARTPREP_LOG`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    // idevice prints pair records, private keys included, at debug level: never let it.
    let (filter, idevice_cap) = match EnvFilter::try_from_env("CARTPREP_LOG") {
        Ok(f) => (f, "idevice=info"),
        Err(_) => (EnvFilter::new("warn"), "idevice=warn"),
    };
    let filter = filter.add_directive(idevice_cap.parse().expect("static directive"));
    // Plain under systemd/launchd (stderr is the journal or a file), coloured on a terminal.
    let ansi = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
