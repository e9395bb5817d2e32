//! The host as a stage's logic sees it: one seam for every capability
//! (search, transcribe, complete, log). Inside callpipe, [`Wasm`] calls
//! the host's imports; a stage's own tests pass
//! [`crate::testing::FakeHost`] instead, so the stage's rules run natively
//! with scripted answers and every request recorded.
//!
//! Take the host as a generic `&mut H` (`H: Host + ?Sized`), never as
//! `&mut dyn Host`: a `dyn Host` made from [`Wasm`] has a vtable naming
//! every capability, so the component would import them all and the host
//! would refuse it for capabilities its pipeline does not grant. With a
//! generic, only the capabilities the stage calls are linked in.

use crate::types::CapabilityError;
use crate::{knowledge, llm, log, transcriber};

/// What a stage may ask of the host. Each call needs the capability granted
/// in the pipeline; an ungranted one gets the component refused at load.
pub trait Host {
    /// Knowledge-base search (granted `knowledge`).
    fn search(&mut self, request: &knowledge::SearchRequest)
    -> Result<Vec<knowledge::Hit>, String>;

    /// Speech to text (granted `transcriber`).
    fn transcribe(
        &mut self,
        request: &transcriber::TranscribeRequest,
    ) -> Result<transcriber::Transcription, String>;

    /// A language-model completion (granted `llm`); every stage keeps a
    /// path that needs none.
    fn complete(
        &mut self,
        request: &llm::CompletionRequest,
    ) -> Result<llm::Completion, llm::LlmError>;

    /// A line in the host's log, tagged with call and stage.
    fn log(&mut self, level: log::Level, message: &str);

    fn warn(&mut self, message: &str) {
        self.log(log::Level::Warn, message);
    }
}

/// The real host: the component's imports. Outside WebAssembly (a
/// stage's unit tests that did not pass a fake) every capability answers
/// that there is no host, and logs go to stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wasm;

impl Host for Wasm {
    fn search(
        &mut self,
        request: &knowledge::SearchRequest,
    ) -> Result<Vec<knowledge::Hit>, String> {
        crate::capability::search(request)
    }

    fn transcribe(
        &mut self,
        request: &transcriber::TranscribeRequest,
    ) -> Result<transcriber::Transcription, String> {
        crate::capability::transcribe(request)
    }

    fn complete(
        &mut self,
        request: &llm::CompletionRequest,
    ) -> Result<llm::Completion, llm::LlmError> {
        crate::capability::complete(request)
    }

    fn log(&mut self, level: log::Level, message: &str) {
        crate::log(level, message);
    }
}

/// Asks the model and keeps its answer only if `accept` takes it; on any
/// failure logs why (naming `what` the model was asked for) and returns
/// `None`, so the stage uses its own wording: the one way every stage asks
/// a model and falls back.
pub fn ask_model<H: Host + ?Sized, T>(
    host: &mut H,
    request: &llm::CompletionRequest,
    what: &str,
    accept: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match host.complete(request) {
        Ok(c) => match accept(&c.text) {
            Ok(t) => Some(t),
            Err(why) => {
                host.warn(&format!(
                    "the model's {what} was not used ({why}); the stage's own is used"
                ));
                None
            }
        },
        Err(e) => {
            host.warn(&format!(
                "no {what} from the model ({}); the stage's own is used",
                crate::capability::describe_llm(&e)
            ));
            None
        }
    }
}

/// A capability error as one line (for a stage's own messages).
pub fn describe(e: &CapabilityError) -> String {
    crate::capability::describe(e)
}
