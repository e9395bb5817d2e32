//! The seam every speech-to-text backend implements (whisper.cpp in
//! process, an OpenAI-compatible endpoint). `transcriber.rs` chooses and
//! builds one from the pipeline's `[capabilities.transcriber]`.

use std::future::Future;
use std::pin::Pin;

#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    pub text: String,
    pub language: String,
    /// 0..1: mean token probability.
    pub confidence: f32,
    /// How sure the backend is of `language` when it detected it (asked
    /// for no language); `None` when the language was given, or when the
    /// backend names a language without a probability.
    pub language_probability: Option<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriberError {
    #[error("transcriber misconfigured: {0}")]
    Config(String),
    #[error("transcriber unavailable: {0}")]
    Unavailable(String),
    #[error("transcription timed out after {0} ms")]
    Timeout(u64),
    #[error("transcription failed: {0}")]
    Failed(String),
}

/// What a backend's `transcribe` returns (the trait stays object-safe).
pub type TranscribeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Transcription, TranscriberError>> + Send + 'a>>;

/// A speech-to-text backend. Audio is 16 kHz mono, -1..1.
pub trait Transcriber: Send + Sync {
    fn summary(&self) -> String;
    fn transcribe<'a>(
        &'a self,
        audio: Vec<f32>,
        language: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'a>;
    /// Transcriptions running right now, where the backend knows (local
    /// engines): never more than its concurrency limit.
    fn running(&self) -> Option<usize> {
        None
    }
    /// Whether a request without a language is detected (the backend is
    /// set to `auto`), rather than transcribed in a configured language.
    fn detects_language(&self) -> bool {
        false
    }
    /// Detects the language, and decodes in `fallback` when the detection
    /// is unsure (a backend that can tell; others just detect). The
    /// transcription names the language detected and its probability.
    fn transcribe_detecting<'a>(
        &'a self,
        audio: Vec<f32>,
        fallback: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'a> {
        let _ = fallback;
        self.transcribe(audio, None, prompt)
    }
}
