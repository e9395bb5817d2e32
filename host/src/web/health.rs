use super::AppState;
use crate::metrics::AUDIO;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while capacity is left, the database answers and the host is not
/// stopping.
pub async fn ready(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    let active = state.active_streams.load(Relaxed);
    let p = state.pipeline();
    let draining = state.is_draining();
    let database = match state.sessions.store() {
        Some(store) => match store.ping(std::time::Duration::from_secs(2)).await {
            Ok(()) => json!({ "ok": true, "backend": store.backend() }),
            Err(e) => json!({ "ok": false, "backend": store.backend(), "error": e.to_string() }),
        },
        None => json!({ "ok": true, "backend": "none" }),
    };
    let ready = active < state.max_calls() && !draining && database["ok"] == true;
    let code = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "ready": ready,
            "pipeline": p.name,
            "pipeline_version": p.version,
            "active_calls": active,
            "draining": draining,
            "database": database,
            "host": state.identity.as_ref().map(|i| &i.id),
            "max_calls": state.max_calls(),
            "capacity": state.capacity(),
        })),
    )
}

/// Live audio-path numbers (the load benchmark reads them).
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let lag = &AUDIO.frame_lag;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    Json(json!({
        "active_calls": state.active_streams.load(Relaxed),
        "frames_in": AUDIO.frames_in.load(Relaxed),
        "frames_dropped": AUDIO.frames_dropped.load(Relaxed),
        "frames_rejected": AUDIO.frames_rejected.load(Relaxed),
        "frame_lag_ms": {
            "count": lag.count(),
            "p50": ms(lag.quantile(0.50)),
            "p95": ms(lag.quantile(0.95)),
            "p99": ms(lag.quantile(0.99)),
            "max": ms(lag.max()),
        },
    }))
}
