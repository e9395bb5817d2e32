use crate::pipeline::loader::{self, LoadOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline whose plugins to build.
    pipeline: PathBuf,
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::small_runtime(data_dir)?;
    match loader::load(
        &runtime,
        &args.pipeline,
        &LoadOptions {
            build_plugins: true,
            quiet: false,
            data_dir: data_dir.to_path_buf(),
        },
    )
    .await
    {
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
