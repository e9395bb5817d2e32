//! `callpipe kb eval --suites FILE`: every knowledge base of an evaluation
//! suite, each on a store of its own articles, measured through the
//! pipeline and printed side by side with the embedder and calibration that
//! produced the figures.
//!
//! The suites file (TOML) names, per knowledge base, its articles and its
//! tuning and held-out files, relative to the suites file:
//!
//! ```toml
//! [[suite]]
//! name = "shared"
//! articles = "../../../shared/kb/articles.jsonl"
//! tune = ["eval-tune.jsonl", "calls-tune.jsonl"]
//! heldout = ["kbs/shared-fresh/eval-heldout.jsonl"]
//! ```

use super::eval::{self, Report};
use crate::knowledge::CalibrationSource;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    suite: Vec<Suite>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    pub articles: PathBuf,
    #[serde(default)]
    pub tune: Vec<PathBuf>,
    #[serde(default)]
    pub heldout: Vec<PathBuf>,
}

/// Which half to measure. The held-out half is measured once per change
/// that is kept (tests/kb-quality/README.md), so it is never the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Half {
    Tune,
    Heldout,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Tune => "tune",
            Half::Heldout => "heldout",
        }
    }
}

/// The suites in a file, paths made relative to the working directory.
pub fn read(path: &Path) -> anyhow::Result<Vec<Suite>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: File =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(file
        .suite
        .into_iter()
        .map(|mut s| {
            s.articles = base.join(&s.articles);
            s.tune = s.tune.iter().map(|p| base.join(p)).collect();
            s.heldout = s.heldout.iter().map(|p| base.join(p)).collect();
            s
        })
        .collect())
}

impl Suite {
    pub fn files(&self, half: Half) -> &[PathBuf] {
        match half {
            Half::Tune => &self.tune,
            Half::Heldout => &self.heldout,
        }
    }
}

/// One knowledge base's figures on one half.
#[derive(Debug, Serialize)]
pub struct Column {
    pub suite: String,
    pub half: Half,
    pub articles: usize,
    pub embedder: String,
    pub calibration: CalibrationSource,
    /// Cross-validated Brier score and ECE of the store's own fit.
    pub calibration_brier: Option<f64>,
    pub calibration_ece: Option<f64>,
    pub report: Report,
}

/// Prints the columns side by side, one row per figure.
pub fn print(columns: &[Column], out: &mut impl std::io::Write) -> std::io::Result<()> {
    if columns.is_empty() {
        return Ok(());
    }
    let width = columns
        .iter()
        .map(|c| c.suite.len() + c.half.name().len() + 1)
        .max()
        .unwrap_or(8)
        .max(9);
    let head: Vec<String> = columns
        .iter()
        .map(|c| format!("{:>width$}", format!("{}/{}", c.suite, c.half.name())))
        .collect();
    writeln!(out, "{:<34} {}", "", head.join(" "))?;
    type Cell = Box<dyn Fn(&Column) -> Option<String>>;
    let f3 = |v: f64| Some(format!("{v:.3}"));
    let by_kind = |k: &'static str| -> Cell {
        Box::new(move |c: &Column| {
            c.report
                .by_kind
                .get(k)
                .map(|r| format!("{:.3} ({})", r.recall_at_1, r.n))
        })
    };
    let rows: Vec<(&str, Cell)> = vec![
        (
            "articles",
            Box::new(|c: &Column| Some(c.articles.to_string())),
        ),
        (
            "answerable phrasings",
            Box::new(|c: &Column| Some(c.report.retrieval.n.to_string())),
        ),
        (
            "recall@1",
            Box::new(move |c: &Column| f3(c.report.retrieval.recall_at_1)),
        ),
        (
            "recall@3",
            Box::new(move |c: &Column| f3(c.report.retrieval.recall_at_3)),
        ),
        (
            "MRR",
            Box::new(move |c: &Column| f3(c.report.retrieval.mrr)),
        ),
        ("recall@1 same language fr", by_kind("fr")),
        ("recall@1 same language en", by_kind("en")),
        ("recall@1 cross-language", by_kind("cross")),
        (
            "articles shown: right",
            Box::new(move |c: &Column| f3(c.report.decisions.answer_precision)),
        ),
        (
            "answerable that got the article",
            Box::new(move |c: &Column| f3(c.report.decisions.answer_recall)),
        ),
        (
            "unanswerable that got one",
            Box::new(move |c: &Column| f3(c.report.decisions.unanswerable_answer_rate)),
        ),
        (
            "vague that got a question",
            Box::new(move |c: &Column| f3(c.report.decisions.vague_question_rate)),
        ),
        (
            "calls",
            Box::new(|c: &Column| c.report.calls.as_ref().map(|k| k.n.to_string())),
        ),
        (
            "calls: first article wrong",
            Box::new(|c: &Column| {
                c.report
                    .calls
                    .as_ref()
                    .map(|k| format!("{:.3}", k.first_wrong_rate))
            }),
        ),
        (
            "calls: never answered",
            Box::new(|c: &Column| {
                c.report
                    .calls
                    .as_ref()
                    .map(|k| format!("{:.3}", k.never_answered_rate))
            }),
        ),
        (
            "calls: understood, then silent",
            Box::new(|c: &Column| {
                c.report
                    .calls
                    .as_ref()
                    .map(|k| format!("{:.3}", k.silent_rate))
            }),
        ),
        (
            "calls: agent leaks",
            Box::new(|c: &Column| c.report.calls.as_ref().map(|k| k.agent_leaks.to_string())),
        ),
        (
            "calibration Brier (store, CV)",
            Box::new(|c: &Column| c.calibration_brier.map(|v| format!("{v:.3}"))),
        ),
        (
            "calibration ECE (store, CV)",
            Box::new(|c: &Column| c.calibration_ece.map(|v| format!("{v:.3}"))),
        ),
    ];
    for (name, cell) in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| format!("{:>width$}", cell(c).unwrap_or_else(|| "-".into())))
            .collect();
        writeln!(out, "{name:<34} {}", cells.join(" "))?;
    }
    let mut named: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "embedder {}, reranker none, calibration {}",
                c.embedder,
                match c.calibration {
                    CalibrationSource::Pipeline => "from the pipeline (kb calibrate)",
                    CalibrationSource::Store => "fitted by each store on its own articles",
                    CalibrationSource::Fallback => "built-in fallback (store not fitted)",
                }
            )
        })
        .collect();
    named.dedup();
    for n in named {
        writeln!(out, "\n{n}")?;
    }
    Ok(())
}

/// Reads a suite's items for one half.
pub fn items(suite: &Suite, half: Half) -> anyhow::Result<Vec<eval::Item>> {
    let mut all = Vec::new();
    for f in suite.files(half) {
        all.extend(eval::read(f)?);
    }
    Ok(all)
}
