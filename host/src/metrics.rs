//! Process-wide counters and histograms, cheap enough for the per-frame path
//! (relaxed atomics, no locks, no allocation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const BUCKETS: usize = 64;
const FIRST_US: f64 = 10.0;
const GROWTH: f64 = 1.25;

/// A latency histogram with exponential buckets from 10 µs (x1.25 each, up
/// to ~12 s); percentiles are reported as their bucket's upper bound.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    total: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            total: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    fn upper_bound_us(i: usize) -> f64 {
        FIRST_US * GROWTH.powi(i as i32)
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= FIRST_US {
            0
        } else {
            ((us / FIRST_US).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.max_us.fetch_max(us as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// The `q` quantile (0..1), as a bucket upper bound.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= target {
                // A bucket's bound can overshoot the largest value seen.
                return Duration::from_secs_f64(Self::upper_bound_us(i) / 1e6).min(self.max());
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Relaxed))
    }

    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Relaxed);
        }
        self.total.store(0, Relaxed);
        self.max_us.store(0, Relaxed);
    }
}

/// The audio path's health, process-wide.
pub struct AudioMetrics {
    /// Media frames accepted from the transport.
    pub frames_in: AtomicU64,
    /// Frames dropped because a call's pipeline was saturated.
    pub frames_dropped: AtomicU64,
    /// Frames refused as malformed (bad base64, wrong size, before start...).
    pub frames_rejected: AtomicU64,
    /// Arrival of a frame to the end of its processing by the audio stages.
    pub frame_lag: Histogram,
}

pub static AUDIO: AudioMetrics = AudioMetrics {
    frames_in: AtomicU64::new(0),
    frames_dropped: AtomicU64::new(0),
    frames_rejected: AtomicU64::new(0),
    frame_lag: Histogram::new(),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let h = Histogram::new();
        for _ in 0..99 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(30));
        let p50 = h.quantile(0.5).as_micros();
        assert!((100..=125).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).as_micros();
        assert!((100..=125).contains(&p99), "{p99}");
        let p100 = h.quantile(1.0).as_micros();
        assert!((30_000..=37_500).contains(&p100), "{p100}");
        assert_eq!(h.max(), Duration::from_millis(30));
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
