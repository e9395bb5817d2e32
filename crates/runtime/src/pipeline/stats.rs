//! Per-stage counters for one call; cheap enough for the per-frame path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct StageStats {
    /// Events that entered the stage's WebAssembly.
    pub handled: AtomicU64,
    /// Events the stage returned.
    pub emitted: AtomicU64,
    /// Events that passed by without entering (kind not in `on`).
    pub skipped: AtomicU64,
    /// Events whose handling failed (stage error, trap, deadline, limit).
    pub failed: AtomicU64,
    /// Times the instance was replaced after a fault.
    pub restarts: AtomicU64,
    /// Time spent in `handle`, host capabilities included.
    pub busy_ns: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub handled: u64,
    pub emitted: u64,
    pub skipped: u64,
    pub failed: u64,
    pub restarts: u64,
    pub busy_ns: u64,
}

impl StageStats {
    pub fn add_busy(&self, d: Duration) {
        self.busy_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            handled: self.handled.load(Relaxed),
            emitted: self.emitted.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Mean time per handled (or failed) event.
    pub fn mean_per_event(&self) -> Duration {
        Duration::from_nanos(
            self.busy_ns
                .checked_div(self.handled + self.failed)
                .unwrap_or(0),
        )
    }
}
