//! What a stage's `Store` holds: its sandboxed WASI context, limits, the
//! call and stage it serves (for logs) and its per-event deadline.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use crate::capabilities::StageContext;
use crate::capabilities::{CapabilityContext, CapabilitySet};

pub struct StageState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    pub context: StageContext,
    /// Epoch ticks the event in progress may still run for, charged on each
    /// tick during which the guest itself ran (see `instance::new_store`).
    pub ticks_left: u64,
    /// Last lines the guest wrote to stderr (a panic message, typically).
    pub stderr: GuestOutput,
    /// What the capability host functions see (linked through it).
    pub capabilities: CapabilityContext,
}

impl StageState {
    pub fn new(
        context: StageContext,
        limits: StoreLimits,
        capabilities: Arc<CapabilitySet>,
    ) -> Self {
        let stderr = GuestOutput::new(context.clone());
        let capability_context = context.clone();
        // No files, no network, no environment: a stage sees only what the
        // host hands it through events and granted capabilities.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            context,
            ticks_left: 0,
            stderr,
            capabilities: CapabilityContext {
                set: capabilities,
                context: capability_context,
                log_budget: Default::default(),
                language: Default::default(),
                model_replies: Default::default(),
            },
        }
    }
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const TAIL_BYTES: usize = 2048;

/// A guest's stdout/stderr: whole lines go to the host log, tagged with the
/// call and stage; the tail is kept to explain a crash.
#[derive(Clone)]
pub struct GuestOutput {
    context: StageContext,
    inner: Arc<Mutex<OutputBuffer>>,
}

#[derive(Default)]
struct OutputBuffer {
    line: Vec<u8>,
    tail: Vec<u8>,
    /// Lines that reach the host log, per window.
    budget: crate::capabilities::log_budget::LogBudget,
}

impl GuestOutput {
    fn new(context: StageContext) -> Self {
        Self {
            context,
            inner: Arc::default(),
        }
    }

    /// The last bytes written, as text.
    pub fn tail(&self) -> String {
        let buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = buf.tail.clone();
        all.extend_from_slice(&buf.line);
        String::from_utf8_lossy(&all).trim().to_string()
    }

    fn write(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut buf.line);
                use crate::capabilities::log_budget::Verdict;
                if let Verdict::Log { suppressed } = buf.budget.take(std::time::Instant::now()) {
                    if suppressed > 0 {
                        tracing::warn!(
                            call = %self.context.call_id,
                            stage = %self.context.stage,
                            "guest output over its budget: {suppressed} lines dropped"
                        );
                    }
                    tracing::info!(
                        call = %self.context.call_id,
                        stage = %self.context.stage,
                        "guest: {}",
                        String::from_utf8_lossy(&line).escape_debug()
                    );
                }
                buf.tail.extend_from_slice(&line);
                buf.tail.push(b'\n');
                let excess = buf.tail.len().saturating_sub(TAIL_BYTES);
                buf.tail.drain(..excess);
            } else if buf.line.len() < TAIL_BYTES {
                buf.line.push(b);
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
