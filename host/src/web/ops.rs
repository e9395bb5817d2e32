//! The ops page (`/`) and its data (`/api/ops`): live calls, the pipeline
//! new calls start on, per-stage counts and latency since start, recent
//! stage errors.

use super::AppState;
use crate::metrics::{AUDIO, STAGE_FAILURES, StageMetrics};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

/// Stage errors listed.
const ERRORS: i64 = 20;

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

fn stage_view(name: &str, m: &StageMetrics, in_pipeline: bool) -> Value {
    json!({
        "name": name,
        "in_pipeline": in_pipeline,
        "handled": m.handled.load(Relaxed),
        "failed": m.failed.load(Relaxed),
        "emitted": m.emitted.load(Relaxed),
        "restarts": m.restarts.load(Relaxed),
        "latency_ms": {
            "p50": ms(m.latency.quantile(0.50)),
            "p95": ms(m.latency.quantile(0.95)),
            "p99": ms(m.latency.quantile(0.99)),
            "max": ms(m.latency.max()),
        },
    })
}

pub async fn summary(State(state): State<AppState>) -> Json<Value> {
    let pipeline = state.pipeline();
    // The current pipeline's stages in order, then any others seen since
    // start (a stage of an earlier version still serving calls).
    let mut stages: Vec<Value> = pipeline
        .stages
        .iter()
        .map(|s| stage_view(&s.name, &crate::metrics::stage(&s.name), true))
        .collect();
    for (name, m) in crate::metrics::stages() {
        if !pipeline.stages.iter().any(|s| s.name == name) {
            stages.push(stage_view(&name, &m, false));
        }
    }
    let mut live: Vec<Value> = state.sessions.map_all(|s| {
        (!s.is_over()).then(|| {
            json!({
                "session_id": s.session_id,
                "call_sid": s.call_sid,
                "technician_name": s.technician_name,
                "status": s.status,
                "streaming": s.streaming,
                "duration": s.duration_secs(),
                "segments": s.total_segments,
                "suggestions": s.suggestions.len(),
            })
        })
    });
    live.sort_by_key(|v| std::cmp::Reverse(v["duration"].as_u64()));
    // Stored errors survive a restart; without a store, those kept here.
    let errors: Vec<Value> = match state.sessions.store() {
        Some(store) => match store.recent_stage_errors(ERRORS).await {
            Ok(rows) => rows.iter().map(|r| json!(r)).collect(),
            Err(e) => {
                tracing::warn!("cannot read stage errors: {e}");
                Vec::new()
            }
        },
        None => STAGE_FAILURES
            .recent()
            .iter()
            .take(ERRORS as usize)
            .map(|f| {
                json!({
                    "session_id": f.session_id,
                    "stage": f.stage,
                    "message": f.summary(),
                    "at": f.at,
                })
            })
            .collect(),
    };
    let lag = &AUDIO.frame_lag;
    Json(json!({
        "pipeline": {
            "name": pipeline.name,
            "version": pipeline.version,
            "path": pipeline.path.display().to_string(),
            "language": pipeline.language,
            "stages": pipeline.stages.iter().map(|s| &*s.name).collect::<Vec<_>>(),
        },
        "media_streams": state.active_streams.load(Relaxed),
        "chats": state.chats.active().await,
        "max_calls": state.max_calls(),
        "capacity": state.capacity(),
        "calls": live,
        "stages": stages,
        "audio": {
            "frames_in": AUDIO.frames_in.load(Relaxed),
            "frames_dropped": AUDIO.frames_dropped.load(Relaxed),
            "frames_rejected": AUDIO.frames_rejected.load(Relaxed),
            "frame_lag_ms": { "p50": ms(lag.quantile(0.5)), "p95": ms(lag.quantile(0.95)) },
            "stream_lateness_ms": {
                "p50": ms(AUDIO.stream_lateness.quantile(0.5)),
                "p95": ms(AUDIO.stream_lateness.quantile(0.95)),
            },
        },
        "errors": errors,
        "reload_error": state.reloader.as_ref().and_then(|r| r.rejected()).map(|r| r.message),
    }))
}

/// `POST /api/pipelines/reload`: loads the pipeline file again, checked as
/// `callpipe check` would; 422 with the diagnostics when it does not load
/// (the running version stays).
pub async fn reload(
    State(state): State<AppState>,
) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
    let Some(reloader) = state.reloader.clone() else {
        return Err((
            axum::http::StatusCode::NOT_IMPLEMENTED,
            Json(json!({ "detail": "this server cannot reload its pipeline" })),
        ));
    };
    match reloader.reload(&state.slot).await {
        Ok(done) => Ok(Json(json!({
            "status": "reloaded",
            "name": done.name,
            "previous": done.previous,
            "version": done.version,
        }))),
        Err(rejected) => Err((
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "status": "rejected",
                "detail": rejected.message,
                "file": rejected.file,
                "version": state.pipeline().version,
            })),
        )),
    }
}

pub async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(super::dashboard::OPS_HTML),
    )
}
