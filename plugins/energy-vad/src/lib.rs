//! `energy-vad` stage: RMS voice activity detection on normalised samples,
//! with minimum speech duration, hangover, pre-roll and a maximum utterance
//! length. Consumes `audio`, emits `speech-started` and `utterance`.

mod vad;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use vad::{Config, Vad};

impl callpipe_sdk::Stage for Vad {
    const NAME: &'static str = "energy-vad";
    const EMITS: &'static [EventKind] = &[
        EventKind::SpeechStarted,
        EventKind::Utterance,
        EventKind::CallEnded,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Audio, EventKind::CallEnded];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> {
        Vad::new(config)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Vad::handle(self, event))
    }
}

callpipe_sdk::export_stage!(Vad);
