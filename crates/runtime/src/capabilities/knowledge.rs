//! `knowledge`: knowledge-base search for stages, over the knowledge base
//! the pipeline configures (`[capabilities.knowledge]`).

use super::CapabilityContext;
use super::not_configured;
use crate::bindings::knowledge::{CapabilityError, Hit, Host, SearchRequest};
use crate::knowledge::{Backend, KnowledgeBase, KnowledgeError, Search, VectorStoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// Longest query a stage may send (a transcript paragraph is far shorter).
const MAX_QUERY_BYTES: usize = 4096;

impl Host for CapabilityContext {
    async fn search(
        &mut self,
        request: SearchRequest,
    ) -> wasmtime::Result<Result<Vec<Hit>, CapabilityError>> {
        let started = std::time::Instant::now();
        let result = self.search_kb(request).await;
        super::observe(&METRICS, started, &result);
        Ok(result)
    }
}

impl CapabilityContext {
    async fn search_kb(&mut self, request: SearchRequest) -> Result<Vec<Hit>, CapabilityError> {
        let Some(kb) = self.set.get::<KnowledgeBase>() else {
            return Err(not_configured("knowledge"));
        };
        if request.query.trim().is_empty() {
            return Err(CapabilityError::InvalidRequest("empty query".into()));
        }
        if request.query.len() > MAX_QUERY_BYTES {
            return Err(CapabilityError::InvalidRequest(format!(
                "query of {} bytes (at most {MAX_QUERY_BYTES})",
                request.query.len()
            )));
        }
        let search = Search {
            query: request.query,
            limit: request.limit.clamp(1, 50) as usize,
            language: request.language,
            equipment: request.equipment,
        };
        match kb.search(&search).await {
            Ok(hits) => Ok(hits
                .into_iter()
                .map(|h| Hit {
                    article_id: h.article_id,
                    title: h.title,
                    content: h.body,
                    language: h.language,
                    equipment: h.equipment,
                    // Calibrated 0..1 (knowledge::confidence): a stage can set a floor.
                    score: h.confidence,
                })
                .collect()),
            Err(KnowledgeError::VectorStore(VectorStoreError::Unavailable(m))) => {
                Err(CapabilityError::Unavailable(m))
            }
            Err(e) => Err(CapabilityError::Other(e.to_string())),
        }
    }
}

/// `[capabilities.knowledge]` as typed settings.
pub fn section_config(table: &toml::Table) -> Result<crate::knowledge::KnowledgeConfig, String> {
    super::factor::typed("knowledge", table)
}

/// The `knowledge` capability (see `factor`).
pub struct KnowledgeFactor;

/// Calls from stages to `knowledge`, by outcome and latency (/metrics).
pub static METRICS: crate::metrics::CapabilityMetrics =
    crate::metrics::CapabilityMetrics::new("knowledge");

impl<T: Send + 'static> super::Factor<T> for KnowledgeFactor {
    fn name(&self) -> &'static str {
        "knowledge"
    }

    fn interface(&self) -> &'static str {
        "callpipe:stage/knowledge"
    }

    fn metrics(&self) -> Option<&'static crate::metrics::CapabilityMetrics> {
        Some(&METRICS)
    }

    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        setup: super::Setup<'a>,
        set: &'a mut super::CapabilitySet,
    ) -> super::factor::BuildFuture<'a> {
        Box::pin(async move {
            let mut config = section_config(section)?;
            if let Some(store) = setup.knowledge_store {
                config.backend = Backend::Embedded;
                config.path = Some(PathBuf::from(store));
            }
            let kb = config
                .open(setup.data_dir, setup.base_dir)
                .await
                .map_err(|e| format!("[capabilities.knowledge]: {e}"))?;
            tracing::info!("knowledge: {}", kb.summary());
            set.insert(Arc::new(kb));
            Ok(())
        })
    }

    fn link(
        &self,
        linker: &mut wasmtime::component::Linker<T>,
        context: super::factor::ContextOf<T>,
    ) -> wasmtime::Result<()> {
        crate::bindings::knowledge::add_to_linker::<
            T,
            wasmtime::component::HasSelf<CapabilityContext>,
        >(linker, context)
    }
}
