//! Test-only stage that imports the `knowledge` capability: a pipeline that
//! does not grant it must refuse to load it, and one that does can search.
//! With `{"query": "..."}` in its config it searches at `call-started` and
//! emits the hits as `custom { name: "knowledge-hits" }` (JSON).

wit_bindgen::generate!({ world: "knowledge-stage", path: "../../../wit" });

use callpipe::stage::knowledge::{SearchRequest, search};
use callpipe::stage::types::{CallInfo, Custom, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

thread_local! {
    static QUERY: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Stage;

fn hits(query: &str, limit: u32) -> Result<Event, StageError> {
    let request = SearchRequest {
        query: query.to_string(),
        limit,
        language: None,
        equipment: vec![],
    };
    let json = match search(&request) {
        Ok(hits) => serde_json::json!({
            "ok": hits.iter().map(|h| serde_json::json!({
                "article_id": h.article_id,
                "title": h.title,
                "language": h.language,
                "score": h.score,
                "has_content": !h.content.is_empty(),
            })).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    };
    Ok(Event::Custom(Custom {
        name: "knowledge-hits".into(),
        json: json.to_string(),
    }))
}

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "ungranted".into(),
            version: "0.0.0".into(),
            emits: vec![EventKind::Custom],
            default_on: vec![EventKind::Transcript],
        }
    }

    fn init(config_json: String, _call: CallInfo) -> Result<(), StageError> {
        let config: serde_json::Value =
            serde_json::from_str(&config_json).unwrap_or(serde_json::Value::Null);
        let query = config["query"].as_str().map(str::to_string);
        QUERY.with(|q| *q.borrow_mut() = query);
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        match &event {
            Event::Transcript(t) => {
                let found = hits(&t.text, 1)?;
                Ok(vec![event, found])
            }
            Event::CallStarted(_) => match QUERY.with(|q| q.borrow().clone()) {
                Some(query) => {
                    let found = hits(&query, 3)?;
                    Ok(vec![event, found])
                }
                None => Ok(vec![event]),
            },
            _ => Ok(vec![event]),
        }
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
