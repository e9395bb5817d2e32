//! One interface over the two stores: embedded Qdrant (qdrant-edge) and a
//! Qdrant server.

use crate::layout::{self, ChunkPoint, HybridQuery, Scope};
use crate::{VectorStoreError, edge_store, qdrant_store};
use std::sync::Arc;

pub enum VectorStore {
    Embedded(Arc<edge_store::EdgeStore>),
    Qdrant(qdrant_store::QdrantStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            VectorStore::Embedded($s) => $e,
            VectorStore::Qdrant($s) => $e,
        }
    };
}

impl VectorStore {
    pub fn summary(&self) -> String {
        dispatch!(self, s => s.summary())
    }
    pub async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorStoreError> {
        dispatch!(self, s => s.upsert(points).await)
    }
    pub async fn delete_stale(&self, id: &str, keep_hash: &str) -> Result<(), VectorStoreError> {
        dispatch!(self, s => s.delete_stale(id, keep_hash).await)
    }
    /// The article's stored hash, and whether a chunk past its `chunks`
    /// is left over (one read of two points).
    pub async fn stored(
        &self,
        id: &str,
        chunks: usize,
    ) -> Result<Option<layout::Stored>, VectorStoreError> {
        dispatch!(self, s => s.stored(id, chunks).await)
    }
    pub async fn query(
        &self,
        q: HybridQuery,
    ) -> Result<Vec<layout::ScoredChunk>, VectorStoreError> {
        dispatch!(self, s => s.query(q).await)
    }
    pub async fn nearest(
        &self,
        dense: Vec<f32>,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<layout::ScoredChunk>, VectorStoreError> {
        dispatch!(self, s => s.nearest(dense, scope, limit).await)
    }
    /// The sum of every chunk's dense vector, and how many there are.
    pub async fn dense_sum(&self) -> Result<(Vec<f64>, usize), VectorStoreError> {
        dispatch!(self, s => s.dense_sum().await)
    }
    pub async fn counts(&self) -> Result<(usize, usize), VectorStoreError> {
        dispatch!(self, s => s.counts().await)
    }
    pub async fn articles(
        &self,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, VectorStoreError> {
        dispatch!(self, s => s.articles().await)
    }
    pub async fn load_meta(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VectorStoreError> {
        dispatch!(self, s => s.load_meta(name).await)
    }
    pub async fn save_meta(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), VectorStoreError> {
        dispatch!(self, s => s.save_meta(name, value).await)
    }
    pub async fn finish(&self) -> Result<(), VectorStoreError> {
        match self {
            VectorStore::Embedded(s) => s.finish().await,
            VectorStore::Qdrant(_) => Ok(()),
        }
    }
}
