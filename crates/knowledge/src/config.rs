//! `[capabilities.knowledge]`: which store, which embedder, how results
//! are ranked; and opening the store it names.

use crate::embedder::{Embedder, EmbedderConfig};
use crate::vector_store::VectorStore;
use crate::{KnowledgeBase, KnowledgeError, confidence, edge_store, qdrant_store};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[capabilities.knowledge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    #[serde(default)]
    pub backend: Backend,
    /// embedded: the store's directory, relative to the data dir.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// qdrant: the server's gRPC URL, e.g. `http://localhost:6334`.
    #[serde(default)]
    pub url: Option<String>,
    /// qdrant: how a new collection is spread over a cluster:
    /// `cluster = { shards = 2, replication = 2, write_consistency = 1 }`.
    #[serde(default)]
    pub cluster: qdrant_store::ClusterLayout,
    /// qdrant: environment variable holding the API key (never the key).
    #[serde(default = "qdrant_key_env")]
    pub api_key_env: String,
    #[serde(default = "collection")]
    pub collection: String,
    /// Longest one search may take, embedding included.
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub embedder: EmbedderConfig,
    /// How much each side counts in the fusion: `[dense, lexical]`. The
    /// lexical side only ever matches within one language, so it weighs
    /// less than the multilingual dense side.
    #[serde(default = "fusion_weights")]
    pub fusion_weights: [f32; 2],
    /// Articles (file or directory, relative to the pipeline file) that
    /// `callpipe serve` imports when the store is empty. Example: `seed = "../kb"`
    #[serde(default)]
    pub seed: Option<PathBuf>,
    /// Maps a hit's features to a 0..1 confidence. Unset (the default):
    /// the calibration the store fitted on its own articles at import. Set
    /// it to what `callpipe kb calibrate` fitted on labelled questions.
    #[serde(default)]
    pub calibration: Option<confidence::Calibration>,
    /// Candidates in the caller's language have their score multiplied by
    /// this (ties go to the technician's language).
    #[serde(default = "language_preference")]
    pub language_preference: f32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Embedded,
    Qdrant,
}

fn qdrant_key_env() -> String {
    "QDRANT_API_KEY".into()
}
fn collection() -> String {
    "callpipe-kb".into()
}
fn timeout_ms() -> u64 {
    2_000
}
/// No preference: a preference for the caller's language only costs
/// cross-language questions.
fn language_preference() -> f32 {
    1.0
}
/// Dense only: the lexical side only ever matches within one language, and
/// any weight on it (0.2 and 0.5 measured on the tuning halves) pushed
/// cross-language questions behind same-language neighbours.
fn fusion_weights() -> [f32; 2] {
    [1.0, 0.0]
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            backend: Backend::Embedded,
            path: None,
            url: None,
            cluster: Default::default(),
            api_key_env: qdrant_key_env(),
            collection: collection(),
            timeout_ms: timeout_ms(),
            embedder: EmbedderConfig::default(),
            fusion_weights: fusion_weights(),
            seed: None,
            calibration: None,
            language_preference: language_preference(),
        }
    }
}

impl KnowledgeConfig {
    /// Where the embedded store lives.
    pub fn embedded_path(&self, data_dir: &Path) -> PathBuf {
        let base = data_dir.join("knowledge");
        match &self.path {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => data_dir.join(p),
            None => base.join(&self.collection),
        }
    }

    /// Builds the embedder; the store opens on first use (so `callpipe check`
    /// never locks a store a running server holds).
    pub async fn open(
        &self,
        data_dir: &Path,
        base_dir: &Path,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        let embedder = {
            let (cfg, data_dir, base_dir) = (
                self.embedder.clone(),
                data_dir.to_path_buf(),
                base_dir.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || cfg.build(&data_dir, &base_dir))
                .await
                .map_err(|e| KnowledgeError::Config(e.to_string()))??
        };
        Ok(KnowledgeBase::new(self.clone(), data_dir, embedder))
    }

    pub(crate) async fn open_store(
        &self,
        data_dir: &Path,
        embedder: &dyn Embedder,
    ) -> Result<VectorStore, KnowledgeError> {
        match self.backend {
            Backend::Embedded => {
                let path = self.embedded_path(data_dir);
                let (dim, id) = (embedder.dim(), embedder.id());
                let store = tokio::task::spawn_blocking(move || {
                    edge_store::EdgeStore::open(&path, dim, &id)
                })
                .await
                .map_err(|e| KnowledgeError::Config(e.to_string()))??;
                Ok(VectorStore::Embedded(store))
            }
            Backend::Qdrant => {
                let store = self.qdrant()?;
                store.ensure(embedder.dim()).await?;
                Ok(VectorStore::Qdrant(store))
            }
        }
    }

    /// A client for the configured Qdrant collection (not created yet).
    fn qdrant(&self) -> Result<qdrant_store::QdrantStore, KnowledgeError> {
        let url = self.url.as_deref().ok_or_else(|| {
            KnowledgeError::Config(
                "backend = \"qdrant\" needs `url` (e.g. http://localhost:6334)".into(),
            )
        })?;
        let key = callpipe_remote::api_key(Some(&self.api_key_env));
        Ok(qdrant_store::QdrantStore::connect(
            url,
            key,
            &self.collection,
            std::time::Duration::from_millis(self.timeout_ms.max(1_000)),
            self.cluster,
        )?)
    }

    /// Drops the store's content (for `kb import --recreate`).
    pub async fn destroy(&self, data_dir: &Path) -> Result<(), KnowledgeError> {
        match self.backend {
            Backend::Embedded => Ok(edge_store::EdgeStore::destroy(
                &self.embedded_path(data_dir),
            )?),
            Backend::Qdrant => Ok(self.qdrant()?.destroy().await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KnowledgeConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_section_is_the_default() {
        let c = parse("").expect("defaults");
        let d = KnowledgeConfig::default();
        assert_eq!(c.backend, Backend::Embedded);
        assert_eq!(
            (c.collection.as_str(), c.timeout_ms),
            (d.collection.as_str(), d.timeout_ms)
        );
        assert_eq!(c.fusion_weights, d.fusion_weights);
        assert!(c.embedder.uses_default_model() && c.calibration.is_none());
    }

    #[test]
    fn unknown_keys_and_backends_are_refused() {
        assert!(parse("colection = \"x\"").is_err());
        assert!(parse("backend = \"faiss\"").is_err());
    }

    #[test]
    fn the_embedded_store_lives_under_the_data_dir_unless_absolute() {
        let data = Path::new("/var/data");
        let mut c = KnowledgeConfig::default();
        assert_eq!(
            c.embedded_path(data),
            data.join("knowledge").join("callpipe-kb")
        );
        c.path = Some("kb-store".into());
        assert_eq!(c.embedded_path(data), data.join("kb-store"));
        c.path = Some("/srv/kb".into());
        assert_eq!(c.embedded_path(data), PathBuf::from("/srv/kb"));
    }

    #[test]
    fn a_qdrant_backend_without_url_says_what_to_set() {
        let c = parse("backend = \"qdrant\"").expect("parses");
        let err = c.qdrant().err().expect("no url");
        assert!(err.to_string().contains("needs `url`"), "{err}");
    }
}
