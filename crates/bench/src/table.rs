//! The printed table, and the side-by-side figures.

use std::fmt::Write;

use crate::measure::Spread;
use crate::station::{Batch, Job};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub wall_ms: Spread,
    pub cpu_ms: Spread,
    pub replies: Spread,
    pub connections: Spread,
}

fn figures(jobs: &[Job]) -> Figures {
    Figures {
        wall_ms: crate::spread(jobs, |j| j.wall_ms),
        cpu_ms: crate::spread(jobs, |j| j.cpu_ms),
        replies: crate::spread(jobs, |j| j.replies as f64),
        connections: crate::spread(jobs, |j| j.connections as f64),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SideBySide {
    pub latency_ms: u64,
    pub cartprep: Figures,
    pub pymobiledevice3: Figures,
    /// pymobiledevice3's median wall time over cartprep's: how many times faster we are.
    pub speedup_wall: f64,
    pub speedup_cpu: f64,
}

pub fn side_by_side(latency_ms: u64, ours: &[Job], theirs: &[Job]) -> SideBySide {
    let (a, b) = (figures(ours), figures(theirs));
    SideBySide {
        latency_ms,
        speedup_wall: b.wall_ms.median / a.wall_ms.median,
        speedup_cpu: b.cpu_ms.median / a.cpu_ms.median,
        cartprep: a,
        pymobiledevice3: b,
    }
}

#[derive(Default)]
pub struct Table {
    out: String,
    side_header: bool,
    batch_header: bool,
    batches: Vec<Batch>,
    /// Issue 9's targets, one line each, printed last.
    targets: Vec<String>,
}

/// One target's line: what was measured, what is asked, whether it is met.
fn target(what: &str, measured: String, asked: &str, met: bool) -> String {
    format!(
        "{:<5} {what}: {measured} (target {asked})",
        if met { "met" } else { "NOT" }
    )
}

fn s3(s: &Spread) -> String {
    format!("{:.1} / {:.1} / {:.1}", s.min, s.median, s.max)
}

impl Table {
    pub fn side(&mut self, r: &SideBySide) {
        if !self.side_header {
            self.side_header = true;
            let _ = writeln!(
                self.out,
                "\n== per iPad, one at a time: pair, supervise + MDM URL, escalate + silent Wi-Fi, rename (min / median / max)"
            );
            let _ = writeln!(
                self.out,
                "{:<8} {:<16} {:>28} {:>28} {:>9} {:>6}",
                "latency", "client", "wall ms", "cpu ms", "replies", "conns"
            );
        }
        for (name, f) in [("cartprep", &r.cartprep), ("pmd3 lib", &r.pymobiledevice3)] {
            let _ = writeln!(
                self.out,
                "{:<8} {:<16} {:>28} {:>28} {:>9.0} {:>6.0}",
                format!("{} ms", r.latency_ms),
                name,
                s3(&f.wall_ms),
                s3(&f.cpu_ms),
                f.replies.median,
                f.connections.median
            );
        }
        let _ = writeln!(
            self.out,
            "{:<8} {:<16} {:>28} {:>28}",
            "",
            "speed-up",
            format!("{:.2}x", r.speedup_wall),
            format!("{:.2}x", r.speedup_cpu)
        );
        if r.latency_ms == 0 {
            self.targets.push(target(
                "per iPad, 0 ms",
                format!("{:.2}x pymobiledevice3", r.speedup_wall),
                ">= 8x",
                r.speedup_wall >= 8.0,
            ));
        } else {
            let (ours, theirs) = (r.cartprep.replies.median, r.pymobiledevice3.replies.median);
            self.targets.push(target(
                &format!("per iPad, {} ms", r.latency_ms),
                format!("{:.2}x, {ours:.0} replies vs {theirs:.0}", r.speedup_wall),
                ">= 1.5x, fewer replies",
                r.speedup_wall >= 1.5 && ours < theirs,
            ));
        }
    }

    pub fn batch(&mut self, b: &Batch) {
        self.batches.push(b.clone());
        if !self.batch_header {
            self.batch_header = true;
            let _ = writeln!(
                self.out,
                "\n== scaling: N iPads plugged at once (the median of {} rounds)",
                b.rounds_wall_ms.len()
            );
            let _ = writeln!(
                self.out,
                "{:<8} {:>4} {:>9} {:>10} {:>10} {:>28} {:>9} {:>8}",
                "latency",
                "N",
                "at once",
                "batch ms",
                "cpu ms",
                "plug→done ms min/med/max",
                "iPads/s",
                "replies"
            );
        }
        let _ = writeln!(
            self.out,
            "{:<8} {:>4} {:>9} {:>10.0} {:>10.0} {:>28} {:>9.2} {:>8.1}",
            format!("{} ms", b.latency_ms),
            b.n,
            b.max_concurrent,
            b.wall_ms,
            b.cpu_ms,
            s3(&b.job_wall_ms),
            b.ipads_per_s,
            b.replies_per_ipad
        );
    }

    pub fn ledger(&mut self, rows: &[crate::ledger::LedgerRow]) {
        let _ = writeln!(self.out, "\n== ledger history");
        let _ = writeln!(
            self.out,
            "{:>9} {:>18} {:>22} {:>22}",
            "history", "open ms (median)", "ready ms (median)", "per iPad ms (median)"
        );
        for r in rows {
            let _ = writeln!(
                self.out,
                "{:>9} {:>18.2} {:>22.1} {:>22.1}",
                r.history, r.open_ms.median, r.ready_ms.median, r.per_ipad_wall_ms.median
            );
        }
        if let (Some(empty), Some(full)) = (rows.first(), rows.last())
            && full.history > empty.history
        {
            for (what, a, b) in [
                ("ledger open", empty.open_ms.median, full.open_ms.median),
                ("station ready", empty.ready_ms.median, full.ready_ms.median),
                (
                    "per iPad",
                    empty.per_ipad_wall_ms.median,
                    full.per_ipad_wall_ms.median,
                ),
            ] {
                self.targets.push(target(
                    &format!("{what} with {} iPads of history", full.history),
                    format!(
                        "{b:.2} ms vs {a:.2} ms empty ({:+.0}%)",
                        (b / a - 1.0) * 100.0
                    ),
                    "within 10%",
                    b <= a * 1.1,
                ));
            }
        }
    }

    pub fn idle(&mut self, i: &crate::idle::Idle) {
        let _ = writeln!(
            self.out,
            "\n== idle `cartprep run` (a child process), and memory"
        );
        for (what, w) in [
            ("idle at start", &i.at_start),
            ("idle after work", &i.after_work),
        ] {
            let _ = writeln!(
                self.out,
                "{what:<16} {:>6.1} s: {:>6.2} wake-ups/s, {:>8.3} ms CPU/min  {}",
                w.secs,
                w.wakeups_per_s,
                w.cpu_ms_per_min,
                w.by_thread
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            self.out,
            "RSS after {} iPads {} kB, after {} iPads {} kB ({:+} kB; target within 2048; \
             {} at a time, board forgets after {} min); of the growth, heap and stacks {:+} kB, \
             mapped files {:+} kB",
            i.few,
            i.rss_few.total_kb,
            i.many,
            i.rss_many.total_kb,
            i.rss_many.total_kb as i64 - i.rss_few.total_kb as i64,
            i.few,
            i.forget_after_minutes,
            i.rss_many.anon_kb as i64 - i.rss_few.anon_kb as i64,
            i.rss_many.file_kb as i64 - i.rss_few.file_kb as i64,
        );
        let _ = writeln!(
            self.out,
            "RSS after {} iPads {} kB: from there to {} iPads {:+} kB",
            i.half,
            i.rss_half.total_kb,
            i.many,
            i.rss_many.total_kb as i64 - i.rss_half.total_kb as i64,
        );
        let _ = writeln!(self.out, "threads: {}", i.threads.join(", "));
        let w = &i.after_work;
        self.targets.push(target(
            "idle after work",
            format!(
                "{:.2} wake-ups/s, {:.0} ms CPU/min",
                w.wakeups_per_s, w.cpu_ms_per_min
            ),
            "< 1/s, 0 ms",
            w.wakeups_per_s < 1.0 && w.cpu_ms_per_min < 0.5,
        ));
        let grew = i.rss_many.total_kb as i64 - i.rss_few.total_kb as i64;
        self.targets.push(target(
            &format!("RSS after {} iPads vs {}", i.many, i.few),
            format!("{grew:+} kB"),
            "within 2048 kB",
            grew <= 2048,
        ));
    }

    pub fn sim(&mut self, s: &crate::idle::SimStart) {
        let _ = writeln!(self.out, "\n== simulator");
        let _ = writeln!(
            self.out,
            "{} iPads: started in {:.0} ms (target < 2000; device keys made on first \
             connection), listed in {:.1} ms (target < 500)",
            s.ipads, s.start_ms, s.list_ms
        );
        self.targets.push(target(
            &format!("simulator, {} iPads", s.ipads),
            format!(
                "ready in {:.0} ms, listed in {:.1} ms",
                s.start_ms, s.list_ms
            ),
            "< 2000 ms, < 500 ms",
            s.start_ms < 2000.0 && s.list_ms < 500.0,
        ));
    }

    /// The scaling targets, from the batches: at the injected latency, N at once against one
    /// iPad alone; at 0 ms, throughput N at once against one at a time, and no convoy (N at
    /// once never slower than one at a time).
    fn scaling_targets(&self) -> Vec<String> {
        let find = |ms: u64, n: usize, at_once: usize| {
            self.batches
                .iter()
                .find(|b| b.latency_ms == ms && b.n == n && b.max_concurrent == at_once)
        };
        let mut out = Vec::new();
        let slow = self.batches.iter().map(|b| b.latency_ms).max().unwrap_or(0);
        let largest = |ms: u64| {
            self.batches
                .iter()
                .filter(|b| b.latency_ms == ms && b.n == b.max_concurrent && b.n > 1)
                .map(|b| b.n)
                .collect::<Vec<_>>()
        };
        for n in largest(slow) {
            // The target is for a cart of 32.
            if let (Some(batch), Some(alone)) = (find(slow, n, n), find(slow, 1, 1))
                && n == 32
            {
                let r = batch.wall_ms / alone.wall_ms;
                out.push(target(
                    &format!("{n} at once, {slow} ms"),
                    format!(
                        "{:.0} ms vs {:.0} ms alone: {r:.2}x",
                        batch.wall_ms, alone.wall_ms
                    ),
                    "<= 1.5x",
                    r <= 1.5,
                ));
            }
        }
        for n in largest(0) {
            if let (Some(batch), Some(serial)) = (find(0, n, n), find(0, n, 1)) {
                let r = batch.ipads_per_s / serial.ipads_per_s;
                let asked = if n == 32 {
                    ">= 1.8x, no convoy"
                } else {
                    "no convoy"
                };
                let met = batch.wall_ms <= serial.wall_ms && (n != 32 || r >= 1.8);
                out.push(target(
                    &format!("throughput {n} at once, 0 ms"),
                    format!(
                        "{:.1} vs {:.1} iPads/s one at a time: {r:.2}x; slowest job {:.0} ms, \
                         one at a time {:.0} ms",
                        batch.ipads_per_s,
                        serial.ipads_per_s,
                        batch.job_wall_ms.max,
                        serial.wall_ms
                    ),
                    asked,
                    met,
                ));
            }
        }
        out
    }

    pub fn render(&self) -> String {
        let mut out = self.out.clone();
        let scaling = self.scaling_targets();
        if !self.targets.is_empty() || !scaling.is_empty() {
            let _ = writeln!(out, "\n== issue 9's targets (this run)");
            for line in self.targets.iter().chain(&scaling) {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}
