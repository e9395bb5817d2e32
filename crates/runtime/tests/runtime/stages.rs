//! The host runtime with the real compiled components.

use callpipe_runtime::pipeline::Event;
use callpipe_runtime::pipeline::bindings::types::{Custom, Track, Utterance};
use callpipe_runtime::test_support::*;
use std::sync::Arc;

fn utterances(events: &[Event]) -> Vec<&Utterance> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Utterance(u) = e {
                Some(u)
            } else {
                None
            }
        })
        .collect()
}

fn audio_pipeline() -> String {
    format!(
        r#"
[pipeline]
name = "audio"

[[stages]]
name = "codec"
component = "{codec}"

[[stages]]
name = "vad"
component = "{vad}"

[[stages]]
name = "speakers"
component = "{speakers}"
"#,
        codec = wasm("callpipe-stage-mulaw-codec"),
        vad = wasm("callpipe-stage-energy-vad"),
        speakers = wasm("callpipe-stage-speaker-priority"),
    )
}

const SEGMENTS: [(bool, u32); 6] = [
    (false, 600),
    (true, 1200),
    (false, 1000),
    (true, 800),
    (false, 900),
    (true, 700),
];
/// Truth for SEGMENTS, in ms.
const BOUNDARIES: [(u64, u64); 3] = [(600, 1800), (2800, 3600), (4500, 5200)];

fn assert_boundaries(events: &[Event]) {
    let utts = utterances(events);
    assert_eq!(utts.len(), 3, "one utterance per burst: {utts:?}");
    for (u, (start, end)) in utts.iter().zip(BOUNDARIES) {
        assert!(
            u.start_ms.abs_diff(start) <= 40,
            "start {} vs {start}",
            u.start_ms
        );
        assert!(u.end_ms.abs_diff(end) <= 40, "end {} vs {end}", u.end_ms);
        assert_eq!(u.track, Track::Inbound);
        assert_eq!(u.speaker_id, "tech-1");
    }
}

fn tail_silence() -> (bool, u32) {
    (false, 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vad_finds_tone_bursts_within_40_ms() {
    let pipeline = Arc::new(load(&audio_pipeline()).await.expect("pipeline loads"));
    let mut segments = SEGMENTS.to_vec();
    segments.push(tail_silence());
    let frames = mulaw_frames(&tone_and_silence(&segments), Track::Inbound);
    let (events, stats) = run_call(pipeline, "vad".into(), frames).await;
    assert_boundaries(&events);
    assert!(stats.iter().all(|s| s.failed == 0));
    assert!(matches!(events.first(), Some(Event::CallStarted(_))));
    assert!(matches!(events.last(), Some(Event::CallEnded(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_round_trip_through_the_runtime() {
    // Decode to 8 kHz and encode again: lossless except -0 becoming +0.
    let toml = format!(
        r#"
[pipeline]
name = "round-trip"

[[stages]]
name = "decode"
component = "{codec}"
config = {{ output_rate = 8000 }}

[[stages]]
name = "encode"
component = "{codec}"
on = ["audio"]
config = {{ direction = "encode" }}
"#,
        codec = wasm("callpipe-stage-mulaw-codec")
    );
    let pipeline = Arc::new(load(&toml).await.expect("pipeline loads"));
    let codes: Vec<u8> = (0..=255u8).cycle().take(160 * 20).collect();
    let frames: Vec<Event> = codes
        .chunks(160)
        .enumerate()
        .map(|(i, c)| {
            Event::EncodedAudio(callpipe_runtime::pipeline::bindings::types::EncodedAudio {
                codec: callpipe_runtime::pipeline::bindings::types::Codec::Mulaw,
                rate: 8000,
                track: Track::Inbound,
                seq: i as u64,
                timestamp_ms: i as u64 * 20,
                bytes: c.to_vec(),
            })
        })
        .collect();
    let (events, _) = run_call(pipeline, "rt8".into(), frames).await;
    let out: Vec<u8> = events
        .iter()
        .filter_map(|e| {
            if let Event::EncodedAudio(a) = e {
                Some(a.bytes.clone())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    let expected: Vec<u8> = codes
        .iter()
        .map(|&c| if c == 0x7F { 0xFF } else { c })
        .collect();
    assert_eq!(out, expected);

    // Through 16 kHz and back: the filters delay and smooth, never distort.
    let toml16 = toml.replace("output_rate = 8000", "output_rate = 16000");
    let pipeline = Arc::new(load(&toml16).await.expect("pipeline loads"));
    let pcm = tone_and_silence(&[(true, 1000)]);
    let (events, _) = run_call(pipeline, "rt16".into(), mulaw_frames(&pcm, Track::Inbound)).await;
    let back: Vec<i16> = events
        .iter()
        .filter_map(|e| {
            if let Event::EncodedAudio(a) = e {
                Some(a.bytes.clone())
            } else {
                None
            }
        })
        .flatten()
        .map(callpipe_dsp::g711::decode)
        .collect();
    assert_eq!(back.len(), pcm.len());
    let delay = 24; // 8 kHz samples: 24 at 16 kHz in each direction
    let worst = pcm[100..pcm.len() - delay]
        .iter()
        .zip(&back[100 + delay..])
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap_or(0);
    assert!(worst < 600, "worst sample error {worst}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_import_is_refused_naming_stage_and_interface() {
    let toml = |grants: &str| {
        format!(
            r#"
[pipeline]
name = "grants"

[[stages]]
name = "sneaky"
component = "{c}"
on = ["call-started"]
grants = [{grants}]
"#,
            c = wasm("callpipe-test-ungranted")
        )
    };
    let err = load(&toml("")).await.err().expect("refused").to_string();
    assert!(err.contains("stage `sneaky`"), "{err}");
    assert!(err.contains("callpipe:stage/knowledge@0.1"), "{err}");
    assert!(err.contains("not granted `knowledge`"), "{err}");
    assert!(
        err.contains(":7:13:"),
        "points at the component line: {err}"
    );
    load(&toml("\"knowledge\""))
        .await
        .expect("loads once granted");
}

/// The host implements a later 0.1.x of the contract (0.1.1 added `llm`);
/// a component built against the frozen 0.1.0 files still loads, logs
/// through its 0.1.0 import and handles events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_contract_0_1_0_still_runs() {
    assert_ne!(callpipe_runtime::bindings::WIT_VERSION, "0.1.0");
    let toml = format!(
        r#"
[pipeline]
name = "old-contract"

[[stages]]
name = "old"
component = "{c}"
on = ["custom"]
"#,
        c = wasm("callpipe-test-contract-v0-1-0")
    );
    let pipeline = Arc::new(load(&toml).await.expect("a 0.1.0 component loads"));
    let (events, stats) = run_call(
        pipeline,
        "old-contract".into(),
        vec![Event::Custom(Custom {
            name: "ping".into(),
            json: "{}".into(),
        })],
    )
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Custom(c) if c.name == "contract-0.1.0")),
        "{events:?}"
    );
    assert_eq!(stats[0].failed, 0);
}

/// `llm` is optional: a stage that imports it loads without the grant, and
/// its calls are refused at once, so it takes its model-free path (here
/// the clarifier, told to use a model, asks its template question).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_model_is_refused_at_call_time_and_the_stage_falls_back() {
    use callpipe_runtime::pipeline::bindings::types::{SpeakerRole, Suggestion, Transcript};
    let toml = format!(
        r#"
[pipeline]
name = "no-model"

[[stages]]
name = "context"
component = "{a}"
on = ["transcript"]

[[stages]]
name = "clarifier"
component = "{c}"
on = ["analysis"]
[stages.config]
llm = true
"#,
        a = wasm("callpipe-stage-context-analyzer"),
        c = wasm("callpipe-stage-clarifier")
    );
    let pipeline = Arc::new(load(&toml).await.expect("loads without the grant"));
    let (events, stats) = run_call(
        pipeline,
        "no-model".into(),
        vec![Event::Transcript(Transcript {
            utterance_id: 1,
            track: Track::Inbound,
            speaker_id: "tech-1".into(),
            role: SpeakerRole::Technician,
            start_ms: 0,
            end_ms: 1500,
            text: "Bonjour, j'ai un souci sur le site.".into(),
            language: "fr".into(),
            confidence: 0.9,
        })],
    )
    .await;
    let asked: Vec<&Suggestion> = events
        .iter()
        .filter_map(|e| match e {
            Event::Suggestion(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{events:?}");
    assert!(
        asked[0].content.contains("équipement"),
        "the template: {}",
        asked[0].content
    );
    assert!(stats.iter().all(|s| s.failed == 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_reported_with_its_line() {
    let toml = format!(
        "[pipeline]\nname = \"keys\"\n\n[[stages]]\nname = \"codec\"\ncomponent = \"{}\"\ncolour = \"blue\"\n",
        wasm("callpipe-stage-mulaw-codec")
    );
    let diags = load(&toml).await.err().expect("refused");
    assert_eq!(diags.0.len(), 1);
    let d = &diags.0[0];
    assert_eq!((d.line, d.column), (7, 1));
    assert!(d.message.contains("unknown field `colour`"), "{d}");

    // Unknown keys inside a stage's config are the stage's to reject, and
    // still land on the right line.
    let toml = format!(
        "[pipeline]\nname = \"keys\"\n\n[[stages]]\nname = \"vad\"\ncomponent = \"{}\"\n[stages.config]\nthreshold = 0.02\nthreshhold = 0.01\n",
        wasm("callpipe-stage-energy-vad")
    );
    let diags = load(&toml).await.err().expect("refused");
    assert_eq!(
        (diags.0[0].line, diags.0[0].stage.as_deref()),
        (9, Some("vad")),
        "{diags}"
    );
}

/// A pipeline whose second stage misbehaves every 25th frame.
fn hostile_pipeline(mode: &str) -> String {
    format!(
        r#"
[pipeline]
name = "hostile-{mode}"

[[stages]]
name = "codec"
component = "{codec}"

[[stages]]
name = "hostile"
component = "{hostile}"
config = {{ mode = "{mode}", every = 25 }}
limits = {{ memory_mib = 16, deadline_ms = 50 }}
"#,
        codec = wasm("callpipe-stage-mulaw-codec"),
        hostile = wasm("callpipe-test-hostile"),
    )
}

async fn contained(mode: &str) {
    let hostile = Arc::new(
        load(&hostile_pipeline(mode))
            .await
            .expect("hostile pipeline loads"),
    );
    let good = Arc::new(load(&audio_pipeline()).await.expect("pipeline loads"));
    let mut segments = SEGMENTS.to_vec();
    segments.push(tail_silence());
    let pcm = tone_and_silence(&segments);
    let frames = mulaw_frames(&pcm, Track::Inbound);
    let n = frames.len() as u64;

    // Both calls run at once in the same engine.
    let bad_call = tokio::spawn(run_call(hostile, format!("bad-{mode}"), frames.clone()));
    let good_call = tokio::spawn(run_call(good, format!("good-{mode}"), frames));
    let (bad_events, bad_stats) = bad_call.await.expect("hostile call task");
    let (good_events, good_stats) = good_call.await.expect("good call task");

    // The neighbour call is untouched.
    assert_boundaries(&good_events);
    assert!(good_stats.iter().all(|s| s.failed == 0 && s.restarts == 0));

    // The hostile stage failed, was replaced each time, and the call went on
    // to the end: every other frame came through.
    let faults = n / 25;
    let s = bad_stats[1];
    assert_eq!(s.failed, faults, "{mode}: {s:?}");
    assert_eq!(s.restarts, faults, "{mode}: {s:?}");
    let audio = bad_events
        .iter()
        .filter(|e| matches!(e, Event::Audio(_)))
        .count() as u64;
    assert_eq!(audio, n - faults, "{mode}");
    assert!(
        matches!(bad_events.last(), Some(Event::CallEnded(_))),
        "{mode}: the call ended normally"
    );

    // Each fault is reported for the ops page (and the store), filed under
    // the call's session and the stage's name.
    let session = format!("bad-{mode}");
    let reported: Vec<_> = callpipe_runtime::metrics::STAGE_FAILURES
        .recent()
        .into_iter()
        .filter(|f| f.session_id == session)
        .collect();
    // (The three hostile tests share the process's last 50 failures.)
    assert!(
        !reported.is_empty() && reported.len() as u64 <= faults,
        "{mode}: {reported:?}"
    );
    assert!(
        reported
            .iter()
            .all(|f| f.stage == "hostile" && f.fault && f.kind == "audio"),
        "{mode}: {reported:?}"
    );
    let across_calls = callpipe_runtime::metrics::stage("hostile");
    assert!(
        across_calls
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= faults
    );
    assert!(across_calls.latency.count() >= n - faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_interrupted_and_contained() {
    contained("loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_memory_growth_is_stopped_and_contained() {
    contained("leak").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_contained() {
    contained("panic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcriber_settings_are_checked_where_they_are_written() {
    let with = |section: &str| {
        format!(
            "[pipeline]\nname = \"t\"\n\n[capabilities.transcriber]\n{section}\n\n[[stages]]\nname = \"codec\"\ncomponent = \"{}\"\n",
            wasm("callpipe-stage-mulaw-codec")
        )
    };
    let missing = load(&with(
        "backend = \"whisper-cpp\"\nmodel = \"/nonexistent/ggml-base.bin\"",
    ))
    .await
    .err()
    .expect("refused");
    assert_eq!(missing.0[0].line, 4, "{missing}");
    assert!(missing.to_string().contains("callpipe models"), "{missing}");

    let unknown = load(&with("backend = \"telepathy\""))
        .await
        .err()
        .expect("refused");
    assert!(unknown.to_string().contains("telepathy"), "{unknown}");

    let typo = load(&with("backend = \"whisper-cpp\"\nthreadz = 2"))
        .await
        .err()
        .expect("refused");
    assert!(typo.to_string().contains("threadz"), "{typo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_does_not_compile_is_reported_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x0d\0\x01\0garbage").expect("write");
    let toml = format!(
        "[pipeline]\nname = \"bad\"\n\n[[stages]]\nname = \"broken\"\ncomponent = \"{}\"\n",
        bogus.display()
    );
    let diags = load(&toml).await.err().expect("refused");
    assert_eq!(diags.0.len(), 1, "{diags}");
    let d = &diags.0[0];
    assert_eq!(
        (d.line, d.column, d.stage.as_deref()),
        (6, 13, Some("broken")),
        "{d}"
    );
    assert!(d.message.contains("fails to compile"), "{d}");
}

/// Text typed on the dashboard enters as `transcript` at the first stage
/// that handles it: a text-only pipeline loads. After an audio stage,
/// a stage waiting for transcripts nothing produces is still an error
/// (a transcriber missing or put after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_may_enter_a_text_only_pipeline_but_not_skip_the_transcriber() {
    let context = wasm("callpipe-stage-context-analyzer");
    let text_only = format!(
        "[pipeline]\nname = \"chat\"\n\n[[stages]]\nname = \"context\"\ncomponent = \"{context}\"\n"
    );
    load(&text_only).await.expect("a text-only pipeline loads");
    let misordered = format!(
        "[pipeline]\nname = \"calls\"\n\n[[stages]]\nname = \"codec\"\ncomponent = \"{}\"\n\n[[stages]]\nname = \"context\"\ncomponent = \"{context}\"\n",
        wasm("callpipe-stage-mulaw-codec")
    );
    let refused = load(&misordered).await.err().expect("refused");
    assert!(
        refused
            .to_string()
            .contains("handles `transcript`, but no earlier stage emits it"),
        "{refused}"
    );
}
