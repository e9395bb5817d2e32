//! For tests of this crate and the crates above it (feature
//! `test-support`): build the workspace's real components once, load
//! pipelines from inline TOML, synthesise Twilio frames, run a call.

use crate::pipeline::bindings::types::{Codec, EncodedAudio, Track};
use crate::pipeline::loader::{self, LoadOptions};
use crate::pipeline::plugins;
use crate::pipeline::{CallInfo, Diagnostics, Event, LoadedPipeline, Runtime, RuntimeConfig};
use callpipe_testkit::root as workspace_root;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Every plugin and test component, built once per test binary with the
/// same builder `callpipe` uses.
pub fn components() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let crates: Vec<(PathBuf, String)> = [
            ("plugins/mulaw-codec", "callpipe-stage-mulaw-codec"),
            ("plugins/energy-vad", "callpipe-stage-energy-vad"),
            (
                "plugins/speaker-priority",
                "callpipe-stage-speaker-priority",
            ),
            ("plugins/transcriber", "callpipe-stage-transcriber"),
            (
                "plugins/context-analyzer",
                "callpipe-stage-context-analyzer",
            ),
            ("plugins/clarifier", "callpipe-stage-clarifier"),
            ("tests/components/hostile", "callpipe-test-hostile"),
            ("tests/components/ungranted", "callpipe-test-ungranted"),
            (
                "tests/components/contract-v0-1-0",
                "callpipe-test-contract-v0-1-0",
            ),
        ]
        .into_iter()
        .map(|(dir, pkg)| (root.join(dir), pkg.to_string()))
        .collect();
        plugins::build(&crates, true).unwrap_or_else(|e| panic!("building components failed: {e}"))
    })
}

/// Path of a built component, for `component = "..."` in test pipelines.
pub fn wasm(package: &str) -> String {
    components()
        .get(package)
        .unwrap_or_else(|| panic!("no component {package}"))
        .display()
        .to_string()
}

pub fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        let cache = workspace_root().join("target").join("test-component-cache");
        let mut config = RuntimeConfig::new(&cache);
        config.max_instances = 256;
        Runtime::new(config).expect("engine")
    })
    .clone()
}

/// Loads a pipeline from TOML text (component paths absolute).
pub async fn load(toml: &str) -> Result<LoadedPipeline, Diagnostics> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.toml");
    std::fs::write(&path, toml).expect("write pipeline");
    loader::load(
        &runtime(),
        &path,
        &LoadOptions {
            build_plugins: false,
            quiet: true,
            ..Default::default()
        },
    )
    .await
}

pub fn call_info(session: &str) -> CallInfo {
    CallInfo {
        session_id: session.into(),
        call_sid: format!("CA{session}"),
        technician_id: "tech-1".into(),
        technician_name: "Jeanne".into(),
        language: "fr".into(),
        speakers: vec![],
    }
}

/// 8 kHz PCM: tone bursts (`true`) and near-silence (`false`), by duration.
pub fn tone_and_silence(segments: &[(bool, u32)]) -> Vec<i16> {
    let mut out = Vec::new();
    for &(tone, ms) in segments {
        for i in 0..(ms as usize * 8) {
            out.push(if tone {
                (8000.0 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 8000.0).sin()) as i16
            } else {
                ((i * 7919 % 41) as i16) - 20
            });
        }
    }
    out
}

/// PCM as Twilio media frames (160 mu-law bytes, 20 ms each).
pub fn mulaw_frames(pcm: &[i16], track: Track) -> Vec<Event> {
    pcm.chunks(160)
        .enumerate()
        .map(|(i, chunk)| {
            let mut bytes: Vec<u8> = chunk
                .iter()
                .map(|&s| callpipe_dsp::g711::encode(s))
                .collect();
            bytes.resize(160, 0xFF);
            Event::EncodedAudio(EncodedAudio {
                codec: Codec::Mulaw,
                rate: 8000,
                track,
                seq: i as u64,
                timestamp_ms: i as u64 * 20,
                bytes,
            })
        })
        .collect()
}

/// Runs `frames` through a call and returns everything the pipeline put out.
pub async fn run_call(
    pipeline: Arc<LoadedPipeline>,
    session: String,
    frames: Vec<Event>,
) -> (Vec<Event>, Vec<crate::pipeline::stats::StatsSnapshot>) {
    let (call, mut output) = crate::pipeline::Call::start(pipeline, call_info(&session))
        .await
        .expect("call starts");
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = output.recv().await {
            events.push(e);
        }
        events
    });
    for f in frames {
        call.send(f).await.expect("send");
    }
    let stats = call.finish().await;
    (collector.await.expect("collector"), stats)
}

/// Where `callpipe models` put the models (`.ci/run` sets CALLPIPE_DATA_DIR).
pub fn models_dir() -> PathBuf {
    crate::models::dir(&callpipe_testkit::data_dir())
}
