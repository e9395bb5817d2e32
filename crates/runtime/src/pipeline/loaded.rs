//! A pipeline as loaded: its stages, each with its compiled component and
//! what it may do. `loader` makes one; calls and instances use it (apart,
//! so an instance does not import the loader that probes it).

use super::engine::Runtime;
use super::event::KindSet;
use super::model::Limits;
use super::state::StageState;
use crate::bindings::FullStagePre;
use crate::bindings::types::Descriptor;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct LoadedStage {
    pub name: Arc<str>,
    pub component: String,
    pub wasm: PathBuf,
    pub on: KindSet,
    pub emits: KindSet,
    /// Names of the capabilities the stage is granted.
    pub grants: Vec<&'static str>,
    pub config_json: String,
    pub limits: Limits,
    pub descriptor: Descriptor,
    pub pre: FullStagePre<StageState>,
    pub capabilities: Arc<crate::capabilities::CapabilitySet>,
}

pub struct LoadedPipeline {
    pub name: String,
    pub language: String,
    pub path: PathBuf,
    /// Content hash of the file: calls keep the version they started with.
    pub version: String,
    /// The TOML that was loaded (what `version` hashes), for the record.
    pub source: String,
    pub queue: usize,
    pub stages: Vec<Arc<LoadedStage>>,
    pub runtime: Arc<Runtime>,
    /// Stream time between ticks; `None` when no stage handles `custom`.
    pub tick_ms: Option<u64>,
    /// The backends `[capabilities.*]` configured, shared by every stage.
    pub capabilities: Arc<crate::capabilities::CapabilitySet>,
    /// The assistant's first words on a call and in the chat.
    pub greetings: super::model::Greetings,
}

impl LoadedPipeline {
    /// The first stage that handles `kind`: where the chat path enters.
    pub fn first_handling(&self, kind: crate::bindings::types::EventKind) -> Option<usize> {
        self.stages.iter().position(|s| s.on.contains(kind))
    }
}
