//! Host implementations of the WIT capability interfaces, one file each,
//! listed in `factor::Factors::builtin`. A stage reaches one only if its
//! pipeline grants it (see `pipeline::grants`).

pub mod call_language;
pub mod factor;
pub mod knowledge;
pub mod llm;
pub mod log;
pub mod log_budget;
pub mod openai_transcriber;
pub mod provenance;
pub mod setup;
pub mod speech;
pub mod speech_to_text;
pub mod transcriber;
pub mod whisper_cpp;

use crate::bindings::types::{self, CapabilityError};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

pub use factor::{Factor, Factors, Setup};

impl<T: Send + 'static> Factors<T> {
    /// The capabilities callpipe ships, in the order their sections are
    /// built: one line each.
    pub fn builtin() -> Self {
        Self::none()
            .with(transcriber::TranscriberFactor)
            .with(knowledge::KnowledgeFactor)
            .with(speech::SpeechFactor)
            .with(llm::LlmFactor)
    }
}

/// The backends a pipeline configured, by type (each capability's factor
/// puts its own in); shared by all the pipeline's stage instances.
#[derive(Default)]
pub struct CapabilitySet {
    backends: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl CapabilitySet {
    /// The backend of type `B`, if its section was configured.
    pub fn get<B: Any + Send + Sync>(&self) -> Option<Arc<B>> {
        let backend = self.backends.get(&TypeId::of::<B>())?.clone();
        backend.downcast::<B>().ok()
    }

    pub fn insert<B: Any + Send + Sync>(&mut self, backend: Arc<B>) {
        self.backends.insert(TypeId::of::<B>(), backend);
    }

    /// The set with one more backend (tests and benches build sets by hand).
    pub fn with<B: Any + Send + Sync>(mut self, backend: Arc<B>) -> Self {
        self.insert(backend);
        self
    }
}

/// Who a stage instance works for; attached to every log line it causes.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub call_id: Arc<str>,
    pub stage: Arc<str>,
    /// The call's language as the call started (`call-info.language`).
    pub language: Arc<str>,
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
    /// The call's language, when the transcriber detects it.
    pub language: call_language::CallLanguage,
    /// What the model answered during the event in progress (the host
    /// marks what the stage makes of it: see `provenance`).
    pub model_replies: provenance::ModelReplies,
}

// The `types` interface has no functions; its host trait is empty.
impl types::Host for CapabilityContext {}

/// A BCP 47 language tag as stages send it (`fr`, `pt-BR`): the shape the
/// speech and transcriber capabilities accept before a backend (or a
/// command line) sees it.
pub fn valid_tag(tag: &str) -> bool {
    let mut parts = tag.split(['-', '_']);
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

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
