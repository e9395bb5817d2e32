//! Host bindings for the stage contract, generated once from `wit/`.
//!
//! The host is generated from the `full-stage` world; each stage is linked
//! only with the interfaces its pipeline grants (see `grants`).

wasmtime::component::bindgen!({
    world: "full-stage",
    path: "../../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use callpipe::stage::types;
pub use callpipe::stage::{knowledge, llm, log, speech, transcriber};

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.1";
