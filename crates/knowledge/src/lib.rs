//! The knowledge base: articles, hybrid retrieval (dense multilingual
//! embedding + BM25 lexical vector, fused by reciprocal rank) over embedded
//! Qdrant or a Qdrant server. Used by `callpipe kb` and by the `knowledge`
//! capability.

pub mod article;
pub mod centre;
pub mod confidence;
mod config;
pub mod edge_store;
pub mod embedder;
pub mod layout;
pub mod lexical;
pub mod models;
pub mod qdrant_store;
pub mod segments;
pub mod selfcal;
pub mod spoken;
mod vector_store;

pub use config::{Backend, KnowledgeConfig};
pub use layout::Scope;
pub use vector_store::VectorStore;

use article::Article;
use confidence::Calibration;
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// The calibration the store fitted on itself after the import (none
    /// when nothing changed and it already had one).
    pub calibration: Option<selfcal::Fitted>,
}

/// Where the confidence of a search comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationSource {
    /// `calibration = {...}` in the pipeline (fitted by `kb calibrate`).
    Pipeline,
    /// Fitted by the store on its own articles.
    Store,
    /// Neither yet: the strict built-in fallback.
    Fallback,
}

pub struct KnowledgeBase {
    config: KnowledgeConfig,
    data_dir: PathBuf,
    store: tokio::sync::OnceCell<VectorStore>,
    embedder: Arc<dyn Embedder>,
    lexical: Arc<lexical::Lexical>,
    /// The store's own fit, read when the store opens, replaced after an
    /// import.
    fitted: std::sync::RwLock<Option<Arc<selfcal::Fitted>>>,
    /// One import at a time: each refits the calibration on the whole store.
    importing: tokio::sync::Mutex<()>,
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
            fitted: std::sync::RwLock::new(None),
            importing: tokio::sync::Mutex::new(()),
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

    /// The embedder's name, as stores and reports give it.
    pub fn embedder_id(&self) -> String {
        self.embedder.id()
    }

    /// The store, opened (or created) on first use, with its calibration.
    pub async fn store(&self) -> Result<&VectorStore, KnowledgeError> {
        self.store
            .get_or_try_init(|| async {
                let store = self
                    .config
                    .open_store(&self.data_dir, &*self.embedder)
                    .await?;
                let fitted = selfcal::load(&store, &self.embedder.id()).await?;
                *self.fitted.write().unwrap_or_else(|p| p.into_inner()) = fitted.map(Arc::new);
                Ok(store)
            })
            .await
    }

    /// The calibration searches use now, and where it comes from.
    pub fn calibration(&self) -> (Calibration, CalibrationSource) {
        Self::calibration_of(&self.config, self.fit().as_deref())
    }

    fn calibration_of(
        config: &KnowledgeConfig,
        fit: Option<&selfcal::Fitted>,
    ) -> (Calibration, CalibrationSource) {
        if let Some(c) = config.calibration {
            return (c, CalibrationSource::Pipeline);
        }
        match fit {
            Some(f) => (f.calibration, CalibrationSource::Store),
            None => (Calibration::default(), CalibrationSource::Fallback),
        }
    }

    /// The store's own fit, if it has one.
    pub fn fitted(&self) -> Option<selfcal::Fitted> {
        self.fit().as_deref().cloned()
    }

    /// The same, shared: one search takes its centre and its calibration
    /// from one snapshot, whatever an import replaces meanwhile.
    fn fit(&self) -> Option<Arc<selfcal::Fitted>> {
        self.fitted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the lexical side and the content hash depend on besides the
    /// embedder: a change re-indexes every article at the next import.
    fn index_id(&self) -> String {
        format!("{}+bm25-fr-en", self.embedder.id())
    }

    /// Adds or updates articles, then refits the store's calibration. An
    /// article whose content (and embedder) is unchanged is skipped; a
    /// changed one replaces all its old chunks. `progress` is called after
    /// each article.
    pub async fn import(
        &self,
        articles: &[Article],
        mut progress: impl FnMut(&Article),
    ) -> Result<ImportReport, KnowledgeError> {
        let _one = self.importing.lock().await;
        let mut report = ImportReport::default();
        let index_id = self.index_id();
        // Embed several articles per call: the local engine splits a batch
        // over its threads.
        const BATCH: usize = 8;
        for group in articles.chunks(BATCH) {
            let mut todo = Vec::new();
            for article in group {
                let hash = layout::content_hash(article, &index_id);
                let chunks = layout::chunks(article).len();
                match self.store().await?.stored(&article.id, chunks).await? {
                    // Whole and current; a leftover of a longer earlier
                    // version (its removal cut short) makes it redone.
                    Some(s) if s.hash == hash && !s.leftover => {
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
                    sparse: self.lexical.document(text),
                    payload: layout::payload(article, n, text, hash),
                });
            }
            // New chunks first (one batch; point ids are per article and
            // chunk, so they overwrite), then what is left of the old
            // version: an error or a dropped request in between leaves the
            // article whole, old or new, never gone.
            self.store().await?.upsert(points).await?;
            for (article, hash, replace) in &todo {
                if *replace {
                    self.store().await?.delete_stale(&article.id, hash).await?;
                }
            }
            for (article, _, _) in &todo {
                progress(article);
            }
        }
        if report.added + report.updated > 0 {
            self.store().await?.finish().await?;
        }
        if report.added + report.updated > 0 || self.fit().is_none() {
            report.calibration = self.refit().await?;
        }
        Ok(report)
    }

    /// Fits the calibration on the store's own articles and keeps it with
    /// the store; `None` when the store is too small to fit one.
    pub async fn refit(&self) -> Result<Option<selfcal::Fitted>, KnowledgeError> {
        let fitted = selfcal::fit(self).await?;
        if let Some(f) = &fitted {
            selfcal::save(self.store().await?, f).await?;
            tracing::info!(
                questions = f.questions,
                articles = f.articles,
                brier = f.brier,
                ece = f.ece,
                "knowledge store: confidence calibration fitted on its own articles"
            );
        }
        *self.fitted.write().unwrap_or_else(|p| p.into_inner()) = fitted.clone().map(Arc::new);
        Ok(fitted)
    }

    /// Imports `seed` (a file or directory of articles) when the store holds
    /// no article yet; `None` when it already did. A store that has articles
    /// but no calibration of its own (made by an older version) fits one.
    pub async fn seed_if_empty(
        &self,
        seed: &Path,
        progress: impl FnMut(&Article),
    ) -> Result<Option<ImportReport>, KnowledgeError> {
        if self.stats().await?.articles > 0 {
            if self.fit().is_none() {
                self.refit().await?;
            }
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
        let query = spoken::fold_acronyms(&request.query);
        let dense = self
            .embedder
            .embed(self.query_texts(&query), Kind::Query)
            .await?;
        if dense.is_empty() {
            return Err(EmbedError::Failed("no embedding returned".into()).into());
        }
        let scope = Scope {
            equipment: request.equipment.clone(),
            ..Scope::default()
        };
        // The store opens (and reads its fit) before the fit is taken.
        self.store().await?;
        let fit = self.fit();
        let centre = fit.as_ref().and_then(|f| f.centre.as_ref());
        let mut hits = self
            .ranked(
                &query,
                dense,
                scope,
                request.language.as_deref(),
                request.limit,
                centre,
            )
            .await?;
        let (calibration, _) = Self::calibration_of(&self.config, fit.as_deref());
        for h in &mut hits {
            h.confidence = calibration.confidence(&h.features);
        }
        Ok(hits)
    }

    /// What a question is embedded as: the whole of it, then (dense only,
    /// where they are scored) its windows. `ranked` takes them in this order.
    pub(crate) fn query_texts(&self, query: &str) -> Vec<String> {
        let mut texts = vec![query.to_string()];
        if self.dense_only() {
            texts.extend(segments::windows(query));
        }
        texts
    }

    /// No lexical side: the ranking is the dense one, over windows too.
    fn dense_only(&self) -> bool {
        self.config.fusion_weights[1] <= 0.0
    }

    /// The hits for an embedded query within `scope`, with their features
    /// (confidence left at 0). `dense` is `query_texts(query)` embedded;
    /// cosines are measured from `centre`, the store's, when it has one.
    pub(crate) async fn ranked(
        &self,
        query: &str,
        dense: Vec<Vec<f32>>,
        scope: Scope,
        language: Option<&str>,
        limit: usize,
        centre: Option<&centre::Centre>,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let limit = limit.clamp(1, 50);
        // Each article has a few chunks: ask for enough to fill `limit`
        // articles (at least SPREAD_OVER, for the confidence's features).
        let chunks = limit.max(SPREAD_OVER) * layout::chunks_per_article_hint();
        let keep = limit.max(SPREAD_OVER);
        let store = self.store().await?;
        let dense_only = self.dense_only();
        // The whole question first, then (dense only: `query_texts`) its
        // windows.
        let whole = dense
            .first()
            .cloned()
            .ok_or_else(|| EmbedError::Failed("no embedding returned".into()))?;
        // The whole question and each window, at once: each search is a
        // blocking store call on its own thread.
        let searches = dense
            .iter()
            .map(|v| store.nearest(v.clone(), scope.clone(), chunks));
        let mut lists = Vec::new();
        for r in futures_util::future::join_all(searches).await {
            lists.push(r?);
        }
        if let Some(centre) = centre {
            recentre(centre, &dense, &mut lists);
        }
        // Per list: each article's best cosine, and what an article it did
        // not return is taken to be (its lowest chunk's: at most that in
        // raw cosines; about that, measured from the centre).
        let best_of = |list: &[layout::ScoredChunk]| {
            let mut best: std::collections::HashMap<String, f32> = Default::default();
            for c in list {
                if let Some(id) = c.payload.get(field::ARTICLE_ID).and_then(|v| v.as_str()) {
                    let e = best.entry(id.to_string()).or_insert(f32::MIN);
                    *e = e.max(c.score);
                }
            }
            let floor = list.iter().map(|c| c.score).reduce(f32::min);
            (best, floor.unwrap_or(0.0))
        };
        let per_list: Vec<_> = lists.iter().map(|l| best_of(l)).collect();
        // A long question is the whole of it and the mean over its windows,
        // half each: a sentence encoder blurs a 40-word ramble, and a
        // window that carries the fault then still counts (measured on the
        // tuning halves: bench/embedders).
        let score_of = |id: &str| -> f32 {
            let at = |(best, floor): &(std::collections::HashMap<String, f32>, f32)| {
                best.get(id).copied().unwrap_or(*floor)
            };
            let whole = at(&per_list[0]);
            if per_list.len() < 2 {
                return whole;
            }
            let rest = &per_list[1..];
            0.5 * whole + 0.5 * rest.iter().map(at).sum::<f32>() / rest.len() as f32
        };
        let mut hits: Vec<Hit> = Vec::with_capacity(keep);
        if dense_only {
            for chunk in lists.iter().flatten() {
                let Some(mut hit) = hit_from(&chunk.payload, chunk.score) else {
                    continue;
                };
                if hits.iter().any(|h| h.article_id == hit.article_id) {
                    continue;
                }
                hit.score = score_of(&hit.article_id);
                hits.push(hit);
            }
        } else {
            let q = HybridQuery {
                dense: whole,
                sparse: self.lexical.query(query),
                scope,
                prefetch: (chunks * 2).max(50),
                limit: chunks,
                weights: self.config.fusion_weights,
            };
            // Qdrant's weighted RRF gives rank r (from 0) of a side weighted
            // w 1 / ((r + 1) / w + k - 1): first on both sides is the maximum.
            let fused_max: f32 = self
                .config
                .fusion_weights
                .iter()
                .filter(|w| **w > 0.0)
                .map(|w| 1.0 / (1.0 / w + RRF_K as f32 - 1.0))
                .sum();
            for chunk in store.query(q).await? {
                let Some(mut hit) = hit_from(&chunk.payload, chunk.score) else {
                    continue;
                };
                if hits.iter().any(|h| h.article_id == hit.article_id) {
                    continue;
                }
                hit.features.fused = (chunk.score / fused_max).min(1.0);
                hit.score = hit.features.fused;
                hits.push(hit);
            }
        }
        for h in &mut hits {
            if language == Some(h.language.as_str()) {
                h.score *= self.config.language_preference;
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(keep);
        let cosines: Vec<f32> = hits.iter().map(|h| score_of(&h.article_id)).collect();
        // How far each stands out of the store's closest articles for this
        // question: an off-topic question is about as close to many.
        let crowd: Vec<f32> = {
            let mut c = cosines.clone();
            c.sort_by(|a, b| b.total_cmp(a));
            c.truncate(SPREAD_OVER);
            c
        };
        let crowd_mean = crowd.iter().sum::<f32>() / crowd.len().max(1) as f32;
        for (i, h) in hits.iter_mut().enumerate() {
            let others = cosines
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, c)| *c)
                .fold(f32::MIN, f32::max);
            h.features.cosine = cosines[i];
            h.features.gap = if others == f32::MIN {
                0.0
            } else {
                (cosines[i] - others).clamp(-MAX_GAP, MAX_GAP)
            };
            h.features.spread = cosines[i] - crowd_mean;
            if dense_only {
                h.features.fused = if i == 0 { 1.0 } else { 0.0 };
            }
        }
        hits.truncate(limit);
        Ok(hits)
    }

    /// Embeds questions as queries, in batches over the embedder's threads.
    pub(crate) async fn embed_queries(
        &self,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, KnowledgeError> {
        Ok(self.embedder.embed(texts, Kind::Query).await?)
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

/// The cosine margin the confidence looks at, either way.
const MAX_GAP: f32 = 0.2;

/// Rescores the lists of chunks found for the query vectors `queries`
/// (one list each) with cosines measured from the store's centre. All or
/// nothing: if any chunk came without its vector (or one of another size),
/// every list keeps its raw cosines, so no search mixes the two.
fn recentre(centre: &centre::Centre, queries: &[Vec<f32>], lists: &mut [Vec<layout::ScoredChunk>]) {
    let mut scores = Vec::with_capacity(lists.len());
    for (q, list) in queries.iter().zip(lists.iter()) {
        let per_list: Option<Vec<f32>> = centre
            .query(q)
            .and_then(|cq| list.iter().map(|c| centre.cosine(&cq, &c.dense)).collect());
        match per_list {
            Some(s) => scores.push(s),
            None => {
                tracing::warn!("search results without their vectors: raw cosines kept");
                return;
            }
        }
    }
    for (list, s) in lists.iter_mut().zip(scores) {
        for (c, s) in list.iter_mut().zip(s) {
            c.score = s;
        }
    }
}

/// The closest articles a hit's spread is measured against.
const SPREAD_OVER: usize = 8;

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
}
