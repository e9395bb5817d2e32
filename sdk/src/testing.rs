//! For a stage's own tests, natively: a fake host that answers from a
//! script and records what it was asked, and a call to start a stage with.
//!
//! ```ignore
//! let mut host = FakeHost::default().with_hits(vec![hit]).with_completion("Depuis quand ?");
//! let out = stage.handle_with(event, &mut host);
//! assert_eq!(host.searches.len(), 1);
//! ```

use crate::host::Host;
use crate::types::CallInfo;
use crate::{knowledge, llm, log, transcriber};
use std::collections::VecDeque;

/// A call as the host would hand it to `init`, in `language`.
pub fn call_info(language: &str) -> CallInfo {
    crate::sample_call(language)
}

/// A transcriber that answers from the request itself.
pub type Transcribe =
    Box<dyn FnMut(&transcriber::TranscribeRequest) -> Result<transcriber::Transcription, String>>;

/// Answers each capability from its queue, in order; an empty queue
/// answers "nothing found" for a search, the `transcribing` function (if
/// any) for speech, and "not configured" otherwise. Every request and log
/// line is kept for the test to read.
#[derive(Default)]
pub struct FakeHost {
    pub hits: VecDeque<Result<Vec<knowledge::Hit>, String>>,
    pub completions: VecDeque<Result<String, llm::LlmError>>,
    pub transcriptions: VecDeque<Result<transcriber::Transcription, String>>,
    pub searches: Vec<knowledge::SearchRequest>,
    pub prompts: Vec<llm::CompletionRequest>,
    pub transcribed: Vec<transcriber::TranscribeRequest>,
    pub logs: Vec<(log::Level, String)>,
    /// Answers a transcription when the queue is empty.
    pub transcribing: Option<Transcribe>,
}

impl std::fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHost")
            .field("searches", &self.searches.len())
            .field("prompts", &self.prompts.len())
            .field("transcribed", &self.transcribed.len())
            .field("logs", &self.logs)
            .finish()
    }
}

impl FakeHost {
    pub fn with_hits(mut self, hits: Vec<knowledge::Hit>) -> Self {
        self.hits.push_back(Ok(hits));
        self
    }

    pub fn with_search_error(mut self, error: &str) -> Self {
        self.hits.push_back(Err(error.into()));
        self
    }

    pub fn with_completion(mut self, text: &str) -> Self {
        self.completions.push_back(Ok(text.into()));
        self
    }

    pub fn with_llm_error(mut self, error: llm::LlmError) -> Self {
        self.completions.push_back(Err(error));
        self
    }

    pub fn with_transcription(mut self, t: transcriber::Transcription) -> Self {
        self.transcriptions.push_back(Ok(t));
        self
    }

    /// Transcribes every request with `f` (once the queue is empty).
    pub fn transcribing(
        mut self,
        f: impl FnMut(&transcriber::TranscribeRequest) -> Result<transcriber::Transcription, String>
        + 'static,
    ) -> Self {
        self.transcribing = Some(Box::new(f));
        self
    }

    /// Warnings logged so far.
    pub fn warnings(&self) -> usize {
        self.logs
            .iter()
            .filter(|(l, _)| matches!(l, log::Level::Warn))
            .count()
    }
}

impl Host for FakeHost {
    fn search(
        &mut self,
        request: &knowledge::SearchRequest,
    ) -> Result<Vec<knowledge::Hit>, String> {
        self.searches.push(request.clone());
        self.hits.pop_front().unwrap_or_else(|| Ok(Vec::new()))
    }

    fn transcribe(
        &mut self,
        request: &transcriber::TranscribeRequest,
    ) -> Result<transcriber::Transcription, String> {
        self.transcribed.push(request.clone());
        if let Some(t) = self.transcriptions.pop_front() {
            return t;
        }
        match &mut self.transcribing {
            Some(f) => f(request),
            None => Err("not configured: no transcription scripted".into()),
        }
    }

    fn complete(
        &mut self,
        request: &llm::CompletionRequest,
    ) -> Result<llm::Completion, llm::LlmError> {
        self.prompts.push(request.clone());
        match self.completions.pop_front() {
            Some(Ok(text)) => Ok(llm::Completion {
                text,
                prompt_tokens: 1,
                completion_tokens: 1,
            }),
            Some(Err(e)) => Err(e),
            None => Err(llm::LlmError::NotConfigured(
                "no completion scripted".into(),
            )),
        }
    }

    fn log(&mut self, level: log::Level, message: &str) {
        self.logs.push((level, message.into()));
    }
}
