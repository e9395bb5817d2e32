//! `speaker-priority` stage: gives each utterance a speaker and a role (from
//! its track and the speakers registered in the call info), drops utterances
//! too short to matter and unknown speakers, and lets the technician go first:
//! an agent utterance that ends while the technician is talking waits until
//! the technician's utterance has been passed on.

wit_bindgen::generate!({ world: "audio-stage", path: "../../wit" });

mod priority;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use priority::{Config, Priority};

thread_local! {
    static STATE: RefCell<Option<Priority>> = const { RefCell::new(None) };
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "speaker-priority".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![
                EventKind::Utterance,
                EventKind::SpeechStarted,
                EventKind::CallEnded,
            ],
            default_on: vec![
                EventKind::Utterance,
                EventKind::SpeechStarted,
                EventKind::CallEnded,
            ],
        }
    }

    fn init(config_json: String, call: CallInfo) -> Result<(), StageError> {
        let stage = Priority::from_json(&config_json, call)?;
        STATE.with(|s| *s.borrow_mut() = Some(stage));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(stage) => Ok(stage.handle(event)),
            None => Err(StageError::Internal("handle called before init".into())),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
