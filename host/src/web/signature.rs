//! Rejects Twilio webhooks and stream upgrades whose `X-Twilio-Signature`
//! does not match; without an auth token to check it with, refuses them all
//! unless the operator turned checking off explicitly.

use super::{ApiError, AppState, TwilioAuth};
use crate::twilio::signature;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Twilio's form bodies are small; anything bigger is not Twilio.
const MAX_BODY: usize = 64 * 1024;

/// The URLs Twilio may have signed for this request: the configured public
/// base (or the Host header) plus the path and query, in http(s) and ws(s)
/// forms (a stream upgrade is signed over its wss:// URL).
pub fn public_urls(
    public_url: Option<&str>,
    headers: &HeaderMap,
    path_and_query: &str,
) -> Vec<String> {
    let base = match public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("http");
            format!("{proto}://{host}")
        }
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base.as_str()));
    let (http, ws) = match scheme {
        "http" | "ws" => ("http", "ws"),
        _ => ("https", "wss"),
    };
    vec![
        format!("{http}://{rest}{path_and_query}"),
        format!("{ws}://{rest}{path_and_query}"),
    ]
}

pub async fn verify(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let settings = &state.twilio_settings;
    let token = match (settings.auth, settings.auth_token.as_deref()) {
        (TwilioAuth::Open, _) => return next.run(request).await,
        (TwilioAuth::Signed, Some(t)) if !t.is_empty() => t,
        _ => {
            tracing::warn!(path = %request.uri().path(), "refused a Twilio request: no TWILIO_AUTH_TOKEN to check it with");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "Twilio requests are refused: this server has no TWILIO_AUTH_TOKEN to check their \
                 signature (set it, or CALLPIPE_TWILIO_SIGNATURES=off to accept unsigned requests)",
            )
            .into_response();
        }
    };
    let (parts, body) = request.into_parts();
    let Some(sig) = parts
        .headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        tracing::warn!(path = %parts.uri.path(), "refused a Twilio request without X-Twilio-Signature");
        return ApiError::new(StatusCode::FORBIDDEN, "missing X-Twilio-Signature").into_response();
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .into_response();
        }
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let params: Vec<(String, String)> = if is_form {
        serde_urlencoded::from_bytes(&bytes).unwrap_or_default()
    } else {
        Vec::new()
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    let valid = public_urls(settings.public_url.as_deref(), &parts.headers, pq)
        .iter()
        .any(|url| signature::is_valid(token, &sig, url, &params));
    if !valid {
        tracing::warn!(path = %parts.uri.path(), "refused a request with an invalid Twilio signature");
        return ApiError::new(StatusCode::FORBIDDEN, "invalid Twilio signature").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
