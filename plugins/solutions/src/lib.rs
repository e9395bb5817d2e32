//! `solutions` stage (granted `knowledge`): when the `analysis` says the
//! problem is understood, searches the knowledge base with the technician's
//! words and suggests the best article if its calibrated confidence clears
//! the floor. An article is suggested once per call, unless it comes back
//! on top after something else was shown. When the two best articles are
//! too close to call, it asks a question that tells them apart instead.
//! With the `llm` capability granted it may also search with the
//! conversation rewritten into one query (`llm_rewrite`) and add an answer
//! card written from the shown article(s) only, citing them (`llm_answer`).

mod answer;
mod solutions;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use solutions::{Config, Solutions};

impl callpipe_sdk::Stage for Solutions {
    const NAME: &'static str = "solutions";
    const EMITS: &'static [EventKind] =
        &[EventKind::Suggestion, EventKind::Say, EventKind::Analysis];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Analysis];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        Solutions::with_config(config, &call.language)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Solutions::handle(
            self,
            event,
            &mut callpipe_sdk::host::Wasm,
        ))
    }
}

callpipe_sdk::export_stage!(Solutions);
