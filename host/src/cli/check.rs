use crate::pipeline::event::kind_name;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files to validate.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::small_runtime(data_dir)?;
    let mut failed = false;
    for file in &args.files {
        match super::load_pipeline(&runtime, file, data_dir).await {
            Ok(p) => {
                println!(
                    "ok: {} (pipeline `{}`, version {})",
                    file.display(),
                    p.name,
                    p.version
                );
                for s in &p.stages {
                    let on: Vec<_> = s.on.iter().map(kind_name).collect();
                    let emits: Vec<_> = s.emits.iter().map(kind_name).collect();
                    let grants = &s.grants;
                    println!(
                        "  {:<18} {} {}  on [{}] -> emits [{}]{}",
                        s.name,
                        s.descriptor.name,
                        s.descriptor.version,
                        on.join(", "),
                        emits.join(", "),
                        if grants.is_empty() {
                            String::new()
                        } else {
                            format!("  grants [{}]", grants.join(", "))
                        }
                    );
                }
            }
            Err(diags) => {
                failed = true;
                eprintln!("{diags}");
                eprintln!("{}: {} error(s)", file.display(), diags.0.len());
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
