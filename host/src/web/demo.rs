//! `/demo/*`: the original dashboard's endpoints. Chat messages enter the
//! call pipeline at the transcript stage (see `crate::calls::chat`).

use super::body::parse as parse_body;
use super::{ApiError, AppState};
use crate::bindings::types::SpeakerRole;
use crate::calls::chat::{ChatError, Message};
use crate::sessions::{SuggestionRecord, TranscriptLine};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The body of `POST /demo/send-demo-transcription`, as the original.
#[derive(Deserialize)]
pub struct DemoTranscription {
    session_id: String,
    text: String,
    /// `technician` (default; the original also says `customer`) or `agent`.
    #[serde(default)]
    speaker: Option<String>,
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(default)]
    end_time: Option<f64>,
    #[serde(default)]
    confidence: Option<f32>,
    /// `fr-FR`, `en-US` or plain `fr`; default `fr-FR`.
    #[serde(default)]
    language: Option<String>,
}

/// Longest chat message accepted (a paragraph, not a document).
const MAX_TEXT: usize = 4000;

fn role(speaker: Option<&str>) -> Result<SpeakerRole, ApiError> {
    match speaker.unwrap_or("technician") {
        "technician" | "customer" | "caller" => Ok(SpeakerRole::Technician),
        // `support_agent` is the original system's name for the agent.
        "agent" | "support_agent" | "support" => Ok(SpeakerRole::Agent),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "speaker must be `technician`, `customer`, `agent` or `support_agent`, got `{other}`"
            ),
        )),
    }
}

/// Suggestions newest first, in the original's shape.
fn suggestions_view(suggestions: &[SuggestionRecord], limit: usize) -> Vec<Value> {
    suggestions
        .iter()
        .rev()
        .take(limit)
        .map(|x| {
            json!({
                "id": x.id,
                "type": x.kind,
                "title": x.title,
                "content": x.content,
                "confidence": x.confidence,
                "sources": x.sources,
                "language": x.language,
                "shown": true,
                "clicked": false,
            })
        })
        .collect()
}

pub async fn send_demo_transcription(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: DemoTranscription = parse_body(&headers, &body)?;
    let session_id = req.session_id.trim();
    if session_id.is_empty() {
        return Err(ApiError::bad_request("session_id is empty"));
    }
    if !crate::cluster::forward::valid_session_id(session_id) {
        return Err(ApiError::bad_request(super::elsewhere::INVALID_SESSION_ID));
    }
    if let Some(answer) = super::elsewhere::forwarded(
        &state,
        session_id,
        "/demo/send-demo-transcription",
        &headers,
        &body,
    )
    .await
    {
        return Ok(answer);
    }
    if state.is_draining() && !state.chats.holds(session_id).await {
        crate::metrics::CALLS_REFUSED.add("chat", 1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this host is stopping; another host takes new sessions",
        ));
    }
    if req.text.trim().is_empty() {
        return Err(ApiError::bad_request("text is empty"));
    }
    if req.text.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "text is longer than {MAX_TEXT} characters"
        )));
    }
    let language = req
        .language
        .as_deref()
        .unwrap_or("fr-FR")
        .split(['-', '_'])
        .next()
        .unwrap_or("fr")
        .to_lowercase();
    let message = Message {
        session_id: session_id.to_string(),
        role: role(req.speaker.as_deref())?,
        text: req.text.trim().to_string(),
        start_s: req.start_time,
        end_s: req.end_time,
        confidence: req.confidence.unwrap_or(0.9).clamp(0.0, 1.0),
        language,
    };
    let processed = state
        .chats
        .send(&state.pipeline(), &state.sessions, message)
        .await
        .map_err(|e| match e {
            ChatError::Full(_) => {
                crate::metrics::CALLS_REFUSED.add("chat", 1);
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            ChatError::NoEntry(_) | ChatError::Elsewhere(_) | ChatError::Ended => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    let suggestions = state
        .sessions
        .get(session_id)
        .map(|s| suggestions_view(&s.suggestions, 10))
        .unwrap_or_default();
    Ok(Json(json!({
        "processing": processed,
        "suggestions": suggestions,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct EndDemoCall {
    session_id: String,
}

pub async fn end_demo_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: EndDemoCall = parse_body(&headers, &body)?;
    if let Some(answer) = super::elsewhere::forwarded(
        &state,
        &req.session_id,
        "/demo/end-demo-call",
        &headers,
        &body,
    )
    .await
    {
        return Ok(answer);
    }
    if !state.chats.end(&req.session_id, &state.sessions).await
        && !state.sessions.contains(&req.session_id)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no session `{}`", req.session_id),
        ));
    }
    Ok(Json(json!({ "status": "success", "session_id": req.session_id })).into_response())
}

#[derive(Deserialize)]
pub struct SuggestionsQuery {
    session_id: Option<String>,
    limit: Option<usize>,
}

/// Transcriptions and suggestions of a session, newest first (the
/// dashboard polls it every 3 s).
pub async fn get_session_suggestions(
    State(state): State<AppState>,
    Query(q): Query<SuggestionsQuery>,
) -> (StatusCode, Json<Value>) {
    let Some(id) = q.session_id.filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "Missing session_id" })),
        );
    };
    if super::session_id::check(&id).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": super::session_id::INVALID })),
        );
    }
    let limit = q.limit.unwrap_or(10).clamp(1, 200);
    // Another host may run the session: then the store is the truth, not
    // a copy this host kept.
    let local = if super::elsewhere::answers_from_memory(&state, &id).await {
        state.sessions.get(&id)
    } else {
        None
    };
    let found = match local {
        Some(s) => Some((s.transcript, s.suggestions)),
        None => match stored(&state, &id).await {
            Some(found) => Some(found),
            // Not stored yet: what this host has, if anything.
            None => state
                .sessions
                .get(&id)
                .map(|s| (s.transcript, s.suggestions)),
        },
    };
    let Some((transcript, suggestions)) = found else {
        return (
            StatusCode::OK,
            Json(json!({ "status": "error", "error": "Session not found" })),
        );
    };
    let transcriptions: Vec<Value> = transcript
        .iter()
        .enumerate()
        .rev()
        .take(limit * 2)
        .map(|(i, t)| {
            json!({
                "id": i + 1,
                "text": t.text,
                "speaker": t.speaker_role,
                "speaker_label": if t.speaker_role == "technician" { "Technicien" } else { "Agent" },
                "start_time": t.start_ms as f64 / 1000.0,
                "end_time": t.end_ms as f64 / 1000.0,
                "confidence": t.confidence,
                "language": t.language,
            })
        })
        .collect();
    (
        StatusCode::OK,
        Json(json!({
            "status": "success",
            "suggestions": suggestions_view(&suggestions, limit),
            "transcriptions": transcriptions,
        })),
    )
}

/// A session that is no longer live, from the store.
async fn stored(
    state: &AppState,
    id: &str,
) -> Option<(Vec<TranscriptLine>, Vec<SuggestionRecord>)> {
    let store = state.sessions.store()?;
    store.call(id).await.ok()??;
    let transcript = store.transcripts(id).await.ok()?;
    let suggestions = store.suggestions(id).await.ok()?;
    Some((transcript, suggestions))
}
