//! The runtime end to end, one binary: real components built from the
//! workspace, loaded from inline pipelines and driven with synthetic and
//! recorded calls (the support is the crate's `test-support` feature).

mod factor;
mod stages;
mod transcriber_stage;
