//! `translator` stage: each technician line in another language than the
//! agent's is translated by the language model, for the dashboard, as a
//! `custom` event named `line-translation` that the host keeps with the
//! line. A line passes on at once, before any model call; it is translated
//! when the next event reaches the stage (the host's clock ticks every
//! 250 ms of a call, and the chat path sends a marker after each message).
//! While the model translates (at most `llm_timeout_ms`, one line per
//! event by default), the events behind it in the call wait, as they wait
//! for the transcriber or the solutions stage's model. Lines whose
//! language is not known yet (before detection settles) are not
//! translated. Without the `llm` capability, or when the model fails, the
//! line stays untranslated: nothing else depends on it.

mod translate;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use translate::{Config, EVENT, Translator};

impl callpipe_sdk::Stage for Translator {
    const NAME: &'static str = "translator";
    const EMITS: &'static [EventKind] = &[
        EventKind::Custom,
        EventKind::Transcript,
        EventKind::CallEnded,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[
        EventKind::Transcript,
        EventKind::Custom,
        EventKind::CallEnded,
    ];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> {
        Translator::with_config(config)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Translator::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Translator);
