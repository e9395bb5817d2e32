//! Test-only stage that imports the `knowledge` capability, so a pipeline
//! that does not grant it must refuse to load it.

wit_bindgen::generate!({ world: "knowledge-stage", path: "../../../wit" });

use callpipe::stage::knowledge::{SearchRequest, search};
use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "ungranted".into(),
            version: "0.0.0".into(),
            emits: vec![],
            default_on: vec![EventKind::Transcript],
        }
    }

    fn init(_config_json: String, _call: CallInfo) -> Result<(), StageError> {
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        if let Event::Transcript(t) = &event {
            let request = SearchRequest {
                query: t.text.clone(),
                limit: 1,
                language: None,
                equipment: vec![],
            };
            search(&request).map_err(|e| StageError::Capability(format!("{e:?}")))?;
        }
        Ok(vec![event])
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
