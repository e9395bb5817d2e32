//! Test-only stage that imports the `knowledge` capability: a pipeline that
//! does not grant it must refuse to load it, and one that does can search.
//! With `{"query": "..."}` in its config it searches at `call-started` and
//! emits the hits as `custom { name: "knowledge-hits" }` (JSON).

use callpipe_sdk::knowledge::SearchRequest;
use callpipe_sdk::types::{CallInfo, Custom, Event, EventKind, StageError};

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Config {
    query: Option<String>,
}

pub struct Ungranted {
    query: Option<String>,
}

fn hits(query: &str, limit: u32) -> Event {
    let request = SearchRequest {
        query: query.to_string(),
        limit,
        language: None,
        equipment: vec![],
    };
    let json = match callpipe_sdk::capability::search(&request) {
        Ok(hits) => serde_json::json!({
            "ok": hits.iter().map(|h| serde_json::json!({
                "article_id": h.article_id,
                "title": h.title,
                "language": h.language,
                "score": h.score,
                "has_content": !h.content.is_empty(),
            })).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    Event::Custom(Custom {
        name: "knowledge-hits".into(),
        json: json.to_string(),
    })
}

impl callpipe_sdk::Stage for Ungranted {
    const NAME: &'static str = "ungranted";
    const EMITS: &'static [EventKind] = &[EventKind::Custom];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Transcript];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> {
        Ok(Ungranted {
            query: config.query,
        })
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        match &event {
            Event::Transcript(t) => {
                let found = hits(&t.text, 1);
                Ok(vec![event, found])
            }
            Event::CallStarted(_) => match &self.query {
                Some(query) => {
                    let found = hits(query, 3);
                    Ok(vec![event, found])
                }
                None => Ok(vec![event]),
            },
            _ => Ok(vec![event]),
        }
    }
}

callpipe_sdk::export_stage!(Ungranted);
