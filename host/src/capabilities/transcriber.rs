//! `transcriber`: speech to text. Backends (whisper.cpp in process, an
//! OpenAI-compatible endpoint) plug in here; without one, stages get a
//! `not-configured` error they can handle.

use super::not_configured;
use crate::pipeline::bindings::transcriber::{
    CapabilityError, Host, TranscribeRequest, Transcription,
};
use crate::pipeline::state::StageState;

impl Host for StageState {
    async fn transcribe(
        &mut self,
        _request: TranscribeRequest,
    ) -> wasmtime::Result<Result<Transcription, CapabilityError>> {
        Ok(Err(not_configured("transcriber")))
    }
}
