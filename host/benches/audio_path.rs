//! The audio path through the real runtime: codec -> VAD -> speaker-priority
//! on compiled components, per 20 ms frame for 1 and for 1,000 concurrent
//! calls, and the time to instantiate one call's pipeline.
//!
//! Run: `cargo bench -p callpipe-host --bench audio_path`

use callpipe_host::audio::{frames, wav};
use callpipe_host::pipeline::bindings::types::{Codec, EncodedAudio, Track};
use callpipe_host::pipeline::loader::{self, LoadOptions};
use callpipe_host::pipeline::{Call, CallInfo, Event, LoadedPipeline, Runtime, RuntimeConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 1000;

/// CPU time (user + system) this process has used, from /proc (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    pipeline: Arc<LoadedPipeline>,
    /// One second of the speech sample as Twilio frames (speech and pauses).
    frames: Vec<Event>,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut config = RuntimeConfig::new(&root().join("target").join("bench-data"));
    config.max_instances = (CALLS as u32 + 10) * 3;
    let runtime = Runtime::new(config).expect("engine");
    let path = root().join("pipelines").join("technician-support.toml");
    let pipeline = rt
        .block_on(loader::load(
            &runtime,
            &path,
            &LoadOptions {
                build_plugins: true,
                quiet: true,
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
