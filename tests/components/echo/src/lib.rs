//! Test-only stage that plays the caller's own audio back to them: each
//! inbound `audio` frame is passed on and also returned, re-encoded to 8 kHz
//! mu-law, as outbound `encoded-audio`, which the host sends to Twilio on a
//! bidirectional stream.

wit_bindgen::generate!({ world: "audio-stage", path: "../../../wit" });

use callpipe::stage::types::{
    CallInfo, Codec, Descriptor, EncodedAudio, Event, EventKind, StageError, Track,
};
use callpipe_dsp::{Downsampler2x, g711};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

thread_local! {
    static DOWN: RefCell<(Downsampler2x, u64)> = RefCell::new((Downsampler2x::new(), 0));
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "echo".into(),
            version: "0.0.0".into(),
            emits: vec![EventKind::Audio, EventKind::EncodedAudio],
            default_on: vec![EventKind::Audio],
        }
    }

    fn init(_config_json: String, _call: CallInfo) -> Result<(), StageError> {
        DOWN.with(|d| *d.borrow_mut() = (Downsampler2x::new(), 0));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        let Event::Audio(a) = &event else {
            return Ok(vec![event]);
        };
        if a.track != Track::Inbound || a.rate != 16000 {
            return Ok(vec![event]);
        }
        let back = DOWN.with(|d| {
            let (down, seq) = &mut *d.borrow_mut();
            let mut narrow = Vec::with_capacity(a.samples.len() / 2);
            down.process_into(&a.samples, &mut narrow);
            *seq += 1;
            EncodedAudio {
                codec: Codec::Mulaw,
                rate: 8000,
                track: Track::Outbound,
                seq: *seq,
                timestamp_ms: a.timestamp_ms,
                bytes: narrow.iter().map(|&s| g711::encode(s)).collect(),
            }
        });
        Ok(vec![event, Event::EncodedAudio(back)])
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
