use super::AppState;
use crate::metrics::AUDIO;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while capacity is left, the host holds its lease (or, without
/// one, the database answers) and the host is not stopping.
pub async fn ready(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    let active = state.active_streams.load(Relaxed);
    let p = state.pipeline();
    let draining = state.is_draining();
    // With a lease, its renewals are the database check: a probe costs
    // no connection (a flood of probes cannot starve the renewals), and a
    // blip shorter than the lease takes no host out of rotation.
    let database = match (state.sessions.store(), &state.lease) {
        (Some(store), Some(lease)) => {
            let since = lease.since_renewed().as_millis() as u64;
            if lease.holds() {
                json!({ "ok": true, "backend": store.backend(), "lease_renewed_ms_ago": since })
            } else {
                json!({
                    "ok": false,
                    "backend": store.backend(),
                    "lease_renewed_ms_ago": since,
                    "error": "this host could not renew its lease for longer than the lease: \
                              it takes no new call until the database answers again",
                })
            }
        }
        (Some(store), None) => match store.ping(std::time::Duration::from_secs(2)).await {
            Ok(()) => json!({ "ok": true, "backend": store.backend() }),
            Err(e) => json!({ "ok": false, "backend": store.backend(), "error": e.to_string() }),
        },
        (None, _) => json!({ "ok": true, "backend": "none" }),
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

/// Count, p50, p95, p99 and max of a measure's recent values, in ms.
fn recent(r: &crate::metrics::Recent) -> Value {
    let (count, q) = r.quantiles(&[0.5, 0.95, 0.99, 1.0]);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    json!({"count": count, "p50": ms(q[0]), "p95": ms(q[1]), "p99": ms(q[2]), "max": ms(q[3])})
}

/// Count, p50, p95, p99 and max of a histogram, in ms.
fn histogram(h: &crate::metrics::Histogram) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    json!({
        "count": h.count(),
        "p50": ms(h.quantile(0.50)),
        "p95": ms(h.quantile(0.95)),
        "p99": ms(h.quantile(0.99)),
        "max": ms(h.max()),
    })
}

/// Live audio-path numbers (the load benchmark reads them).
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "active_calls": state.active_streams.load(Relaxed),
        "frames_in": AUDIO.frames_in.load(Relaxed),
        "frames_dropped": AUDIO.frames_dropped.load(Relaxed),
        "frames_rejected": AUDIO.frames_rejected.load(Relaxed),
        "frame_lag_ms": histogram(&AUDIO.frame_lag),
        // Arrival against the stream's own clock (calls/lateness.rs).
        "stream_lateness_ms": histogram(&AUDIO.stream_lateness),
        // Exact, over the most recent transcripts of live streams.
        "speech_to_transcript_ms": recent(&AUDIO.speech_to_transcript_recent),
        "utterance_to_transcript_ms": recent(&AUDIO.utterance_to_transcript_recent),
    }))
}
