//! The `callpipe` binary, as a user runs it.

use crate::support;
use crate::support::{SOUNDS, fixture_present, root};
use callpipe_host::audio::wav;
use std::path::Path;
use std::process::{Command, Output};

fn callpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(args)
        .current_dir(root())
        .env("CALLPIPE_PLUGIN_PATH", root().join("plugins"))
        .env("CALLPIPE_DATA_DIR", root().join("target").join("test-data"))
        .env("CALLPIPE_MODELS_DIR", support::models_dir())
        .output()
        .expect("callpipe runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_default_pipeline_checks_clean() {
    let pipeline = support::default_pipeline();
    let out = callpipe(&["check", pipeline.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("ok: {}", pipeline.display())),
        "{stdout}"
    );
    let mut stages = vec!["codec", "vad", "speakers"];
    if support::models_present() {
        stages.push("transcriber");
    }
    for stage in stages {
        assert!(stdout.contains(stage), "{stdout}");
    }
}

#[test]
fn a_broken_copy_fails_with_file_line_and_stage() {
    // The real file (its comments and spacing), models or not: only the
    // located errors below are checked.
    let original = std::fs::read_to_string(root().join("pipelines/technician-support.toml"))
        .expect("pipeline");
    let broken = original
        .replacen("threshold = 0.01 ", "threshhold = 0.01", 1)
        .replacen(
            "component = \"speaker-priority\"",
            "component = \"speaker-priority\"\ngrants = [\"telepathy\"]",
            1,
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, &broken).expect("write");
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1
    };

    let out = callpipe(&["check", path.to_str().expect("utf-8 path")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:{}:1: error in stage `vad`",
            line_of("threshhold")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `threshhold`"), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:{}:", line_of("telepathy")))
            && stderr.contains("unknown capability `telepathy`"),
        "{stderr}"
    );

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(
        &syntax,
        "[pipeline]\nname = \"x\"\n[[stages]\nname = \"a\"\n",
    )
    .expect("write");
    let out = callpipe(&["check", syntax.to_str().expect("utf-8 path")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("syntax.toml:3:"), "{stderr}");
}

/// A pipeline file may not hand the server's own secrets to a URL of its
/// choosing, nor ask for unbounded queues or deadlines.
#[test]
fn a_pipeline_cannot_send_the_servers_secrets_or_ask_for_unbounded_limits() {
    let original = std::fs::read_to_string(root().join("pipelines/technician-support.toml"))
        .expect("pipeline");
    let bad = original
        .replacen(
            "backend = \"local\"",
            "backend = \"openai\"\nurl = \"https://collect.example/v1\"\nmodel = \"m\"\n\
             dimensions = 8\napi_key_env = \"TWILIO_AUTH_TOKEN\"",
            1,
        )
        .replacen("queue = 256", "queue = 100000000", 1)
        .replacen("deadline_ms = 50", "deadline_ms = 86400000", 1);
    assert_ne!(bad, original);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("greedy.toml");
    std::fs::write(&path, &bad).expect("write");
    let out = callpipe(&["check", path.to_str().expect("utf-8 path")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "api_key_env = \"TWILIO_AUTH_TOKEN\" names one of the server's own secrets",
        "queue must be between 1 and 65536",
        "limits.deadline_ms must be between 1 and 600000",
    ] {
        assert!(stderr.contains(want), "want `{want}`:\n{stderr}");
    }
}

fn utterance_count(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "utterance")
        .count()
}

/// The transcripts in `replay --json`'s output, joined.
fn transcript(stdout: &str) -> String {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "transcript")
        .filter_map(|v| v["event"]["text"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The try-it path's recording: one utterance per phrase, and Whisper hears
/// its words (samples/README.md).
#[test]
fn replay_prints_one_utterance_per_phrase_of_the_sample() {
    let out = callpipe(&[
        "replay",
        support::default_pipeline().to_str().expect("utf-8"),
        "--audio",
        "samples/technician-fr.wav",
        "--json",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(utterance_count(&stdout), 3, "{stdout}");
    assert!(
        stderr.contains("codec") && stderr.contains("per event"),
        "summary on stderr: {stderr}"
    );
    let words = std::fs::read_to_string(root().join("samples/technician-fr.txt")).expect("words");
    let heard = transcript(&stdout);
    let (errors, n) = callpipe_testkit::speech::word_errors(&words, &heard);
    assert!(
        errors * 5 <= n,
        "word error rate {errors}/{n} over 0.2: heard `{heard}`"
    );
}

/// Real recorded French speech (Debian's asterisk-core-sounds-fr-wav),
/// three prompts separated by pauses.
#[test]
fn replay_segments_real_phone_speech() {
    let dir = Path::new(SOUNDS);
    let prompts = ["agent-loggedoff", "conf-onlyperson", "pbx-invalid"];
    if !fixture_present(
        dir.join("pbx-invalid.wav").exists(),
        "Debian's asterisk-core-sounds-fr-wav",
    ) {
        return;
    }
    let mut joined: Vec<i16> = vec![0; 4000];
    for p in prompts {
        let rec = wav::read(&dir.join(format!("{p}.wav"))).expect("prompt");
        assert_eq!(rec.rate, 8000);
        joined.extend(rec.channels[0].iter().map(|&x| (x * 32767.0) as i16));
        joined.extend(std::iter::repeat_n(0i16, 12_000)); // 1.5 s pause
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("three-prompts.wav");
    wav::write_pcm16(&path, 8000, &[joined]).expect("write wav");
    let out = callpipe(&[
        "replay",
        support::default_pipeline().to_str().expect("utf-8"),
        "--audio",
        path.to_str().expect("utf-8"),
        "--json",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(utterance_count(&stdout), 3, "{stdout}");
}

#[test]
fn replay_names_an_unreadable_file() {
    let out = callpipe(&[
        "replay",
        support::default_pipeline().to_str().expect("utf-8"),
        "--audio",
        "no/such.wav",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no/such.wav"), "{stderr}");
}

#[test]
fn help_lists_the_commands() {
    let out = callpipe(&["--help"]);
    let (stdout, _) = text(&out);
    for cmd in ["check", "replay", "build"] {
        assert!(stdout.contains(cmd), "{stdout}");
    }
}

/// `callpipe kb`: import (idempotent, errors located), search, stats.
#[test]
fn kb_import_search_and_stats() {
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let kb = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_callpipe"))
            .arg("kb")
            .args(args)
            .current_dir(root())
            .env("CALLPIPE_DATA_DIR", data.path())
            .env("CALLPIPE_MODELS_DIR", support::models_dir())
            .output()
            .expect("callpipe runs")
    };
    // A bad line stops the import before anything is written.
    let broken = data.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"id\":\"x-1\",\"title\":\"t\",\"language\":\"fr\",\"body\":\"b\"}\n{\"id\": \"x-2\", \"title\": 3}\n",
    )
    .expect("write");
    let out = kb(&["import", broken.to_str().expect("utf-8")]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:2: not an article", broken.display())),
        "{stderr}"
    );

    let out = kb(&["import", "kb"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("10 added, 0 updated, 0 unchanged"),
        "{stdout}"
    );
    // The store fits its own confidence calibration and says how well.
    assert!(
        stdout.contains("confidence calibration fitted on the store's own articles")
            && stdout.contains("Brier"),
        "{stdout}"
    );
    let out = kb(&["import", "kb"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("0 added, 0 updated, 10 unchanged"),
        "{stdout}"
    );

    let out = kb(&["search", "le haine vé erre bipe, erreur disque", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(doc["folded_query"], "le NVR bipe, erreur disque");
    assert_eq!(doc["hits"][0]["article_id"], "sample-002", "{doc}");

    let out = kb(&["stats", "--json"]);
    let (stdout, _) = text(&out);
    let stats: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(stats["articles"], 10, "{stats}");
    assert_eq!(stats["dim"], 512);
    assert_eq!(stats["calibration_source"], "store", "{stats}");
    let brier = stats["fitted"]["brier"].as_f64().expect("a Brier score");
    assert!((0.0..0.25).contains(&brier), "{stats}");
}

/// `deploy/bundle.sh` (what the Dockerfile runs) writes a bundle that runs
/// without cargo or the sources: its binary checks its pipeline from a
/// directory elsewhere, finding every stage in the bundle's plugins/.
#[test]
fn the_bundle_runs_without_the_sources() {
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("bundle");
    let built = Command::new("bash")
        .arg(root().join("deploy/bundle.sh"))
        .arg(&out)
        .current_dir(root())
        .env("CALLPIPE_BIN", env!("CARGO_BIN_EXE_callpipe"))
        .env("CALLPIPE_DATA_DIR", root().join("target").join("test-data"))
        .env("CALLPIPE_MODELS_DIR", support::models_dir())
        .env_remove("CALLPIPE_PLUGIN_PATH")
        .output()
        .expect("bundle.sh runs");
    let (stdout, stderr) = text(&built);
    assert!(built.status.success(), "{stdout}\n{stderr}");
    for file in [
        "bin/callpipe",
        "plugins/mulaw-codec.wasm",
        "plugins/solutions.wasm",
        "pipelines/technician-support.toml",
        "kb/camera-no-power-poe.md",
        "MODELS",
    ] {
        assert!(out.join(file).is_file(), "{file} missing: {stdout}");
    }
    let elsewhere = tempfile::tempdir().expect("dir");
    let checked = Command::new(out.join("bin/callpipe"))
        .arg("check")
        .arg(out.join("pipelines/technician-support.toml"))
        .current_dir(elsewhere.path())
        .env("CALLPIPE_DATA_DIR", elsewhere.path())
        .env("CALLPIPE_MODELS_DIR", support::models_dir())
        .env_remove("CALLPIPE_PLUGIN_PATH")
        .output()
        .expect("the bundle's callpipe runs");
    let (stdout, stderr) = text(&checked);
    assert!(checked.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("Compiling") && !stdout.contains("Compiling"),
        "nothing was built: {stderr}"
    );
}

/// The deploy files give a stop more time than callpipe's own budget for it
/// (so the supervisor's SIGKILL never drops queued writes), hold no secret
/// value (every password and secret comes from the environment or a
/// Secret), and run without privileges. The images are not built here (no
/// registry for base images): the files are read.
#[test]
fn deploy_files_outlast_the_stop_and_hold_no_secret() {
    let help = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    // `--shutdown-s <SHUTDOWN_S>  ... [env: CALLPIPE_SHUTDOWN_S=] [default: 40]`
    let budget: u64 = help
        .split("--shutdown-s")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no --shutdown-s default in:\n{help}"));
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    let number_after = |text: &str, key: &str| -> u64 {
        let rest = text
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no `{key}`"));
        rest.trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("`{key}` has no number"))
    };
    let compose = read("deploy/compose.yaml");
    let k8s = read("deploy/k8s/callpipe.yaml");
    let systemd = read("deploy/callpipe.service");
    for (file, grace) in [
        ("compose.yaml", number_after(&compose, "stop_grace_period:")),
        (
            "callpipe.yaml",
            number_after(&k8s, "terminationGracePeriodSeconds:"),
        ),
        (
            "callpipe.service",
            number_after(&systemd, "TimeoutStopSec="),
        ),
    ] {
        assert!(grace > budget, "{file}: {grace} s <= the stop's {budget} s");
    }
    // In compose, every password, secret or token is `${VAR...}`.
    for line in compose.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let key = key.to_uppercase();
        if ["PASSWORD", "SECRET", "TOKEN", "KEY"]
            .iter()
            .any(|k| key.contains(k))
        {
            let value = value.trim();
            assert!(
                value.is_empty() || value.starts_with("${"),
                "compose.yaml writes a secret: {line}"
            );
        }
        if key.contains("DATABASE_URL") {
            assert!(
                !value.contains(":callpipe@"),
                "compose.yaml writes the database password: {line}"
            );
        }
    }
    // The image's last stage runs as a user, not root; the pods run without
    // privileges on a read-only root filesystem, within limits; Qdrant
    // gets an API key in compose and Kubernetes alike.
    let dockerfile = read("deploy/Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap_or_default();
    let user = last_stage
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the image's last stage sets USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "the image runs as {user}"
    );
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [ALL]",
        "limits:",
    ] {
        assert!(k8s.contains(needle), "the manifest lacks `{needle}`");
    }
    assert!(compose.contains("QDRANT__SERVICE__API_KEY: ${QDRANT_API_KEY"));
    assert!(compose.contains("    QDRANT_API_KEY: ${QDRANT_API_KEY"));
    // In the manifest, secrets come from a Secret.
    for name in [
        "CALLPIPE_API_TOKEN",
        "CALLPIPE_STREAM_SECRET",
        "CALLPIPE_CLUSTER_SECRET",
        "QDRANT_API_KEY",
    ] {
        let after = k8s
            .split(&format!("name: {name}"))
            .nth(1)
            .unwrap_or_else(|| panic!("the manifest sets no {name}"));
        let next = after.lines().nth(1).unwrap_or_default();
        assert!(next.contains("secretKeyRef"), "{name}: {next}");
    }
}
