//! The anchor: pymobiledevice3 used as a library in one Python process
//! (`anchor/pmd3_anchor.py`), against the same simulator, on iPads of the same kind.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::sim::{Cart, Ipad};
use crate::station::Job;

/// The script, compiled in so the bench binary runs from anywhere.
const SCRIPT: &str = include_str!("../anchor/pmd3_anchor.py");

#[derive(serde::Deserialize)]
struct Out {
    ipads: Vec<OutIpad>,
}

#[derive(serde::Deserialize)]
struct OutIpad {
    udid: String,
    wall_ms: f64,
    cpu_ms: f64,
}

/// Runs the anchor on `ipads` (plugged for it, unplugged after).
pub fn run(cart: &Cart, python: &Path, work: &Path, ipads: &[Ipad]) -> anyhow::Result<Vec<Job>> {
    std::fs::create_dir_all(work)?;
    let script = work.join("pmd3_anchor.py");
    std::fs::write(&script, SCRIPT)?;
    for ipad in ipads {
        cart.plug(ipad);
    }
    let before: Vec<(u64, u64)> = ipads.iter().map(Ipad::traffic).collect();
    let output = Command::new(python)
        .arg(&script)
        .arg(work.join("keybag.pem"))
        .arg("Anchor")
        .args(ipads.iter().map(|i| i.udid.as_str()))
        .env("USBMUXD_SOCKET_ADDRESS", cart.address())
        .env("HOME", work)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    for ipad in ipads {
        cart.unplug(ipad);
    }
    anyhow::ensure!(
        output.status.success(),
        "the pymobiledevice3 anchor failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out: Out = serde_json::from_slice(&output.stdout).context("the anchor's JSON")?;
    anyhow::ensure!(out.ipads.len() == ipads.len(), "the anchor skipped iPads");
    let mut jobs = Vec::new();
    for (n, ((ipad, got), (r0, c0))) in ipads.iter().zip(out.ipads).zip(before).enumerate() {
        anyhow::ensure!(got.udid == ipad.udid, "the anchor reported another iPad");
        // The same end state the station reaches: supervised and named.
        let state = ipad.dev.state();
        anyhow::ensure!(
            state.is_supervised() && state.device_name == format!("Anchor {:02}", n + 1),
            "the anchor did not prepare the iPad in slot {}",
            ipad.slot
        );
        drop(state);
        let (r1, c1) = ipad.traffic();
        jobs.push(Job {
            wall_ms: got.wall_ms,
            cpu_ms: got.cpu_ms,
            replies: r1 - r0,
            connections: c1 - c0,
        });
    }
    Ok(jobs)
}
