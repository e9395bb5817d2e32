//! `speech`: text to 8 kHz mu-law for bidirectional calls. Backends (espeak-ng,
//! an OpenAI-compatible endpoint) plug in here; without one, stages get a
//! `not-configured` error.

use super::not_configured;
use crate::pipeline::bindings::speech::{CapabilityError, Host};
use crate::pipeline::state::StageState;

impl Host for StageState {
    async fn synthesize(
        &mut self,
        _text: String,
        _language: String,
    ) -> wasmtime::Result<Result<Vec<u8>, CapabilityError>> {
        Ok(Err(not_configured("speech")))
    }
}
