//! Pipelines: the TOML model, validation, component loading and the per-call
//! runner. wasmtime stays inside this module.

pub mod call;
pub mod capacity;
pub mod diagnostics;
pub mod engine;
pub mod event;
pub mod flow;
pub mod grants;
pub mod instance;
pub mod loaded;
pub mod loader;
pub mod model;
pub mod plugins;
pub mod reload;
pub mod state;
pub mod stats;
pub mod validate;

/// The stage contract's bindings, also reachable here (older paths).
pub use crate::bindings;
pub use crate::bindings::types::{CallInfo, Event, EventKind};
pub use call::{Call, CallOutput};
pub use diagnostics::{Diagnostic, Diagnostics};
pub use engine::{Runtime, RuntimeConfig};
pub use loader::{LoadOptions, LoadedPipeline, LoadedStage};
pub use model::PipelineFile;
