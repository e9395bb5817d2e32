//! Host implementations of the WIT capability interfaces. A stage reaches
//! one only if its pipeline grants it (see `pipeline::grants`).

pub mod knowledge;
pub mod llm;
pub mod log;
pub mod log_budget;
pub mod openai_transcriber;
pub mod setup;
pub mod speech;
pub mod speech_to_text;
pub mod transcriber;
pub mod whisper_cpp;

use crate::bindings::types::{self, CapabilityError};
use std::sync::Arc;

/// The backends a pipeline configured; shared by all its stage instances.
#[derive(Default)]
pub struct CapabilitySet {
    pub transcriber: Option<std::sync::Arc<transcriber::TranscriberService>>,
    pub knowledge: Option<std::sync::Arc<crate::knowledge::KnowledgeBase>>,
    pub speech: Option<std::sync::Arc<speech::SpeechService>>,
    pub llm: Option<std::sync::Arc<llm::LlmService>>,
}

/// Who a stage instance works for; attached to every log line it causes.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub call_id: Arc<str>,
    pub stage: Arc<str>,
}

/// What a stage's capability calls see: the backends its pipeline
/// configured and who is calling. The stage's store holds one, and the
/// linker hands it (not the whole store state) to the host functions, as
/// Spin's factors and wasmtime-wasi do.
pub struct CapabilityContext {
    pub set: Arc<CapabilitySet>,
    pub context: StageContext,
    /// How much more this stage instance may log (the `log` capability).
    pub log_budget: log_budget::LogBudget,
}

// The `types` interface has no functions; its host trait is empty.
impl types::Host for CapabilityContext {}

/// The error a capability returns while the pipeline has no backend for it.
pub(crate) fn not_configured(capability: &str) -> CapabilityError {
    CapabilityError::NotConfigured(format!(
        "the `{capability}` capability has no backend configured in this host \
         (pipeline section [capabilities.{capability}])"
    ))
}

/// Counts a capability call, with how long the stage waited, for /metrics.
pub(crate) fn observe<T>(
    metrics: &crate::metrics::CapabilityMetrics,
    started: std::time::Instant,
    result: &Result<T, CapabilityError>,
) {
    use crate::metrics::Outcome;
    let outcome = match result {
        Ok(_) => Outcome::Ok,
        Err(CapabilityError::Timeout(_)) => Outcome::Timeout,
        Err(CapabilityError::Unavailable(_) | CapabilityError::NotConfigured(_)) => {
            Outcome::Unavailable
        }
        Err(CapabilityError::InvalidRequest(_)) => Outcome::Invalid,
        Err(CapabilityError::Other(_)) => Outcome::Error,
    };
    metrics.record(started.elapsed(), outcome);
}
