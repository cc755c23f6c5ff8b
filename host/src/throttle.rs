//! Bounding log lines that something outside the host's control can make frequent (a
//! guest's logs and prints, a warning per failed message): at most so many per second
//! per source; the rest are dropped and counted, and the count is said with the next
//! line that passes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A per-second budget of lines.
#[derive(Debug)]
pub struct Throttle {
    per_second: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
    dropped: u64,
}

impl Throttle {
    /// At most `per_second` lines a second.
    pub fn new(per_second: u32) -> Self {
        Throttle {
            per_second,
            state: Mutex::new(Window {
                started: Instant::now(),
                used: 0,
                dropped: 0,
            }),
        }
    }

    /// Whether a line may be logged now: `Some(n)` if so, `n` the lines dropped since the
    /// last one that passed; `None` if it is dropped (and counted).
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(w.started) >= Duration::from_secs(1) {
            w.started = now;
            w.used = 0;
        }
        if w.used >= self.per_second {
            w.dropped += 1;
            return None;
        }
        w.used += 1;
        Some(std::mem::take(&mut w.dropped))
    }
}

/// `" (n earlier lines dropped: over the limit of lines per second)"`, or nothing.
pub fn dropped_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} earlier line(s) dropped: over the limit of lines per second)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_budget_then_counts_what_it_drops() {
        let t = Throttle::new(3);
        assert_eq!((t.admit(), t.admit(), t.admit()), (Some(0), Some(0), Some(0)));
        assert_eq!((t.admit(), t.admit()), (None, None));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(t.admit(), Some(2), "the next line says how many were dropped");
        assert_eq!(t.admit(), Some(0));
    }
}
