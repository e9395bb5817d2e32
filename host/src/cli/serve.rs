//! `callpipe serve`: the models on first run, the pipeline, the socket;
//! then the app (`crate::app`) is built and served until SIGTERM.

use crate::app::{self, App};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub use crate::app::Config as Args;

pub async fn run(data_dir: &Path, config: Args) -> anyhow::Result<ExitCode> {
    let runtime = crate::pipeline::Runtime::new(app::runtime_config(data_dir, config.max_calls))?;
    super::first_run::fetch_default_models(&config.pipeline, data_dir).await?;
    let pipeline = match super::load_pipeline(&runtime, &config.pipeline, data_dir).await {
        Ok(p) => Arc::new(p),
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Bound before the app: the port is part of this host's default id.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let app = App::build(data_dir, config, runtime, pipeline, listener).await?;
    app.serve(app::stop::signal()).await?;
    Ok(ExitCode::SUCCESS)
}
