//! How many calls this process can hold with this pipeline, known before
//! the first call rather than discovered by the one that fails.
//!
//! What runs out first on a Linux host is usually not memory: each stage
//! instance's linear memory, tables and fiber stack are separate memory
//! mappings (their guard regions split them further), and a process may
//! hold only `vm.max_map_count` of them (65,530 by default). Past it, an
//! instantiation fails with ENOMEM and the allocator may abort the process.
//! So the cost of one call is measured here, by starting sample calls and
//! counting the process's mappings, and set against the limits.

use super::call::Call;
use super::loader::{LoadedPipeline, sample_call};
use std::sync::Arc;

/// Mappings kept free for everything else the process does (threads'
/// stacks, the store, the knowledge base, sockets' buffers, malloc arenas).
const MAPPINGS_HEADROOM: u64 = 8_192;
/// Sample calls measured (their average is the cost of one).
const SAMPLE_CALLS: usize = 4;

/// What one call costs and how many fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Calls that fit: the smallest of the limits below.
    pub calls: usize,
    /// What sets `calls`: `max-map-count`, `instance-pool` or `configured`.
    pub limited_by: &'static str,
    /// Memory mappings one call adds (measured; 0 where not measurable).
    pub mappings_per_call: u64,
    /// The process's mapping limit (`vm.max_map_count`), when known.
    pub max_map_count: Option<u64>,
    /// Stage instances one call holds.
    pub instances_per_call: usize,
}

impl Capacity {
    /// A short sentence for logs and errors.
    pub fn describe(&self) -> String {
        match self.limited_by {
            "max-map-count" => format!(
                "{} calls: each adds ~{} memory mappings and vm.max_map_count is {} \
                 (raise it with `sysctl -w vm.max_map_count=1048576`)",
                self.calls,
                self.mappings_per_call,
                self.max_map_count.unwrap_or_default()
            ),
            "instance-pool" => format!(
                "{} calls: each holds {} stage instances and the instance pool has room for \
                 that many (its size follows --max-calls within vm.max_map_count; \
                 `sysctl -w vm.max_map_count=1048576` allows a larger one)",
                self.calls, self.instances_per_call
            ),
            _ => format!("{} calls (as configured)", self.calls),
        }
    }
}

/// Mappings one slot of the instance pool holds from the start (its fiber
/// stack and guard; measured: a pool of 24,032 slots held ~48,000).
const MAPPINGS_PER_POOL_SLOT: u64 = 2;
/// Mappings a live call adds, before it is measured (the default pipeline's
/// 7 stages measured 21; the rest is margin).
const MAPPINGS_PER_CALL_GUESS: u64 = 32;

/// How many calls to size the instance pool for, before any is measured:
/// `configured`, unless the pool's own mappings and the calls' would not
/// fit under `vm.max_map_count` together (a pool sized for more calls than
/// fit only takes mappings the calls need).
pub fn pool_calls(configured: usize, slots_per_call: u64, max_map_count: Option<u64>) -> usize {
    let Some(max) = max_map_count else {
        return configured;
    };
    let per_call = slots_per_call * MAPPINGS_PER_POOL_SLOT + MAPPINGS_PER_CALL_GUESS;
    let fit = (max.saturating_sub(MAPPINGS_HEADROOM) / per_call.max(1)) as usize;
    configured.min(fit.max(1))
}

/// This process's `vm.max_map_count` (Linux).
pub fn max_map_count() -> Option<u64> {
    read_u64("/proc/sys/vm/max_map_count")
}

/// The limits, pure: `configured` calls wanted, `pool` instance slots,
/// `per_call` instances and `mappings` mappings per call, `free_mappings`
/// left under the process's limit.
pub fn fit(
    configured: usize,
    pool: usize,
    per_call: usize,
    mappings: u64,
    free_mappings: Option<u64>,
    max_map_count: Option<u64>,
) -> Capacity {
    let mut capacity = Capacity {
        calls: configured,
        limited_by: "configured",
        mappings_per_call: mappings,
        max_map_count,
        instances_per_call: per_call,
    };
    let by_pool = pool / per_call.max(1);
    if by_pool < capacity.calls {
        capacity.calls = by_pool;
        capacity.limited_by = "instance-pool";
    }
    if let Some(free) = free_mappings
        && mappings > 0
    {
        let by_maps = (free.saturating_sub(MAPPINGS_HEADROOM) / mappings) as usize;
        if by_maps < capacity.calls {
            capacity.calls = by_maps;
            capacity.limited_by = "max-map-count";
        }
    }
    capacity
}

/// Measures one call of `pipeline` and fits `configured` calls into what
/// the process can hold. On a reload, calls in progress hold mappings that
/// they give back when they end: counted as free, at the cost per instance
/// `previous` measured.
pub async fn measure(
    pipeline: &Arc<LoadedPipeline>,
    configured: usize,
    previous: Option<&Capacity>,
) -> Capacity {
    let per_call = pipeline.stages.len();
    let pool = pipeline.runtime.config().max_instances as usize;
    let live = super::instance::live_instances() as u64;
    let before = mappings();
    let mut calls = Vec::new();
    for n in 0..SAMPLE_CALLS {
        let mut info = sample_call(&pipeline.language);
        info.session_id = format!("capacity-{n}");
        info.call_sid = String::new();
        match Call::start(pipeline.clone(), info).await {
            Ok((call, output)) => calls.push((call, output)),
            Err(e) => {
                tracing::warn!("measuring a call's cost: a sample call failed to start: {e}");
                break;
            }
        }
    }
    let after = mappings();
    let started = calls.len() as u64;
    for (call, _output) in calls {
        call.finish().await;
    }
    let per_call_mappings = match (before, after) {
        (Some(b), Some(a)) if started > 0 => a.saturating_sub(b).div_ceil(started),
        _ => 0,
    };
    let per_instance = match previous {
        Some(p) if p.instances_per_call > 0 => p.mappings_per_call / p.instances_per_call as u64,
        _ => per_call_mappings / per_call.max(1) as u64,
    };
    let max_map_count = max_map_count();
    let free = max_map_count.zip(before).map(|(max, now)| {
        let held_by_calls = live.saturating_mul(per_instance).min(now);
        max.saturating_sub(now - held_by_calls)
    });
    fit(
        configured,
        pool,
        per_call,
        per_call_mappings,
        free,
        max_map_count,
    )
}

/// The process's memory mappings now (Linux), one per line of its map.
fn mappings() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_wins_and_is_named() {
        // Plenty of everything: as configured.
        let c = fit(100, 10_000, 7, 60, Some(1_000_000), Some(1_048_576));
        assert_eq!((c.calls, c.limited_by), (100, "configured"));
        // The instance pool: 700 slots / 7 per call.
        let c = fit(1000, 700, 7, 60, Some(1_000_000), Some(1_048_576));
        assert_eq!((c.calls, c.limited_by), (100, "instance-pool"));
        // The default vm.max_map_count: (60,000 free - headroom) / 150 per call.
        let c = fit(3000, 100_000, 7, 150, Some(60_000), Some(65_530));
        assert_eq!((c.calls, c.limited_by), (345, "max-map-count"));
        assert!(
            c.describe().contains("vm.max_map_count is 65530"),
            "{}",
            c.describe()
        );
        // The pool is sized for what fits under the mapping limit.
        assert_eq!(pool_calls(3000, 8, Some(65_530)), 1194);
        assert_eq!(pool_calls(100, 8, Some(65_530)), 100);
        assert_eq!(pool_calls(3000, 8, None), 3000);
        assert_eq!(pool_calls(3000, 8, Some(10)), 1);
        // Unknown mapping cost or limit: not limited by it.
        let c = fit(50, 10_000, 7, 0, Some(10), None);
        assert_eq!((c.calls, c.limited_by), (50, "configured"));
    }
}
