//! `energy-vad` stage: RMS voice activity detection on normalised samples,
//! with minimum speech duration, hangover, pre-roll and a maximum utterance
//! length. Consumes `audio`, emits `speech-started` and `utterance`.

wit_bindgen::generate!({ world: "audio-stage", path: "../../wit" });

mod vad;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use vad::{Config, Vad};

thread_local! {
    static STATE: RefCell<Option<Vad>> = const { RefCell::new(None) };
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "energy-vad".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![
                EventKind::SpeechStarted,
                EventKind::Utterance,
                EventKind::CallEnded,
            ],
            default_on: vec![EventKind::Audio, EventKind::CallEnded],
        }
    }

    fn init(config_json: String, _call: CallInfo) -> Result<(), StageError> {
        let vad = Vad::from_json(&config_json)?;
        STATE.with(|s| *s.borrow_mut() = Some(vad));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(vad) => Ok(vad.handle(event)),
            None => Err(StageError::Internal("handle called before init".into())),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
