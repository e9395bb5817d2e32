//! `call-summary` stage: at `call-ended`, a short summary of the call
//! (problem, equipment, steps tried, article used, outcome) as a `custom`
//! event named `call-summary`, which the host stores with the call and
//! shows on the dashboard. Built from what the stages before it said
//! (transcripts, analyses, suggestions); with `llm = true` and the `llm`
//! capability granted, a language model writes it from the same facts,
//! and the rule-based summary stays the fallback.

mod summary;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use summary::{Config, Summarizer, Summary};

impl callpipe_sdk::Stage for Summarizer {
    const NAME: &'static str = "call-summary";
    const EMITS: &'static [EventKind] = &[
        EventKind::Custom,
        EventKind::Transcript,
        EventKind::Analysis,
        EventKind::Suggestion,
        EventKind::CallEnded,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[
        EventKind::Transcript,
        EventKind::Analysis,
        EventKind::Suggestion,
        EventKind::CallEnded,
    ];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        Summarizer::with_config(config, &call.language)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Summarizer::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Summarizer);
