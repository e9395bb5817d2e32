//! callpipe host: runs WebAssembly stage pipelines on live phone calls.

pub mod audio;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod pipeline;
