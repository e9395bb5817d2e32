//! A store's own confidence calibration. Every knowledge base is one the
//! product has never seen, so the mapping from a hit's features to a
//! probability is fitted on the store itself after each import, from
//! questions its own articles provide: each symptom line of an article is
//! asked twice,
//!
//! - with only that line's chunk hidden (the article is still there, found
//!   through its title, procedure and other symptoms: the question was
//!   answerable), and
//! - with the whole article hidden (the store cannot answer it: whatever
//!   comes first is wrong, and usually close, as a near-miss question is).
//!
//! The labels come from the store's own structure, never from a person, so
//! the fit means the same on a 10-article store and a 5,000-article one.
//! Its quality is reported by two-fold cross-validation over articles.
//! The store's centre (`centre`) is taken first, in the same pass: the
//! features are measured from it, so it is kept in the same document.

use crate::centre::Centre;
use crate::confidence::{Calibration, Features, reliability_weighted};
use crate::{KnowledgeBase, KnowledgeError, Scope, VectorStore, VectorStoreError, layout, spoken};
use serde::{Deserialize, Serialize};

/// Name of the document kept with the store.
const DOCUMENT: &str = "calibration";
/// Symptom lines asked per article.
const PER_ARTICLE: usize = 4;
/// Questions asked at most (a large store is sampled evenly).
const MAX_QUESTIONS: usize = 1_200;
/// The share of questions with enough context that the knowledge base
/// cannot answer, as the fit assumes: a hidden-article question stands for
/// UNANSWERABLE / (1 - UNANSWERABLE) of an answerable one. A prior about
/// support traffic, the same for every store. 0.2 was measured too (on the
/// tuning halves): more articles shown on the 60-article KB, but on the
/// 10-article sample KB a wrong one for questions about faults it does not
/// hold, so even odds it is.
const UNANSWERABLE: f64 = 0.5;
/// Fewer articles than this: nothing meaningful to fit.
const MIN_ARTICLES: usize = 3;

/// Bump when the features or the questions change: a store's older fit is
/// then refitted at its next import or start.
pub const VERSION: u32 = 6;

/// A calibration fitted on a store, with how well it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// `VERSION` when it was fitted.
    #[serde(default)]
    pub version: u32,
    pub calibration: Calibration,
    /// The mean of the store's chunk vectors, which the features (and so
    /// the calibration) measure cosines from (`centre`).
    #[serde(default)]
    pub centre: Option<Centre>,
    /// The embedder whose vectors it was fitted on.
    pub embedder: String,
    pub articles: usize,
    pub questions: usize,
    pub samples: usize,
    /// Brier score and expected calibration error of the first hit's
    /// confidence, each article's questions scored by a fit on the other
    /// half of the articles.
    pub brier: f64,
    pub ece: f64,
    /// Unix seconds.
    pub fitted_at: u64,
}

/// The store's calibration, if it has one for this embedder.
pub async fn load(store: &VectorStore, embedder: &str) -> Result<Option<Fitted>, KnowledgeError> {
    let Some(doc) = store.load_meta(DOCUMENT).await? else {
        return Ok(None);
    };
    match serde_json::from_value::<Fitted>(doc) {
        Ok(f) if f.embedder == embedder && f.version == VERSION => Ok(Some(f)),
        Ok(f) if f.version != VERSION => {
            tracing::info!("the store's calibration predates this version's features: refit");
            Ok(None)
        }
        Ok(f) => {
            tracing::warn!(
                "the store's calibration was fitted for {}, not {embedder}: refit at the next import",
                f.embedder
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!("the store's calibration is unreadable ({e}): refit at the next import");
            Ok(None)
        }
    }
}

pub async fn save(store: &VectorStore, fitted: &Fitted) -> Result<(), KnowledgeError> {
    let doc = serde_json::to_value(fitted)
        .map_err(|e| VectorStoreError::Backend(format!("cannot write the calibration: {e}")))?;
    Ok(store.save_meta(DOCUMENT, &doc).await?)
}

/// A first hit's features, whether it is right, and how much of the
/// traffic it stands for.
type Sample = (Features, bool, f64);

/// One question taken from an article.
struct Question {
    article: String,
    /// Index of the article (for the cross-validation folds).
    group: usize,
    /// The chunks it was taken from (hidden when it is asked).
    chunks: Vec<usize>,
    text: String,
}

/// The questions the store's own articles provide.
fn questions(payloads: &[serde_json::Map<String, serde_json::Value>]) -> Vec<Question> {
    let mut articles: Vec<(String, Vec<String>)> = payloads
        .iter()
        .filter_map(|p| {
            let id = p.get(layout::field::ARTICLE_ID)?.as_str()?.to_string();
            let symptoms = p
                .get(layout::field::SYMPTOMS)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Some((id, symptoms))
        })
        .collect();
    articles.sort();
    let total: usize = articles
        .iter()
        .map(|(_, s)| s.len().min(PER_ARTICLE) * 3 / 2)
        .sum();
    // Evenly thinned when a large store would ask too many.
    let step = total.div_ceil(MAX_QUESTIONS).max(1);
    let mut out = Vec::new();
    let mut k = 0usize;
    for (group, (id, symptoms)) in articles.iter().enumerate() {
        let lines: Vec<(usize, &String)> = symptoms
            .iter()
            .take(PER_ARTICLE)
            .enumerate()
            .filter(|(_, t)| !t.trim().is_empty())
            .collect();
        // Chunk 0 is the title; symptom i is chunk i + 1 (layout::chunks).
        for &(i, text) in &lines {
            k += 1;
            if !k.is_multiple_of(step) {
                continue;
            }
            out.push(Question {
                article: id.clone(),
                group,
                chunks: vec![i + 1],
                text: spoken::fold_acronyms(text),
            });
        }
        // Two symptoms said together: a caller's question is often longer
        // than one line, and long questions are scored over windows.
        for pair in lines.chunks_exact(2) {
            k += 1;
            if !k.is_multiple_of(step) {
                continue;
            }
            let (a, b) = (pair[0], pair[1]);
            out.push(Question {
                article: id.clone(),
                group,
                chunks: vec![a.0 + 1, b.0 + 1],
                text: spoken::fold_acronyms(&format!("{}, {}", a.1, b.1)),
            });
        }
    }
    out
}

/// Fits the calibration on the store's own articles; `None` when it holds
/// too few, or every question came out the same way.
pub async fn fit(kb: &KnowledgeBase) -> Result<Option<Fitted>, KnowledgeError> {
    let store = kb.store().await?;
    let payloads = store.articles().await?;
    let articles = payloads.len();
    if articles < MIN_ARTICLES {
        return Ok(None);
    }
    let questions = questions(&payloads);
    if questions.is_empty() {
        return Ok(None);
    }
    // The centre first: the features the calibration is fitted on are
    // measured from it.
    let (sum, chunks) = store.dense_sum().await?;
    let centre = Centre::from_sum(sum, chunks);
    // Per question: its article's group and its samples (features, right,
    // weight): the first hit (what the floor judges) with the question's
    // source hidden, and the first with its whole article hidden.
    let hidden_weight = UNANSWERABLE / (1.0 - UNANSWERABLE);
    let mut per_question: Vec<(usize, Vec<Sample>)> = Vec::new();
    for batch in questions.chunks(32) {
        // Each question and its windows, embedded in one batch.
        let mut texts = Vec::new();
        let mut spans = Vec::new();
        for q in batch {
            let start = texts.len();
            texts.extend(kb.query_texts(&q.text));
            spans.push(start..texts.len());
        }
        let vectors = kb.embed_queries(texts).await?;
        for (q, span) in batch.iter().zip(spans) {
            let dense: Vec<Vec<f32>> = vectors[span].to_vec();
            // Hiding every symptom chunk instead (the article found by its
            // title and procedure only) was measured: confidences fell on
            // every KB, right answers' most.
            let answerable = Scope {
                exclude_chunks: q.chunks.iter().map(|&c| (q.article.clone(), c)).collect(),
                ..Scope::default()
            };
            let hidden = Scope {
                exclude_articles: vec![q.article.clone()],
                ..Scope::default()
            };
            let (with, without) = tokio::join!(
                kb.ranked(&q.text, dense.clone(), answerable, None, 5, centre.as_ref()),
                kb.ranked(&q.text, dense, hidden, None, 5, centre.as_ref())
            );
            let mut samples = Vec::with_capacity(2);
            if let Some(h) = with?.first() {
                samples.push((h.features, h.article_id == q.article, 1.0));
            }
            if let Some(h) = without?.first() {
                samples.push((h.features, false, hidden_weight));
            }
            per_question.push((q.group, samples));
        }
    }
    let all: Vec<Sample> = per_question
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    let Some(calibration) = Calibration::fit_weighted(&all) else {
        return Ok(None);
    };
    // Two folds over articles: each half's questions scored by the other's fit.
    let mut scored = Vec::new();
    for fold in 0..2 {
        let train: Vec<Sample> = per_question
            .iter()
            .filter(|(g, _)| g % 2 != fold)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        let c = Calibration::fit_weighted(&train).unwrap_or(calibration);
        for (_, samples) in per_question.iter().filter(|(g, _)| g % 2 == fold) {
            for (f, y, w) in samples {
                scored.push((c.confidence(f), *y, *w));
            }
        }
    }
    let r = reliability_weighted(&scored);
    Ok(Some(Fitted {
        version: VERSION,
        calibration,
        centre,
        embedder: kb.embedder_id(),
        articles,
        questions: questions.len(),
        samples: all.len(),
        brier: r.brier,
        ece: r.ece,
        fitted_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(id: &str, symptoms: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        serde_json::json!({ "article_id": id, "symptoms": symptoms })
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn questions_are_symptom_lines_with_their_chunk() {
        let q = questions(&[
            article("b", &["x1", "x2"]),
            article("a", &["s1", "s2", "s3", "s4", "s5"]),
        ]);
        let got: Vec<(&str, usize, Vec<usize>)> = q
            .iter()
            .map(|q| (q.article.as_str(), q.group, q.chunks.clone()))
            .collect();
        // Sorted by article, at most PER_ARTICLE lines each (symptom i is
        // chunk i + 1), then the lines two by two.
        let g = |a, n, c: &[usize]| (a, n, c.to_vec());
        assert_eq!(
            got,
            [
                g("a", 0, &[1]),
                g("a", 0, &[2]),
                g("a", 0, &[3]),
                g("a", 0, &[4]),
                g("a", 0, &[1, 2]),
                g("a", 0, &[3, 4]),
                g("b", 1, &[1]),
                g("b", 1, &[2]),
                g("b", 1, &[1, 2]),
            ]
        );
        assert_eq!(q[4].text, "s1, s2");
    }

    #[test]
    fn a_large_store_is_thinned_evenly() {
        let many: Vec<_> = (0..1_000)
            .map(|i| article(&format!("a{i:04}"), &["one", "two", "three"]))
            .collect();
        let q = questions(&many);
        assert!(
            q.len() <= MAX_QUESTIONS && q.len() > MAX_QUESTIONS / 2,
            "{}",
            q.len()
        );
        let first = q.first().map(|q| q.group).unwrap_or(usize::MAX);
        let last = q.last().map(|q| q.group).unwrap_or(0);
        assert!(first < 5 && last > 990, "{first}..{last}");
    }
}
