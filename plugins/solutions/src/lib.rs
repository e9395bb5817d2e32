//! `solutions` stage (granted `knowledge`): when the `analysis` says the
//! problem is understood, searches the knowledge base with the technician's
//! words and suggests the best article if its calibrated confidence clears
//! the floor. An article is suggested once per call, unless it comes back
//! on top after something else was shown. When the two best articles are
//! too close to call, it asks a question that tells them apart instead.

wit_bindgen::generate!({ world: "knowledge-stage", path: "../../wit" });

mod solutions;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use solutions::{Config, Solutions};

thread_local! {
    static STATE: RefCell<Option<Solutions>> = const { RefCell::new(None) };
}

struct Stage;

/// The granted capability, as the stage logic sees it (tests pass their own).
struct Knowledge;

impl solutions::Search for Knowledge {
    fn search(
        &mut self,
        request: callpipe::stage::knowledge::SearchRequest,
    ) -> Result<Vec<callpipe::stage::knowledge::Hit>, String> {
        #[cfg(target_arch = "wasm32")]
        return callpipe::stage::knowledge::search(&request).map_err(|e| format!("{e:?}"));
        // Natively (unit tests) there is no host; tests use their own Search.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err("no host outside WebAssembly".into())
        }
    }

    fn warn(&mut self, message: &str) {
        #[cfg(target_arch = "wasm32")]
        callpipe::stage::log::log(callpipe::stage::log::Level::Warn, message);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = message;
    }
}

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "solutions".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![EventKind::Suggestion, EventKind::Say, EventKind::Analysis],
            default_on: vec![EventKind::Analysis],
        }
    }

    fn init(config_json: String, call: CallInfo) -> Result<(), StageError> {
        let stage = Solutions::from_json(&config_json, &call.language)?;
        STATE.with(|s| *s.borrow_mut() = Some(stage));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(stage) => Ok(stage.handle(event, &mut Knowledge)),
            None => Err(StageError::Internal("handle called before init".into())),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
