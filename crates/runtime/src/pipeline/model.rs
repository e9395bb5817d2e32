//! The pipeline TOML file, as written by ops. Unknown keys are errors.

use super::diagnostics::{Diagnostic, SourceMap};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub capabilities: CapabilitiesSection,
    #[serde(default)]
    pub stages: Vec<Spanned<StageSpec>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Example: `name = "technician-support"`
    pub name: Spanned<String>,
    /// Example: `description = "Field technicians calling support"`
    #[serde(default)]
    pub description: String,
    /// Language of the calls, BCP 47. Example: `language = "fr"`
    #[serde(default = "default_language")]
    pub language: String,
    /// Capacity of the queue in front of each stage, in events.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Stream time between `callpipe.tick` events, for stages that handle
    /// `custom` events and need to notice time passing without audio (e.g.
    /// to flush a held fragment). Example: `tick_ms = 250`
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// What the assistant says first, per language. Example:
    /// `[pipeline.greetings.chat] fr = "Bonjour ! Quel est le problème rencontré ?"`
    #[serde(default)]
    pub greetings: Greetings,
}

/// The assistant's first words as the pipeline file gives them, per
/// language (primary subtag): `call` is spoken by Twilio before the stream
/// starts, `chat` opens the dashboard's conversation. The runtime only
/// reads and checks the section; the host says them (and keeps the
/// built-in wording for languages not given).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Greetings {
    #[serde(default)]
    pub call: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub chat: std::collections::BTreeMap<String, String>,
}

fn default_tick_ms() -> u64 {
    250
}

fn default_language() -> String {
    "fr".into()
}

fn default_queue() -> usize {
    256
}

/// Backend settings per capability, by name. The shape of each table
/// belongs to the capability; which names exist is the runtime's `Factors`
/// list (the loader reports any other, located).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct CapabilitiesSection(std::collections::BTreeMap<String, Spanned<toml::Table>>);

impl CapabilitiesSection {
    /// The section `[capabilities.NAME]`, if the file has one.
    pub fn get(&self, name: &str) -> Option<&Spanned<toml::Table>> {
        self.0.get(name)
    }

    /// The configured sections with their names (by name).
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Spanned<toml::Table>)> {
        self.0
            .iter()
            .map(|(name, section)| (name.as_str(), section))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique, kebab-case. Example: `name = "vad"`
    pub name: Spanned<String>,
    /// A plugin crate in `plugins/`, a crate directory, or a `.wasm` file,
    /// relative to the pipeline file. Example: `component = "energy-vad"`
    pub component: Spanned<String>,
    /// Event kinds the stage handles; others pass it by. Defaults to what
    /// the component declares. Example: `on = ["audio"]`
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    /// Capabilities the stage may import. Example: `grants = ["knowledge"]`
    #[serde(default)]
    pub grants: Vec<Spanned<String>>,
    /// Passed to the stage's `init` as JSON.
    #[serde(default)]
    pub config: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory the stage instance may use, per call.
    pub memory_mib: u32,
    /// Wall-clock budget for one `handle` call, host capabilities included.
    pub deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 16,
            deadline_ms: 200,
        }
    }
}

impl StageSpec {
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(table) => serde_json::to_string(table.get_ref()).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        }
    }
}

impl PipelineFile {
    /// Parses `text`; syntax errors and unknown keys come back located.
    pub fn parse(file: &Path, text: &str) -> Result<Self, Diagnostic> {
        toml::from_str(text).map_err(|e| {
            let map = SourceMap { file, text };
            map.at(e.span(), None, e.message().trim_end().to_string())
        })
    }
}
