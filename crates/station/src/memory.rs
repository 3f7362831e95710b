//! Handing freed memory back to the system when the station goes idle.
//!
//! glibc's allocator keeps the pages a process has freed: one arena per thread that allocated
//! while another held the main one. After a cart prepared many at a time, those pages stay
//! resident while the station waits for the next cart, and each cart adds a little
//! (ARCHITECTURE §4). `malloc_trim(0)` returns every whole free page of every arena.
//!
//! It runs once each time the station goes idle (its last job ended and nothing waits), on
//! the event that made it idle: never on a timer, so an idle station still never wakes. Not
//! while jobs run: a trim there would hand back pages the next reply needs again.

use crate::scheduler::Idle;

/// Whether the station has just gone idle: something was running, queued or being erased
/// before this event, and nothing is now.
pub fn went_idle(before: Idle, now: Idle) -> bool {
    busy(before) && !busy(now)
}

fn busy(i: Idle) -> bool {
    i.running + i.queued + i.erasing > 0
}

/// Returns freed pages to the system. Elsewhere than glibc it does nothing: macOS's allocator
/// returns free pages under memory pressure by itself, and musl keeps no per-thread arenas.
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only its free lists;
    // it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(running: usize, queued: usize, erasing: usize) -> Idle {
        Idle {
            running,
            queued,
            erasing,
        }
    }

    #[test]
    fn only_the_event_that_ends_the_last_work_is_going_idle() {
        let cases = [
            // (before, now, went idle)
            (idle(1, 0, 0), idle(0, 0, 0), true),
            (idle(3, 2, 0), idle(0, 0, 0), true),
            (idle(0, 0, 1), idle(0, 0, 0), true),
            (idle(0, 0, 0), idle(0, 0, 0), false), // already idle: no trim at every event
            (idle(2, 0, 0), idle(1, 0, 0), false), // still working
            (idle(1, 0, 0), idle(0, 1, 0), false), // an iPad waits for its turn
            (idle(0, 0, 0), idle(1, 0, 0), false), // starting work
            (idle(1, 0, 0), idle(0, 0, 1), false), // an erase is still running
        ];
        for (before, now, expected) in cases {
            assert_eq!(went_idle(before, now), expected, "{before:?} -> {now:?}");
        }
    }

    #[test]
    fn giving_back_freed_memory_keeps_what_is_in_use() {
        let kept: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        let freed: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 16 << 10]).collect();
        drop(freed);
        give_back_freed();
        assert!(kept.iter().zip((0..=255).cycle()).all(|(a, b)| *a == b));
    }
}
