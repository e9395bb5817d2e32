//! `callpipe kb calibrate`: runs labelled queries, fits the confidence
//! calibration and reports how well confidences match outcomes, before and
//! after the fit.

use crate::knowledge::confidence::{Calibration, Features, Reliability, reliability};
use crate::knowledge::{KnowledgeBase, Search};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Debug)]
pub struct Labelled {
    pub query: String,
    /// Right article ids; empty when the knowledge base has no answer.
    pub expected: Vec<String>,
    pub language: Option<String>,
}

/// Labelled queries from `kb eval`'s files: a phrasing as it is, a call as
/// everything the technician said in it.
pub fn read_queries(path: &Path) -> anyhow::Result<Vec<Labelled>> {
    Ok(crate::cli::eval::read(path)?
        .into_iter()
        .map(|item| Labelled {
            query: item.technician_text(),
            expected: item.expected,
            language: item.language,
        })
        .collect())
}

/// How the top hit's confidence would decide at one floor.
#[derive(Debug, Serialize)]
pub struct AtFloor {
    pub floor: f32,
    /// Queries whose top hit clears the floor.
    pub shown: usize,
    /// ... and are right.
    pub right: usize,
    /// Answerable queries whose right article was first but stayed hidden.
    pub missed: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub queries: usize,
    pub samples: usize,
    pub current: Calibration,
    pub current_reliability: Reliability,
    pub fitted: Option<Calibration>,
    pub fitted_reliability: Option<Reliability>,
    /// Each fifth of the queries scored by a fit on the other four fifths:
    /// what to expect on queries the fit has not seen.
    pub cross_validated: Option<Reliability>,
    pub floors: Vec<AtFloor>,
}

/// Fits on labelled queries, each set searched on its own store: fitting
/// on a small and a large store together keeps the confidence from
/// depending on how many articles a store holds.
pub async fn run(sets: &[(&KnowledgeBase, Vec<Labelled>)]) -> anyhow::Result<Report> {
    // Per query: its top 5 hits' features and whether each is right.
    let mut per_query: Vec<Vec<(Features, bool)>> = Vec::new();
    let queries: Vec<(&KnowledgeBase, &Labelled)> = sets
        .iter()
        .flat_map(|(kb, qs)| qs.iter().map(move |q| (*kb, q)))
        .collect();
    let Some((kb, _)) = queries.first().copied() else {
        anyhow::bail!("no queries");
    };
    for (kb, q) in queries.iter().copied() {
        let hits = kb
            .search(&Search {
                query: q.query.clone(),
                limit: 5,
                language: q.language.clone(),
                equipment: vec![],
            })
            .await
            .with_context(|| format!("search failed for `{}`", q.query))?;
        per_query.push(
            hits.iter()
                .map(|h| (h.features, q.expected.contains(&h.article_id)))
                .collect(),
        );
    }
    let samples: Vec<(Features, bool)> = per_query.iter().flatten().copied().collect();
    let current = kb.calibration().0;
    let score = |c: &Calibration| -> Vec<(f32, bool)> {
        samples.iter().map(|(f, y)| (c.confidence(f), *y)).collect()
    };
    let fitted = Calibration::fit(&samples);
    // Each fifth of the queries scored by a fit on the other four fifths.
    let mut held_out: Vec<Option<Vec<f32>>> = vec![None; per_query.len()];
    for fold in 0..5 {
        let train: Vec<(Features, bool)> = per_query
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 5 != fold)
            .flat_map(|(_, h)| h.iter().copied())
            .collect();
        if let Some(c) = Calibration::fit(&train) {
            for (i, hits) in per_query.iter().enumerate().filter(|(i, _)| i % 5 == fold) {
                held_out[i] = Some(hits.iter().map(|(f, _)| c.confidence(f)).collect());
            }
        }
    }
    let held_out: Option<Vec<Vec<f32>>> = held_out.into_iter().collect();
    let cross_validated = held_out.as_ref().map(|h| {
        let scored: Vec<(f32, bool)> = h
            .iter()
            .zip(&per_query)
            .flat_map(|(p, hits)| p.iter().zip(hits).map(|(p, (_, y))| (*p, *y)))
            .collect();
        reliability(&scored)
    });
    // The floors, judged on held-out confidences when there are some.
    let judge = fitted.unwrap_or(current);
    let top_of = |i: usize| -> Option<(f32, bool)> {
        let (f, y) = per_query[i].first()?;
        let p = match &held_out {
            Some(h) => *h[i].first()?,
            None => judge.confidence(f),
        };
        Some((p, *y))
    };
    let floors = [0.3f32, 0.4, 0.5, 0.6, 0.7]
        .into_iter()
        .map(|floor| {
            let mut at = AtFloor {
                floor,
                shown: 0,
                right: 0,
                missed: 0,
            };
            for i in 0..per_query.len() {
                if let Some((p, y)) = top_of(i) {
                    let shown = p >= floor;
                    at.shown += shown as usize;
                    at.right += (shown && y) as usize;
                    at.missed += (!shown && y) as usize;
                }
            }
            at
        })
        .collect();
    Ok(Report {
        queries: queries.len(),
        samples: samples.len(),
        current,
        current_reliability: reliability(&score(&current)),
        fitted_reliability: fitted.as_ref().map(|c| reliability(&score(c))),
        fitted,
        cross_validated,
        floors,
    })
}

impl Report {
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} queries, {} hits scored",
            self.queries, self.samples
        )?;
        let rel = |out: &mut dyn Write, name: &str, r: &Reliability| -> std::io::Result<()> {
            writeln!(out, "{name}: Brier {:.4}, ECE {:.4}", r.brier, r.ece)?;
            for (i, (p, acc, n)) in r.bins.iter().enumerate() {
                if *n > 0 {
                    writeln!(
                        out,
                        "  {:.1}-{:.1}: {n:>4} hits, mean confidence {p:.2}, right {acc:.2}",
                        i as f32 / 10.0,
                        (i + 1) as f32 / 10.0
                    )?;
                }
            }
            Ok(())
        };
        rel(out, "current", &self.current_reliability)?;
        if let (Some(c), Some(r)) = (&self.fitted, &self.fitted_reliability) {
            rel(out, "fitted", r)?;
            if let Some(cv) = &self.cross_validated {
                rel(out, "fitted, 5-fold cross-validated (unseen queries)", cv)?;
            }
            writeln!(
                out,
                "\nTop hit at a confidence floor (cross-validated confidences):"
            )?;
            for f in &self.floors {
                writeln!(
                    out,
                    "  floor {:.1}: {} shown, {} right, {} right ones hidden",
                    f.floor, f.shown, f.right, f.missed
                )?;
            }
            writeln!(out, "\n# under [capabilities.knowledge]")?;
            writeln!(
                out,
                "calibration = {{ bias = {:.2}, cosine = {:.2}, gap = {:.2}, spread = {:.2}, fused = {:.2} }}",
                c.bias, c.cosine, c.gap, c.spread, c.fused
            )?;
        } else {
            writeln!(
                out,
                "cannot fit: the queries need both right and wrong hits"
            )?;
        }
        Ok(())
    }
}
