//! Wall-clock time, as the runtime stamps stage failures and reload
//! refusals (the store keeps its own, beside what it records).

/// Seconds since the Unix epoch.
pub fn now_epoch() -> f64 {
    std::time::UNIX_EPOCH
        .elapsed()
        .map_or(0.0, |d| d.as_secs_f64())
}
