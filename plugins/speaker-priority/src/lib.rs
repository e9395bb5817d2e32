//! `speaker-priority` stage: gives each utterance a speaker and a role (from
//! its track and the speakers registered in the call info), drops utterances
//! too short to matter and unknown speakers, and lets the technician go first:
//! an agent utterance that ends while the technician is talking waits until
//! the technician's utterance has been passed on.

mod priority;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use priority::{Config, Priority};

impl callpipe_sdk::Stage for Priority {
    const NAME: &'static str = "speaker-priority";
    const EMITS: &'static [EventKind] = &[
        EventKind::Utterance,
        EventKind::SpeechStarted,
        EventKind::CallEnded,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[
        EventKind::Utterance,
        EventKind::SpeechStarted,
        EventKind::CallEnded,
    ];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        Priority::with_config(config, call.clone())
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Priority::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Priority);
