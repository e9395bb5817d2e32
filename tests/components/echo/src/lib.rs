//! Test-only stage that plays the caller's own audio back to them: each
//! inbound `audio` frame is passed on and also returned, re-encoded to 8 kHz
//! mu-law, as outbound `encoded-audio`, which the host sends to Twilio on a
//! bidirectional stream.

use callpipe_dsp::{Downsampler2x, g711};
use callpipe_sdk::types::{CallInfo, Codec, EncodedAudio, Event, EventKind, StageError, Track};

pub struct Echo {
    down: Downsampler2x,
    seq: u64,
}

impl callpipe_sdk::Stage for Echo {
    const NAME: &'static str = "echo";
    const EMITS: &'static [EventKind] = &[EventKind::Audio, EventKind::EncodedAudio];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Audio];
    type Config = serde_json::Value;

    fn new(_config: serde_json::Value, _call: &CallInfo) -> Result<Self, StageError> {
        Ok(Echo {
            down: Downsampler2x::new(),
            seq: 0,
        })
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        let Event::Audio(a) = &event else {
            return Ok(vec![event]);
        };
        if a.track != Track::Inbound || (a.rate != 16000 && a.rate != 8000) {
            return Ok(vec![event]);
        }
        // Back at the telephone rate, whichever rate the codec decoded to.
        let mut narrow = Vec::with_capacity(a.samples.len());
        if a.rate == 16000 {
            self.down.process_into(&a.samples, &mut narrow);
        } else {
            narrow.extend_from_slice(&a.samples);
        }
        self.seq += 1;
        let back = EncodedAudio {
            codec: Codec::Mulaw,
            rate: 8000,
            track: Track::Outbound,
            seq: self.seq,
            timestamp_ms: a.timestamp_ms,
            bytes: narrow.iter().map(|&s| g711::encode(s)).collect(),
        };
        Ok(vec![event, Event::EncodedAudio(back)])
    }
}

callpipe_sdk::export_stage!(Echo);
