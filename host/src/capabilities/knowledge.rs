//! `knowledge`: knowledge-base search. Backends (embedded Qdrant, a Qdrant
//! server) plug in here; without one, stages get a `not-configured` error.

use super::not_configured;
use crate::pipeline::bindings::knowledge::{CapabilityError, Hit, Host, SearchRequest};
use crate::pipeline::state::StageState;

impl Host for StageState {
    async fn search(
        &mut self,
        _request: SearchRequest,
    ) -> wasmtime::Result<Result<Vec<Hit>, CapabilityError>> {
        Ok(Err(not_configured("knowledge")))
    }
}
