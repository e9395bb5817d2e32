//! `callpipe kb`: import, search and count the knowledge base the pipeline's
//! `[capabilities.knowledge]` section configures.

use crate::knowledge::{KnowledgeBase, KnowledgeConfig, Search, article};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline whose `[capabilities.knowledge]` names the store and the
    /// embedder (defaults apply when the file or the section is absent).
    #[arg(
        long,
        global = true,
        env = "CALLPIPE_PIPELINE",
        default_value = "pipelines/technician-support.toml"
    )]
    pipeline: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add or update articles from JSON Lines (`articles.jsonl` layout) and
    /// Markdown files, or directories of them. Unchanged articles are skipped.
    Import {
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        /// Empty the store first (needed after changing the embedder).
        #[arg(long)]
        recreate: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Hybrid search (dense + lexical), best article first.
    Search {
        query: String,
        #[arg(long, short = 'n', default_value_t = 3)]
        limit: usize,
        /// Prefer articles in this language (others still match).
        #[arg(long)]
        language: Option<String>,
        /// Only articles with this equipment tag (repeatable).
        #[arg(long)]
        equipment: Vec<String>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Fit the confidence calibration on labelled queries (JSON Lines:
    /// `{"query": "...", "expected": ["article-id"]}`; `[]` for a question
    /// the knowledge base cannot answer) and print it for the pipeline TOML.
    Calibrate {
        #[arg(value_name = "QUERIES.jsonl", required = true)]
        queries: Vec<PathBuf>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// What the store holds.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

/// The knowledge settings of a pipeline file, or the defaults.
pub fn config_from_pipeline(path: &Path) -> anyhow::Result<KnowledgeConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(KnowledgeConfig::default());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: not valid TOML (see `callpipe check`)", path.display()))?;
    match table
        .get("capabilities")
        .and_then(|c| c.get("knowledge"))
        .and_then(|k| k.as_table())
    {
        Some(section) => crate::pipeline::loader::knowledge_config(section)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        None => Ok(KnowledgeConfig::default()),
    }
}

fn base_dir(pipeline: &Path) -> PathBuf {
    match pipeline.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub async fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = config_from_pipeline(&args.pipeline)?;
    let base = base_dir(&args.pipeline);
    match args.command {
        Command::Import {
            paths,
            recreate,
            quiet,
        } => {
            if recreate {
                config.destroy(data_dir).await?;
            }
            let kb = config.open(data_dir, &base).await?;
            println!("{}", import(&kb, &paths, !quiet).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Search {
            query,
            limit,
            language,
            equipment,
            json,
        } => {
            let kb = config.open(data_dir, &base).await?;
            let started = std::time::Instant::now();
            let hits = kb
                .search(&Search {
                    query: query.clone(),
                    limit,
                    language,
                    equipment,
                })
                .await?;
            let elapsed = started.elapsed();
            let mut out = std::io::stdout().lock();
            if json {
                let doc = serde_json::json!({
                    "query": query,
                    "folded_query": crate::knowledge::spoken::fold_acronyms(&query),
                    "took_ms": elapsed.as_secs_f64() * 1000.0,
                    "hits": hits,
                });
                writeln!(out, "{doc}")?;
            } else if hits.is_empty() {
                writeln!(
                    out,
                    "no match (is the knowledge base imported? see `callpipe kb stats`)"
                )?;
            } else {
                for (i, h) in hits.iter().enumerate() {
                    writeln!(
                        out,
                        "{}. [{}] {} ({}, confidence {:.2}, score {:.4})",
                        i + 1,
                        h.article_id,
                        h.title,
                        h.language,
                        h.confidence,
                        h.score
                    )?;
                }
                writeln!(out, "({:.1} ms)", elapsed.as_secs_f64() * 1000.0)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate { queries, json } => {
            let kb = config.open(data_dir, &base).await?;
            let mut labelled = Vec::new();
            for file in &queries {
                labelled.extend(crate::cli::calibrate::read_queries(file)?);
            }
            let report = crate::cli::calibrate::run(&kb, &labelled).await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                report.print(&mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json } => {
            let kb = config.open(data_dir, &base).await?;
            let stats = kb.stats().await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&stats)?)?;
            } else {
                writeln!(out, "store:    {}", stats.backend)?;
                writeln!(out, "embedder: {} ({} dims)", stats.embedder, stats.dim)?;
                writeln!(out, "articles: {}", stats.articles)?;
                writeln!(out, "chunks:   {}", stats.chunks)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads every file first (so a bad line stops the import before anything
/// is written), then imports with a progress bar. Returns a summary line.
pub async fn import(kb: &KnowledgeBase, paths: &[PathBuf], show: bool) -> anyhow::Result<String> {
    let mut articles = Vec::new();
    let mut files = 0;
    for path in paths {
        for file in article::collect(path)? {
            articles.extend(article::read_file(&file)?);
            files += 1;
        }
    }
    let mut seen = std::collections::HashMap::new();
    for a in &articles {
        if let Some(first) = seen.insert(a.id.as_str(), a.title.as_str()) {
            anyhow::bail!(
                "article id `{}` appears twice (\"{first}\" and \"{}\")",
                a.id,
                a.title
            );
        }
    }
    let show = show && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if show {
        let bar = indicatif::ProgressBar::new(articles.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} articles {per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("importing");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let report = kb.import(&articles, |_| bar.inc(1)).await?;
    bar.finish_and_clear();
    Ok(format!(
        "{} articles from {files} file(s) in {:.1} s: {} added, {} updated, {} unchanged ({})",
        articles.len(),
        started.elapsed().as_secs_f64(),
        report.added,
        report.updated,
        report.unchanged,
        kb.summary()
    ))
}
