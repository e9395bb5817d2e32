//! `context-analyzer` stage: accumulates the technician's transcripts for the
//! call, finds the language, equipment entities and issue phrases (from a
//! lexicon in config, tolerant of speech-recognition spellings), applies the
//! original system's sufficiency rules, and emits an `analysis` after each
//! technician transcript. Agent lines are context, never query text.

wit_bindgen::generate!({ world: "audio-stage", path: "../../wit" });

mod analyzer;
mod lexicon;
mod text;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use analyzer::{Analyzer, Config};

thread_local! {
    static STATE: RefCell<Option<Analyzer>> = const { RefCell::new(None) };
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "context-analyzer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![EventKind::Analysis, EventKind::Transcript],
            default_on: vec![EventKind::Transcript],
        }
    }

    fn init(config_json: String, call: CallInfo) -> Result<(), StageError> {
        let stage = Analyzer::from_json(&config_json, &call.language)?;
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
