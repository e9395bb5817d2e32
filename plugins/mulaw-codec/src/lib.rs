//! `mulaw-codec` stage: G.711 mu-law <-> PCM16 with 8/16 kHz resampling.
//!
//! * `direction = "decode"` (default): `encoded-audio` (mu-law or PCM16 at
//!   8 kHz) -> `audio` at `output_rate` (8000 or 16000).
//! * `direction = "encode"`: `audio` at 8 or 16 kHz -> `encoded-audio` (mu-law,
//!   8 kHz), e.g. for speech sent back to the caller.

wit_bindgen::generate!({ world: "audio-stage", path: "../../wit" });

mod codec;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use codec::{Codec, Config, Direction};

thread_local! {
    static STATE: RefCell<Option<Codec>> = const { RefCell::new(None) };
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "mulaw-codec".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![EventKind::Audio, EventKind::EncodedAudio],
            default_on: vec![EventKind::EncodedAudio],
        }
    }

    fn init(config_json: String, _call: CallInfo) -> Result<(), StageError> {
        let codec = Codec::from_json(&config_json)?;
        STATE.with(|s| *s.borrow_mut() = Some(codec));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(codec) => codec.handle(event),
            None => Err(StageError::Internal("handle called before init".into())),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
