//! `knowledge`: knowledge-base search for stages, over the knowledge base
//! the pipeline configures (`[capabilities.knowledge]`).

use super::CapabilityContext;
use super::not_configured;
use crate::bindings::knowledge::{CapabilityError, Hit, Host, SearchRequest};
use crate::knowledge::{KnowledgeError, Search, VectorStoreError};

/// Longest query a stage may send (a transcript paragraph is far shorter).
const MAX_QUERY_BYTES: usize = 4096;

impl Host for CapabilityContext {
    async fn search(
        &mut self,
        request: SearchRequest,
    ) -> wasmtime::Result<Result<Vec<Hit>, CapabilityError>> {
        let started = std::time::Instant::now();
        let result = self.search_kb(request).await;
        super::observe(&crate::metrics::KNOWLEDGE, started, &result);
        Ok(result)
    }
}

impl CapabilityContext {
    async fn search_kb(&mut self, request: SearchRequest) -> Result<Vec<Hit>, CapabilityError> {
        let Some(kb) = self.set.knowledge.clone() else {
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
