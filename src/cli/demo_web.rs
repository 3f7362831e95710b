//! `cartprep demo --web ADDR`: the demo's station also serves the live web page; when the cart
//! is finished the page stays up (until Ctrl-C) for people to look at.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use station::status::{Board, Light};

/// The `[web]` section of the demo's configuration (empty without `--web`).
pub fn config_section(web: Option<SocketAddr>) -> String {
    match web {
        Some(addr) => format!("[web]\nlisten = \"{addr}\"\n"),
        None => String::new(),
    }
}

/// Says once that the cart is finished and the page stays up. Watches the board the way the
/// demo's stop condition does (every iPad done, needing attention or failed).
pub fn announce_finish(board: Board, udids: Vec<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let finished = || {
            udids.iter().all(|u| {
                board.get(u).is_some_and(|s| {
                    matches!(s.light, Light::Done | Light::Attention | Light::Failed)
                })
            })
        };
        let mut changes = board.subscribe();
        while !finished() {
            // A lagged or closed channel: look again, or after a short pause.
            if changes.recv().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = writeln!(
            std::io::stdout(),
            ">>> demo: the cart is finished ({}); the web page stays up until Ctrl-C",
            board.summary()
        );
    })
}
