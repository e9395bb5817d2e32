//! `mulaw-codec` stage: G.711 mu-law <-> PCM16 with 8/16 kHz resampling.
//!
//! * `direction = "decode"` (default): `encoded-audio` (mu-law or PCM16 at
//!   8 kHz) -> `audio` at `output_rate` (8000 or 16000).
//! * `direction = "encode"`: `audio` at 8 or 16 kHz -> `encoded-audio` (mu-law,
//!   8 kHz), e.g. for speech sent back to the caller.

mod codec;

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

pub use codec::{Codec, Config, Direction};

impl callpipe_sdk::Stage for Codec {
    const NAME: &'static str = "mulaw-codec";
    const EMITS: &'static [EventKind] = &[EventKind::Audio, EventKind::EncodedAudio];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::EncodedAudio];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> {
        Codec::with_config(config)
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        Codec::handle(self, event)
    }
}

callpipe_sdk::export_stage!(Codec);
