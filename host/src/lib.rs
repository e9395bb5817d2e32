//! callpipe host: runs WebAssembly stage pipelines on live phone calls.
//!
//! The app crate: calls, sessions, the Twilio protocol, the web surface and
//! the CLI. The runtime, the knowledge base and the store are crates below
//! it (see ARCHITECTURE.md), each a direct dependency, named here as the
//! app uses them.

pub mod app;
pub mod call_script;
pub mod calls;
pub mod cli;
pub mod cluster;
pub mod metrics;
pub mod sessions;
pub mod simulator;
pub mod twilio;
pub mod web;

pub use callpipe_knowledge as knowledge;
pub use callpipe_knowledge::models;
pub use callpipe_runtime::{audio, bindings, capabilities, config, pipeline};
pub use callpipe_store as store;
pub use callpipe_store::clock;
