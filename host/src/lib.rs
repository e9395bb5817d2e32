//! callpipe host: runs WebAssembly stage pipelines on live phone calls.

pub mod audio;
pub mod call_output;
pub mod call_script;
pub mod capabilities;
pub mod chat;
pub mod cli;
pub mod config;
pub mod knowledge;
pub mod live_calls;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod sessions;
pub mod simulator;
pub mod store;
pub mod twilio;
pub mod web;
