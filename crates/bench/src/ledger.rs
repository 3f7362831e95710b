//! The ledger with a long history: opening it, the station's start-up, and per-iPad cost,
//! with an empty ledger and with `history` iPads prepared before.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use station::record::{DeviceRecord, Outcome, Step};

use crate::measure::Spread;
use crate::sim::Cart;
use crate::station as st;

/// iPads prepared (one at a time) per ledger size: enough for a median to settle (five
/// swung by ±15% between runs).
pub const IPADS: usize = BLOCK * 4;
/// iPads prepared per station start: the two sizes take turns in blocks of this many, for
/// the reason the opens alternate (with all of one size first, the ratio swung by ±12%).
const BLOCK: usize = 3;
/// Opens and starts timed per ledger size (their median is shown). An open is about a
/// millisecond and the two sizes differ by a few hundredths of one, while a shared machine
/// moves single opens by half a millisecond: with 15 the ratio swung by ±10% from run to run.
/// 41 of each still take under two seconds.
const OPENS: usize = 41;

#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerRow {
    pub history: usize,
    pub open_ms: Spread,
    /// From starting the daemon to its first event-loop turn, connected to usbmuxd (over
    /// `OPENS` starts).
    pub ready_ms: Spread,
    pub per_ipad_wall_ms: Spread,
    pub per_ipad_cpu_ms: Spread,
}

/// Writes the audit log a station leaves after preparing `n` iPads (three lines each:
/// detected, an advance, done), then opens the ledger once so its database holds them, as
/// a station that has been running for years would have it.
fn fill(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(
        dir.join(station::ledger::AUDIT_FILE),
    )?);
    let t0 = 1_700_000_000_000u64;
    for i in 0..n {
        let serial = format!("BNCH{i:08}");
        let udid = format!("00008101-{i:016X}");
        let mut r = DeviceRecord::new_at(&serial, &udid, t0 + i as u64 * 60_000);
        r.product_type = "iPad12,1".into();
        r.marketing_name = "iPad (9th generation)".into();
        r.ios_version = "18.5".into();
        for (event, step) in [
            ("detected", Step::Detected),
            ("advance", Step::Paired),
            ("done", Step::Done),
        ] {
            r.completed = step;
            r.outcome = if step == Step::Done {
                Outcome::Done
            } else {
                Outcome::Working
            };
            if step == Step::Done {
                r.name = Some(format!("History {i:05}"));
            }
            let line = serde_json::json!({
                "at_ms": r.updated_ms,
                "serial": serial,
                "event": event,
                "record": r,
            });
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    drop(out);
    let (ledger, report) = station::Ledger::open(dir)?;
    anyhow::ensure!(report.repaired >= n, "the history did not load: {report:?}");
    drop(ledger);
    Ok(())
}

pub fn run(
    cart: &Cart,
    identity: &Path,
    dir: &Path,
    history: usize,
) -> anyhow::Result<Vec<LedgerRow>> {
    // A first start makes the process's pairing key (start-up work done once per station
    // process), so neither measured start waits for it.
    {
        let d = dir.join("warm-up");
        let cfg = st::write_config(&d, identity, &cart.address(), 1)?;
        st::Station::start(&cfg, Vec::new())?.stop()?;
    }
    let sizes = [0, history];
    let mut cfgs = Vec::new();
    for h in sizes {
        let d = dir.join(format!("history-{h}"));
        cfgs.push((
            d.clone(),
            st::write_config(&d, identity, &cart.address(), 1)?,
        ));
        if h > 0 {
            fill(&d, h)?;
        }
    }
    // Opens and starts alternate between the two ledgers, so a slower stretch of a shared
    // machine (another process, the page cache settling after the fill) falls on both sizes
    // alike instead of on whichever was timed then.
    let mut opens = vec![Vec::new(); sizes.len()];
    let mut readies = vec![Vec::new(); sizes.len()];
    for _ in 0..OPENS {
        for (i, (d, _)) in cfgs.iter().enumerate() {
            let t = Instant::now();
            let (ledger, _) = station::Ledger::open(d)?;
            opens[i].push(t.elapsed().as_secs_f64() * 1e3);
            drop(ledger);
        }
    }
    for _ in 0..OPENS {
        for (i, (_, cfg)) in cfgs.iter().enumerate() {
            let s = st::Station::start(cfg, Vec::new())?;
            readies[i].push(s.opened_in.as_secs_f64() * 1e3);
            s.stop()?;
        }
    }
    let mut jobs = vec![Vec::new(); sizes.len()];
    for _ in 0..IPADS / BLOCK {
        for (i, (_, cfg)) in cfgs.iter().enumerate() {
            jobs[i].extend(st::sequential(cart, cfg, &cart.take(BLOCK, 0)?)?);
        }
    }
    let mut rows = Vec::new();
    for (i, (h, jobs)) in sizes.iter().zip(&jobs).enumerate() {
        rows.push(LedgerRow {
            history: *h,
            open_ms: Spread::of(&opens[i]),
            ready_ms: Spread::of(&readies[i]),
            per_ipad_wall_ms: crate::spread(jobs, |j| j.wall_ms),
            per_ipad_cpu_ms: crate::spread(jobs, |j| j.cpu_ms),
        });
    }
    Ok(rows)
}
