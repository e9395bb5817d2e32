//! The one wasmtime `Engine` of a process: configuration, the epoch ticker
//! that enforces deadlines, and the on-disk cache of compiled components.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Stage instances that may exist at once (calls x stages). The pooling
    /// allocator reserves this many slots up front.
    pub max_instances: u32,
    /// The largest `limits.memory_mib` any stage may ask for.
    pub max_memory_mib: u32,
    /// Epoch tick: the granularity of per-event deadlines.
    pub epoch_tick: Duration,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The capabilities pipelines may configure and grant.
    pub factors: crate::capabilities::Factors<super::state::StageState>,
}

impl RuntimeConfig {
    pub fn new(data_dir: &Path) -> Self {
        let max_instances = std::env::var("CALLPIPE_MAX_INSTANCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096);
        Self {
            max_instances,
            max_memory_mib: 64,
            epoch_tick: Duration::from_millis(1),
            cache_dir: Some(data_dir.join("cache").join("components")),
            factors: crate::capabilities::Factors::builtin(),
        }
    }
}

pub struct Runtime {
    engine: Engine,
    config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, RuntimeError> {
        let n = config.max_instances.max(1);
        let max_memory = config.max_memory_mib as usize * 1024 * 1024;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 component holds a handful of core instances, memories
        // and tables; these factors leave headroom for that shape.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(max_memory);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            // WASIp3-style concurrency is unused and makes every call ~3x slower.
            .concurrency_support(false)
            .memory_reservation(max_memory as u64)
            .memory_guard_size(64 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("callpipe-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        }
        Ok(Arc::new(Self {
            engine,
            config,
            stop_ticker,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a component, or loads it from the cache when this exact file
    /// was compiled before by an engine with the same configuration. Blocking.
    pub fn compile(&self, path: &Path) -> Result<Component, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.into(),
            source,
        })?;
        let cached = self.cache_path(&bytes);
        if let Some(cached) = &cached
            && cached.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name), and
            // the cache directory belongs to this host.
            match unsafe { Component::deserialize_file(&self.engine, cached) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %cached.display(), "ignoring unusable cached component: {e:#}")
                }
            }
        }
        let component =
            Component::new(&self.engine, &bytes).map_err(|e| RuntimeError::Compile {
                path: path.into(),
                message: format!("{e:#}"),
            })?;
        if let Some(cached) = cached
            && let Err(e) = write_cache(&component, &cached)
        {
            tracing::warn!(path = %cached.display(), "cannot cache compiled component: {e}");
        }
        Ok(component)
    }

    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        env!("CARGO_PKG_VERSION").hash(&mut engine_hash);
        let content = hex::encode(&Sha256::digest(wasm)[..16]);
        Some(dir.join(format!("{content}-{:016x}.cwasm", engine_hash.finish())))
    }
}

fn write_cache(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}
