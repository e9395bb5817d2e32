//! Requests about a call another host runs: handed to that host (see
//! `crate::cluster::forward`), so a chat message, mute or end reaches the
//! pipeline that holds the call whichever host the load balancer chose.

use super::AppState;
use crate::cluster::forward;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The owner's answer when `session_id` runs on another live host; `None`
/// when this host should answer (it runs the session, nobody does, or the
/// request was forwarded already).
pub async fn forwarded(
    state: &AppState,
    session_id: &str,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    if !forward::valid_session_id(session_id) {
        return Some(super::ApiError::bad_request(INVALID_SESSION_ID).into_response());
    }
    // A forwarded request was checked by `auth::require` (its signature).
    if headers.contains_key(forward::FORWARDED) || state.chats.holds(session_id).await {
        return None;
    }
    let (store, me) = (state.sessions.store()?, state.identity.as_ref()?);
    let address = forward::owner_elsewhere(store, &me.id, session_id).await?;
    let Some(key) = state.cluster_key.as_ref() else {
        tracing::warn!(session = %session_id, to = %address, "the call runs on another host, and without CALLPIPE_CLUSTER_SECRET this host cannot hand the request over");
        return Some(
            super::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the call runs on another host, and this host has no cluster secret \
                 (CALLPIPE_CLUSTER_SECRET) to hand the request over with",
            )
            .into_response(),
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    tracing::debug!(session = %session_id, to = %address, "forwarding {path} to the call's host");
    Some(
        match forward::forward(key, &address, path, &me.id, content_type, body.to_vec()).await {
            Ok(a) => {
                let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut response = (status, a.body).into_response();
                if let Some(c) = a.content_type.and_then(|c| c.parse().ok()) {
                    response.headers_mut().insert(header::CONTENT_TYPE, c);
                }
                response
            }
            Err(e) => {
                tracing::warn!(session = %session_id, "{e}");
                super::ApiError::new(StatusCode::BAD_GATEWAY, e).into_response()
            }
        },
    )
}

/// What a client is told when its session id could not be used safely.
pub const INVALID_SESSION_ID: &str = super::session_id::INVALID;

/// Whether this host's memory is the session's truth: there is no store
/// to ask, this host runs it, or it holds the session and no other host
/// runs it (a call placed from here whose stream has not started yet). A
/// copy of a session another host runs (its `/twilio/voice` came here) is
/// not the truth: the store is.
pub async fn answers_from_memory(state: &AppState, session_id: &str) -> bool {
    let Some(store) = state.sessions.store() else {
        return true;
    };
    if state.chats.holds(session_id).await
        || state
            .sessions
            .get_field(session_id, |s| s.streaming)
            .unwrap_or(false)
    {
        return true;
    }
    if !state.sessions.contains(session_id) {
        return false;
    }
    let me = state.identity.as_ref().map(|i| i.id.as_str());
    match store.call(session_id).await {
        Ok(Some(call)) => call.host_id.is_none() || call.host_id.as_deref() == me,
        // Not stored yet, or the store is away: what this host has.
        _ => true,
    }
}
