//! The operator's control channel: `plug N`, `unplug N`, `setup N`, `unlock N`, `list`, and
//! two usbmuxd oddities for testing clients (`listen-message TYPE`, `sparse-attached on|off`),
//! from stdin or a unix socket.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cart::Cart;
use crate::trust_prompt::Tap;

pub const HELP: &str = "commands: plug N | unplug N | setup N | trust N | distrust N | \
unlock N | list | listen-message TYPE | sparse-attached on|off | help";

/// Runs one command line and returns what to print. `setup N` finishes Setup Assistant on the
/// iPad in slot N (it enrolls in its MDM, see `enrollment.rs`) and answers when it is over;
/// `trust N` and `distrust N` tap Trust or Don't Trust on the alert it shows.
pub async fn execute(cart: &Cart, line: &str) -> String {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("");
    let slot = words.next().map(str::parse::<u32>);
    match (command, slot) {
        ("", _) => String::new(),
        // Not slots: these take a word.
        ("listen-message", _) => match line.split_whitespace().nth(1) {
            Some(kind) => {
                let mut message = plist::Dictionary::new();
                message.insert("MessageType".into(), kind.into());
                cart.send_to_listeners(message);
                format!("ok sent MessageType {kind:?} to every Listen client")
            }
            None => format!("error: `listen-message` needs a MessageType; {HELP}"),
        },
        ("sparse-attached", _) => match line.split_whitespace().nth(1) {
            Some(word @ ("on" | "off")) => {
                cart.set_sparse_attached(word == "on");
                format!(
                    "ok Attached messages {} ConnectionSpeed, ConnectionType and ProductID",
                    if word == "on" { "leave out" } else { "carry" }
                )
            }
            _ => format!("error: `sparse-attached` needs on or off; {HELP}"),
        },
        ("help", _) => HELP.into(),
        ("list", _) => cart
            .slots()
            .iter()
            .map(|(ipad, id)| {
                let s = &ipad.spec;
                format!(
                    "slot={} {}{} udid={} serial={} model={} ios={} name={:?}",
                    s.slot,
                    match id {
                        Some(id) => format!("plugged device_id={id}"),
                        None => "unplugged".into(),
                    },
                    match cart.network_id(s.slot) {
                        Some(id) => format!(" on-wifi device_id={id}"),
                        None => String::new(),
                    },
                    s.identity.udid,
                    s.identity.serial_number,
                    s.model.product_type,
                    s.release.version,
                    ipad.state().device_name
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        ("plug", Some(Ok(n))) => match cart.plug(n) {
            Ok(id) => format!("ok slot {n} plugged as device {id}"),
            Err(e) => format!("error: {e}"),
        },
        ("unplug", Some(Ok(n))) => match cart.unplug(n) {
            Ok(()) => format!("ok slot {n} unplugged"),
            Err(e) => format!("error: {e}"),
        },
        ("trust" | "distrust", Some(Ok(n))) => {
            let tap = if command == "trust" {
                Tap::Trust
            } else {
                Tap::DontTrust
            };
            match cart.tap_trust_prompt(n, tap) {
                Ok(()) => format!("ok slot {n}: {command} tapped"),
                Err(e) => format!("error: {e}"),
            }
        }
        ("unlock", Some(Ok(n))) => match cart.unlock(n) {
            Ok(()) => format!("ok slot {n} unlocked"),
            Err(e) => format!("error: {e}"),
        },
        ("setup", Some(Ok(n))) => match cart.device(n).cloned() {
            Some(ipad) => format!(
                "ok slot {n}: {}",
                crate::enrollment::finish_setup_assistant(&ipad).await
            ),
            None => format!("error: {}", crate::cart::CartError::NoSuchSlot(n)),
        },
        ("plug" | "unplug" | "setup" | "trust" | "distrust" | "unlock", _) => {
            format!("error: `{command}` needs a slot number; {HELP}")
        }
        _ => format!("error: unknown command {command:?}; {HELP}"),
    }
}

/// Serves the control socket: each connection sends lines and gets one answer per line.
pub async fn serve_socket(cart: Arc<Cart>, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let cart = cart.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut answer = execute(&cart, &line).await;
                answer.push('\n');
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}
