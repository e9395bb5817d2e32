//! The technician-support dashboard (`/demo/technician`) and the pages'
//! assets, embedded in the binary.

use super::AppState;
use crate::calls::greeting;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const TECHNICIAN_HTML: &str = include_str!("assets/technician.html");
pub const OPS_HTML: &str = include_str!("assets/ops.html");

/// (name, content type, body)
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    ),
];

pub async fn page(State(state): State<AppState>) -> Response {
    // The page greys out the call button when calls cannot be placed.
    let twilio = state.twilio.is_some()
        && state.twilio_settings.phone_number.is_some()
        && state.twilio_settings.public_url.is_some();
    // The chat's opening line, in both of the page's languages, from the
    // pipeline new sessions start on (attributes, escaped).
    let greetings = &state.pipeline().greetings;
    let html = TECHNICIAN_HTML
        .replace("{{TWILIO}}", if twilio { "true" } else { "false" })
        .replace(
            "{{GREETING_FR}}",
            &crate::twilio::twiml::escape(&greeting::chat(greetings, "fr")),
        )
        .replace(
            "{{GREETING_EN}}",
            &crate::twilio::twiml::escape(&greeting::chat(greetings, "en")),
        );
    ([(header::CACHE_CONTROL, "no-cache")], Html(html)).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
