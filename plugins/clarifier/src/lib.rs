//! `clarifier` stage: when the `analysis` says the problem is not understood
//! yet, asks the technician one question, in their language, about the most
//! useful missing slot (which equipment, what symptom, since when, what was
//! tried). Never asks the same question twice in a call, and backs off after
//! asking: no new question until the technician has said something new or
//! `backoff_ms` of stream time has passed. The question goes to the
//! dashboard as a `clarification-question` suggestion and, as a `say`, to
//! the technician's ear on a bidirectional call. With `llm = true` (and the
//! `llm` capability granted) a language model words the question from what
//! the technician said; the template stays the fallback.

mod builtin;
mod clarifier;
mod wording;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use clarifier::{Clarifier, Config};

impl callpipe_sdk::Stage for Clarifier {
    const NAME: &'static str = "clarifier";
    const EMITS: &'static [EventKind] = &[
        EventKind::Suggestion,
        EventKind::Say,
        EventKind::Analysis,
        EventKind::Transcript,
        EventKind::Custom,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[
        EventKind::Transcript,
        EventKind::Analysis,
        EventKind::Custom,
    ];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        Clarifier::with_config(config, &call.language)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Clarifier::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Clarifier);
