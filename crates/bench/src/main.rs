//! `cartprep-bench`: cartprep's station against pymobiledevice3 used as a library (the anchor),
//! on the same simulator and the same kind of iPads; scaling with iPads at once and one at a
//! time; an idle station's wake-ups and CPU; memory after many iPads; the ledger with a long
//! history; the simulator's own start-up. Prints a table and writes JSON. See README.md
//! ("Benchmark").

mod anchor;
mod idle;
mod ledger;
mod measure;
mod sim;
mod station;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use measure::Spread;

#[derive(Parser)]
#[command(
    name = "cartprep-bench",
    about = "cartprep's benchmark (see README.md)"
)]
struct Args {
    /// A quick run that only checks every phase works (CI): few rounds, small N, short idle.
    #[arg(long)]
    short: bool,
    /// Rounds (iPads) per client and latency in the side-by-side phase.
    #[arg(long)]
    rounds: Option<usize>,
    /// Injected reply latency of the slow iPads, in milliseconds.
    #[arg(long, default_value_t = 15)]
    latency_ms: u64,
    /// The Python with pymobiledevice3 11.45.0 (tests/interop/install.sh makes it).
    #[arg(
        long,
        env = "CARTPREP_BENCH_PYTHON",
        default_value = "/var/tmp/cartprep-venv/bin/python"
    )]
    python: PathBuf,
    /// The cartprep binary, for the idle and memory phase (default: next to this one).
    #[arg(long)]
    cartprep: Option<PathBuf>,
    /// Seconds the idle station is watched (default 60; 5 with --short).
    #[arg(long)]
    idle_secs: Option<u64>,
    /// iPads prepared before the second memory reading (default 1000; 40 with --short).
    #[arg(long)]
    many: Option<usize>,
    /// iPads of history in the ledger phase (default 10000; 1000 with --short).
    #[arg(long)]
    history: Option<usize>,
    /// Skip phases, by name: anchor, scaling, ledger, idle, sim.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-report.json")]
    json: PathBuf,
    /// Work folder (simulator state, station state). Device keys are cached in
    /// <work>/device-keys between runs.
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let short = args.short;
    let rounds = args.rounds.unwrap_or(if short { 2 } else { 7 });
    let ns: Vec<usize> = if short {
        vec![1, 4]
    } else {
        vec![1, 8, 32, 64]
    };
    let lat = args.latency_ms;
    // Each batch is run this many times (new iPads each time) and the median shown: one batch
    // on 2 shared cores varies by a third from run to run.
    let batch_rounds = if short { 1 } else { 3 };
    let skip = |phase: &str| args.skip.iter().any(|s| s == phase);
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let keys = work.join("device-keys");
    let run_dir = tempfile::Builder::new().prefix("run-").tempdir_in(&work)?;
    let run = run_dir.path().to_owned();

    // Each phase (each batch, in the scaling phase) gets a simulator of its own. The same seed
    // gives the same iPads, so a device key is made once (on the iPad's first connection) and
    // cached for every later phase and run.
    let fresh = |name: &str, zero: usize, slow: usize| {
        eprintln!("bench: {name}: a simulated cart of {} iPads", zero + slow);
        sim::Cart::start(
            zero.max(1),
            slow,
            lat,
            &run.join(format!("sim-{name}")),
            &keys,
        )
    };

    // One organisation identity for every station phase (made once, like an IT person does).
    let identity = work.join("identity");
    if !profiles::SupervisionIdentity::exists_in(&identity) {
        profiles::SupervisionIdentity::create("Springfield Elementary")?.save(&identity)?;
    }
    let mut report = json!({ "short": short, "latency_ms": lat, "rounds": rounds });
    let mut table = table::Table::default();

    if !skip("anchor") {
        let cart = fresh("side-by-side", rounds * 2, rounds * 2)?;
        let mut side = Vec::new();
        for ms in [0, lat] {
            let cfg = station::write_config(
                &run.join(format!("anchor-{ms}")),
                &identity,
                &cart.address(),
                1,
            )?;
            let ours = station::sequential(&cart, &cfg, &cart.take(rounds, ms)?)
                .with_context(|| format!("station, {ms} ms"))?;
            let theirs = anchor::run(
                &cart,
                &args.python,
                &run.join(format!("pmd3-{ms}")),
                &cart.take(rounds, ms)?,
            )
            .with_context(|| format!("pymobiledevice3 anchor, {ms} ms"))?;
            let row = table::side_by_side(ms, &ours, &theirs);
            table.side(&row);
            side.push(row);
        }
        report["side_by_side"] = json!(side);
    }

    if !skip("scaling") {
        let mut rows = Vec::new();
        for ms in [0, lat] {
            for &n in &ns {
                for at_once in [n, 1] {
                    if n == 1
                        && at_once == 1
                        && rows.iter().any(|r: &station::Batch| {
                            r.n == 1 && r.max_concurrent == 1 && r.latency_ms == ms
                        })
                    {
                        // 1 at a time is 1 at once: measured once.
                        continue;
                    }
                    let name = format!("scale-{ms}-{n}-{at_once}");
                    let cart = if ms == 0 {
                        fresh(&name, n * batch_rounds, 0)?
                    } else {
                        fresh(&name, 0, n * batch_rounds)?
                    };
                    let mut runs = Vec::new();
                    for round in 0..batch_rounds {
                        let dir = run.join(format!("{name}-{round}"));
                        let cfg = station::write_config(&dir, &identity, &cart.address(), at_once)?;
                        let b = station::batch(&cart, &cfg, &cart.take(n, ms)?, at_once)
                            .with_context(|| format!("{n} iPads, {at_once} at a time, {ms} ms"))?;
                        runs.push(b);
                    }
                    let mut b = station::Batch::median(runs);
                    b.latency_ms = ms;
                    table.batch(&b);
                    rows.push(b);
                }
            }
        }
        report["scaling"] = json!(rows);
    }

    if !skip("ledger") {
        let history = args.history.unwrap_or(if short { 1000 } else { 10_000 });
        let cart = fresh("ledger", ledger::IPADS * 2, 0)?;
        let rows = ledger::run(&cart, &identity, &run.join("ledger"), history)?;
        table.ledger(&rows);
        report["ledger"] = json!(rows);
    }

    if !skip("idle") {
        let cartprep = match &args.cartprep {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the bench binary's folder")?
                .join("cartprep"),
        };
        let secs = args.idle_secs.unwrap_or(if short { 5 } else { 60 });
        // 10 first, then the rest of 1,000 (the RSS target).
        let max = simulator::bus::HubLevels::ONE.max_slots_all_buses() as usize - 10;
        let many = args.many.unwrap_or(if short { 40 } else { 990 }).min(max);
        let idle = idle::run(&cartprep, &identity, &run.join("idle"), &keys, secs, many)?;
        table.idle(&idle);
        report["idle"] = json!(idle);
    }

    if !skip("sim") {
        let n = if short { 200 } else { 1000 };
        let s = idle::sim_start(&run.join("sim-scale"), &keys, n)?;
        table.sim(&s);
        report["simulator"] = json!(s);
    }

    print!("{}", table.render());
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("bench: JSON written to {}", args.json.display());
    Ok(())
}

/// Min/median/max of one field of the jobs.
pub fn spread(jobs: &[station::Job], f: impl Fn(&station::Job) -> f64) -> Spread {
    Spread::of(&jobs.iter().map(f).collect::<Vec<_>>())
}
