//! `/twilio/*`: call control, status callbacks and TwiML, with the bodies and
//! answers of the original system.

use super::signature::public_urls;
use super::{ApiError, AppState};
use crate::calls::greeting;
use crate::twilio::rest::{NewCall, RestError, is_e164};
use crate::twilio::stream_token;
use crate::twilio::twiml::{self, StreamMode};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// 400 for anything but a call SID, before any REST call is made.
fn call_sid(sid: &str) -> Result<&str, ApiError> {
    if crate::twilio::rest::is_call_sid(sid) {
        Ok(sid)
    } else {
        Err(ApiError::bad_request(
            "call_sid must be a Twilio call SID: CA followed by 32 hex digits",
        ))
    }
}

fn rest_error(e: RestError) -> ApiError {
    match e {
        RestError::Refused {
            status, message, ..
        } if status == 400 || status == 404 => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        ),
        other => ApiError::new(StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("session-{:016x}", h.finish())
}

/// The base URL Twilio reaches us on, as http(s).
fn public_http(state: &AppState, headers: &HeaderMap) -> String {
    public_urls(state.twilio_settings.public_url.as_deref(), headers, "").swap_remove(0)
}

fn public_ws(state: &AppState, headers: &HeaderMap) -> String {
    public_urls(state.twilio_settings.public_url.as_deref(), headers, "").swap_remove(1)
}

#[derive(Deserialize)]
pub struct InitiateCall {
    phone_number: String,
    #[serde(default)]
    technician_id: String,
    #[serde(default)]
    technician_name: String,
    #[serde(default)]
    session_id: Option<String>,
}

pub async fn initiate_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: InitiateCall = super::body::parse(&headers, &body)?;
    let phone = req.phone_number.trim();
    if !is_e164(phone) {
        return Err(ApiError::bad_request(format!(
            "phone_number must be in E.164 format (e.g. +33612345678), got `{phone}`"
        )));
    }
    let (Some(client), Some(from)) = (&state.twilio, state.twilio_settings.phone_number.as_deref())
    else {
        return Err(ApiError::twilio_not_configured());
    };
    if state.twilio_settings.public_url.is_none() {
        return Err(ApiError::twilio_not_configured());
    }
    let session_id = req
        .session_id
        .filter(|s| !s.is_empty())
        .unwrap_or_else(new_session_id);
    if !crate::cluster::forward::valid_session_id(&session_id) {
        return Err(ApiError::bad_request(super::elsewhere::INVALID_SESSION_ID));
    }
    let base = public_http(&state, &headers);
    let query = serde_urlencoded::to_string([
        ("session_id", session_id.as_str()),
        ("technician_id", req.technician_id.as_str()),
        ("technician_name", req.technician_name.as_str()),
    ])
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let twiml_url = format!("{base}/twilio/voice?{query}");
    let status_callback = format!("{base}/twilio/status");
    state.sessions.open(
        &session_id,
        &req.technician_id,
        &req.technician_name,
        Some(phone),
    );
    let call = match client
        .create_call(&NewCall {
            to: phone,
            from,
            twiml_url: &twiml_url,
            status_callback: &status_callback,
        })
        .await
    {
        Ok(call) => call,
        Err(e) => {
            // No call was placed: the session ends here instead of waiting
            // for a stream that will never come.
            state.sessions.set_status(&session_id, "failed");
            return Err(rest_error(e));
        }
    };
    state.sessions.attach_call(&session_id, &call.sid);
    state.sessions.set_status(&session_id, &call.status);
    tracing::info!(call = %call.sid, session = %session_id, "outbound call initiated");
    // As the original: "initiated" is this server's answer; Twilio's own
    // status (queued, ringing...) is beside it.
    Ok(Json(json!({
        "success": true,
        "call_sid": call.sid,
        "session_id": session_id,
        "status": "initiated",
        "twilio_status": call.status,
    })))
}

#[derive(Deserialize)]
pub struct EndCall {
    call_sid: String,
    #[serde(default)]
    session_id: Option<String>,
}

pub async fn end_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: EndCall = super::body::parse(&headers, &body)?;
    call_sid(&req.call_sid)?;
    let Some(client) = &state.twilio else {
        return Err(ApiError::twilio_not_configured());
    };
    let call = client.end_call(&req.call_sid).await.map_err(rest_error)?;
    let session_id = req
        .session_id
        .filter(|s| !s.is_empty())
        .or_else(|| state.sessions.session_for_call(&req.call_sid));
    let session = session_id.as_deref().and_then(|id| {
        state.sessions.set_status(id, &call.status);
        state.sessions.get(id)
    });
    let duration: u64 = call
        .duration
        .as_deref()
        .and_then(|d| d.parse().ok())
        .or_else(|| session.as_ref().map(|s| s.duration_secs()))
        .unwrap_or(0);
    let speakers: serde_json::Map<String, Value> = session
        .as_ref()
        .map(|s| {
            s.speakers
                .iter()
                .map(|(id, st)| (id.clone(), json!(st)))
                .collect()
        })
        .unwrap_or_default();
    let mut statistics = session
        .as_ref()
        .map(super::statistics::of)
        .unwrap_or_else(|| {
            json!({"segments": 0, "technician_segments": 0, "solutions_provided": 0, "questions_asked": 0})
        });
    // Twilio's duration (whole seconds of the call) when it gives one.
    statistics["duration"] = json!(duration);
    Ok(Json(json!({
        "success": true,
        "call_sid": call.sid,
        "status": call.status,
        "duration": duration,
        "session_stats": {
            "total_segments": session.as_ref().map_or(0, |s| s.total_segments),
            "speakers": speakers,
        },
        "statistics": statistics,
    })))
}

pub async fn call_status(
    State(state): State<AppState>,
    Path(sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let call_sid = call_sid(&sid)?;
    let Some(client) = &state.twilio else {
        return Err(ApiError::twilio_not_configured());
    };
    let call = client.fetch_call(call_sid).await.map_err(rest_error)?;
    Ok(Json(json!({
        "success": true,
        "call_sid": call.sid,
        "status": call.status,
        "duration": call.duration,
        "direction": call.direction,
        "from": call.from,
        "to": call.to,
        "start_time": call.start_time,
        "end_time": call.end_time,
        "session_id": state.sessions.session_for_call(call_sid),
    })))
}

/// Twilio's status callback: CallSid, CallStatus, Direction, ...
pub async fn status_callback(State(state): State<AppState>, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let (Some(sid), Some(status)) = (form.get("CallSid"), form.get("CallStatus")) else {
        return ApiError::bad_request("a status callback needs CallSid and CallStatus")
            .into_response();
    };
    match state.sessions.session_for_call(sid) {
        Some(id) => state.sessions.set_status(&id, status),
        // Another host may run the call (or ran it before a restart): the
        // store knows, and the status reaches that host through it.
        None => match state.sessions.store().map(|s| s.call_by_sid(sid)) {
            Some(lookup) => match lookup.await {
                Ok(Some(call)) => state
                    .sessions
                    .set_status_elsewhere(&call.session_id, status),
                Ok(None) => {
                    tracing::info!(call = %sid, %status, "status for a call no session knows")
                }
                Err(e) => tracing::warn!(call = %sid, %status, "cannot look the call up: {e}"),
            },
            None => tracing::info!(call = %sid, %status, "status for a call no session knows"),
        },
    }
    tracing::info!(
        call = %sid,
        %status,
        direction = form.get("Direction").map_or("", String::as_str),
        duration = form.get("CallDuration").map_or("", String::as_str),
        "call status"
    );
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize, Default)]
pub struct VoiceQuery {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    technician_id: Option<String>,
    #[serde(default)]
    technician_name: Option<String>,
    /// `connect` (bidirectional, default) or `start` (listen to both tracks).
    #[serde(default)]
    mode: Option<String>,
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// TwiML for a call: greeting in the pipeline's language, then the stream.
pub async fn voice(
    State(state): State<AppState>,
    Query(q): Query<VoiceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let call_sid = form.get("CallSid").cloned().unwrap_or_default();
    // This host stopping or without its lease is this host's trouble, not
    // the service's: 503, so the balancer retries another host (haproxy's
    // `retry-on 503`) or Twilio its fallback URL, instead of a busy tone.
    if state.is_draining() || state.lease_lost() {
        let reason = if state.is_draining() {
            "draining: this host is stopping"
        } else {
            "no lease: this host cannot reach the database"
        };
        tracing::warn!("sent a call elsewhere: {reason}");
        crate::metrics::CALLS_REFUSED.add("voice", 1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("{reason}; another host takes the call"),
        )
            .into_response();
    }
    // A call the service cannot hold is told so, not streamed into a
    // refusal.
    let full = state
        .active_streams
        .load(std::sync::atomic::Ordering::Acquire)
        >= state.max_calls();
    if let Some(reason) = super::ws::not_taking(&state).or(full.then(|| "at capacity".to_string()))
    {
        tracing::warn!(max = state.max_calls(), "refused a call: {reason}");
        crate::metrics::CALLS_REFUSED.add("voice", 1);
        return xml(twiml::busy(&state.pipeline().language));
    }
    let session_id = q
        .session_id
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| call_sid.clone());
    // An inbound call (the technician dials in) is known by its number.
    let technician_id = q
        .technician_id
        .or_else(|| form.get("From").cloned())
        .unwrap_or_default();
    let technician_name = q.technician_name.unwrap_or_default();
    if !session_id.is_empty() {
        state.sessions.open(
            &session_id,
            &technician_id,
            &technician_name,
            form.get("From").map(String::as_str),
        );
        state.sessions.attach_call(&session_id, &call_sid);
    }
    let mode = match q.mode.as_deref() {
        Some("start") => StreamMode::Start,
        Some("connect") => StreamMode::Connect,
        _ => state
            .twilio_settings
            .stream_mode
            .unwrap_or(StreamMode::Connect),
    };
    let stream_url = format!("{}/twilio/media-stream", public_ws(&state, &headers));
    let pipeline = state.pipeline();
    let language = pipeline.language.clone();
    let words = greeting::call(&pipeline.greetings, &language);
    // This call's stream must bring it back at `start` (when streams are signed).
    let token = state
        .stream_tokens
        .as_ref()
        .map(|t| t.issue(&call_sid, &session_id, crate::clock::now_epoch() as u64))
        .unwrap_or_default();
    xml(twiml::stream_call(
        mode,
        &stream_url,
        &language,
        &words,
        &[
            ("session_id", &session_id),
            ("technician_id", &technician_id),
            ("technician_name", &technician_name),
            ("language", &language),
            (stream_token::PARAMETER, &token),
        ],
    ))
}

/// Sample TwiML, to check what Twilio would be told.
pub async fn test_twiml(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let stream_url = format!("{}/twilio/media-stream", public_ws(&state, &headers));
    let pipeline = state.pipeline();
    let language = pipeline.language.clone();
    xml(twiml::stream_call(
        state
            .twilio_settings
            .stream_mode
            .unwrap_or(StreamMode::Connect),
        &stream_url,
        &language,
        &greeting::call(&pipeline.greetings, &language),
        &[
            ("session_id", "test-session"),
            ("technician_id", "test-technician"),
            ("technician_name", "Test"),
        ],
    ))
}
