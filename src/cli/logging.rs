//! Diagnostics on standard error, filtered by `CARTPREP_LOG`.

use tracing_subscriber::EnvFilter;

/// The level `-v` asks for, counted: none is warnings only.
pub fn level_for(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

pub fn init(verbose: u8) {
    // idevice prints pair records, private keys included, at debug level: never let it.
    let (filter, idevice_cap) = match EnvFilter::try_from_env("CARTPREP_LOG") {
        Ok(f) => (f, "idevice=info"),
        Err(_) if verbose > 0 => (EnvFilter::new(level_for(verbose)), "idevice=info"),
        Err(_) => (EnvFilter::new("warn"), "idevice=warn"),
    };
    // notify describes every inotify event of the config folder at trace level: with the log
    // written into that folder, each line would make another (tests/config_watch_trace.rs).
    let filter = filter
        .add_directive(idevice_cap.parse().expect("static directive"))
        .add_directive("notify=info".parse().expect("static directive"));
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
