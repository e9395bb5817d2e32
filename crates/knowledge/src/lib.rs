//! The knowledge base: articles, hybrid retrieval (dense multilingual
//! embedding + BM25 lexical vector, fused by reciprocal rank) over embedded
//! Qdrant or a Qdrant server. Used by `callpipe kb` and by the `knowledge`
//! capability.

pub mod article;
pub mod confidence;
mod config;
pub mod edge_store;
pub mod embedder;
pub mod glossary;
pub mod layout;
pub mod lexical;
pub mod models;
pub mod qdrant_store;
pub mod spoken;
mod vector_store;

pub use config::{Backend, KnowledgeConfig};
pub use vector_store::VectorStore;

use article::Article;
use embedder::{EmbedError, Embedder, Kind};
use layout::{ChunkPoint, HybridQuery, field};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reciprocal-rank-fusion constant, the same on both backends.
pub const RRF_K: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum VectorStoreError {
    #[error("{0}")]
    Backend(String),
    #[error("knowledge store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Mismatch(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error(transparent)]
    VectorStore(#[from] VectorStoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("knowledge misconfigured: {0}")]
    Config(String),
    #[error(transparent)]
    Articles(#[from] article::ArticleError),
}

/// One search request, as the capability and the CLI make it.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub query: String,
    pub limit: usize,
    /// Preferred language: ties go to it; others still match.
    pub language: Option<String>,
    pub equipment: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Hit {
    pub article_id: String,
    pub title: String,
    pub language: String,
    pub equipment: Vec<String>,
    pub symptoms: Vec<String>,
    pub body: String,
    /// Fused score: orders the hits of one search.
    pub score: f32,
    /// Calibrated probability that this is the article asked for.
    pub confidence: f32,
    pub features: confidence::Features,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
}

pub struct KnowledgeBase {
    config: KnowledgeConfig,
    data_dir: PathBuf,
    store: tokio::sync::OnceCell<VectorStore>,
    embedder: Arc<dyn Embedder>,
    lexical: Arc<lexical::Lexical>,
    glossary: Arc<glossary::Glossary>,
    timeout: std::time::Duration,
}

impl KnowledgeBase {
    pub(crate) fn new(
        config: KnowledgeConfig,
        data_dir: &Path,
        embedder: Arc<dyn Embedder>,
    ) -> Self {
        KnowledgeBase {
            data_dir: data_dir.to_path_buf(),
            store: tokio::sync::OnceCell::new(),
            embedder,
            lexical: Arc::new(lexical::Lexical::new()),
            glossary: Arc::new(glossary::Glossary::new(
                &config.glossary,
                config.builtin_glossary,
            )),
            timeout: std::time::Duration::from_millis(config.timeout_ms),
            config,
        }
    }

    pub fn summary(&self) -> String {
        let store = match self.store.get() {
            Some(s) => s.summary(),
            None => match self.config.backend {
                Backend::Embedded => format!(
                    "embedded Qdrant at {}",
                    self.config.embedded_path(&self.data_dir).display()
                ),
                Backend::Qdrant => format!(
                    "Qdrant at {} (collection {})",
                    self.config.url.as_deref().unwrap_or("?"),
                    self.config.collection
                ),
            },
        };
        format!("{store}, embedder {}", self.embedder.id())
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &KnowledgeConfig {
        &self.config
    }

    /// The store, opened (or created) on first use.
    pub async fn store(&self) -> Result<&VectorStore, KnowledgeError> {
        self.store
            .get_or_try_init(|| self.config.open_store(&self.data_dir, &*self.embedder))
            .await
    }

    /// Adds or updates articles. An article whose content (and embedder) is
    /// unchanged is skipped; a changed one replaces all its old chunks.
    /// `progress` is called after each article.
    pub async fn import(
        &self,
        articles: &[Article],
        mut progress: impl FnMut(&Article),
    ) -> Result<ImportReport, KnowledgeError> {
        let mut report = ImportReport::default();
        // The glossary shapes the lexical vectors: a new one re-indexes.
        let embedder_id = format!(
            "{}+glossary:{}",
            self.embedder.id(),
            self.glossary.fingerprint()
        );
        // Embed several articles per call: the local engine splits a batch
        // over its threads.
        const BATCH: usize = 8;
        for group in articles.chunks(BATCH) {
            let mut todo = Vec::new();
            for article in group {
                let hash = layout::content_hash(article, &embedder_id);
                match self.store().await?.content_hash(&article.id).await? {
                    Some(h) if h == hash => {
                        report.unchanged += 1;
                        progress(article);
                    }
                    Some(_) => {
                        report.updated += 1;
                        todo.push((article, hash, true));
                    }
                    None => {
                        report.added += 1;
                        todo.push((article, hash, false));
                    }
                }
            }
            if todo.is_empty() {
                continue;
            }
            let mut texts = Vec::new();
            let mut owners = Vec::new();
            for (i, (article, _, _)) in todo.iter().enumerate() {
                for (n, text) in layout::chunks(article).into_iter().enumerate() {
                    texts.push(text);
                    owners.push((i, n));
                }
            }
            let dense = self.embedder.embed(texts.clone(), Kind::Passage).await?;
            let mut points = Vec::with_capacity(texts.len());
            for ((text, dense), (i, n)) in texts.iter().zip(dense).zip(owners) {
                let (article, hash, _) = &todo[i];
                points.push(ChunkPoint {
                    id: layout::point_id(&article.id, n),
                    dense,
                    sparse: self.lexical.document(&self.glossary.annotate(text)),
                    payload: layout::payload(article, n, text, hash),
                });
            }
            for (article, _, replace) in &todo {
                if *replace {
                    self.store().await?.delete_article(&article.id).await?;
                }
            }
            self.store().await?.upsert(points).await?;
            for (article, _, _) in &todo {
                progress(article);
            }
        }
        self.store().await?.finish().await?;
        Ok(report)
    }

    /// Imports `seed` (a file or directory of articles) when the store holds
    /// no article yet; `None` when it already did.
    pub async fn seed_if_empty(
        &self,
        seed: &Path,
        progress: impl FnMut(&Article),
    ) -> Result<Option<ImportReport>, KnowledgeError> {
        if self.stats().await?.articles > 0 {
            return Ok(None);
        }
        let (articles, _) = article::read_all(&[seed.to_path_buf()])?;
        Ok(Some(self.import(&articles, progress).await?))
    }

    /// Hybrid search; returns the best chunk of each article, best first.
    pub async fn search(&self, request: &Search) -> Result<Vec<Hit>, KnowledgeError> {
        match tokio::time::timeout(self.timeout, self.search_inner(request)).await {
            Ok(r) => r,
            Err(_) => Err(VectorStoreError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))
            .into()),
        }
    }

    async fn search_inner(&self, request: &Search) -> Result<Vec<Hit>, KnowledgeError> {
        let limit = request.limit.clamp(1, 50);
        let query = spoken::fold_acronyms(&request.query);
        let dense = self
            .embedder
            .embed(vec![query.clone()], Kind::Query)
            .await?
            .pop()
            .ok_or_else(|| EmbedError::Failed("no embedding returned".into()))?;
        // Each article has a few chunks: ask for enough to fill `limit`
        // articles (at least 5, for the confidence's gap).
        let chunks = limit.max(5) * layout::chunks_per_article_hint();
        let q = HybridQuery {
            dense,
            sparse: self.lexical.query(&self.glossary.annotate(&query)),
            equipment: request.equipment.clone(),
            prefetch: (chunks * 2).max(50),
            limit: chunks,
            weights: self.config.fusion_weights,
        };
        // Qdrant's weighted RRF gives rank r (from 0) of a side weighted w
        // 1 / ((r + 1) / w + k - 1): first on both sides is the maximum.
        let fused_max: f32 = self
            .config
            .fusion_weights
            .iter()
            .filter(|w| **w > 0.0)
            .map(|w| 1.0 / (1.0 / w + RRF_K as f32 - 1.0))
            .sum();
        let store = self.store().await?;
        // Both sides at once: each is a blocking store call on its own thread.
        let (near, scored) = tokio::join!(
            store.nearest(q.dense.clone(), q.equipment.clone(), chunks),
            store.query(q)
        );
        let (near, scored) = (near?, scored?);
        // Gaps are measured among at least this many articles, so a
        // confidence does not depend on how many hits the caller asked for.
        let keep = limit.max(5);
        let mut hits: Vec<Hit> = Vec::with_capacity(keep);
        for chunk in scored {
            let Some(mut hit) = hit_from(&chunk.payload, chunk.score) else {
                continue;
            };
            // Before the language preference, which is ours, not the fusion's.
            hit.features.fused = (chunk.score / fused_max).min(1.0);
            // An article counts once, by its best chunk: summing chunks
            // favours articles in the query's language (measured).
            if !hits.iter().any(|h| h.article_id == hit.article_id) {
                hits.push(hit);
            }
        }
        // Rerank the fused candidates by how many of the query's concepts
        // each article mentions: a cross-language question is otherwise
        // outranked by same-language neighbours that share its phrasing.
        let asked = self.glossary.concepts(&query);
        for h in &mut hits {
            h.features.coverage = coverage(&self.glossary, &asked, h);
            h.score = h.features.fused + self.config.coverage_weight * h.features.coverage;
            if request.language.as_deref() == Some(h.language.as_str()) {
                h.score *= self.config.language_preference;
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(keep);
        // An article missing from the dense side is at most as close as the
        // last chunk it returned.
        let floor = near.last().map_or(0.0, |c| c.score);
        let cosine_of = |id: &str| {
            near.iter()
                .filter(|c| c.payload.get(field::ARTICLE_ID).and_then(|v| v.as_str()) == Some(id))
                .map(|c| c.score)
                .fold(floor, f32::max)
        };
        let cosines: Vec<f32> = hits.iter().map(|h| cosine_of(&h.article_id)).collect();
        // The margin is taken in the ranking actually used (the reranked
        // score, scaled back to 0..1), not on one side of it.
        let scale = 1.0 + self.config.coverage_weight.max(0.0);
        let scores: Vec<f32> = hits.iter().map(|h| h.score / scale).collect();
        for (i, h) in hits.iter_mut().enumerate() {
            let others = scores
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, c)| *c)
                .fold(f32::MIN, f32::max);
            h.features.cosine = cosines[i];
            // Clamped: on a small store the top hit stands far above the
            // rest whatever the question, so a large margin says little.
            h.features.gap = if others == f32::MIN {
                0.0
            } else {
                (scores[i] - others).clamp(-MAX_GAP, MAX_GAP)
            };
            h.confidence = self.config.calibration.confidence(&h.features);
        }
        hits.truncate(limit);
        Ok(hits)
    }

    pub async fn stats(&self) -> Result<Stats, KnowledgeError> {
        let store = self.store().await?;
        let (chunks, articles) = store.counts().await?;
        Ok(Stats {
            backend: store.summary(),
            embedder: self.embedder.id(),
            dim: self.embedder.dim(),
            articles,
            chunks,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub backend: String,
    pub embedder: String,
    pub dim: usize,
    pub articles: usize,
    pub chunks: usize,
}

fn hit_from(p: &serde_json::Map<String, serde_json::Value>, score: f32) -> Option<Hit> {
    let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let list = |k: &str| {
        p.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Hit {
        article_id: s(field::ARTICLE_ID)?,
        title: s(field::TITLE).unwrap_or_default(),
        language: s(field::LANGUAGE).unwrap_or_default(),
        equipment: list(field::EQUIPMENT),
        symptoms: list(field::SYMPTOMS),
        body: s(field::BODY).unwrap_or_default(),
        score,
        confidence: 0.0,
        features: confidence::Features::default(),
    })
}

/// The ranking margin the confidence looks at, either way.
const MAX_GAP: f32 = 0.1;

/// A query naming fewer concepts than this cannot be fully covered: one
/// shared word ("logiciel") is weak evidence, three (equipment, symptom,
/// circumstance) are what a described fault usually has.
const CONCEPTS_FOR_FULL_COVERAGE: usize = 3;

/// Share of the query's concepts that the article mentions anywhere.
fn coverage(glossary: &glossary::Glossary, asked: &[&str], hit: &Hit) -> f32 {
    if asked.is_empty() {
        return 0.0;
    }
    let text = format!("{}\n{}\n{}", hit.title, hit.symptoms.join("\n"), hit.body);
    let has = glossary.concepts(&text);
    asked.iter().filter(|c| has.contains(c)).count() as f32
        / asked.len().max(CONCEPTS_FOR_FULL_COVERAGE) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().expect("an object").clone()
    }

    #[test]
    fn a_hit_is_read_from_its_payload_and_needs_an_article_id() {
        let hit = hit_from(
            &payload(serde_json::json!({
                field::ARTICLE_ID: "kb-7",
                field::TITLE: "Badge refusé",
                field::EQUIPMENT: ["lecteur", 3],
                field::BODY: "Vérifier les droits.",
            })),
            0.5,
        )
        .expect("a hit");
        assert_eq!(
            (hit.article_id.as_str(), hit.title.as_str()),
            ("kb-7", "Badge refusé")
        );
        assert_eq!(hit.equipment, ["lecteur"]);
        assert!(hit.symptoms.is_empty() && hit.language.is_empty());
        assert_eq!(hit.score, 0.5);
        assert!(hit_from(&payload(serde_json::json!({ field::TITLE: "x" })), 1.0).is_none());
    }

    #[test]
    fn coverage_counts_asked_concepts_the_article_names_over_at_least_three() {
        let glossary = glossary::Glossary::new(&Default::default(), true);
        let hit = |title: &str, body: &str| Hit {
            article_id: "a".into(),
            title: title.into(),
            body: body.into(),
            ..hit_from(&payload(serde_json::json!({ field::ARTICLE_ID: "a" })), 0.0).expect("a hit")
        };
        let asked = glossary.concepts("le lecteur de badge refuse la carte");
        assert!(!asked.is_empty(), "the glossary knows badge readers");
        let full = coverage(
            &glossary,
            &asked,
            &hit("Badge refusé au lecteur", "carte refusée"),
        );
        let none = coverage(
            &glossary,
            &asked,
            &hit("Disque plein", "l'enregistreur s'arrête"),
        );
        assert!(full > none, "{full} vs {none}");
        assert_eq!(none, 0.0);
        assert!(full <= 1.0);
        // One concept asked is never full coverage.
        let one = ["only-one"];
        assert!(coverage(&glossary, &one, &hit("x", "y")) <= 1.0 / 3.0);
        assert_eq!(coverage(&glossary, &[], &hit("x", "y")), 0.0);
    }
}
