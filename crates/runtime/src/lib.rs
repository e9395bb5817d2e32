//! callpipe's stage runtime: the pipeline TOML model and its diagnostics,
//! component building, loading and grants, the engine and per-call stage
//! tasks, hot reload, and the host side of the WIT capabilities.
//!
//! The knowledge base is a crate of its own below this one, re-exported so
//! the runtime and its users name it one way. The store is not below it:
//! the app hands the runtime hooks (`pipeline::reload::OnLoaded`) instead.

pub mod audio;
pub mod bindings;
pub mod capabilities;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use callpipe_knowledge as knowledge;
pub use callpipe_knowledge::models;
