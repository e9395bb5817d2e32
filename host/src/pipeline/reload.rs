//! Pipeline hot reload for `serve`. The pipeline file (and the stage
//! components it names) is watched; a change is loaded and checked exactly
//! as `callpipe check` would, then used for new calls. Calls in progress
//! keep the version they started on: each holds its own pipeline. A file
//! that does not load is rejected, the old version stays, and the error is
//! kept for the ops page and logged.

use crate::pipeline::{LoadedPipeline, Runtime};
use crate::sessions::now_epoch;
use crate::store::Store;
use crate::web::AppState;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

/// Files a loaded pipeline in the store: the text it was loaded from, which
/// its version hashes (the file may have changed since).
pub async fn record(store: &Store, p: &LoadedPipeline) -> Result<(), crate::store::StoreError> {
    store
        .record_pipeline(
            &p.version,
            &p.name,
            &p.path.display().to_string(),
            &p.source,
        )
        .await
}

pub struct Reloader {
    runtime: Arc<Runtime>,
    path: PathBuf,
    data_dir: PathBuf,
    store: Option<Arc<Store>>,
    /// One reload at a time (the watcher and the API may race).
    busy: tokio::sync::Mutex<()>,
    rejected: RwLock<Option<Rejected>>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        path: PathBuf,
        data_dir: PathBuf,
        store: Option<Arc<Store>>,
    ) -> Self {
        Self {
            runtime,
            path,
            data_dir,
            store,
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
    pub async fn reload(&self, state: &AppState) -> Result<Reloaded, Rejected> {
        let _one = self.busy.lock().await;
        let previous = state.pipeline();
        let loaded = match super::load_pipeline(&self.runtime, &self.path, &self.data_dir).await {
            Ok(p) => p,
            Err(diagnostics) => {
                let r = Rejected {
                    at: now_epoch(),
                    file: self.path.display().to_string(),
                    message: diagnostics.to_string(),
                };
                tracing::error!(
                    file = %r.file,
                    keeping = %previous.version,
                    "pipeline reload rejected; the running version stays:\n{}",
                    r.message
                );
                self.set_rejected(Some(r.clone()));
                return Err(r);
            }
        };
        if let Err(e) = super::first_run::seed_knowledge(&loaded).await {
            tracing::warn!("reloaded pipeline: cannot seed its knowledge base: {e:#}");
        }
        if let Some(store) = &self.store
            && let Err(e) = record(store, &loaded).await
        {
            tracing::warn!("cannot record the reloaded pipeline: {e}");
        }
        let loaded = Arc::new(loaded);
        state.set_pipeline(loaded.clone());
        self.set_rejected(None);
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
    pub fn watch(self: Arc<Self>, state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.fingerprint(&state.pipeline());
            let mut pending: Option<[u8; 32]> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = self.fingerprint(&state.pipeline());
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
                let _ = self.reload(&state).await;
                seen = self.fingerprint(&state.pipeline()).or(now);
                pending = None;
            }
        })
    }
}
