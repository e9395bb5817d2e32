//! Pipeline hot reload for `serve`. The pipeline file (and the stage
//! components it names) is watched; a change is loaded and checked exactly
//! as `callpipe check` would, then used for new calls. Calls in progress
//! keep the version they started on: each holds its own pipeline. A file
//! that does not load is rejected, the old version stays, and the error is
//! kept for the ops page and logged.

use super::capacity::{self, Capacity};
use super::{Diagnostics, LoadOptions, LoadedPipeline, Runtime};
use crate::clock::now_epoch;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The pipeline new calls start on, with the number of its calls the host
/// can hold: swapped whole by a reload, while each call keeps the `Arc` it
/// started with.
pub struct PipelineSlot(RwLock<(Arc<LoadedPipeline>, Capacity)>);

impl PipelineSlot {
    pub fn new(pipeline: Arc<LoadedPipeline>, capacity: Capacity) -> Self {
        PipelineSlot(RwLock::new((pipeline, capacity)))
    }

    pub fn get(&self) -> Arc<LoadedPipeline> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn capacity(&self) -> Capacity {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1
    }

    pub fn set(&self, pipeline: Arc<LoadedPipeline>, capacity: Capacity) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (pipeline, capacity);
    }
}

/// Loads a pipeline to run it, building its plugins with cargo's progress
/// shown; `Err` carries the located diagnostics.
pub async fn load(
    runtime: &Arc<Runtime>,
    path: &Path,
    data_dir: &Path,
) -> Result<LoadedPipeline, Diagnostics> {
    let options = LoadOptions {
        build_plugins: true,
        quiet: false,
        data_dir: data_dir.to_path_buf(),
        knowledge_store: None,
    };
    super::loader::load(runtime, path, &options).await
}

/// Imports `[capabilities.knowledge] seed` (relative to the pipeline file)
/// when the store has no article.
pub async fn seed_knowledge(
    pipeline: &LoadedPipeline,
) -> Result<(), crate::knowledge::KnowledgeError> {
    let Some(kb) = pipeline
        .capabilities
        .get::<crate::knowledge::KnowledgeBase>()
    else {
        return Ok(());
    };
    let Some(seed) = kb.config().seed.clone() else {
        return Ok(());
    };
    let base = pipeline.path.parent().unwrap_or(Path::new("."));
    let seed = if seed.is_absolute() {
        seed
    } else {
        base.join(seed)
    };
    let started = std::time::Instant::now();
    if let Some(report) = kb.seed_if_empty(&seed, |_| {}).await? {
        tracing::info!(
            "knowledge store was empty: imported {} in {:.1} s: {} added ({})",
            seed.display(),
            started.elapsed().as_secs_f64(),
            report.added,
            kb.summary()
        );
    }
    Ok(())
}

/// A reload that was refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    /// Seconds since the epoch.
    pub at: f64,
    pub file: String,
    /// The diagnostics, with file, line and column.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub name: String,
    pub previous: String,
    pub version: String,
}

/// What the app does with each version a reload loads, before calls start
/// on it (the host files it in its store); an error is logged, not fatal.
pub type OnLoaded = Arc<
    dyn Fn(
            Arc<LoadedPipeline>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

pub struct Reloader {
    runtime: Arc<Runtime>,
    path: PathBuf,
    data_dir: PathBuf,
    on_loaded: Option<OnLoaded>,
    /// The calls asked for (`--max-calls`); each version's capacity is
    /// measured against it.
    max_calls: usize,
    /// One reload at a time (the watcher and the API may race).
    busy: tokio::sync::Mutex<()>,
    rejected: RwLock<Option<Rejected>>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        path: PathBuf,
        data_dir: PathBuf,
        on_loaded: Option<OnLoaded>,
        max_calls: usize,
    ) -> Self {
        Self {
            runtime,
            path,
            data_dir,
            on_loaded,
            max_calls,
            busy: tokio::sync::Mutex::new(()),
            rejected: RwLock::new(None),
        }
    }

    /// The last reload's refusal, until a reload succeeds.
    pub fn rejected(&self) -> Option<Rejected> {
        self.rejected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_rejected(&self, r: Option<Rejected>) {
        *self.rejected.write().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// Loads the file again; on success new calls start on it.
    pub async fn reload(&self, slot: &PipelineSlot) -> Result<Reloaded, Rejected> {
        let _one = self.busy.lock().await;
        let previous = slot.get();
        let reject = |message: String| {
            let r = Rejected {
                at: now_epoch(),
                file: self.path.display().to_string(),
                message,
            };
            tracing::error!(
                file = %r.file,
                keeping = %previous.version,
                "pipeline reload rejected; the running version stays:\n{}",
                r.message
            );
            self.set_rejected(Some(r.clone()));
            r
        };
        let loaded = match load(&self.runtime, &self.path, &self.data_dir).await {
            Ok(p) => Arc::new(p),
            Err(diagnostics) => return Err(reject(diagnostics.to_string())),
        };
        // A new version may cost more per call: what the host can hold is
        // measured again before any call starts on it.
        let capacity = capacity::measure(&loaded, self.max_calls, Some(&slot.capacity())).await;
        if capacity.calls == 0 {
            return Err(reject(format!(
                "this host cannot hold a single call of the new version: {}",
                capacity.describe()
            )));
        }
        if let Err(e) = seed_knowledge(&loaded).await {
            tracing::warn!("reloaded pipeline: cannot seed its knowledge base: {e:#}");
        }
        if let Some(on_loaded) = &self.on_loaded
            && let Err(e) = on_loaded(loaded.clone()).await
        {
            tracing::warn!("cannot record the reloaded pipeline: {e}");
        }
        let changed = capacity.calls != slot.capacity().calls;
        slot.set(loaded.clone(), capacity);
        self.set_rejected(None);
        if changed {
            tracing::warn!(
                "capacity with the reloaded pipeline: {}",
                capacity.describe()
            );
        }
        let done = Reloaded {
            name: loaded.name.clone(),
            previous: previous.version.clone(),
            version: loaded.version.clone(),
        };
        tracing::info!(
            from = %done.previous,
            to = %done.version,
            "pipeline reloaded: new calls start on it, calls in progress keep theirs"
        );
        Ok(done)
    }

    /// What the watcher compares: the file's bytes and, for each component
    /// the running pipeline names, its path and modification time.
    fn fingerprint(&self, pipeline: &LoadedPipeline) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(std::fs::read(&self.path).ok()?);
        for stage in &pipeline.stages {
            h.update(stage.wasm.as_os_str().as_encoded_bytes());
            if let Ok(modified) = std::fs::metadata(&stage.wasm).and_then(|m| m.modified()) {
                h.update(format!("{modified:?}").as_bytes());
            }
        }
        Some(h.finalize().into())
    }

    /// Checks for changes every `every` and reloads when something changed
    /// and then stayed the same for one more check (editors write in steps).
    pub fn watch(
        self: Arc<Self>,
        slot: Arc<PipelineSlot>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.fingerprint(&slot.get());
            let mut pending: Option<[u8; 32]> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = self.fingerprint(&slot.get());
                if now.is_none() || now == seen {
                    pending = None;
                    continue;
                }
                if pending != now {
                    pending = now;
                    continue;
                }
                tracing::info!(file = %self.path.display(), "pipeline changed on disk: reloading");
                // Refused or not, this content has been tried.
                let _ = self.reload(&slot).await;
                seen = self.fingerprint(&slot.get()).or(now);
                pending = None;
            }
        })
    }
}
