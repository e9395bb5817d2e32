//! The stage authoring kit end to end: `callpipe new-stage` makes a crate
//! whose own tests pass natively, which the host builds to a component (as
//! `callpipe build` does), loads with its config, and runs in a call; and a
//! stage written in Python (plugins/escalation-py, componentize-py) goes the
//! same way.

use callpipe_host::cli::new_stage::{Sdk, World, scaffold};
use callpipe_host::pipeline::Event;
use callpipe_host::pipeline::bindings::types::{SpeakerRole, Track, Transcript};
use callpipe_host::pipeline::loader::{self, LoadOptions};
use callpipe_runtime::test_support::{run_call, runtime};
use std::sync::Arc;

/// Loads a one-stage pipeline (written in `dir`) naming `component`, with
/// `extra` TOML lines for the stage; plugins are built as `callpipe build` does.
async fn load_one(
    dir: &std::path::Path,
    name: &str,
    component: &std::path::Path,
    extra: &str,
) -> Result<callpipe_host::pipeline::LoadedPipeline, callpipe_host::pipeline::Diagnostics> {
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[pipeline]\nname = \"one\"\n\n[[stages]]\nname = \"{name}\"\ncomponent = \"{}\"\n{extra}\n",
            component.display()
        ),
    )
    .expect("write the pipeline");
    let options = LoadOptions {
        build_plugins: true,
        quiet: true,
        ..Default::default()
    };
    loader::load(&runtime(), &pipeline, &options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stage_passes_its_tests_builds_and_runs_in_a_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Outside the repository, on the SDK of this checkout by path (no copy).
    let sdk = Sdk::choose(dir.path(), None, false).expect("this checkout's SDK");
    let made = scaffold("keyword-flag", dir.path(), World::AudioStage, &sdk).expect("scaffold");
    assert!(!made.join("callpipe-sdk").exists());

    // Its own tests, natively (a crate of its own: its own lock file).
    let out = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(made.join("Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 passed"), "{said}");

    // In a pipeline: built to a component and checked at load.
    let loaded = load_one(
        dir.path(),
        "flags",
        &made,
        "config = { keywords = [\"alarme\"] }",
    )
    .await
    .unwrap_or_else(|d| panic!("the new stage loads: {d}"));
    assert_eq!(&*loaded.stages[0].name, "flags");

    let (events, stats) = run_call(
        Arc::new(loaded),
        "kit-1".into(),
        vec![
            transcript(SpeakerRole::Technician, "L'alarme sonne sans arrêt"),
            transcript(SpeakerRole::Agent, "l'alarme ?"),
        ],
    )
    .await;
    let flags: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Custom(c) if c.name == "keyword-flag.keywords" => Some(c.json.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(flags.len(), 1, "{events:?}");
    assert!(flags[0].contains("\"alarme\""), "{flags:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Transcript(_)))
            .count(),
        2,
        "transcripts pass on"
    );
    assert_eq!(stats[0].failed, 0);
}

fn transcript(role: SpeakerRole, text: &str) -> Event {
    Event::Transcript(Transcript {
        utterance_id: 5,
        track: Track::Inbound,
        speaker_id: "tech-1".into(),
        role,
        start_ms: 0,
        end_ms: 1200,
        text: text.into(),
        language: "fr".into(),
        confidence: 0.9,
    })
}

fn componentize_py() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CALLPIPE_COMPONENTIZE_PY") {
        return Some(p.into());
    }
    std::process::Command::new("componentize-py")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "componentize-py".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_stage_passes_its_tests_builds_and_runs_in_a_call() {
    let tool = componentize_py();
    if tool.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide componentize-py (see .ci/run)"
        );
        eprintln!("SKIPPED: needs componentize-py (pip install componentize-py==0.25.1)");
        return;
    }
    let stage = callpipe_testkit::root().join("plugins/escalation-py");

    // Its own tests, natively, with plain Python.
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "-q", "test_escalation"])
        .current_dir(&stage)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Named by its directory, built by componentize-py at load.
    let dir = tempfile::tempdir().unwrap();
    let limits = "limits = { memory_mib = 64, deadline_ms = 500 }";
    let loaded = load_one(
        dir.path(),
        "escalation",
        &stage,
        &format!("config = {{ words = [\"fumée\", \"urgent\"] }}\n{limits}"),
    )
    .await
    .unwrap_or_else(|d| panic!("the Python stage loads: {d}"));

    let (events, stats) = run_call(
        Arc::new(loaded),
        "py-1".into(),
        vec![
            transcript(
                SpeakerRole::Technician,
                "Il y a de la fumee dans le local, c'est urgent",
            ),
            transcript(SpeakerRole::Agent, "urgent ?"),
            transcript(SpeakerRole::Technician, "la caméra ne répond plus"),
        ],
    )
    .await;
    let flags: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| match e {
            Event::Custom(c) if c.name == "escalation" => serde_json::from_str(&c.json).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(flags.len(), 1, "{events:?}");
    assert_eq!(flags[0]["words"], serde_json::json!(["fumee", "urgent"]));
    assert_eq!(flags[0]["utterance_id"], 5);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Transcript(_)))
            .count(),
        3
    );
    assert_eq!(stats[0].failed, 0, "{stats:?}");

    // A bad config is refused at load, by the Python code, with its reason.
    let refused = load_one(
        dir.path(),
        "escalation",
        &stage,
        &format!("config = {{ word = [\"x\"] }}\n{limits}"),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        refused.to_string().contains("unknown config key"),
        "{refused}"
    );
}
