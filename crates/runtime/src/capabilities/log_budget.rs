//! How much one stage instance (one stage of one call) may write to the
//! host's log: a stage that logs on every frame would otherwise drown the
//! log and slow the host. Past the budget, lines are counted, and the count
//! is logged once the window turns.

use std::time::{Duration, Instant};

/// Lines a stage instance may log per window.
pub const LINES_PER_WINDOW: u32 = 50;
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct LogBudget {
    window_start: Instant,
    used: u32,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were dropped in the window before.
    Log {
        suppressed: u64,
    },
    Drop,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(Instant::now())
    }
}

impl LogBudget {
    pub fn new(now: Instant) -> Self {
        LogBudget {
            window_start: now,
            used: 0,
            suppressed: 0,
        }
    }

    pub fn take(&mut self, now: Instant) -> Verdict {
        let mut suppressed = 0;
        if now.duration_since(self.window_start) >= WINDOW {
            suppressed = std::mem::take(&mut self.suppressed);
            self.window_start = now;
            self.used = 0;
        }
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            Verdict::Log { suppressed }
        } else {
            self.suppressed += 1;
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_and_counted() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        let logged = (0..1000)
            .filter(|_| matches!(b.take(t0), Verdict::Log { .. }))
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        // The next window logs again and says how many were dropped.
        assert_eq!(
            b.take(t0 + WINDOW),
            Verdict::Log {
                suppressed: 1000 - LINES_PER_WINDOW as u64
            }
        );
        assert_eq!(b.take(t0 + WINDOW), Verdict::Log { suppressed: 0 });
    }
}
