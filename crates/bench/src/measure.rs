//! CPU, wake-ups and memory, read from the kernel (Linux `/proc`, `getrusage`).

use std::fs;
use std::path::Path;

/// CPU time of this whole process (every thread, living or gone), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(r.ru_utime) + us(r.ru_stime)) * 1_000
}

/// Nanoseconds on CPU of one task (`/proc/<pid>/task/<tid>/schedstat`, first field).
fn schedstat_ns(task: &Path) -> u64 {
    fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU of this process's threads whose name starts with `prefix`, in nanoseconds.
pub fn own_threads_cpu_ns(prefix: &str) -> u64 {
    tasks(Path::new("/proc/self/task"))
        .filter(|t| {
            fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(|t| schedstat_ns(&t))
        .sum()
}

/// CPU of this process's main thread, in nanoseconds.
pub fn main_thread_cpu_ns() -> u64 {
    schedstat_ns(Path::new(&format!(
        "/proc/self/task/{}",
        std::process::id()
    )))
}

fn tasks(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}

/// Per thread (by id) of another process: its name, context switches (voluntary +
/// involuntary: each is the thread going to sleep or being pre-empted) and CPU nanoseconds.
pub fn thread_activity(pid: u32) -> std::collections::BTreeMap<u32, (String, u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for t in tasks(Path::new(&format!("/proc/{pid}/task"))) {
        let Some(tid) = t
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let name = fs::read_to_string(t.join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        let switches: u64 = fs::read_to_string(t.join("status"))
            .map(|status| {
                status
                    .lines()
                    .filter_map(|line| {
                        line.strip_prefix("voluntary_ctxt_switches:")
                            .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                    })
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        out.insert(tid, (name, switches, schedstat_ns(&t)));
    }
    out
}

/// Names of a process's threads (what wakes, when something does).
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = tasks(Path::new(&format!("/proc/{pid}/task")))
        .filter_map(|t| fs::read_to_string(t.join("comm")).ok())
        .map(|c| c.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// Resident memory of a process, in kilobytes: the total (`VmRSS`) and its parts, so growth
/// can be told apart: the heap and stacks (`RssAnon`) from mapped files such as the program's
/// own code (`RssFile`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Resident {
    pub total_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
}

pub fn resident(pid: u32) -> Resident {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Resident {
        total_kb: field("VmRSS:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
    }
}

/// Min, median and max of a sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Spread {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[v.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_samples() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let before = process_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_ns() > before);
        let r = resident(std::process::id());
        assert!(r.total_kb > 0 && r.anon_kb > 0 && r.anon_kb + r.file_kb <= r.total_kb);
    }
}
