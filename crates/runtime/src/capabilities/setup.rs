//! A pipeline's `[capabilities.*]` sections into backends: each section is
//! parsed into its typed settings and built (a model load runs off the async
//! runtime). A section that fails is reported by name and the others are
//! still built, so `callpipe check` shows every problem at once.

use super::CapabilitySet;
use super::speech::SpeechConfig;
use super::transcriber::{TranscriberConfig, TranscriberService};
use crate::knowledge::{Backend, KnowledgeBase, KnowledgeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the backends find their files.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// Where default model files live (`callpipe models` puts them there).
    pub data_dir: &'a Path,
    /// Relative paths in a section resolve against this (the pipeline's directory).
    pub base_dir: &'a Path,
    /// Use this embedded knowledge store instead of the one the section names.
    pub knowledge_store: Option<&'a Path>,
}

/// A section that could not be set up.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionError {
    /// `transcriber`, `knowledge`, `speech`, or the unknown name given.
    pub section: String,
    pub message: String,
}

impl CapabilitySet {
    /// Builds the backend of every section, `(name, table)`.
    pub async fn from_sections(
        sections: &[(&str, &toml::Table)],
        setup: Setup<'_>,
    ) -> (CapabilitySet, Vec<SectionError>) {
        let mut set = CapabilitySet::default();
        let mut errors = Vec::new();
        for &(name, table) in sections {
            let built = match name {
                "transcriber" => transcriber(table, setup)
                    .await
                    .map(|t| set.transcriber = Some(Arc::new(t))),
                "knowledge" => knowledge(table, setup)
                    .await
                    .map(|kb| set.knowledge = Some(Arc::new(kb))),
                "speech" => speech(table).map(|s| set.speech = Some(Arc::new(s))),
                "llm" => llm(table).map(|l| set.llm = Some(Arc::new(l))),
                other => Err(format!(
                    "unknown capability section [capabilities.{other}] (known: transcriber, knowledge, speech, llm)"
                )),
            };
            if let Err(message) = built {
                errors.push(SectionError {
                    section: name.to_string(),
                    message,
                });
            }
        }
        (set, errors)
    }
}

/// `[capabilities.transcriber]` as typed settings.
pub fn transcriber_config(table: &toml::Table) -> Result<TranscriberConfig, String> {
    typed("transcriber", table)
}

/// `[capabilities.knowledge]` as typed settings.
pub fn knowledge_config(table: &toml::Table) -> Result<KnowledgeConfig, String> {
    typed("knowledge", table)
}

fn typed<T: serde::de::DeserializeOwned>(section: &str, table: &toml::Table) -> Result<T, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| format!("[capabilities.{section}]: {}", e.message()))
}

async fn transcriber(table: &toml::Table, setup: Setup<'_>) -> Result<TranscriberService, String> {
    let config = transcriber_config(table)?;
    let (data_dir, base_dir) = (setup.data_dir.to_path_buf(), setup.base_dir.to_path_buf());
    match tokio::task::spawn_blocking(move || config.build(&data_dir, &base_dir)).await {
        Ok(Ok(t)) => {
            tracing::info!("transcriber: {}", t.backend.summary());
            Ok(t)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("loading the transcriber failed: {e}")),
    }
}

async fn knowledge(table: &toml::Table, setup: Setup<'_>) -> Result<KnowledgeBase, String> {
    let mut config = knowledge_config(table)?;
    if let Some(store) = setup.knowledge_store {
        config.backend = Backend::Embedded;
        config.path = Some(PathBuf::from(store));
    }
    match config.open(setup.data_dir, setup.base_dir).await {
        Ok(kb) => {
            tracing::info!("knowledge: {}", kb.summary());
            Ok(kb)
        }
        Err(e) => Err(format!("[capabilities.knowledge]: {e}")),
    }
}

fn speech(table: &toml::Table) -> Result<super::speech::SpeechService, String> {
    let config: SpeechConfig = typed("speech", table)?;
    let built = config.build().map_err(|e| e.to_string())?;
    tracing::info!("speech: {}", built.backend.summary());
    Ok(built)
}

fn llm(table: &toml::Table) -> Result<super::llm::LlmService, String> {
    let config: super::llm::LlmConfig = typed("llm", table)?;
    let built = config.build().map_err(|e| e.to_string())?;
    tracing::info!("llm: {}", built.summary());
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[tokio::test]
    async fn a_failing_section_is_named_and_the_others_still_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = table("backend = \"whisper-cpp\"\nmodel = \"no-such-model.bin\"");
        let unknown_key = table("backend = \"openai\"\ncolour = 3");
        let (set, errors) = CapabilitySet::from_sections(
            &[
                ("transcriber", &broken),
                ("speech", &unknown_key),
                ("telepathy", &toml::Table::new()),
            ],
            Setup {
                data_dir: dir.path(),
                base_dir: dir.path(),
                knowledge_store: None,
            },
        )
        .await;
        assert!(set.transcriber.is_none() && set.speech.is_none());
        let sections: Vec<_> = errors.iter().map(|e| e.section.as_str()).collect();
        assert_eq!(sections, ["transcriber", "speech", "telepathy"]);
        assert!(
            errors[0].message.contains("no-such-model.bin"),
            "{errors:?}"
        );
        assert!(
            errors[1].message.starts_with("[capabilities.speech]"),
            "{errors:?}"
        );
    }

    #[test]
    fn typed_settings_name_their_section() {
        let err =
            knowledge_config(&table("timeout_ms = \"many\"")).expect_err("a string is no limit");
        assert!(err.starts_with("[capabilities.knowledge]: "), "{err}");
        assert!(transcriber_config(&table("backend = \"openai\"")).is_ok());
    }
}
