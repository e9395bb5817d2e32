//! What the benches share: paths and how percentiles are printed.

// Each bench is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Where `callpipe models` put the models (`.ci/run` sets it).
pub fn data_dir() -> PathBuf {
    std::env::var_os("CALLPIPE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("data"))
}

/// One line: n, p50, p90, p95, p99 and max.
pub fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what:<52} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        pct(0.5),
        pct(0.9),
        pct(0.95),
        pct(0.99),
        pct(1.0)
    );
}

/// CPU time (user + system) this process has used, from /proc (Linux).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}
