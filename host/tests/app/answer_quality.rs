//! Answer quality through the binary (`callpipe kb eval --suites`): every
//! evaluation knowledge base (tests/kb-quality/suites.toml), both halves,
//! each on a store of its own articles with the calibration that store
//! fitted on itself. The floors are the figures README's "Answer quality"
//! reports, less a little; they only ever go up.

use crate::support::{self, fixture_present, root, shared_kb};

/// `callpipe kb eval --suites --half tune --half heldout --json`.
fn eval_suites(data: &std::path::Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "kb", "eval", "--json", "--half", "tune", "--half", "heldout",
        ])
        .arg("--pipeline")
        .arg(root().join("pipelines/technician-support.toml"))
        .arg("--suites")
        .arg(root().join("tests/kb-quality/suites.toml"))
        .env("CALLPIPE_MODELS_DIR", support::models_dir())
        .env("CALLPIPE_LOG", "warn")
        .output()
        .expect("callpipe kb eval runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn value(column: &serde_json::Value, path: &str) -> f64 {
    column
        .pointer(path)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no {path} in {column}"))
}

struct Floors {
    recall_at_1: f64,
    recall_at_3: f64,
    cross_recall_at_1: f64,
}

/// Measured 2026-12-07 (docs/knowledge.md, cosines from the store's
/// centre): (tune, held-out) recall@1, @3, cross.
fn floors(suite: &str, half: &str) -> Floors {
    let f = |r1, r3, x| Floors {
        recall_at_1: r1,
        recall_at_3: r3,
        cross_recall_at_1: x,
    };
    match (suite, half) {
        // 0.886 / 0.989 / 0.848 and 0.789 / 0.939 / 0.748
        ("shared", "tune") => f(0.86, 0.97, 0.82),
        ("shared", _) => f(0.76, 0.92, 0.72),
        // 0.950 / 1.000 / 1.000 and 0.926 / 1.000 / 1.000
        ("sample", "tune") => f(0.90, 0.97, 0.94),
        ("sample", _) => f(0.88, 0.96, 0.93),
        // 0.780 / 0.900 / 0.704 and 0.849 / 0.887 / 0.714
        ("hvac", "tune") => f(0.74, 0.86, 0.66),
        ("hvac", _) => f(0.80, 0.85, 0.67),
        // 0.787 / 0.894 / 0.652 and 0.812 / 0.979 / 0.792. Centring cost
        // the tuning half two recall@3 items (0.936 before): the one floor
        // that went down, for recall@1 up on seven of eight halves.
        ("energy", "tune") => f(0.74, 0.87, 0.60),
        _ => f(0.77, 0.95, 0.75),
    }
}

#[test]
fn answer_quality_holds_on_every_knowledge_base() {
    if shared_kb().is_none() {
        return;
    }
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let columns = eval_suites(data.path());
    assert_eq!(columns.len(), 8, "four KBs, two halves each");
    for c in &columns {
        let (suite, half) = (
            c["suite"].as_str().unwrap_or(""),
            c["half"].as_str().unwrap_or(""),
        );
        let at = |path: &str| value(c, path);
        let name = format!("{suite}/{half}");
        eprintln!(
            "{name}: recall@1 {:.3}, @3 {:.3}, cross {:.3}",
            at("/report/retrieval/recall_at_1"),
            at("/report/retrieval/recall_at_3"),
            at("/report/by_kind/cross/recall_at_1")
        );
        let f = floors(suite, half);
        assert!(
            at("/report/retrieval/recall_at_1") >= f.recall_at_1,
            "{name}: {c}"
        );
        assert!(
            at("/report/retrieval/recall_at_3") >= f.recall_at_3,
            "{name}: {c}"
        );
        assert!(
            at("/report/by_kind/cross/recall_at_1") >= f.cross_recall_at_1,
            "{name}: {c}"
        );
        // What is shown is right, and what the KB cannot answer gets nothing.
        if at("/report/decisions/answered") > 0.0 {
            assert!(
                at("/report/decisions/answer_precision") >= 0.95,
                "{name}: {c}"
            );
        }
        assert!(
            at("/report/decisions/unanswerable_answer_rate") <= 0.05,
            "{name}: {c}"
        );
        // The store fitted its own calibration.
        assert_eq!(c["calibration"], "store", "{name}");
        assert!(at("/calibration_brier") < 0.25, "{name}: {c}");
        if let Some(calls) = c["report"].get("calls").filter(|v| !v.is_null()) {
            assert!(
                at("/report/calls/first_wrong_rate") <= 0.05,
                "{name}: {calls}"
            );
            assert_eq!(calls["agent_leaks"], 0, "{name}: {calls}");
            // Never silent: every call whose context sufficed got an
            // article or possible matches.
            assert_eq!(at("/report/calls/silent_rate"), 0.0, "{name}: {calls}");
        }
    }
}
