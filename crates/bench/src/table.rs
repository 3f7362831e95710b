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
    }

    pub fn batch(&mut self, b: &Batch) {
        if !self.batch_header {
            self.batch_header = true;
            let _ = writeln!(self.out, "\n== scaling: N iPads plugged at once");
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
            "history", "open ms (median)", "station ready ms", "per iPad ms (median)"
        );
        for r in rows {
            let _ = writeln!(
                self.out,
                "{:>9} {:>18.2} {:>22.1} {:>22.1}",
                r.history, r.open_ms.median, r.ready_ms, r.per_ipad_wall_ms.median
            );
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
            "RSS after {} iPads {} kB, after {} iPads {} kB (+{} kB; target within 2048; \
             {} at a time, board forgets after {} min)",
            i.few,
            i.rss_few_kb,
            i.many,
            i.rss_many_kb,
            i.rss_many_kb as i64 - i.rss_few_kb as i64,
            i.few,
            i.forget_after_minutes
        );
        let _ = writeln!(self.out, "threads: {}", i.threads.join(", "));
    }

    pub fn sim(&mut self, s: &crate::idle::SimStart) {
        let _ = writeln!(self.out, "\n== simulator");
        let _ = writeln!(
            self.out,
            "{} iPads: started in {:.0} ms (target < 2000; device keys made on first \
             connection), listed in {:.1} ms (target < 500)",
            s.ipads, s.start_ms, s.list_ms
        );
    }

    pub fn render(&self) -> String {
        self.out.clone()
    }
}
