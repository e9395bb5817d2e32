//! Speech end -> suggestion stored and pushed to the dashboard, through the
//! default pipeline's conversation stages (context-analyzer, clarifier,
//! solutions over the shipped sample knowledge base), as percentiles:
//!
//! - `text`: excluding speech recognition. The technician's last words
//!   enter as a transcript; the clock stops when the suggestion is in the
//!   live session and its update reaches a dashboard listener.
//! - `speech`: including it. A 3 s utterance (espeak-ng English) enters the
//!   transcriber stage (whisper.cpp base, 1 thread) as the VAD hands it on.
//!
//! Run: `cargo bench -p callpipe-host --bench conversation [text|speech]`
//! (needs `callpipe models` and espeak-ng).

mod common;

use callpipe_host::capabilities::speech::SpeechConfig;
use callpipe_host::knowledge::article;
use callpipe_host::pipeline::bindings::types::{Event, SpeakerRole, Track, Transcript, Utterance};
use callpipe_host::pipeline::loader::{self, LoadOptions, LoadedPipeline};
use callpipe_host::pipeline::{Call, CallInfo, Runtime, RuntimeConfig};
use callpipe_host::sessions::{Published, Sessions, Update};
use callpipe_host::store::Store;
use common::{data_dir, report, root};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the technician said before: equipment, no symptom yet (not enough
/// to search), and the words that complete it.
const BEFORE: &str = "Hello, I am at the main entrance door with the customer";
const LAST: &str = "The door stays locked after a valid badge, the strike does not release.";

/// The default pipeline in English, its store seeded with the sample KB.
fn pipeline(rt: &tokio::runtime::Runtime, data: &std::path::Path) -> Arc<LoadedPipeline> {
    let text = std::fs::read_to_string(root().join("pipelines/technician-support.toml"))
        .expect("default pipeline");
    let mut table: toml::Table = toml::from_str(&text).expect("default pipeline parses");
    let caps = table["capabilities"].as_table_mut().expect("capabilities");
    caps["transcriber"]
        .as_table_mut()
        .expect("transcriber")
        .insert("language".into(), "en".into());
    // The bench imports the sample KB itself, into its own store.
    caps["knowledge"]
        .as_table_mut()
        .expect("knowledge")
        .remove("seed");
    let text = toml::to_string(&table).expect("serialise").replace(
        "component = \"",
        &format!("component = \"{}/", root().join("plugins").display()),
    );
    let path = data.join("pipeline.toml");
    std::fs::write(&path, text).expect("write pipeline");
    let runtime = Runtime::new(RuntimeConfig::new(
        &root().join("target").join("bench-data"),
    ))
    .expect("engine");
    // Models from the usual place; the store in a fresh directory.
    // SAFETY: single-threaded at this point (before any call runs).
    unsafe {
        std::env::set_var(
            "CALLPIPE_MODELS_DIR",
            callpipe_host::models::dir(&data_dir()),
        )
    };
    let options = LoadOptions {
        build_plugins: true,
        quiet: true,
        data_dir: data.to_path_buf(),
        knowledge_store: None,
    };
    let pipeline = rt
        .block_on(loader::load(&runtime, &path, &options))
        .unwrap_or_else(|d| panic!("{d}"));
    let kb = pipeline
        .capabilities
        .get::<callpipe_host::knowledge::KnowledgeBase>()
        .expect("knowledge");
    let mut articles = Vec::new();
    for file in article::collect(&root().join("kb")).expect("kb/") {
        articles.extend(article::read_file(&file).expect("article"));
    }
    rt.block_on(kb.import(&articles, |_| {})).expect("import");
    Arc::new(pipeline)
}

fn transcript(id: u64, text: &str, end_ms: u64) -> Event {
    Event::Transcript(Transcript {
        utterance_id: id,
        track: Track::Inbound,
        speaker_id: "technician".into(),
        role: SpeakerRole::Technician,
        start_ms: end_ms.saturating_sub(3000),
        end_ms,
        text: text.into(),
        language: "en".into(),
        confidence: 0.9,
    })
}

type Updates = tokio::sync::broadcast::Receiver<Arc<Published>>;

/// The next session update, if one comes within a minute.
async fn next(updates: &mut Updates) -> Option<Arc<Published>> {
    match tokio::time::timeout(Duration::from_secs(60), updates.recv()).await {
        Ok(Ok(p)) => Some(p),
        _ => None,
    }
}

/// One call entering at `stage`: the earlier context goes in first (and its
/// question comes out), then the clock runs from sending `last` to the
/// article's update reaching a listener.
async fn one(
    store: &Arc<Store>,
    pipeline: &Arc<LoadedPipeline>,
    stage: usize,
    session: String,
    last: Event,
) -> Duration {
    let sessions = Arc::new(Sessions::with_store(store.clone()));
    sessions.open(&session, "t", "T", None);
    let mut updates = sessions.subscribe();
    let info = CallInfo {
        session_id: session.clone(),
        call_sid: String::new(),
        technician_id: "t".into(),
        technician_name: "T".into(),
        language: "en".into(),
        speakers: vec![],
    };
    let (call, output) = Call::start_from(pipeline.clone(), info, stage)
        .await
        .expect("call");
    let drain = callpipe_host::calls::output::spawn(
        output,
        sessions.clone(),
        session.clone(),
        None,
        None,
        None,
    );
    // The context so far, and the question it brings, out of the way (a
    // call entering at the transcriber passes transcripts on untouched).
    call.send(transcript(1, BEFORE, 4000)).await.expect("send");
    let mut heard = Vec::new();
    loop {
        let Some(u) = next(&mut updates).await else {
            panic!("no question after the opening; heard {heard:?}");
        };
        if matches!(&u.update, Update::Suggestion(s) if s.kind == "clarification_question") {
            break;
        }
        heard.push(u);
    }
    let started = Instant::now();
    call.send(last).await.expect("send");
    let took = loop {
        let Some(u) = next(&mut updates).await else {
            panic!("no article after the details; heard {heard:?}");
        };
        if let Update::Suggestion(s) = &u.update
            && s.kind == "knowledge_base"
        {
            assert_eq!(s.sources, ["sample-007"], "the door-strike article");
            break started.elapsed();
        }
        heard.push(u);
    };
    call.finish().await;
    let _ = drain.await;
    took
}

fn text_path(rt: &tokio::runtime::Runtime, store: &Arc<Store>, pipeline: &Arc<LoadedPipeline>) {
    let stage = pipeline
        .first_handling(callpipe_host::pipeline::bindings::types::EventKind::Transcript)
        .expect("a transcript stage");
    let mut samples = Vec::new();
    for i in 0..220 {
        let took = rt.block_on(one(
            store,
            pipeline,
            stage,
            format!("text-{i}"),
            transcript(2, LAST, 7000),
        ));
        if i >= 20 {
            samples.push(took);
        }
    }
    report("transcript -> suggestion stored+pushed (no STT)", samples);
}

fn speech_path(rt: &tokio::runtime::Runtime, store: &Arc<Store>, pipeline: &Arc<LoadedPipeline>) {
    let Some(stage) = pipeline
        .stages
        .iter()
        .position(|s| &*s.name == "transcriber")
    else {
        println!("speech: SKIPPED, the pipeline has no transcriber stage");
        return;
    };
    let voice = toml::from_str::<SpeechConfig>("backend = \"espeak-ng\"\nspeed = 185")
        .expect("speech config")
        .build();
    let Ok(voice) = voice else {
        println!("speech: SKIPPED, espeak-ng is not installed");
        return;
    };
    // What Whisper hears from espeak-ng differs a little from what it says.
    let spoken = std::env::var("CALLPIPE_BENCH_SAY").unwrap_or_else(|_| LAST.to_string());
    let mulaw = rt
        .block_on(voice.backend.synthesize(&spoken, "en"))
        .expect("espeak");
    let pcm8: Vec<f32> = mulaw
        .iter()
        .map(|&b| callpipe_dsp::g711::decode(b) as f32 / 32768.0)
        .collect();
    let pcm16: Vec<i16> = callpipe_dsp::resample::resample(&pcm8, 8000, 16_000)
        .iter()
        .map(|&v| (v * 32767.0) as i16)
        .collect();
    let secs = pcm16.len() as f64 / 16_000.0;
    let mut samples = Vec::new();
    for i in 0..12 {
        let utterance = Event::Utterance(Utterance {
            id: 2,
            track: Track::Inbound,
            speaker_id: "technician".into(),
            role: SpeakerRole::Technician,
            start_ms: 4000,
            end_ms: 4000 + (secs * 1000.0) as u64,
            pre_roll_ms: 0,
            rate: 16_000,
            samples: pcm16.clone(),
            partial: false,
        });
        let took = rt.block_on(one(
            store,
            pipeline,
            stage,
            format!("speech-{i}"),
            utterance,
        ));
        if i >= 2 {
            samples.push(took);
        }
    }
    report(
        &format!("speech end -> suggestion ({secs:.1} s, Whisper base, 1 thread)"),
        samples,
    );
}

fn main() {
    // CALLPIPE_LOG=info shows what the stages say.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALLPIPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    let models = callpipe_host::models::dir(&data_dir());
    if !callpipe_host::models::usem::path(&models)
        .join("weights.npz")
        .exists()
    {
        println!(
            "SKIPPED: no models under {} (run `callpipe models`)",
            models.display()
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let data = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline(&rt, data.path());
    // Suggestions are stored (SQLite in the data dir) before they are pushed.
    let store = Arc::new(
        rt.block_on(Store::open(data.path(), None))
            .expect("database"),
    );
    if wants("text") {
        text_path(&rt, &store, &pipeline);
    }
    if wants("speech") {
        speech_path(&rt, &store, &pipeline);
    }
}
