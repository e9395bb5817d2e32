//! callpipe host: runs WebAssembly stage pipelines on live phone calls.
//!
//! The app crate: calls, sessions, the Twilio protocol, the web surface and
//! the CLI. The runtime, the knowledge base and the store are crates below
//! it (see ARCHITECTURE.md), re-exported here under the names the app uses.

pub mod call_script;
pub mod calls;
pub mod cli;
pub mod cluster;
pub mod sessions;
pub mod simulator;
pub mod twilio;
pub mod web;

pub use callpipe_runtime::{
    audio, bindings, capabilities, clock, config, knowledge, metrics, models, pipeline, store,
};
