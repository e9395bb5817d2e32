//! `clarifier` stage: when the `analysis` says the problem is not understood
//! yet, asks the technician one question, in their language, about the most
//! useful missing slot (which equipment, what symptom, since when, what was
//! tried). Never asks the same question twice in a call, and backs off after
//! asking: no new question until the technician has said something new or
//! `backoff_ms` of stream time has passed. The question goes to the
//! dashboard as a `clarification-question` suggestion and, as a `say`, to
//! the technician's ear on a bidirectional call.

wit_bindgen::generate!({ world: "audio-stage", path: "../../wit" });

mod clarifier;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use clarifier::{Clarifier, Config};

thread_local! {
    static STATE: RefCell<Option<Clarifier>> = const { RefCell::new(None) };
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "clarifier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![
                EventKind::Suggestion,
                EventKind::Say,
                EventKind::Analysis,
                EventKind::Transcript,
                EventKind::Custom,
            ],
            default_on: vec![
                EventKind::Transcript,
                EventKind::Analysis,
                EventKind::Custom,
            ],
        }
    }

    fn init(config_json: String, call: CallInfo) -> Result<(), StageError> {
        let stage = Clarifier::from_json(&config_json, &call.language)?;
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
