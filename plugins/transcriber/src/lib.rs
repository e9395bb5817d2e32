//! `transcriber` stage: turns utterances into transcripts through the host's
//! `transcriber` capability. Final utterances go out as soon as the VAD ends
//! them; long speech is flushed every `max_buffer_s`; a fragment shorter than
//! `min_buffer_s` waits `join_gap_ms` for the same speaker's next one. The
//! host's `callpipe.tick` events tell it that the gap has passed.

mod buffer;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use buffer::{Config, Stage as Transcriber};

impl callpipe_sdk::Stage for Transcriber {
    const NAME: &'static str = "transcriber";
    const EMITS: &'static [EventKind] = &[
        EventKind::Transcript,
        EventKind::Utterance,
        EventKind::SpeechStarted,
        EventKind::Custom,
        EventKind::CallEnded,
    ];
    const DEFAULT_ON: &'static [EventKind] = &[
        EventKind::Utterance,
        EventKind::SpeechStarted,
        EventKind::Custom,
        EventKind::CallEnded,
    ];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> {
        Transcriber::with_config(config)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Ok(Transcriber::handle(
            self,
            event,
            &mut callpipe_sdk::host::Wasm,
        ))
    }
}

callpipe_sdk::export_stage!(Transcriber);
