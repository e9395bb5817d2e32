//! Capability latencies, as percentiles over repeated runs:
//!
//! - speech end -> transcript: a 3 s utterance through the transcriber stage
//!   (compiled component, whisper.cpp base, 1 thread), from the moment the
//!   VAD would hand it on to the transcript event;
//! - knowledge search (embedding + hybrid query) on the shipped 60-article
//!   knowledge base, and on it plus 100,000 synthetic chunks;
//! - `whisper`: word error rate and cost of each Whisper model file (f16,
//!   q8_0, q5_1) with 1 and 2 states at once, on the 40 prompts of
//!   `bench/prompts-fr.txt` as recorded and cut or padded to 3.0 s.
//!
//! - `whisper-language`: what detecting the language costs, on the same 40
//!   prompts one after another as in one call: transcribed in French as
//!   told, detected at every utterance, and detected as a call does it
//!   (`call_language`: until sure, then checks only).
//!
//! Run: `cargo bench -p callpipe-host --bench capabilities [speech|knowledge|knowledge-100k|whisper|whisper-language]`
//! (needs `callpipe models --quantize q8_0,q5_1`; the `whisper` ones run only when named).

mod common;

use callpipe_host::audio::wav;
use callpipe_host::knowledge::layout::{self, ChunkPoint, Sparse};
use callpipe_host::knowledge::{KnowledgeBase, KnowledgeConfig, Search, article};
use callpipe_host::pipeline::bindings::types::{SpeakerRole, Track, Utterance};
use callpipe_host::pipeline::loader::{self, LoadOptions};
use callpipe_host::pipeline::{Call, CallInfo, Event, Runtime, RuntimeConfig};
use common::{cpu_time, data_dir, report, root};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 3.0 s of real French phone speech at 16 kHz (an asterisk prompt, or the
/// bundled espeak sample when Debian's sounds are absent).
fn three_seconds() -> Vec<i16> {
    let prompt = Path::new("/usr/share/asterisk/sounds/fr_CA_f_June/conf-onlyperson.wav");
    let rec = wav::read(prompt)
        .or_else(|_| wav::read(&root().join("samples/technician-fr.wav")))
        .expect("speech sample");
    let x = &rec.channels[0];
    let x16 = callpipe_dsp::resample::resample(x, rec.rate, 16_000);
    let mut pcm: Vec<i16> = x16.iter().map(|&v| (v * 32767.0) as i16).collect();
    pcm.resize(48_000, 0);
    pcm
}

fn speech(rt: &tokio::runtime::Runtime) {
    let model =
        callpipe_host::models::dir(&data_dir()).join(callpipe_host::models::whisper::MODEL_FILE);
    if !model.exists() {
        println!(
            "speech: SKIPPED, no model at {} (run `callpipe models`)",
            model.display()
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"[pipeline]
name = "bench-stt"
[capabilities.transcriber]
backend = "whisper-cpp"
model = "{}"
threads = 1
language = "fr"
# The audio path, so the flow check is satisfied; the bench sends the
# utterance straight in, as the VAD would hand it on.
[[stages]]
name = "codec"
component = "{plugins}/mulaw-codec"
[[stages]]
name = "vad"
component = "{plugins}/energy-vad"
[[stages]]
name = "speakers"
component = "{plugins}/speaker-priority"
[[stages]]
name = "transcriber"
component = "{plugins}/transcriber"
grants = ["transcriber"]
[stages.limits]
memory_mib = 32
deadline_ms = 60000
"#,
        model.display(),
        plugins = root().join("plugins").display()
    );
    let path = dir.path().join("stt.toml");
    std::fs::write(&path, toml).expect("write");
    let runtime = Runtime::new(RuntimeConfig::new(
        &root().join("target").join("bench-data"),
    ))
    .expect("engine");
    let options = LoadOptions {
        build_plugins: true,
        quiet: true,
        data_dir: data_dir(),
        knowledge_store: None,
    };
    let pipeline = Arc::new(
        rt.block_on(loader::load(&runtime, &path, &options))
            .unwrap_or_else(|d| panic!("{d}")),
    );
    let pcm = three_seconds();
    let mut samples = Vec::new();
    for i in 0..12 {
        let took = rt.block_on(async {
            let info = CallInfo {
                session_id: format!("bench-{i}"),
                call_sid: String::new(),
                technician_id: "t".into(),
                technician_name: "T".into(),
                language: "fr".into(),
                speakers: vec![],
            };
            let (call, mut out) = Call::start(pipeline.clone(), info).await.expect("call");
            let utterance = Event::Utterance(Utterance {
                id: 1,
                track: Track::Inbound,
                speaker_id: "technician".into(),
                role: SpeakerRole::Technician,
                start_ms: 0,
                end_ms: 3000,
                pre_roll_ms: 0,
                rate: 16_000,
                samples: pcm.clone(),
                partial: false,
            });
            let started = Instant::now();
            call.send(utterance).await.expect("send");
            let mut took = None;
            while let Some(e) = out.recv().await {
                if let Event::Transcript(_) = e {
                    took = Some(started.elapsed());
                    break;
                }
            }
            call.finish().await;
            took.expect("a transcript")
        });
        if i >= 2 {
            samples.push(took); // the first two warm the model's caches
        }
    }
    report("speech end -> transcript (3 s, base, 1 thread)", samples);
}

fn queries() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("tests/kb-quality/queries.jsonl"))
        .expect("labelled queries");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["query"].as_str().map(str::to_string))
        .collect()
}

async fn open(dir: &Path) -> Option<KnowledgeBase> {
    // The default embedder's model (USE multilingual v3).
    let model = callpipe_host::models::usem::path(&callpipe_host::models::dir(&data_dir()))
        .join("weights.npz");
    if !model.exists() {
        println!("knowledge: SKIPPED, no embedding model (run `callpipe models`)");
        return None;
    }
    let config = KnowledgeConfig {
        path: Some(dir.join("store")),
        ..KnowledgeConfig::default()
    };
    let kb = config.open(&data_dir(), &root()).await.expect("open");
    let articles = article::read_file(&root().join("../shared/kb/articles.jsonl")).expect("kb");
    kb.import(&articles, |_| {}).await.expect("import");
    Some(kb)
}

async fn search_all(kb: &KnowledgeBase, rounds: usize) -> Vec<Duration> {
    let qs = queries();
    let mut samples = Vec::new();
    for _ in 0..rounds {
        for q in &qs {
            let started = Instant::now();
            let hits = kb
                .search(&Search {
                    query: q.clone(),
                    limit: 3,
                    ..Search::default()
                })
                .await
                .expect("search");
            samples.push(started.elapsed());
            assert!(!hits.is_empty());
        }
    }
    samples
}

fn knowledge(rt: &tokio::runtime::Runtime, synthetic: usize) {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(kb) = open(dir.path()).await else {
            return;
        };
        // Warm up, then measure.
        search_all(&kb, 1).await;
        if synthetic == 0 {
            report(
                "knowledge search, shipped KB (60 articles)",
                search_all(&kb, 5).await,
            );
            // The share of that which is the query's embedding (one core).
            let model = callpipe_e5::Model::load(&callpipe_host::models::e5::path(
                &callpipe_host::models::dir(&data_dir()),
            ))
            .expect("model");
            let mut samples = Vec::new();
            for q in queries().iter().cycle().take(335) {
                let started = Instant::now();
                model.embed(q, callpipe_e5::Kind::Query).expect("embed");
                samples.push(started.elapsed());
            }
            report("  of which: query embedding (e5, 1 thread)", samples);
            return;
        }
        let store = kb.store().await.expect("store");
        let started = Instant::now();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for batch in 0..synthetic.div_ceil(1000) {
            let mut points = Vec::with_capacity(1000);
            for i in 0..1000.min(synthetic - batch * 1000) {
                let n = batch * 1000 + i;
                let mut dense: Vec<f32> = (0..384)
                    .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
                    .collect();
                let norm = dense.iter().map(|x| x * x).sum::<f32>().sqrt();
                dense.iter_mut().for_each(|x| *x /= norm);
                let mut indices: Vec<u32> = (0..24).map(|_| (next() % 50_000) as u32).collect();
                indices.sort_unstable();
                indices.dedup();
                let values = vec![1.0; indices.len()];
                let mut payload = serde_json::Map::new();
                payload.insert(layout::field::ARTICLE_ID.into(), format!("syn-{n}").into());
                payload.insert(layout::field::CHUNK.into(), 0.into());
                payload.insert(layout::field::TITLE.into(), format!("synthetic {n}").into());
                payload.insert(layout::field::LANGUAGE.into(), "fr".into());
                points.push(ChunkPoint {
                    id: layout::point_id(&format!("syn-{n}"), 0),
                    dense,
                    sparse: Sparse { indices, values },
                    payload,
                });
            }
            store.upsert(points).await.expect("upsert");
        }
        let upserted = started.elapsed();
        store.finish().await.expect("optimize");
        println!(
            "{synthetic} synthetic chunks: upsert {:.1} s, index build {:.1} s",
            upserted.as_secs_f64(),
            (started.elapsed() - upserted).as_secs_f64()
        );
        search_all(&kb, 1).await;
        report(
            &format!("knowledge search, KB + {synthetic} chunks"),
            search_all(&kb, 5).await,
        );
    });
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| f == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    if wants("speech") {
        speech(&rt);
    }
    if wants("knowledge") {
        knowledge(&rt, 0);
    }
    if wants("knowledge-100k") {
        knowledge(&rt, 100_000);
    }
    // Minutes of Whisper: only when asked for by name.
    if filter.iter().any(|f| f == "whisper") {
        whisper(&rt);
    }
    if filter.iter().any(|f| f == "whisper-language") {
        whisper_language(&rt);
    }
}

/// CPU per utterance with the language given, detected every time, and
/// detected as a call does (see `call_language`); one state, one thread,
/// the default model, the 40 prompts in turn.
fn whisper_language(rt: &tokio::runtime::Runtime) {
    use callpipe_host::capabilities::call_language::CallLanguage;
    use callpipe_host::capabilities::transcriber::TranscriberConfig;
    let model =
        callpipe_host::models::dir(&data_dir()).join(callpipe_host::models::whisper::MODEL_FILE);
    let clips = whisper_corpora().remove(0).1;
    let build = |language: &str| {
        let config: TranscriberConfig = toml::from_str(&format!(
            "backend = \"whisper-cpp\"\nmodel = \"{}\"\nthreads = 1\nlanguage = \"{language}\"\n\
             max_concurrent = 1\nmax_queued = 1000\ntimeout_ms = 3600000\n",
            model.display()
        ))
        .expect("config");
        config
            .build(&data_dir(), Path::new("."))
            .expect("model loads")
            .backend
    };
    println!(
        "{:<28} {:>6} {:>12} {:>10} {:>14}",
        "language", "WER", "CPU s / utt.", "vs given", "detected fr"
    );
    let mut given_cpu = 0.0;
    for mode in [
        "given (fr)",
        "detected every utterance",
        "detected as a call does",
    ] {
        let backend = build(if mode.starts_with("given") {
            "fr"
        } else {
            "auto"
        });
        // Warm the state (and its window) first.
        rt.block_on(backend.transcribe(clips[0].audio.clone(), None, None))
            .expect("transcribes");
        let mut call = CallLanguage::default();
        let (mut errors, mut words, mut french, mut detections) = (0, 0, 0, 0);
        let cpu0 = cpu_time();
        for clip in &clips {
            let language = match mode {
                "detected as a call does" => call.next().map(str::to_owned),
                _ => None,
            };
            let detecting = mode != "given (fr)" && language.is_none();
            let got = rt
                .block_on(backend.transcribe(clip.audio.clone(), language, None))
                .expect("transcribes");
            if detecting {
                detections += 1;
                french += usize::from(got.language == "fr");
                call.observe(
                    Some((&got.language, got.language_probability)),
                    got.text.split_whitespace().count(),
                    got.confidence,
                );
            } else {
                call.observe(None, got.text.split_whitespace().count(), got.confidence);
            }
            let (e, w) = callpipe_testkit::speech::word_errors(
                clip.reference.as_deref().unwrap_or_default(),
                &got.text,
            );
            errors += e;
            words += w;
        }
        let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64() / clips.len() as f64;
        if mode.starts_with("given") {
            given_cpu = cpu;
        }
        println!(
            "{mode:<28} {:>6.3} {cpu:>12.3} {:>+9.0}% {:>14}",
            errors as f64 / words.max(1) as f64,
            (cpu / given_cpu - 1.0) * 100.0,
            if detections > 0 {
                format!("{french} / {detections}")
            } else {
                "-".into()
            },
        );
    }
}

/// The model files `callpipe models --quantize q8_0,q5_1` writes.
const WHISPER_MODELS: [(&str, &str); 3] = [
    ("f16", "ggml-base.bin"),
    ("q8_0", "ggml-base-q8_0.bin"),
    ("q5_1", "ggml-base-q5_1.bin"),
];

/// One corpus's audio at 16 kHz, with its reference text when whole.
struct Clip {
    audio: Vec<f32>,
    reference: Option<String>,
}

fn whisper_corpora() -> Vec<(&'static str, Vec<Clip>)> {
    use callpipe_testkit::speech::{bench_prompts, prompt_wav, transcripts};
    let refs = transcripts();
    let mut whole = Vec::new();
    let mut three = Vec::new();
    for name in bench_prompts() {
        let rec = wav::read(&prompt_wav(&name)).expect("prompt (asterisk-core-sounds-fr-wav)");
        let audio = callpipe_dsp::resample::resample(&rec.channels[0], rec.rate, 16_000);
        let mut cut = audio.clone();
        cut.resize(48_000, 0.0);
        three.push(Clip {
            audio: cut,
            reference: None,
        });
        whole.push(Clip {
            audio,
            reference: Some(refs.get(&name).cloned().expect("a transcript")),
        });
    }
    vec![("40 prompts", whole), ("40 x 3.0 s", three)]
}

/// WER and cost per utterance of each model with 1 and 2 whisper states:
/// all 40 clips are submitted at once and the backend runs `states` of them
/// at a time (1 thread each), as a busy host would.
fn whisper(rt: &tokio::runtime::Runtime) {
    use callpipe_host::capabilities::transcriber::TranscriberConfig;
    let dir = callpipe_host::models::dir(&data_dir());
    let corpora = whisper_corpora();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{:<6} {:<6} {:<11} {:>6} {:>14} {:>12} {:>16}",
        "model", "states", "corpus", "WER", "wall s / utt.", "CPU s / utt.", "talkers / core"
    );
    for (label, file) in WHISPER_MODELS {
        let model = dir.join(file);
        if !model.exists() {
            println!(
                "{label}: SKIPPED, no {} (callpipe models --quantize q8_0,q5_1)",
                model.display()
            );
            continue;
        }
        for states in [1usize, 2] {
            let config: TranscriberConfig = toml::from_str(&format!(
                "backend = \"whisper-cpp\"\nmodel = \"{}\"\nthreads = 1\nlanguage = \"fr\"\n\
                 max_concurrent = {states}\nmax_queued = 1000\ntimeout_ms = 3600000\n",
                model.display()
            ))
            .expect("config");
            let backend = config
                .build(&data_dir(), Path::new("."))
                .expect("model loads")
                .backend;
            // Warm every state's buffers first.
            rt.block_on(futures_util::future::join_all((0..states).map(|_| {
                backend.transcribe(corpora[0].1[0].audio.clone(), Some("fr".into()), None)
            })));
            for (corpus, clips) in &corpora {
                let cpu0 = cpu_time();
                let started = Instant::now();
                let results =
                    rt.block_on(futures_util::future::join_all(clips.iter().map(|clip| {
                        let backend = backend.clone();
                        let audio = clip.audio.clone();
                        async move { backend.transcribe(audio, Some("fr".into()), None).await }
                    })));
                let wall = started.elapsed().as_secs_f64();
                let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64();
                let (mut errors, mut words) = (0, 0);
                for (got, clip) in results.iter().zip(clips) {
                    let text = &got.as_ref().expect("transcribes").text;
                    if let Some(reference) = &clip.reference {
                        let (e, w) = callpipe_testkit::speech::word_errors(reference, text);
                        errors += e;
                        words += w;
                    }
                }
                let n = clips.len() as f64;
                let cpu_per = cpu / n;
                let wer = if words > 0 {
                    format!("{:.3}", errors as f64 / words as f64)
                } else {
                    "-".into()
                };
                println!(
                    "{label:<6} {states:<6} {corpus:<11} {wer:>6} {:>14.3} {:>12.3} {:>16.1}",
                    wall / n,
                    cpu_per,
                    // One utterance every 8 s per talking technician.
                    8.0 / cpu_per,
                );
            }
        }
    }
    println!(
        "({cores} cores; talkers / core: technicians each saying one such utterance every 8 s that one core keeps up with)"
    );
}
