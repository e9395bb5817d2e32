//! The audio path through the real runtime: codec -> VAD -> speaker-priority
//! on compiled components, per 20 ms frame for 1 and for 1,000 concurrent
//! calls, and the time to instantiate one call's pipeline.
//!
//! Run: `cargo bench -p callpipe-host --bench audio_path`

mod common;

use callpipe_host::audio::{frames, wav};
use callpipe_host::pipeline::bindings::types::{Codec, EncodedAudio, Track};
use callpipe_host::pipeline::loader::{self, LoadOptions};
use callpipe_host::pipeline::{Call, CallInfo, Event, LoadedPipeline, Runtime, RuntimeConfig};
use common::{cpu_time, root};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 1000;

struct Setup {
    rt: tokio::runtime::Runtime,
    pipeline: Arc<LoadedPipeline>,
    /// One second of the speech sample as Twilio frames (speech and pauses).
    frames: Vec<Event>,
}

/// The default pipeline's audio stages (codec, VAD, speaker priority) with
/// their settings, and nothing after them: what every frame crosses. The
/// stages after them see utterances, not frames (and would put Whisper in
/// the measure).
fn audio_stages_of_default_pipeline() -> std::path::PathBuf {
    let path = root().join("pipelines").join("technician-support.toml");
    let text = std::fs::read_to_string(&path).expect("default pipeline");
    let mut doc: toml::Table = toml::from_str(&text).expect("default pipeline parses");
    doc.remove("capabilities");
    let stages = doc
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .expect("stages");
    stages.truncate(3);
    for stage in stages.iter_mut() {
        let table = stage.as_table_mut().expect("a stage table");
        let component = table["component"].as_str().expect("component").to_string();
        let resolved = root().join("plugins").join(component);
        table.insert(
            "component".into(),
            toml::Value::String(resolved.display().to_string()),
        );
    }
    let out = root()
        .join("target")
        .join("bench-data")
        .join("audio-path.toml");
    std::fs::create_dir_all(out.parent().expect("dir")).expect("bench dir");
    std::fs::write(&out, toml::to_string(&doc).expect("toml")).expect("write");
    out
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut config = RuntimeConfig::new(&root().join("target").join("bench-data"));
    config.max_instances = (CALLS as u32 + 10) * 3;
    let runtime = Runtime::new(config).expect("engine");
    let path = audio_stages_of_default_pipeline();
    let pipeline = rt
        .block_on(loader::load(
            &runtime,
            &path,
            &LoadOptions {
                build_plugins: true,
                quiet: true,
                data_dir: common::data_dir(),
                ..Default::default()
            },
        ))
        .unwrap_or_else(|d| panic!("{d}"));
    let rec = wav::read(&root().join("samples").join("technician-fr.wav")).expect("sample");
    let tracks = frames::frames(&rec, frames::TrackLayout::Mono(Track::Inbound));
    let frames = tracks[0]
        .frames
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            Event::EncodedAudio(EncodedAudio {
                codec: Codec::Mulaw,
                rate: 8000,
                track: Track::Inbound,
                seq: i as u64,
                timestamp_ms: i as u64 * 20,
                bytes: bytes.clone(),
            })
        })
        .collect();
    Setup {
        rt,
        pipeline: Arc::new(pipeline),
        frames,
    }
}

fn info(n: usize) -> CallInfo {
    CallInfo {
        session_id: format!("bench-{n}"),
        call_sid: format!("CAbench{n}"),
        technician_id: "tech".into(),
        technician_name: "Bench".into(),
        language: "fr".into(),
        speakers: vec![],
    }
}

async fn start(pipeline: &Arc<LoadedPipeline>, n: usize) -> (Call, tokio::task::JoinHandle<usize>) {
    let (call, mut out) = Call::start(pipeline.clone(), info(n)).await.expect("call");
    let drain = tokio::spawn(async move {
        let mut count = 0;
        while out.recv().await.is_some() {
            count += 1;
        }
        count
    });
    (call, drain)
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("audio_path");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    group.bench_function("instantiate_call", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let t = Instant::now();
                    let (call, drain) = start(&s.pipeline, i as usize).await;
                    total += t.elapsed();
                    call.finish().await;
                    drain.await.ok();
                }
                total
            })
        })
    });

    group.throughput(Throughput::Elements(s.frames.len() as u64));
    group.bench_function("frames_1_call", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (call, drain) = start(&s.pipeline, 0).await;
                    let t = Instant::now();
                    for f in &s.frames {
                        call.send(f.clone()).await.expect("send");
                    }
                    call.finish().await;
                    drain.await.ok();
                    total += t.elapsed();
                }
                total
            })
        })
    });

    group.throughput(Throughput::Elements((s.frames.len() * CALLS) as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    let cpu = std::cell::Cell::new(Duration::ZERO);
    let frames_run = std::cell::Cell::new(0u64);
    group.bench_function("frames_1000_calls", |b| {
        b.iter_custom(|iters| {
            s.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut calls = Vec::with_capacity(CALLS);
                    for n in 0..CALLS {
                        calls.push(start(&s.pipeline, n).await);
                    }
                    let t = Instant::now();
                    let cpu_before = cpu_time();
                    // Frame k of every call, then frame k+1: calls advance together.
                    for f in &s.frames {
                        for (call, _) in &calls {
                            call.send(f.clone()).await.expect("send");
                        }
                    }
                    for (call, drain) in calls {
                        call.finish().await;
                        drain.await.ok();
                    }
                    total += t.elapsed();
                    cpu.set(cpu.get() + cpu_time().saturating_sub(cpu_before));
                    frames_run.set(frames_run.get() + (s.frames.len() * CALLS) as u64);
                }
                total
            })
        })
    });
    group.finish();
    if frames_run.get() > 0 {
        let per_frame = cpu.get().as_nanos() as f64 / frames_run.get() as f64 / 1000.0;
        println!(
            "frames_1000_calls: {per_frame:.2} µs of CPU per frame (all threads, {} frames)",
            frames_run.get()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
