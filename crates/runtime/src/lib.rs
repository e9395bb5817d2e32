//! callpipe's stage runtime: the pipeline TOML model and its diagnostics,
//! component building, loading and grants, the engine and per-call stage
//! tasks, hot reload, and the host side of the WIT capabilities.
//!
//! The knowledge base and the store are crates of their own below this one;
//! they are re-exported so the runtime and its users name them one way.

pub mod audio;
pub mod bindings;
pub mod capabilities;
pub mod config;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use callpipe_knowledge as knowledge;
pub use callpipe_knowledge::models;
pub use callpipe_store as store;
pub use callpipe_store::clock;
