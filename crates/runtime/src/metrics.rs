//! Process-wide counters and histograms, cheap enough for the per-frame path
//! (relaxed atomics, no locks, no allocation).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const BUCKETS: usize = 64;
const FIRST_US: f64 = 10.0;
const GROWTH: f64 = 1.25;

/// A latency histogram with exponential buckets from 10 µs (x1.25 each, up
/// to ~12 s); percentiles are interpolated within their bucket.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

/// Each bucket's upper bound in nanoseconds: recording finds its bucket by
/// a binary search here, not a logarithm (it runs several times per frame).
const BOUNDS_NS: [u64; BUCKETS] = {
    let mut bounds = [0u64; BUCKETS];
    let mut bound = FIRST_US * 1000.0;
    let mut i = 0;
    while i < BUCKETS {
        bounds[i] = bound as u64;
        bound *= GROWTH;
        i += 1;
    }
    bounds
};

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn upper_bound_us(i: usize) -> f64 {
        BOUNDS_NS[i] as f64 / 1000.0
    }

    /// Few shared writes: a bucket, the sum, and the maximum only when it
    /// grows (the count is the buckets' sum).
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        let us = ns / 1000;
        self.sum_us.fetch_add(us, Relaxed);
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
    }

    /// Everything recorded, added up (Prometheus's `_sum`).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Relaxed))
    }

    /// Cumulative counts at every `step`-th bucket bound, in seconds, for
    /// Prometheus (the last bucket is `+Inf`, i.e. the total).
    pub fn cumulative(&self, step: usize) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(BUCKETS / step.max(1) + 1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if (i + 1) % step.max(1) == 0 && i + 1 < BUCKETS {
                out.push((Self::upper_bound_us(i) / 1e6, seen));
            }
        }
        out
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..1), interpolated linearly within its bucket by
    /// rank, as Prometheus's `histogram_quantile` does: a bucket's upper
    /// bound alone overstates by up to a bucket's width (25%).
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let here = c.load(Relaxed);
            seen += here;
            if seen >= target && here > 0 {
                let lower = if i == 0 {
                    0.0
                } else {
                    Self::upper_bound_us(i - 1)
                };
                let upper = Self::upper_bound_us(i);
                let into = (target - (seen - here)) as f64 / here as f64;
                let us = lower + (upper - lower) * into;
                // The estimate can overshoot the largest value seen.
                return Duration::from_secs_f64(us / 1e6).min(self.max());
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
        self.max_us.store(0, Relaxed);
        self.sum_us.store(0, Relaxed);
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
    /// The same, as a moving average of the last moments: how far behind
    /// the host is now (admission reads it).
    pub recent_lag: RecentLag,
    /// A frame's arrival (read from its socket) against the stream's own
    /// clock: stream start + the frame's timestamp (`host/src/calls/
    /// lateness.rs`). Counts what waited in the socket, which frame lag
    /// cannot see.
    pub stream_lateness: Histogram,
    /// The same as a moving average (admission reads it too).
    pub recent_lateness: RecentLag,
    /// From the end of speech in a live stream (the last voiced frame, as
    /// the VAD marks it) to its transcript leaving the pipeline: the wait a
    /// talking technician sees, hangover and queueing for Whisper included.
    pub speech_to_transcript: Histogram,
    /// The same, exactly, for the most recent transcripts (percentiles of a
    /// 1.5 s objective need better than a bucket's 25%).
    pub speech_to_transcript_recent: Recent,
    /// From an utterance reaching the stage that transcribes it (the VAD
    /// has declared the speech over) to the transcript it produced: the
    /// wait for and the work of speech recognition, the capacity measure.
    pub utterance_to_transcript: Histogram,
    pub utterance_to_transcript_recent: Recent,
}

/// The last `RECENT` values of a measure taken once per utterance (not per
/// frame), kept exactly for percentiles.
pub struct Recent {
    values: Mutex<VecDeque<Duration>>,
}

const RECENT: usize = 4096;

impl Recent {
    const fn new() -> Self {
        Self {
            values: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Duration>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, d: Duration) {
        let mut values = self.lock();
        if values.len() == RECENT {
            values.pop_front();
        }
        values.push_back(d);
    }

    /// How many values are kept, and the `q` quantiles of them (nearest rank).
    pub fn quantiles(&self, qs: &[f64]) -> (usize, Vec<Duration>) {
        let mut sorted: Vec<Duration> = self.lock().iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len();
        let at = |q: f64| {
            if n == 0 {
                return Duration::ZERO;
            }
            let rank = ((n as f64) * q).ceil().max(1.0) as usize;
            sorted[rank.min(n) - 1]
        };
        (n, qs.iter().map(|&q| at(q)).collect())
    }
}

pub static AUDIO: AudioMetrics = AudioMetrics {
    frames_in: AtomicU64::new(0),
    frames_dropped: AtomicU64::new(0),
    frames_rejected: AtomicU64::new(0),
    frame_lag: Histogram::new(),
    recent_lag: RecentLag::new(),
    stream_lateness: Histogram::new(),
    recent_lateness: RecentLag::new(),
    speech_to_transcript: Histogram::new(),
    speech_to_transcript_recent: Recent::new(),
    utterance_to_transcript: Histogram::new(),
    utterance_to_transcript_recent: Recent::new(),
};

/// Frames this far behind on average (a moving average, so not one slow
/// moment): the host is not keeping up with its live calls.
pub const OVERLOAD_LAG: Duration = Duration::from_millis(250);

/// How far behind the host is, when it is behind (`OVERLOAD_LAG`): new
/// calls are refused then. Behind is the worse of the frame lag (the
/// stages' backlog) and the lateness against the streams' clocks (what
/// waits in the sockets before the host reads it).
pub fn host_behind() -> Option<Duration> {
    let lag = AUDIO.recent_lag.get().max(AUDIO.recent_lateness.get());
    (lag > OVERLOAD_LAG).then_some(lag)
}

/// An exponentially weighted moving average of frame lag (each frame
/// weighs 1/32), forgotten when no frame arrived for a second (no calls, no
/// lag). Racy updates lose a sample now and then, which an average allows.
pub struct RecentLag {
    average_us: AtomicU64,
    /// When it was last updated, in ms since the process's first use.
    at_ms: AtomicU64,
}

impl RecentLag {
    const fn new() -> Self {
        Self {
            average_us: AtomicU64::new(0),
            at_ms: AtomicU64::new(0),
        }
    }

    fn now_ms() -> u64 {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
    }

    pub fn record(&self, lag: Duration) {
        let sample = lag.as_micros().min(u64::MAX as u128) as i64;
        let old = self.average_us.load(Relaxed) as i64;
        let new = old + (sample - old) / 32;
        self.average_us.store(new.max(0) as u64, Relaxed);
        self.at_ms.store(Self::now_ms(), Relaxed);
    }

    pub fn get(&self) -> Duration {
        if Self::now_ms().saturating_sub(self.at_ms.load(Relaxed)) > 1_000 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.average_us.load(Relaxed))
    }
}

/// One stage's numbers across every call and pipeline version, by name:
/// what the ops page and `/metrics` show.
#[derive(Default)]
pub struct StageMetrics {
    pub handled: AtomicU64,
    pub failed: AtomicU64,
    pub emitted: AtomicU64,
    pub restarts: AtomicU64,
    /// Time in `handle` per event, host capabilities included.
    pub latency: Histogram,
}

static STAGES: Mutex<Vec<(Arc<str>, Arc<StageMetrics>)>> = Mutex::new(Vec::new());

/// The metrics of stage `name`, created on first use. Looked up once per
/// stage per call, never per event.
pub fn stage(name: &str) -> Arc<StageMetrics> {
    let mut stages = STAGES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, m)) = stages.iter().find(|(n, _)| &**n == name) {
        return m.clone();
    }
    let m = Arc::new(StageMetrics::default());
    stages.push((name.into(), m.clone()));
    m
}

/// Every stage seen so far, in the order first seen.
pub fn stages() -> Vec<(Arc<str>, Arc<StageMetrics>)> {
    STAGES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// An event a stage failed on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageFailure {
    /// Seconds since the epoch.
    pub at: f64,
    pub session_id: String,
    pub stage: String,
    /// The event's kind (`transcript`, `audio`...).
    pub kind: &'static str,
    pub message: String,
    /// A trap, deadline or limit (the instance was replaced), not an error
    /// the stage returned.
    pub fault: bool,
}

impl StageFailure {
    /// As stored and listed: `fault on audio: ...`, `error on transcript: ...`.
    pub fn summary(&self) -> String {
        let what = if self.fault { "fault" } else { "error" };
        format!("{what} on {}: {}", self.kind, self.message)
    }
}

type Sink = Box<dyn Fn(&StageFailure) + Send + Sync>;

/// The last stage failures, kept for the ops page, and handed to the store
/// once one is attached.
pub struct RecentFailures {
    ring: Mutex<VecDeque<StageFailure>>,
    sink: OnceLock<Sink>,
}

/// Failures the ops page lists.
pub const RECENT_FAILURES: usize = 50;

impl RecentFailures {
    const fn new() -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            sink: OnceLock::new(),
        }
    }

    /// Where failures are also recorded (the store); set once by `serve`.
    pub fn set_sink(&self, sink: impl Fn(&StageFailure) + Send + Sync + 'static) {
        let _ = self.sink.set(Box::new(sink));
    }

    pub fn report(&self, failure: StageFailure) {
        if let Some(sink) = self.sink.get() {
            sink(&failure);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= RECENT_FAILURES {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<StageFailure> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

pub static STAGE_FAILURES: RecentFailures = RecentFailures::new();

/// How a capability call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Timeout,
    Unavailable,
    Invalid,
    Error,
}

/// Their names, in the order the variants are declared.
const OUTCOME_NAMES: [&str; 5] = ["ok", "timeout", "unavailable", "invalid", "error"];

/// One host capability's calls from stages, across calls.
pub struct CapabilityMetrics {
    pub name: &'static str,
    outcomes: [AtomicU64; 5],
    /// As the stage waited for it (timeouts included).
    pub latency: Histogram,
}

impl CapabilityMetrics {
    /// A capability's numbers (a `static` in its file, which its factor's
    /// `metrics` returns for /metrics).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            outcomes: [const { AtomicU64::new(0) }; 5],
            latency: Histogram::new(),
        }
    }

    pub fn record(&self, took: Duration, outcome: Outcome) {
        self.latency.record(took);
        self.outcomes[outcome as usize].fetch_add(1, Relaxed);
    }

    /// (outcome, calls) for every outcome.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOME_NAMES
            .iter()
            .zip(&self.outcomes)
            .map(|(name, n)| (*name, n.load(Relaxed)))
    }
}

/// Tokens the language model backend reported, across calls (what a
/// hosted model bills).
pub struct TokenCounts {
    prompt: AtomicU64,
    completion: AtomicU64,
}

impl TokenCounts {
    pub fn add(&self, prompt: u32, completion: u32) {
        self.prompt.fetch_add(u64::from(prompt), Relaxed);
        self.completion.fetch_add(u64::from(completion), Relaxed);
    }

    pub fn prompt(&self) -> u64 {
        self.prompt.load(Relaxed)
    }

    pub fn completion(&self) -> u64 {
        self.completion.load(Relaxed)
    }
}

pub static LLM_TOKENS: TokenCounts = TokenCounts {
    prompt: AtomicU64::new(0),
    completion: AtomicU64::new(0),
};

/// Local transcription's queue: callers waiting for a turn, and those
/// turned away because the queue was full.
pub struct TranscriptionQueue {
    pub waiting: AtomicU64,
    pub shed: AtomicU64,
}

pub static TRANSCRIPTIONS: TranscriptionQueue = TranscriptionQueue {
    waiting: AtomicU64::new(0),
    shed: AtomicU64::new(0),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lag_follows_the_frames() {
        let lag = RecentLag::new();
        assert_eq!(lag.get(), Duration::ZERO);
        for _ in 0..400 {
            lag.record(Duration::from_millis(100));
        }
        let now = lag.get();
        assert!(
            now > Duration::from_millis(95) && now <= Duration::from_millis(100),
            "{now:?}"
        );
        for _ in 0..400 {
            lag.record(Duration::from_millis(1));
        }
        assert!(lag.get() < Duration::from_millis(5), "{:?}", lag.get());
    }

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

    #[test]
    fn recent_values_give_exact_percentiles() {
        let r = Recent::new();
        assert_eq!(r.quantiles(&[0.5]), (0, vec![Duration::ZERO]));
        for ms in (1..=100).rev() {
            r.record(Duration::from_millis(ms));
        }
        let (n, q) = r.quantiles(&[0.5, 0.95, 1.0]);
        assert_eq!(n, 100);
        assert_eq!(q, [50, 95, 100].map(Duration::from_millis));
        for _ in 0..RECENT {
            r.record(Duration::from_millis(7));
        }
        assert_eq!(
            r.quantiles(&[1.0]),
            (RECENT, vec![Duration::from_millis(7)])
        );
    }

    /// The table search puts a value where the bucket formula (10 µs x
    /// 1.25^i upper bounds) says it belongs.
    #[test]
    fn the_bucket_table_follows_the_bucket_formula() {
        let mut us = 3.7f64;
        while us < 5e6 {
            let h = Histogram::new();
            h.record(Duration::from_secs_f64(us / 1e6));
            let want = if us <= FIRST_US {
                0
            } else {
                ((us / FIRST_US).ln() / GROWTH.ln()).ceil() as usize
            };
            let got = h.counts.iter().position(|c| c.load(Relaxed) == 1);
            assert_eq!(got, Some(want.min(BUCKETS - 1)), "{us} µs");
            us *= 1.37;
        }
    }

    #[test]
    fn capability_outcomes_are_counted_under_their_names() {
        let m = CapabilityMetrics::new("test");
        m.record(Duration::from_millis(2), Outcome::Timeout);
        m.record(Duration::from_millis(1), Outcome::Error);
        m.record(Duration::from_millis(1), Outcome::Error);
        let got: Vec<_> = m.outcomes().collect();
        assert_eq!(
            got,
            [
                ("ok", 0),
                ("timeout", 1),
                ("unavailable", 0),
                ("invalid", 0),
                ("error", 2)
            ]
        );
        assert_eq!(m.latency.count(), 3);
    }

    #[test]
    fn stages_are_shared_by_name() {
        let a = stage("metrics-test-stage");
        a.handled.fetch_add(2, Relaxed);
        assert_eq!(stage("metrics-test-stage").handled.load(Relaxed), 2);
        assert!(stages().iter().any(|(n, _)| &**n == "metrics-test-stage"));
    }

    #[test]
    fn recent_failures_keep_the_newest() {
        let r = RecentFailures::new();
        for i in 0..RECENT_FAILURES + 5 {
            r.report(StageFailure {
                at: i as f64,
                session_id: "s".into(),
                stage: "x".into(),
                kind: "transcript",
                message: format!("failure {i}"),
                fault: false,
            });
        }
        let got = r.recent();
        assert_eq!(got.len(), RECENT_FAILURES);
        assert_eq!(got[0].message, format!("failure {}", RECENT_FAILURES + 4));
        assert_eq!(got[RECENT_FAILURES - 1].message, "failure 5");
    }
}
