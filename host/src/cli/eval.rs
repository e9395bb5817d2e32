//! `callpipe kb eval`: how well the pipeline answers, measured on labelled
//! material. Two kinds of item, one per line, in the same files:
//!
//! - a phrasing `{"query", "expected": [ids], "language", "kind",
//!   "decision": "answer" | "ask" | "none"}`: retrieval is scored on the
//!   knowledge base directly (recall@1/@3, MRR, per kind), and the decision
//!   by sending the phrasing through the pipeline's text path as a one-turn
//!   call (what the agent would see: an article, a question, or nothing);
//! - a call `{"id", "expected": [ids], "language", "turns": [{"role",
//!   "text"}]}`: every turn goes through one pipeline call in order, and the
//!   first article shown, the last one and the search queries are scored.

use crate::bindings::types::{
    CallInfo, Custom, Event, EventKind, SpeakerRole, SuggestionKind, Track, Transcript,
};
use crate::knowledge::{KnowledgeBase, Search};
use crate::pipeline::event::FLUSH;
use crate::pipeline::{Call, LoadedPipeline};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest one turn may take through the pipeline.
const TURN_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub turns: Vec<Turn>,
    #[serde(default)]
    pub expected: Vec<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// What the agent should get: an article, a question, or nothing
    /// (defaults: "answer" with an expected article, else "none").
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub speech_errors: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

impl Item {
    /// What the technician said: the phrasing, or a call's technician turns.
    pub fn technician_text(&self) -> String {
        match &self.query {
            Some(q) => q.clone(),
            None => self
                .turns
                .iter()
                .filter(|t| t.role == "technician")
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn decision(&self) -> Decision {
        match self.decision.as_deref() {
            Some("ask") => Decision::Ask,
            Some("none") => Decision::Nothing,
            Some(_) => Decision::Answer,
            None if self.expected.is_empty() => Decision::Nothing,
            None => Decision::Answer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Answer,
    Ask,
    Nothing,
}

pub fn read(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an evaluation item", path.display(), n + 1))?;
        anyhow::ensure!(
            item.query.is_some() == item.turns.is_empty(),
            "{}:{}: an item has either `query` or `turns`",
            path.display(),
            n + 1
        );
        out.push(item);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no items", path.display());
    Ok(out)
}

/// Retrieval figures over answerable phrasings.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Retrieval {
    pub n: usize,
    pub recall_at_1: f64,
    pub recall_at_3: f64,
    pub mrr: f64,
}

/// What the agent was shown, against what should have been.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Decisions {
    /// Phrasings that got an article.
    pub answered: usize,
    pub answered_right: usize,
    /// Of the articles shown, the share that was right (vague and
    /// unanswerable phrasings that got one count as wrong).
    pub answer_precision: f64,
    /// Of the answerable phrasings, the share that got the right article.
    pub answer_recall: f64,
    /// Of the phrasings that got no article (a question or nothing), the
    /// share that were vague.
    pub ask_precision: f64,
    /// Of the vague phrasings, the share that got no article.
    pub ask_recall: f64,
    /// Of the unanswerable phrasings, the share that got an article.
    pub unanswerable_answer_rate: f64,
    /// Of the vague phrasings, the share that got a question.
    pub vague_question_rate: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Calls {
    pub n: usize,
    /// Calls whose first article shown is not the expected one.
    pub first_wrong_rate: f64,
    /// Calls with no article by the last technician turn.
    pub never_answered_rate: f64,
    /// Calls whose last article shown is the expected one.
    pub final_right_rate: f64,
    /// Searches whose query held words only the agent said.
    pub agent_leaks: usize,
    /// Calls whose context became sufficient but that got neither an
    /// article nor possible matches (the unconfirmed candidates shown when
    /// no article is sure enough).
    pub silent_rate: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub phrasings: usize,
    pub retrieval: Retrieval,
    /// Retrieval per kind (fr, en, cross, ...) and for speech-recognition spellings.
    pub by_kind: BTreeMap<String, Retrieval>,
    /// Retrieval per language of the phrasing (reported when the items
    /// hold more than French and English).
    pub by_language: BTreeMap<String, Retrieval>,
    pub decisions: Decisions,
    pub calls: Option<Calls>,
    /// Per item, for looking into failures (`--items`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub query: String,
    pub kind: String,
    pub expected: Vec<String>,
    /// Top hits (article id, confidence).
    pub hits: Vec<(String, f32)>,
    /// What the first hit's confidence was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<crate::knowledge::confidence::Features>,
    /// What the pipeline showed: "answer:<id>", "ask" or "nothing"; for a
    /// call, every article in order.
    pub shown: Vec<String>,
}

/// One phrasing's outcome, enough to compute every figure.
#[derive(Debug, Clone)]
struct Scored {
    kind: String,
    language: String,
    speech_errors: bool,
    decision: Decision,
    expected: Vec<String>,
    /// 1-based rank of the first right hit.
    rank: Option<usize>,
    shown: Shown,
}

#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Article(String),
    Question,
    Nothing,
}

fn retrieval<'a>(items: impl Iterator<Item = &'a Scored>) -> Retrieval {
    let ranks: Vec<Option<usize>> = items
        .filter(|s| s.decision == Decision::Answer)
        .map(|s| s.rank)
        .collect();
    let n = ranks.len();
    let share = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64;
    let div = n.max(1) as f64;
    Retrieval {
        n,
        recall_at_1: share(1) / div,
        recall_at_3: share(3) / div,
        mrr: ranks
            .iter()
            .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / div,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn decisions(scored: &[Scored]) -> Decisions {
    let answered: Vec<&Scored> = scored
        .iter()
        .filter(|s| matches!(s.shown, Shown::Article(_)))
        .collect();
    let right = |s: &Scored| matches!(&s.shown, Shown::Article(id) if s.decision == Decision::Answer && s.expected.contains(id));
    let answered_right = answered.iter().filter(|s| right(s)).count();
    let answerable = scored
        .iter()
        .filter(|s| s.decision == Decision::Answer)
        .count();
    let vague: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.decision == Decision::Ask)
        .collect();
    let unanswerable: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.decision == Decision::Nothing)
        .collect();
    let not_answered: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.decision != Decision::Nothing && !matches!(s.shown, Shown::Article(_)))
        .collect();
    Decisions {
        answered: answered.len(),
        answered_right,
        answer_precision: ratio(answered_right, answered.len()),
        answer_recall: ratio(answered_right, answerable),
        ask_precision: ratio(
            not_answered
                .iter()
                .filter(|s| s.decision == Decision::Ask)
                .count(),
            not_answered.len(),
        ),
        ask_recall: ratio(
            vague
                .iter()
                .filter(|s| !matches!(s.shown, Shown::Article(_)))
                .count(),
            vague.len(),
        ),
        unanswerable_answer_rate: ratio(
            unanswerable
                .iter()
                .filter(|s| matches!(s.shown, Shown::Article(_)))
                .count(),
            unanswerable.len(),
        ),
        vague_question_rate: ratio(
            vague.iter().filter(|s| s.shown == Shown::Question).count(),
            vague.len(),
        ),
    }
}

/// What one call of the pipeline showed, turn by turn.
#[derive(Debug, Default)]
struct Conversation {
    /// Articles shown, in order.
    articles: Vec<String>,
    questions: usize,
    /// Sets of possible matches shown.
    possible: usize,
    /// Every search query the analysis produced.
    queries: Vec<String>,
}

/// Runs turns through one call of the pipeline's text path.
async fn converse(
    pipeline: &Arc<LoadedPipeline>,
    session: &str,
    language: &str,
    turns: &[(SpeakerRole, &str)],
) -> anyhow::Result<Conversation> {
    let first = pipeline
        .first_handling(EventKind::Transcript)
        .with_context(|| {
            format!(
                "the pipeline `{}` has no stage that handles transcripts",
                pipeline.name
            )
        })?;
    let info = CallInfo {
        session_id: session.into(),
        call_sid: String::new(),
        technician_id: "eval".into(),
        technician_name: "Eval".into(),
        language: language.into(),
        speakers: vec![],
    };
    let (call, mut output) = Call::start_from(pipeline.clone(), info, first)
        .await
        .context("cannot start a call of the pipeline")?;
    let mut seen = Conversation::default();
    for (n, (role, text)) in turns.iter().enumerate() {
        let id = n as u64 + 1;
        let at = id * 10_000;
        call.send(Event::Transcript(Transcript {
            utterance_id: id,
            track: if *role == SpeakerRole::Agent {
                Track::Outbound
            } else {
                Track::Inbound
            },
            speaker_id: crate::pipeline::event::role_name(*role).into(),
            role: *role,
            start_ms: at,
            end_ms: at + 3_000,
            text: text.to_string(),
            language: language.into(),
            confidence: 0.9,
        }))
        .await
        .context("the pipeline stopped")?;
        call.send(Event::Custom(Custom {
            name: FLUSH.into(),
            json: format!("{{\"id\":{id}}}"),
        }))
        .await
        .context("the pipeline stopped")?;
        // Everything this turn caused comes out before its marker.
        loop {
            let event = tokio::time::timeout(TURN_WITHIN, output.recv())
                .await
                .with_context(|| format!("turn {id} took longer than {TURN_WITHIN:?}"))?
                .context("the pipeline ended early")?;
            match event {
                Event::Custom(c) if c.name == FLUSH => break,
                Event::Suggestion(s) => match s.kind {
                    SuggestionKind::KnowledgeBase => {
                        seen.articles.extend(s.sources.first().cloned())
                    }
                    SuggestionKind::ClarificationQuestion => {
                        seen.questions += 1;
                        // The solutions stage's unconfirmed candidates.
                        if s.id.starts_with("possible-") {
                            seen.possible += 1;
                        }
                    }
                },
                Event::Analysis(a) if a.sufficient => seen.queries.push(a.query),
                _ => {}
            }
        }
    }
    drop(output);
    call.finish().await;
    Ok(seen)
}

fn role(name: &str) -> anyhow::Result<SpeakerRole> {
    match name {
        "technician" => Ok(SpeakerRole::Technician),
        "agent" | "support_agent" => Ok(SpeakerRole::Agent),
        other => anyhow::bail!("unknown role `{other}` (technician, agent)"),
    }
}

/// Words of an agent line that a search query must not contain: the
/// agent's content words the technician never said.
fn leaked(query: &str, agent: &[&str], technician: &[&str]) -> bool {
    let words = |t: &str| -> std::collections::BTreeSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 5)
            .map(str::to_lowercase)
            .collect()
    };
    let said: std::collections::BTreeSet<String> =
        technician.iter().flat_map(|t| words(t)).collect();
    let q = words(query);
    agent
        .iter()
        .flat_map(|a| words(a))
        .any(|w| !said.contains(&w) && q.contains(&w))
}

pub async fn run(
    kb: &KnowledgeBase,
    pipeline: &Arc<LoadedPipeline>,
    items: &[Item],
    keep_items: bool,
    mut progress: impl FnMut(),
) -> anyhow::Result<Report> {
    let mut scored = Vec::new();
    let mut report = Report::default();
    let mut calls = Calls::default();
    let (mut first_wrong, mut never, mut final_right, mut silent) = (0, 0, 0, 0);
    for (n, item) in items.iter().enumerate() {
        let language = item
            .language
            .clone()
            .unwrap_or_else(|| pipeline.language.clone());
        if let Some(query) = &item.query {
            let hits = kb
                .search(&Search {
                    query: query.clone(),
                    limit: 5,
                    language: Some(language.clone()),
                    equipment: vec![],
                })
                .await
                .with_context(|| format!("search failed for `{query}`"))?;
            let rank = hits
                .iter()
                .position(|h| item.expected.contains(&h.article_id))
                .map(|i| i + 1);
            let seen = converse(
                pipeline,
                &format!("eval-{n}"),
                &language,
                &[(SpeakerRole::Technician, query.as_str())],
            )
            .await?;
            let shown = match (seen.articles.first(), seen.questions) {
                (Some(id), _) => Shown::Article(id.clone()),
                (None, 0) => Shown::Nothing,
                (None, _) => Shown::Question,
            };
            let kind = item.kind.clone().unwrap_or_else(|| "all".into());
            if keep_items {
                report.items.push(ItemResult {
                    query: query.clone(),
                    kind: kind.clone(),
                    expected: item.expected.clone(),
                    hits: hits
                        .iter()
                        .map(|h| (h.article_id.clone(), h.confidence))
                        .collect(),
                    features: hits.first().map(|h| h.features),
                    shown: vec![match &shown {
                        Shown::Article(id) => format!("answer:{id}"),
                        Shown::Question => "ask".into(),
                        Shown::Nothing => "nothing".into(),
                    }],
                });
            }
            scored.push(Scored {
                kind,
                language: language.clone(),
                speech_errors: item.speech_errors,
                decision: item.decision(),
                expected: item.expected.clone(),
                rank,
                shown,
            });
        } else {
            let mut turns = Vec::with_capacity(item.turns.len());
            for t in &item.turns {
                turns.push((role(&t.role)?, t.text.as_str()));
            }
            let seen = converse(pipeline, &format!("eval-call-{n}"), &language, &turns).await?;
            calls.n += 1;
            if !seen.queries.is_empty() && seen.articles.is_empty() && seen.possible == 0 {
                silent += 1;
            }
            match seen.articles.first() {
                None => never += 1,
                Some(first) if !item.expected.contains(first) => first_wrong += 1,
                Some(_) => {}
            }
            if seen
                .articles
                .last()
                .is_some_and(|a| item.expected.contains(a))
            {
                final_right += 1;
            }
            let agent: Vec<&str> = turns
                .iter()
                .filter(|(r, _)| *r == SpeakerRole::Agent)
                .map(|(_, t)| *t)
                .collect();
            let technician: Vec<&str> = turns
                .iter()
                .filter(|(r, _)| *r != SpeakerRole::Agent)
                .map(|(_, t)| *t)
                .collect();
            calls.agent_leaks += seen
                .queries
                .iter()
                .filter(|q| leaked(q, &agent, &technician))
                .count();
            if keep_items {
                report.items.push(ItemResult {
                    query: item.id.clone().unwrap_or_else(|| format!("call {}", n + 1)),
                    kind: "call".into(),
                    expected: item.expected.clone(),
                    hits: vec![],
                    features: None,
                    shown: seen.articles.clone(),
                });
            }
        }
        progress();
    }
    report.phrasings = scored.len();
    report.retrieval = retrieval(scored.iter());
    let mut kinds: Vec<String> = scored.iter().map(|s| s.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let r = retrieval(scored.iter().filter(|s| s.kind == k));
        if r.n > 0 {
            report.by_kind.insert(k, r);
        }
    }
    let mut languages: Vec<String> = scored.iter().map(|s| s.language.clone()).collect();
    languages.sort();
    languages.dedup();
    if languages.len() > 2 {
        for l in languages {
            let r = retrieval(scored.iter().filter(|s| s.language == l));
            if r.n > 0 {
                report.by_language.insert(l, r);
            }
        }
    }
    let asr = retrieval(scored.iter().filter(|s| s.speech_errors));
    if asr.n > 0 {
        report.by_kind.insert("speech-errors".into(), asr);
    }
    report.decisions = decisions(&scored);
    if calls.n > 0 {
        calls.first_wrong_rate = ratio(first_wrong, calls.n);
        calls.never_answered_rate = ratio(never, calls.n);
        calls.final_right_rate = ratio(final_right, calls.n);
        calls.silent_rate = ratio(silent, calls.n);
        report.calls = Some(calls);
    }
    Ok(report)
}

impl Report {
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.phrasings > 0 {
            let r = &self.retrieval;
            writeln!(
                out,
                "{:<16} {:>5} {:>9} {:>9} {:>7}",
                "phrasings", "n", "recall@1", "recall@3", "MRR"
            )?;
            let line = |out: &mut dyn std::io::Write, name: &str, r: &Retrieval| {
                writeln!(
                    out,
                    "{:<16} {:>5} {:>9.3} {:>9.3} {:>7.3}",
                    name, r.n, r.recall_at_1, r.recall_at_3, r.mrr
                )
            };
            line(out, "answerable", r)?;
            for (k, r) in &self.by_kind {
                line(out, k, r)?;
            }
            for (l, r) in &self.by_language {
                line(out, &format!("language {l}"), r)?;
            }
            let d = &self.decisions;
            writeln!(out)?;
            writeln!(
                out,
                "articles shown: {} ({} right): precision {:.3}, recall {:.3}",
                d.answered, d.answered_right, d.answer_precision, d.answer_recall
            )?;
            writeln!(
                out,
                "no article: ask precision {:.3}, ask recall {:.3}; vague phrasings that got a question {:.3}",
                d.ask_precision, d.ask_recall, d.vague_question_rate
            )?;
            writeln!(
                out,
                "unanswerable phrasings that got an article: {:.3}",
                d.unanswerable_answer_rate
            )?;
        }
        if let Some(c) = &self.calls {
            writeln!(out)?;
            writeln!(
                out,
                "calls: {}: first article wrong {:.3}, never answered {:.3}, last article right {:.3}, agent leaks {}, silent {:.3}",
                c.n,
                c.first_wrong_rate,
                c.never_answered_rate,
                c.final_right_rate,
                c.agent_leaks,
                c.silent_rate
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(decision: Decision, expected: &[&str], rank: Option<usize>, shown: Shown) -> Scored {
        Scored {
            kind: "fr".into(),
            language: "fr".into(),
            speech_errors: false,
            decision,
            expected: expected.iter().map(|e| e.to_string()).collect(),
            rank,
            shown,
        }
    }

    #[test]
    fn figures_follow_their_definitions() {
        let a = |id: &str| Shown::Article(id.into());
        let scored = vec![
            s(Decision::Answer, &["k1"], Some(1), a("k1")),
            s(Decision::Answer, &["k2"], Some(3), a("k9")),
            s(Decision::Answer, &["k3"], None, Shown::Question),
            s(Decision::Ask, &[], None, Shown::Question),
            s(Decision::Ask, &[], None, a("k1")),
            s(Decision::Nothing, &[], None, Shown::Nothing),
        ];
        let r = retrieval(scored.iter());
        assert_eq!(r.n, 3);
        assert!((r.recall_at_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.recall_at_3 - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.mrr - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-9);
        let d = decisions(&scored);
        assert_eq!((d.answered, d.answered_right), (3, 1));
        assert!((d.answer_precision - 1.0 / 3.0).abs() < 1e-9);
        assert!((d.answer_recall - 1.0 / 3.0).abs() < 1e-9);
        // Not answered among answerable and vague: k3 and the first vague.
        assert!((d.ask_precision - 0.5).abs() < 1e-9);
        assert!((d.ask_recall - 0.5).abs() < 1e-9);
        assert_eq!(d.unanswerable_answer_rate, 0.0);
    }

    #[test]
    fn an_agent_word_in_the_query_is_a_leak() {
        let agent = ["Est-ce que c'est l'enregistreur ?"];
        let tech = ["la porte ne s'ouvre pas"];
        assert!(leaked(
            "la porte ne s'ouvre pas enregistreur",
            &agent,
            &tech
        ));
        assert!(!leaked("la porte ne s'ouvre pas", &agent, &tech));
        // A word both said is the technician's too.
        let tech = ["non, pas l'enregistreur, la porte"];
        assert!(!leaked("non, pas l'enregistreur, la porte", &agent, &tech));
    }

    #[test]
    fn items_are_phrasings_or_calls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        std::fs::write(
            &p,
            "{\"query\": \"q\", \"expected\": [\"k1\"]}\n{\"turns\": [{\"role\": \"technician\", \"text\": \"t\"}], \"expected\": []}\n",
        )
        .unwrap();
        let items = read(&p).unwrap();
        assert_eq!(items[0].decision(), Decision::Answer);
        assert_eq!(items[1].decision(), Decision::Nothing);
        std::fs::write(&p, "{\"expected\": []}\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("e.jsonl:1"), "{e}");
    }
}
