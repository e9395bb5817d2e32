//! callpipe host: runs WebAssembly stage pipelines on live phone calls.

pub mod audio;
pub mod bindings;
pub mod call_script;
pub mod calls;
pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod config;
pub mod knowledge;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod sessions;
pub mod simulator;
pub mod store;
pub mod twilio;
pub mod web;
