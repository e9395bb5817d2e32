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
    ///
    /// `QUERIES.jsonl@ARTICLES` searches that file on a store of exactly
    /// those articles (as `kb eval --articles`): fitting on a small and a
    /// large knowledge base together keeps the confidence from depending on
    /// the store's size.
    Calibrate {
        #[arg(value_name = "QUERIES.jsonl[@ARTICLES]", required = true)]
        queries: Vec<String>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Measure answer quality on labelled phrasings and calls (JSON Lines;
    /// see tests/kb-quality/README.md): recall@1/@3, MRR per kind, what the
    /// pipeline shows (article, question, nothing) and multi-turn calls.
    Eval {
        #[arg(value_name = "ITEMS.jsonl", required_unless_present = "suites")]
        files: Vec<PathBuf>,
        /// Measure every knowledge base of a suites file side by side, each
        /// on a store of its own articles (tests/kb-quality/suites.toml).
        #[arg(long, value_name = "SUITES.toml", conflicts_with = "articles")]
        suites: Option<PathBuf>,
        /// With --suites: which half (the held-out half is measured once
        /// per change that is kept).
        #[arg(long, value_enum, default_value = "tune")]
        half: Vec<crate::cli::eval_suites::Half>,
        /// With --suites: only these suites (by name; repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Measure on a store of exactly these articles (JSON Lines or
        /// Markdown, files or directories), kept under the data dir and
        /// reused while they do not change, instead of the pipeline's store.
        #[arg(long, value_name = "FILE|DIR")]
        articles: Vec<PathBuf>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Also report every item (its hits and what was shown).
        #[arg(long)]
        items: bool,
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
        Some(section) => crate::capabilities::knowledge::section_config(section)
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
            let search = Search {
                query,
                limit,
                language,
                equipment,
            };
            search_command(&kb, search, json).await
        }
        Command::Calibrate { queries, json } => {
            calibrate_command(data_dir, &base, &config, &queries, json).await
        }
        Command::Eval {
            suites: Some(suites),
            half,
            only,
            json,
            items,
            ..
        } => eval_suites(data_dir, &args.pipeline, &suites, &half, &only, json, items).await,
        Command::Eval {
            files,
            articles,
            json,
            items,
            ..
        } => eval_files(data_dir, &args.pipeline, &files, &articles, json, items).await,
        Command::Stats { json } => {
            let kb = config.open(data_dir, &base).await?;
            stats_command(&kb, json).await
        }
    }
}

/// `kb search`: the hits as lines, or one JSON document.
async fn search_command(
    kb: &KnowledgeBase,
    search: Search,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = search.query.clone();
    let started = std::time::Instant::now();
    let hits = kb.search(&search).await?;
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

/// `kb calibrate`: fits a calibration on labelled questions, each file on
/// the pipeline's store or on a store of the articles it names (`@`).
async fn calibrate_command(
    data_dir: &Path,
    base: &Path,
    config: &KnowledgeConfig,
    queries: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    // One store per article set; the pipeline's own for plain files.
    let mut stores: Vec<(Option<PathBuf>, KnowledgeBase)> = Vec::new();
    let mut sets: Vec<(usize, Vec<crate::cli::calibrate::Labelled>)> = Vec::new();
    for arg in queries {
        let (file, articles) = match arg.rsplit_once('@') {
            Some((f, a)) => (PathBuf::from(f), Some(PathBuf::from(a))),
            None => (PathBuf::from(arg), None),
        };
        let at = match stores.iter().position(|(a, _)| *a == articles) {
            Some(i) => i,
            None => {
                let mut c = config.clone();
                if let Some(a) = &articles {
                    c.backend = crate::knowledge::Backend::Embedded;
                    c.path = Some(eval_store(std::slice::from_ref(a))?);
                }
                let kb = c.open(data_dir, base).await?;
                if let Some(a) = &articles {
                    let line = import(&kb, std::slice::from_ref(a), !json).await?;
                    if !json {
                        eprintln!("{line}");
                    }
                }
                stores.push((articles, kb));
                stores.len() - 1
            }
        };
        sets.push((at, crate::cli::calibrate::read_queries(&file)?));
    }
    let sets: Vec<(&KnowledgeBase, Vec<crate::cli::calibrate::Labelled>)> =
        sets.into_iter().map(|(i, q)| (&stores[i].1, q)).collect();
    let report = crate::cli::calibrate::run(&sets).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        report.print(&mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kb eval FILES`: the labelled items through the pipeline's text path.
async fn eval_files(
    data_dir: &Path,
    pipeline_path: &Path,
    files: &[PathBuf],
    articles: &[PathBuf],
    json: bool,
    items: bool,
) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for f in files {
        all.extend(crate::cli::eval::read(f)?);
    }
    let store = if articles.is_empty() {
        None
    } else {
        Some(eval_store(articles)?)
    };
    let runtime = super::small_runtime(data_dir)?;
    let Some((pipeline, kb)) =
        load_on_store(&runtime, data_dir, pipeline_path, store, json).await?
    else {
        return Ok(ExitCode::FAILURE);
    };
    if !articles.is_empty() {
        let line = import(&kb, articles, !json).await?;
        if !json {
            eprintln!("{line}");
        }
    }
    let bar = progress_bar(all.len(), "evaluating", "items", !json);
    let report = crate::cli::eval::run(&kb, &pipeline, &all, items, || bar.inc(1)).await?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        report.print(&mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kb stats`: the store, its embedder, its size and its calibration.
async fn stats_command(kb: &KnowledgeBase, json: bool) -> anyhow::Result<ExitCode> {
    let stats = kb.stats().await?;
    let (calibration, source) = kb.calibration();
    let fitted = kb.fitted();
    let mut out = std::io::stdout().lock();
    if json {
        let mut doc = serde_json::to_value(&stats)?;
        doc["calibration"] = serde_json::to_value(calibration)?;
        doc["calibration_source"] = serde_json::to_value(&source)?;
        doc["fitted"] = serde_json::to_value(&fitted)?;
        writeln!(out, "{doc}")?;
    } else {
        writeln!(out, "store:    {}", stats.backend)?;
        writeln!(out, "embedder: {} ({} dims)", stats.embedder, stats.dim)?;
        writeln!(out, "articles: {}", stats.articles)?;
        writeln!(out, "chunks:   {}", stats.chunks)?;
        match (&source, &fitted) {
            (crate::knowledge::CalibrationSource::Pipeline, _) => {
                writeln!(out, "confidence: calibration from the pipeline")?
            }
            (_, Some(f)) => writeln!(
                out,
                "confidence: fitted on the store's own articles ({} questions from {} articles; \
                 Brier {:.3}, ECE {:.3}, cross-validated)",
                f.questions, f.articles, f.brier, f.ece
            )?,
            (_, None) => writeln!(
                out,
                "confidence: not fitted yet (a strict fallback): run `callpipe kb import` on the articles"
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The pipeline loaded for an evaluation, on the embedded store `store`
/// when given, and its knowledge base; `None` when it does not load (its
/// diagnostics are printed).
async fn load_on_store(
    runtime: &std::sync::Arc<crate::pipeline::Runtime>,
    data_dir: &Path,
    pipeline_path: &Path,
    store: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<crate::pipeline::LoadedPipeline>,
        std::sync::Arc<KnowledgeBase>,
    )>,
> {
    let options = crate::pipeline::LoadOptions {
        build_plugins: true,
        quiet,
        data_dir: data_dir.to_path_buf(),
        knowledge_store: store,
    };
    let pipeline = match crate::pipeline::loader::load(runtime, pipeline_path, &options).await {
        Ok(p) => std::sync::Arc::new(p),
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(None);
        }
    };
    let kb = pipeline
        .capabilities
        .get::<KnowledgeBase>()
        .with_context(|| {
            format!(
                "{} has no [capabilities.knowledge] section",
                pipeline_path.display()
            )
        })?;
    Ok(Some((pipeline, kb)))
}

/// `kb eval --suites`: each suite on a store of its own articles, each
/// half asked for, printed side by side.
async fn eval_suites(
    data_dir: &Path,
    pipeline_path: &Path,
    suites_file: &Path,
    halves: &[crate::cli::eval_suites::Half],
    only: &[String],
    json: bool,
    keep_items: bool,
) -> anyhow::Result<ExitCode> {
    use crate::cli::eval_suites::{self, Column};
    let suites: Vec<eval_suites::Suite> = eval_suites::read(suites_file)?
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();
    anyhow::ensure!(
        !suites.is_empty(),
        "{}: no suite to run",
        suites_file.display()
    );
    let runtime = super::small_runtime(data_dir)?;
    let mut columns = Vec::new();
    for suite in &suites {
        let store = eval_store(std::slice::from_ref(&suite.articles))?;
        let Some((pipeline, kb)) =
            load_on_store(&runtime, data_dir, pipeline_path, Some(store), true).await?
        else {
            return Ok(ExitCode::FAILURE);
        };
        let line = import(&kb, std::slice::from_ref(&suite.articles), !json).await?;
        if !json {
            eprintln!("{}: {line}", suite.name);
        }
        let articles = kb.stats().await?.articles;
        for &half in halves {
            let all = eval_suites::items(suite, half)?;
            if all.is_empty() {
                continue;
            }
            let bar = progress_bar(all.len(), "evaluating", "items", !json);
            let report =
                crate::cli::eval::run(&kb, &pipeline, &all, keep_items, || bar.inc(1)).await?;
            bar.finish_and_clear();
            let fitted = kb.fitted();
            columns.push(Column {
                suite: suite.name.clone(),
                half,
                articles,
                embedder: kb.embedder_id(),
                calibration: kb.calibration().1,
                calibration_brier: fitted.as_ref().map(|f| f.brier),
                calibration_ece: fitted.as_ref().map(|f| f.ece),
                report,
            });
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&columns)?)?;
    } else {
        eval_suites::print(&columns, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every file first (so a bad line stops the import before anything
/// is written), then imports with a progress bar. Returns a summary line.
pub async fn import(kb: &KnowledgeBase, paths: &[PathBuf], show: bool) -> anyhow::Result<String> {
    let (articles, files) = article::read_all(paths)?;
    let bar = progress_bar(articles.len(), "importing", "articles", show);
    let started = std::time::Instant::now();
    let report = kb.import(&articles, |_| bar.inc(1)).await?;
    bar.finish_and_clear();
    let calibration = match &report.calibration {
        Some(f) => format!(
            "\nconfidence calibration fitted on the store's own articles: {} questions from {} articles, \
             Brier {:.3}, ECE {:.3} (cross-validated)",
            f.questions, f.articles, f.brier, f.ece
        ),
        None => String::new(),
    };
    Ok(format!(
        "{} articles from {files} file(s) in {:.1} s: {} added, {} updated, {} unchanged ({}){calibration}",
        articles.len(),
        started.elapsed().as_secs_f64(),
        report.added,
        report.updated,
        report.unchanged,
        kb.summary()
    ))
}

/// A progress bar on a terminal, nothing elsewhere.
fn progress_bar(
    len: usize,
    message: &'static str,
    unit: &str,
    show: bool,
) -> indicatif::ProgressBar {
    if !(show && std::io::IsTerminal::is_terminal(&std::io::stderr())) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{msg:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// The store `kb eval --articles` measures on: one per set of article
/// files (by content), so a re-run reuses it and another set never mixes in.
fn eval_store(paths: &[PathBuf]) -> anyhow::Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for path in paths {
        for file in article::collect(path)? {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            h.update(
                file.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            h.update(&bytes);
        }
    }
    let digest = hex::encode(&h.finalize()[..8]);
    // Relative to the data dir, as a pipeline's `path` is.
    Ok(PathBuf::from("knowledge").join(format!("eval-{digest}")))
}
