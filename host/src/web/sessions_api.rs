//! `/api/sessions`: the live view of sessions (status history, segments per
//! speaker).

use super::{ApiError, AppState};
use crate::sessions::Session;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

fn view(s: &Session, with_transcript: bool) -> Value {
    let mut v = json!({
        "session_id": s.session_id,
        "call_sid": s.call_sid,
        "technician_id": s.technician_id,
        "technician_name": s.technician_name,
        "phone_number": s.phone_number,
        "status": s.status,
        "status_history": s.history,
        "streaming": s.streaming,
        "duration": s.duration_secs(),
        "total_segments": s.total_segments,
        "speakers": s.speakers,
    });
    // The list stays small; one session's view carries what was said and
    // the end-of-call statistics.
    if with_transcript {
        let technician_segments: u64 = s
            .speakers
            .values()
            .filter(|x| x.speaker_role == "technician")
            .map(|x| x.segment_count)
            .sum();
        let solutions = s
            .suggestions
            .iter()
            .filter(|x| x.kind == "knowledge_base")
            .count();
        v["statistics"] = json!({
            "duration": s.duration_secs(),
            "segments": s.total_segments,
            "technician_segments": technician_segments,
            "solutions_provided": solutions,
            "questions_asked": s.suggestions.len() - solutions,
        });
        v["transcript"] = json!(s.transcript);
        v["suggestions"] = json!(s.suggestions);
    }
    v
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let mut all = state.sessions.all();
    all.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    Json(json!({ "sessions": all.iter().map(|s| view(s, false)).collect::<Vec<_>>() }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .sessions
        .get(&id)
        .map(|s| Json(view(&s, true)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no session `{id}`")))
}
