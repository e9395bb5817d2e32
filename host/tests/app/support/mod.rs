//! What the app's test modules share: the running server, the Twilio
//! stand-in, pipelines adapted to the machine, on top of the workspace's
//! paths and fixture policy (callpipe-testkit).

use std::path::PathBuf;

pub mod browser;
pub mod llm;
pub mod openai;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod twilio;

pub use callpipe_testkit::{SOUNDS, data_dir, fixture_present, root};

/// The secret the hosts of a multi-host test sign forwarded requests with.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// One host of a multi-host test: `id` on the database at `url`, with the
/// cluster secret and `extra` settings, serving `pipeline`.
pub fn cluster_host(
    url: &str,
    id: &str,
    pipeline: &std::path::Path,
    extra: &[(&str, &str)],
) -> server::Server {
    let mut env = vec![
        ("CALLPIPE_DATABASE_URL", url),
        ("CALLPIPE_HOST_ID", id),
        ("CALLPIPE_CLUSTER_SECRET", CLUSTER_SECRET),
    ];
    env.extend_from_slice(extra);
    server::Server::start_pipeline(&env, pipeline)
}

/// The shared 60-article test knowledge base (French and English).
pub fn shared_kb() -> Option<PathBuf> {
    let path = root().join("../shared/kb/articles.jsonl");
    fixture_present(
        path.exists(),
        &format!("the shared knowledge base at {}", path.display()),
    )
    .then_some(path)
}

/// Where `callpipe models` put the models (shared by every test's data dir).
pub fn models_dir() -> PathBuf {
    callpipe_host::models::dir(&data_dir())
}

/// Both default models (speech and embedding) are set up.
pub fn models_present() -> bool {
    let dir = models_dir();
    dir.join(callpipe_host::models::whisper::MODEL_FILE)
        .exists()
        && callpipe_host::models::e5::path(&dir).exists()
        && callpipe_host::models::usem::path(&dir)
            .join("weights.npz")
            .exists()
}

/// The default pipeline, or, when the models are absent (a developer
/// machine that has not run `callpipe models`), a copy without the stages
/// and capabilities that need them, so protocol tests still run.
pub fn default_pipeline() -> PathBuf {
    let path = root().join("pipelines/technician-support.toml");
    if fixture_present(models_present(), "the models for the full default pipeline") {
        return path;
    }
    audio_pipeline()
}

/// The default pipeline's audio path only (codec, VAD, speakers): for tests
/// of the Twilio protocol, where transcription would only add minutes of
/// CPU on a 2-core machine.
pub fn audio_pipeline() -> PathBuf {
    let path = root().join("pipelines/technician-support.toml");
    let text = std::fs::read_to_string(&path).expect("default pipeline");
    let mut table: toml::Table = toml::from_str(&text).expect("default pipeline parses");
    table.remove("capabilities");
    if let Some(toml::Value::Array(stages)) = table.get_mut("stages") {
        stages.retain(|s| {
            matches!(
                s.get("name").and_then(|n| n.as_str()),
                Some("codec" | "vad" | "speakers")
            )
        });
    }
    let dir = root().join("target").join("test-pipelines");
    std::fs::create_dir_all(&dir).expect("test pipeline dir");
    let copy = dir.join(format!("audio-path-{}.toml", std::process::id()));
    let mut text = toml::to_string(&table).expect("serialise");
    // Component names resolve against the pipeline's directory.
    text = text.replace(
        "component = \"",
        &format!("component = \"{}/", root().join("plugins").display()),
    );
    std::fs::write(&copy, text).expect("write test pipeline");
    copy
}

/// A copy of the default pipeline changed by `edit`, written under
/// target/test-pipelines with its relative paths made absolute.
pub fn default_pipeline_with(tag: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    pipeline_with("technician-support.toml", tag, edit)
}

/// Sets the solutions stage's confidence floor. Each store's own
/// calibration is strict (README, Answer quality: few articles pass 0.7,
/// the rest are shown as possible matches); tests of the paths a confirmed
/// article takes (chat, stream, dashboard, a call) lower it so that the
/// article they send is confirmed.
pub fn solutions_floor(table: &mut toml::Table, floor: f64) {
    let stages = table
        .get_mut("stages")
        .and_then(|s| s.as_array_mut())
        .expect("the pipeline has stages");
    for stage in stages {
        if stage.get("name").and_then(|n| n.as_str()) == Some("solutions")
            && let Some(config) = stage.get_mut("config").and_then(|c| c.as_table_mut())
        {
            config.insert("floor".into(), toml::Value::Float(floor));
        }
    }
}

/// The floor the tests of confirmed articles use (see `solutions_floor`).
pub const TEST_FLOOR: f64 = 0.3;

/// A copy of `pipelines/<file>` changed by `edit`, as `default_pipeline_with`.
pub fn pipeline_with(file: &str, tag: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let path = root().join("pipelines").join(file);
    let text = std::fs::read_to_string(&path).expect("default pipeline");
    let mut table: toml::Table = toml::from_str(&text).expect("default pipeline parses");
    if let Some(seed) = table
        .get_mut("capabilities")
        .and_then(|c| c.get_mut("knowledge"))
        .and_then(|k| k.get_mut("seed"))
    {
        *seed = toml::Value::String(root().join("kb").display().to_string());
    }
    edit(&mut table);
    let dir = root().join("target").join("test-pipelines");
    std::fs::create_dir_all(&dir).expect("test pipeline dir");
    let copy = dir.join(format!("{tag}-{}.toml", std::process::id()));
    let text = toml::to_string(&table).expect("serialise").replace(
        "component = \"",
        &format!("component = \"{}/", root().join("plugins").display()),
    );
    std::fs::write(&copy, text).expect("write test pipeline");
    copy
}

/// Sets `[capabilities.transcriber] language`.
pub fn transcribe_in(language: &str) -> impl FnOnce(&mut toml::Table) {
    let language = language.to_string();
    move |t: &mut toml::Table| {
        t["capabilities"]["transcriber"]
            .as_table_mut()
            .expect("transcriber section")
            .insert("language".into(), toml::Value::String(language));
    }
}
