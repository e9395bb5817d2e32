//! `context-analyzer` stage: accumulates the technician's transcripts for the
//! call, finds the language, equipment entities and issue phrases (from a
//! lexicon in config, tolerant of speech-recognition spellings), applies the
//! original system's sufficiency rules, and emits an `analysis` after each
//! technician transcript. Agent lines are context, never query text.

mod analyzer;
mod lexicon;
mod text;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use analyzer::{Analyzer, Config};

impl callpipe_sdk::Stage for Analyzer {
    const NAME: &'static str = "context-analyzer";
    const EMITS: &'static [EventKind] = &[EventKind::Analysis, EventKind::Transcript];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Transcript];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        Analyzer::with_config(config, &call.language)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Analyzer::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Analyzer);
