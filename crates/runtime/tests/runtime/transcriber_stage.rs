//! The transcriber stage in a real pipeline: codec -> VAD -> speakers ->
//! transcriber, with whisper.cpp behind the capability, on real recorded
//! French phone speech (Debian's asterisk-core-sounds-fr-wav).

use callpipe_runtime::audio::wav;
use callpipe_runtime::pipeline::Event;
use callpipe_runtime::pipeline::bindings::types::{SpeakerRole, Track, Transcript};
use callpipe_runtime::test_support::*;
use callpipe_testkit::{fixture_present, root as workspace_root};
use std::path::Path;
use std::sync::Arc;

const SOUNDS: &str = "/usr/share/asterisk/sounds/fr_CA_f_June";

fn pipeline(transcriber: &str) -> String {
    format!(
        r#"
[pipeline]
name = "transcribe"
tick_ms = 250

[capabilities.transcriber]
{transcriber}

[[stages]]
name = "codec"
component = "{codec}"
[stages.config]
output_rate = 16000

[[stages]]
name = "vad"
component = "{vad}"

[[stages]]
name = "speakers"
component = "{speakers}"

[[stages]]
name = "transcriber"
component = "{transcriber_stage}"
grants = ["transcriber"]
[stages.limits]
memory_mib = 32
deadline_ms = 30000

[[stages]]
name = "context"
component = "{analyzer}"
"#,
        codec = wasm("callpipe-stage-mulaw-codec"),
        vad = wasm("callpipe-stage-energy-vad"),
        speakers = wasm("callpipe-stage-speaker-priority"),
        transcriber_stage = wasm("callpipe-stage-transcriber"),
        analyzer = wasm("callpipe-stage-context-analyzer"),
    )
}

/// Three prompts separated by 1.5 s pauses, as 8 kHz PCM.
fn three_prompts() -> Option<Vec<i16>> {
    let dir = Path::new(SOUNDS);
    if !fixture_present(
        dir.join("pbx-invalid.wav").exists(),
        "Debian's asterisk-core-sounds-fr-wav",
    ) {
        return None;
    }
    let mut pcm: Vec<i16> = vec![0; 4000];
    for p in ["agent-loggedoff", "conf-onlyperson", "pbx-invalid"] {
        let rec = wav::read(&dir.join(format!("{p}.wav"))).expect("prompt");
        pcm.extend(rec.channels[0].iter().map(|&x| (x * 32767.0) as i16));
        pcm.extend(std::iter::repeat_n(0i16, 12_000));
    }
    Some(pcm)
}

fn transcripts(events: &[Event]) -> Vec<&Transcript> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transcript(t) => Some(t),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_speech_becomes_one_transcript_per_utterance() {
    let Some(pcm) = three_prompts() else { return };
    let model = models_dir().join(callpipe_runtime::models::whisper::MODEL_FILE);
    if !fixture_present(model.exists(), "the Whisper model (run `callpipe models`)") {
        return;
    }
    let toml = pipeline(&format!(
        "backend = \"whisper-cpp\"\nmodel = \"{}\"\nthreads = 1\nlanguage = \"fr\"",
        model.display()
    ));
    let loaded = Arc::new(load(&toml).await.unwrap_or_else(|d| panic!("{d}")));
    assert_eq!(loaded.tick_ms, Some(250));
    let (events, stats) = run_call(loaded, "stt".into(), mulaw_frames(&pcm, Track::Inbound)).await;
    let ts = transcripts(&events);
    assert_eq!(ts.len(), 3, "one per prompt: {ts:?}");
    for t in &ts {
        assert_eq!(t.role, SpeakerRole::Technician);
        assert_eq!(t.speaker_id, "tech-1"); // the call's technician
        assert_eq!(t.language, "fr");
        assert!(t.end_ms > t.start_ms);
        assert!((0.0..=1.0).contains(&t.confidence), "{t:?}");
    }
    let all = ts
        .iter()
        .map(|t| t.text.to_lowercase())
        .collect::<Vec<_>>()
        .join(" | ");
    // The package's transcripts: agent-loggedoff "Vous n'êtes plus en
    // ligne", conf-onlyperson "Vous êtes présentement le seul participant
    // dans cette conférence", pbx-invalid "Désolé, ce numéro de poste n'est
    // pas valide..."
    for word in ["en ligne", "seul participant", "conférence", "pas valide"] {
        assert!(all.contains(word), "`{word}` missing from: {all}");
    }
    assert!(ts.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
    // The context analyzer follows: one analysis per transcript, over all
    // the technician has said so far.
    let analyses: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Analysis(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(analyses.len(), 3, "{analyses:?}");
    let last = analyses[2];
    assert!(last.query.contains(&ts[0].text) && last.query.contains(&ts[2].text));
    assert_eq!(last.language, "fr");
    // 28 words of telephone-system prompts: no equipment, no fault, under
    // the 30 words that would be enough alone.
    assert!(!last.sufficient, "{last:?}");
    assert_eq!(last.missing[0], "equipment");
    // Utterances still flow downstream, without their audio.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Utterance(u) if u.samples.is_empty()))
    );
    // The host's clock reached the stage: one tick per 250 ms of stream.
    let ticks = events
        .iter()
        .filter(|e| callpipe_runtime::pipeline::event::is_tick(e))
        .count();
    let expected = pcm.len() / 8 / 250;
    assert!(
        ticks.abs_diff(expected) <= 2,
        "{ticks} ticks, expected ~{expected}"
    );
    assert!(stats.iter().all(|s| s.failed == 0), "{stats:?}");
}

/// A transcriber backend that cannot be reached costs transcripts, not the
/// call: utterances still flow and the stage does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_loses_transcripts_not_the_call() {
    let Some(pcm) = three_prompts() else { return };
    let toml = pipeline(
        "backend = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\nretries = 0\ntry_timeout_ms = 500\ntimeout_ms = 1000",
    );
    let loaded = Arc::new(load(&toml).await.unwrap_or_else(|d| panic!("{d}")));
    let (events, stats) = run_call(loaded, "down".into(), mulaw_frames(&pcm, Track::Inbound)).await;
    assert!(transcripts(&events).is_empty());
    let utterances = events
        .iter()
        .filter(|e| matches!(e, Event::Utterance(_)))
        .count();
    assert_eq!(utterances, 3);
    assert!(stats.iter().all(|s| s.failed == 0), "{stats:?}");
    assert!(events.iter().any(|e| matches!(e, Event::CallEnded(_))));
}

/// A stage granted `knowledge` searches the pipeline's embedded store through
/// the host capability and gets the articles back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_stage_searches_the_knowledge_base() {
    use callpipe_runtime::knowledge::{KnowledgeConfig, article};
    let model = callpipe_runtime::models::usem::path(&models_dir());
    if !fixture_present(
        model.join("weights.npz").exists(),
        "the embedding model (run `callpipe models`)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // Import the sample articles through the library, into the store the
    // pipeline below names.
    let config = KnowledgeConfig {
        path: Some(store.clone()),
        ..KnowledgeConfig::default()
    };
    let data = models_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let kb = config.open(&data, &workspace_root()).await.expect("open");
    let articles: Vec<_> = article::collect(&workspace_root().join("kb"))
        .expect("sample kb")
        .iter()
        .flat_map(|f| article::read_file(f).expect("article"))
        .collect();
    kb.import(&articles, |_| {}).await.expect("import");

    let toml = format!(
        r#"
[pipeline]
name = "kb"

[capabilities.knowledge]
path = "{store}"
[capabilities.knowledge.embedder]
backend = "local"
model = "{model}"

[[stages]]
name = "search"
component = "{c}"
on = ["call-started"]
grants = ["knowledge"]
[stages.config]
query = "le lecteur refuse le badge d'un nouvel employé"
"#,
        store = store.display(),
        model = model.display(),
        c = wasm("callpipe-test-ungranted"),
    );
    let loaded = Arc::new(load(&toml).await.unwrap_or_else(|d| panic!("{d}")));
    let (events, stats) = run_call(loaded, "kb".into(), vec![]).await;
    let found: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| match e {
            Event::Custom(c) if c.name == "knowledge-hits" => serde_json::from_str(&c.json).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{events:?}");
    let hits = found[0]["ok"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", found[0]));
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["article_id"], "sample-004", "{}", found[0]);
    assert_eq!(hits[0]["has_content"], true);
    assert!(stats.iter().all(|s| s.failed == 0), "{stats:?}");
}
