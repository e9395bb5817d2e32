//! `/api/sessions`: the live view of sessions (status history, segments per
//! speaker).

use super::{ApiError, AppState};
use crate::sessions::{Session, Sessions};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

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
        "muted": s.muted,
        "pipeline_version": s.pipeline_version,
        "duration": s.duration_secs(),
        "total_segments": s.total_segments,
        "speakers": s.speakers,
    });
    // The list stays small; one session's view carries what was said and
    // the end-of-call statistics.
    if with_transcript {
        v["statistics"] = super::statistics::of(s);
        v["transcript"] = json!(s.transcript);
        v["suggestions"] = json!(s.suggestions);
        v["summary"] = json!(s.summary);
        v["diagnostic"] = json!(s.diagnostic);
        v["context"] = json!(s.context);
    }
    v
}

/// Calls from the store shown beside the live ones.
const RECENT: i64 = 100;

/// The live sessions and the store's recent calls: the sessions are all it
/// needs (a sub-state, see `AppState`'s `FromRef`).
pub async fn list(State(sessions): State<Arc<Sessions>>) -> Json<Value> {
    let mut out: Vec<Value> = sessions.map_all(|s| Some(view(s, false)));
    out.sort_by(|a, b| a["session_id"].as_str().cmp(&b["session_id"].as_str()));
    // Recent calls that are not live any more (ended before a restart).
    if let Some(store) = sessions.store() {
        match store.recent_calls(RECENT).await {
            Ok(calls) => out.extend(
                calls
                    .into_iter()
                    .filter(|c| !sessions.contains(&c.session_id))
                    .map(|c| {
                        json!({
                            "session_id": c.session_id,
                            "call_sid": c.call_sid,
                            "technician_id": c.technician_id,
                            "technician_name": c.technician_name,
                            "phone_number": c.phone_number,
                            "status": c.status,
                            "streaming": false,
                            "started_at": c.started_at,
                            "ended_at": c.ended_at,
                        })
                    }),
            ),
            Err(e) => tracing::warn!("cannot list stored calls: {e}"),
        }
    }
    Json(json!({ "sessions": out }))
}

pub async fn get(
    State(state): State<AppState>,
    super::session_id::SessionId(id): super::session_id::SessionId,
) -> Result<Json<Value>, ApiError> {
    // Live here: this host's memory is the truth. Otherwise (ended, or run
    // by another host) the store is, not a copy this host kept.
    if super::elsewhere::answers_from_memory(&state, &id).await
        && let Some(s) = state.sessions.get(&id)
    {
        let mut v = view(&s, true);
        v["host_id"] = json!(state.identity.as_ref().map(|i| &i.id));
        return Ok(Json(v));
    }
    if let Some(store) = state.sessions.store()
        && let Some(v) = stored_view(store, &id).await?
    {
        return Ok(Json(v));
    }
    if let Some(s) = state.sessions.get(&id) {
        return Ok(Json(view(&s, true)));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no session `{id}`"),
    ))
}

fn db_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!("{e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable",
    )
}

/// A session as the store has it, in the live view's shape.
pub async fn stored_view(store: &crate::store::Store, id: &str) -> Result<Option<Value>, ApiError> {
    let Some(call) = store.call(id).await.map_err(db_error)? else {
        return Ok(None);
    };
    let history: Vec<Value> = store
        .status_history(id)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|(status, at)| json!({ "status": status, "at": at }))
        .collect();
    let speakers = store.speakers(id).await.map_err(db_error)?;
    let transcript = store.transcripts(id).await.map_err(db_error)?;
    let suggestions = store.suggestions(id).await.map_err(db_error)?;
    let segments: i64 = speakers.iter().map(|s| s.2).sum();
    let technician_segments: i64 = speakers
        .iter()
        .filter(|s| s.1 == "technician")
        .map(|s| s.2)
        .sum();
    let solutions = suggestions
        .iter()
        .filter(|x| x.kind == "knowledge_base")
        .count();
    let duration = call.ended_at.unwrap_or_else(crate::sessions::now_epoch) - call.started_at;
    Ok(Some(json!({
        "session_id": call.session_id,
        "call_sid": call.call_sid,
        "technician_id": call.technician_id,
        "technician_name": call.technician_name,
        "phone_number": call.phone_number,
        "status": call.status,
        "status_history": history,
        "streaming": false,
        "muted": false,
        "pipeline_version": call.pipeline_version,
        "host_id": call.host_id,
        "ended_at": call.ended_at,
        "duration": duration.max(0.0) as u64,
        "total_segments": segments,
        "speakers": speakers
            .iter()
            .map(|(id, role, n)| (id.clone(), json!({"segment_count": n, "speaker_role": role})))
            .collect::<serde_json::Map<String, Value>>(),
        "transcript": transcript,
        "suggestions": suggestions,
        "context": call
            .context
            .as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok()),
        "summary": call
            .summary
            .as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok()),
        "statistics": {
            "duration": duration.max(0.0) as u64,
            "segments": segments,
            "technician_segments": technician_segments,
            "solutions_provided": solutions,
            "questions_asked": suggestions.len() - solutions,
        },
    })))
}

#[derive(serde::Deserialize)]
pub struct Mute {
    muted: bool,
}

/// `POST /api/sessions/{id}/mute {"muted": true}`: the assistant stops
/// speaking on this call (its questions are still shown).
pub async fn mute(
    State(state): State<AppState>,
    super::session_id::SessionId(id): super::session_id::SessionId,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body: Mute = super::body::parse(&headers, &raw)?;
    // The voice is muted where the call runs.
    let path = format!("/api/sessions/{id}/mute");
    if let Some(answer) = super::elsewhere::forwarded(&state, &id, &path, &headers, &raw).await {
        return Ok(answer);
    }
    if !state.sessions.set_muted(&id, body.muted) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live session `{id}`"),
        ));
    }
    Ok(Json(json!({ "session_id": id, "muted": body.muted })).into_response())
}

/// What the agent types in the dashboard's first column.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteContext {
    #[serde(default)]
    customer: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    equipment: String,
    #[serde(default)]
    subscription: String,
    #[serde(default)]
    last_incident: String,
}

/// Longest value of a context field.
const CONTEXT_FIELD: usize = 500;

/// `POST /api/sessions/{id}/context {customer, site, equipment,
/// subscription, last_incident}`: kept with the session and stored, shown
/// again when the session is reopened.
pub async fn context(
    State(state): State<AppState>,
    super::session_id::SessionId(id): super::session_id::SessionId,
    headers: axum::http::HeaderMap,
    raw: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body: SiteContext = super::body::parse(&headers, &raw)?;
    // Kept where the call runs (its pipeline and live view are there).
    let path = format!("/api/sessions/{id}/context");
    if let Some(answer) = super::elsewhere::forwarded(&state, &id, &path, &headers, &raw).await {
        return Ok(answer);
    }
    for (name, v) in [
        ("customer", &body.customer),
        ("site", &body.site),
        ("equipment", &body.equipment),
        ("subscription", &body.subscription),
        ("last_incident", &body.last_incident),
    ] {
        if v.chars().count() > CONTEXT_FIELD {
            return Err(ApiError::bad_request(format!(
                "`{name}` is over {CONTEXT_FIELD} characters"
            )));
        }
    }
    let value = json!(body);
    if !state.sessions.set_context(&id, value.clone()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live session `{id}`"),
        ));
    }
    Ok(Json(json!({ "session_id": id, "context": value })).into_response())
}
