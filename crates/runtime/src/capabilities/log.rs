//! `log`: stage messages land in the host's log, tagged with call and stage.

use super::CapabilityContext;
use super::log_budget::Verdict;
use crate::bindings::log::{Host, Level};

/// Longest message kept; a guest cannot flood the log with one call.
const MAX_MESSAGE: usize = 4096;

impl Host for CapabilityContext {
    async fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        let suppressed = match self.log_budget.take(std::time::Instant::now()) {
            Verdict::Log { suppressed } => suppressed,
            Verdict::Drop => return Ok(()),
        };
        if suppressed > 0 {
            tracing::warn!(
                call = &*self.context.call_id,
                stage = &*self.context.stage,
                "stage log over its budget: {suppressed} lines dropped"
            );
        }
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let call = &*self.context.call_id;
        let stage = &*self.context.stage;
        match level {
            Level::Trace => tracing::trace!(call, stage, "{message}"),
            Level::Debug => tracing::debug!(call, stage, "{message}"),
            Level::Info => tracing::info!(call, stage, "{message}"),
            Level::Warn => tracing::warn!(call, stage, "{message}"),
            Level::Error => tracing::error!(call, stage, "{message}"),
        }
        Ok(())
    }
}
