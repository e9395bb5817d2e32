//! The host's numbers beside the runtime's (every `crate::metrics::...`
//! path reads both): media-stream problems, calls refused or failed to
//! start, and the store's writer. /metrics renders them all
//! (`web/prometheus.rs`).

pub use callpipe_runtime::metrics::*;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Media-stream (WebSocket) problems, by kind: refused at capacity, socket
/// errors, streams we closed, and skipped messages by reason. Counted once
/// per stream, when it ends, never per frame.
pub struct WebSocketMetrics {
    kinds: Mutex<Vec<(String, u64)>>,
}

impl WebSocketMetrics {
    const fn new() -> Self {
        Self {
            kinds: Mutex::new(Vec::new()),
        }
    }

    pub fn add(&self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, c)) => *c += n,
            None => kinds.push((kind.to_string(), n)),
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub static WEBSOCKET: WebSocketMetrics = WebSocketMetrics::new();

/// Calls refused at capacity, by where they arrived (`voice`, `stream`,
/// `chat`).
pub static CALLS_REFUSED: WebSocketMetrics = WebSocketMetrics::new();

/// Calls admitted whose pipeline could not start (a stage failed to
/// instantiate or rejected the call in `init`), by path (`stream`, `chat`).
pub static CALLS_START_FAILED: WebSocketMetrics = WebSocketMetrics::new();

/// The store's writer: what waits for the database, and what it cost.
pub struct StoreWriterMetrics {
    /// Writes queued and not yet stored (a gauge).
    pub queued: AtomicU64,
    /// Writes refused because the queue was full (lost to the store; the
    /// live view had them).
    pub refused: AtomicU64,
    /// Tries that failed for a reason that may pass, and were retried.
    pub retries: AtomicU64,
    /// Writes given up on (a permanent error, or retried past the limit).
    pub failed: AtomicU64,
    /// Calls whose missing row was created again before a write.
    pub repaired: AtomicU64,
}

pub static STORE_WRITER: StoreWriterMetrics = StoreWriterMetrics {
    queued: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    repaired: AtomicU64::new(0),
};
