use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline whose plugins to build.
    pipeline: PathBuf,
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::small_runtime(data_dir)?;
    match super::load_pipeline(&runtime, &args.pipeline, data_dir).await {
        Ok(p) => {
            for s in &p.stages {
                println!("{:<18} {}", s.name, s.wasm.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprintln!("{diags}");
            Ok(ExitCode::FAILURE)
        }
    }
}
