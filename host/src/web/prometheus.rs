//! `GET /metrics`: the process's numbers in Prometheus's text format, read
//! from the same relaxed atomics the hot path writes (nothing is kept twice).

use super::AppState;
use crate::metrics::{AUDIO, Histogram, WEBSOCKET};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Every 4th internal bucket: bounds from 24 µs to ~6 s, x2.44 apart.
const STEP: usize = 4;

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, count) in h.cumulative(STEP) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le:.6}\"}} {count}");
    }
    let total = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {:.6}", h.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count{braces} {total}");
}

pub fn render(state: &AppState, chats: usize) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;
    sessions(o, state, chats);
    store(o);
    capacity(o, state);
    audio(o);
    stages(o);
    capabilities(o, state);
    websocket(o);
    out
}

/// Calls, chats and event streams open now.
fn sessions(o: &mut String, state: &AppState, chats: usize) {
    head(
        o,
        "callpipe_active_calls",
        "gauge",
        "Media streams in progress.",
    );
    let _ = writeln!(
        o,
        "callpipe_active_calls {}",
        state.active_streams.load(Relaxed)
    );
    head(
        o,
        "callpipe_sessions_in_memory",
        "gauge",
        "Sessions held in memory: live ones, and ended ones for their grace period.",
    );
    let _ = writeln!(o, "callpipe_sessions_in_memory {}", state.sessions.len());
    head(
        o,
        "callpipe_chat_sessions",
        "gauge",
        "Chat sessions in progress.",
    );
    let _ = writeln!(o, "callpipe_chat_sessions {chats}");
    head(
        o,
        "callpipe_sse_streams",
        "gauge",
        "Live session event streams open.",
    );
    let _ = writeln!(o, "callpipe_sse_streams {}", super::events::subscribers());
}

/// The store's write queue.
fn store(o: &mut String) {
    let w = &crate::metrics::STORE_WRITER;
    for (name, kind, help, value) in [
        (
            "callpipe_store_queue_depth",
            "gauge",
            "Writes waiting for the database (a growing number: the database is slow or away).",
            w.queued.load(Relaxed),
        ),
        (
            "callpipe_store_writes_refused_total",
            "counter",
            "Writes refused because the store's queue was full (shown live, never stored).",
            w.refused.load(Relaxed),
        ),
        (
            "callpipe_store_write_retries_total",
            "counter",
            "Store writes tried again after a failure that may pass.",
            w.retries.load(Relaxed),
        ),
        (
            "callpipe_store_writes_failed_total",
            "counter",
            "Store writes given up on.",
            w.failed.load(Relaxed),
        ),
        (
            "callpipe_store_calls_repaired_total",
            "counter",
            "Call rows created again because their opening write was lost.",
            w.repaired.load(Relaxed),
        ),
        (
            "callpipe_transcriptions_waiting",
            "gauge",
            "Local transcriptions waiting for a turn.",
            crate::metrics::TRANSCRIPTIONS.waiting.load(Relaxed),
        ),
        (
            "callpipe_transcriptions_shed_total",
            "counter",
            "Utterances not transcribed because the transcription queue was full.",
            crate::metrics::TRANSCRIPTIONS.shed.load(Relaxed),
        ),
    ] {
        head(o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
}

/// The runtime, call capacity and the pipeline new calls start on.
fn capacity(o: &mut String, state: &AppState) {
    head(
        o,
        "callpipe_runtime_alive_tasks",
        "gauge",
        "Tasks alive in the server's async runtime (a leak shows here).",
    );
    let _ = writeln!(
        o,
        "callpipe_runtime_alive_tasks {}",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
    head(
        o,
        "callpipe_max_calls",
        "gauge",
        "Media streams accepted at once.",
    );
    let _ = writeln!(o, "callpipe_max_calls {}", state.max_calls());
    {
        let c = state.capacity();
        head(
            o,
            "callpipe_capacity_calls",
            "gauge",
            "Calls this host can hold with the pipeline, by the resource that limits it.",
        );
        let _ = writeln!(
            o,
            "callpipe_capacity_calls{{limited_by=\"{}\"}} {}",
            c.limited_by, c.calls
        );
        head(
            o,
            "callpipe_call_mappings",
            "gauge",
            "Memory mappings one call adds (measured at start).",
        );
        let _ = writeln!(o, "callpipe_call_mappings {}", c.mappings_per_call);
    }
    head(
        o,
        "callpipe_calls_refused_total",
        "counter",
        "Calls refused at capacity, by where they arrived.",
    );
    for (path, n) in crate::metrics::CALLS_REFUSED.snapshot() {
        let _ = writeln!(o, "callpipe_calls_refused_total{{path=\"{path}\"}} {n}");
    }
    head(
        o,
        "callpipe_calls_start_failed_total",
        "counter",
        "Calls admitted whose pipeline could not start, by where they arrived.",
    );
    for (path, n) in crate::metrics::CALLS_START_FAILED.snapshot() {
        let _ = writeln!(
            o,
            "callpipe_calls_start_failed_total{{path=\"{path}\"}} {n}"
        );
    }
    let p = state.pipeline();
    head(
        o,
        "callpipe_pipeline_info",
        "gauge",
        "The pipeline new calls start on.",
    );
    let _ = writeln!(
        o,
        "callpipe_pipeline_info{{name=\"{}\",version=\"{}\"}} 1",
        label(&p.name),
        label(&p.version)
    );
}

/// Media frames and the audio path's latencies.
fn audio(o: &mut String) {
    head(
        o,
        "callpipe_frames_in_total",
        "counter",
        "Media frames accepted.",
    );
    let _ = writeln!(
        o,
        "callpipe_frames_in_total {}",
        AUDIO.frames_in.load(Relaxed)
    );
    head(
        o,
        "callpipe_frames_dropped_total",
        "counter",
        "Media frames dropped because a call's pipeline was saturated.",
    );
    let _ = writeln!(
        o,
        "callpipe_frames_dropped_total {}",
        AUDIO.frames_dropped.load(Relaxed)
    );
    head(
        o,
        "callpipe_frames_rejected_total",
        "counter",
        "Media frames refused as malformed.",
    );
    let _ = writeln!(
        o,
        "callpipe_frames_rejected_total {}",
        AUDIO.frames_rejected.load(Relaxed)
    );
    head(
        o,
        "callpipe_frame_lag_seconds",
        "histogram",
        "Arrival of a frame to the end of its processing by the audio stages.",
    );
    histogram(o, "callpipe_frame_lag_seconds", "", &AUDIO.frame_lag);
    head(
        o,
        "callpipe_stream_lateness_seconds",
        "histogram",
        "A frame's arrival against its stream's clock (stream start + the frame's timestamp).",
    );
    histogram(
        o,
        "callpipe_stream_lateness_seconds",
        "",
        &AUDIO.stream_lateness,
    );
    head(
        o,
        "callpipe_speech_to_transcript_seconds",
        "histogram",
        "End of speech in a live stream to its transcript leaving the pipeline.",
    );
    histogram(
        o,
        "callpipe_speech_to_transcript_seconds",
        "",
        &AUDIO.speech_to_transcript,
    );
    head(
        o,
        "callpipe_utterance_to_transcript_seconds",
        "histogram",
        "An utterance reaching the transcribing stage to its transcript (speech recognition's wait and work).",
    );
    histogram(
        o,
        "callpipe_utterance_to_transcript_seconds",
        "",
        &AUDIO.utterance_to_transcript,
    );
}

/// Per-stage events, restarts and latencies.
fn stages(o: &mut String) {
    let stages = crate::metrics::stages();
    head(
        o,
        "callpipe_stage_events_total",
        "counter",
        "Events that entered a stage, by outcome.",
    );
    for (name, m) in &stages {
        let n = label(name);
        let _ = writeln!(
            o,
            "callpipe_stage_events_total{{stage=\"{n}\",outcome=\"handled\"}} {}",
            m.handled.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "callpipe_stage_events_total{{stage=\"{n}\",outcome=\"failed\"}} {}",
            m.failed.load(Relaxed)
        );
    }
    head(
        o,
        "callpipe_stage_emitted_total",
        "counter",
        "Events stages returned.",
    );
    for (name, m) in &stages {
        let _ = writeln!(
            o,
            "callpipe_stage_emitted_total{{stage=\"{}\"}} {}",
            label(name),
            m.emitted.load(Relaxed)
        );
    }
    head(
        o,
        "callpipe_stage_restarts_total",
        "counter",
        "Stage instances replaced after a trap, deadline or limit.",
    );
    for (name, m) in &stages {
        let _ = writeln!(
            o,
            "callpipe_stage_restarts_total{{stage=\"{}\"}} {}",
            label(name),
            m.restarts.load(Relaxed)
        );
    }
    head(
        o,
        "callpipe_stage_latency_seconds",
        "histogram",
        "Time a stage spent on one event, host capabilities included.",
    );
    for (name, m) in &stages {
        histogram(
            o,
            "callpipe_stage_latency_seconds",
            &format!("stage=\"{}\"", label(name)),
            &m.latency,
        );
    }
}

/// Capability calls from stages and the model's tokens.
fn capabilities(o: &mut String, state: &AppState) {
    // Each capability's own numbers, from the runtime's list of them.
    let pipeline = state.pipeline();
    let metrics: Vec<_> = pipeline
        .runtime
        .config()
        .factors
        .iter()
        .filter_map(|f| f.metrics())
        .collect();
    head(
        o,
        "callpipe_capability_calls_total",
        "counter",
        "Capability calls from stages, by outcome.",
    );
    for c in &metrics {
        for (outcome, n) in c.outcomes() {
            let _ = writeln!(
                o,
                "callpipe_capability_calls_total{{capability=\"{}\",outcome=\"{outcome}\"}} {n}",
                c.name
            );
        }
    }
    head(
        o,
        "callpipe_llm_tokens_total",
        "counter",
        "Tokens the language model backend counted, by kind.",
    );
    let tokens = &crate::metrics::LLM_TOKENS;
    let _ = writeln!(
        o,
        "callpipe_llm_tokens_total{{kind=\"prompt\"}} {}",
        tokens.prompt()
    );
    let _ = writeln!(
        o,
        "callpipe_llm_tokens_total{{kind=\"completion\"}} {}",
        tokens.completion()
    );
    head(
        o,
        "callpipe_capability_latency_seconds",
        "histogram",
        "Time a capability call took, as the stage waited for it.",
    );
    for c in &metrics {
        histogram(
            o,
            "callpipe_capability_latency_seconds",
            &format!("capability=\"{}\"", c.name),
            &c.latency,
        );
    }
}

/// Media-stream problems.
fn websocket(o: &mut String) {
    head(
        o,
        "callpipe_websocket_errors_total",
        "counter",
        "Media-stream problems, by kind.",
    );
    for (kind, n) in WEBSOCKET.snapshot() {
        let _ = writeln!(
            o,
            "callpipe_websocket_errors_total{{kind=\"{}\"}} {n}",
            label(&kind)
        );
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let chats = state.chats.active().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state, chats),
    )
}
