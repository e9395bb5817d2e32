//! Loading a pipeline file: everything `callpipe check` validates, ending in
//! one `InstancePre` per stage. A pipeline with any error is never returned.
//!
//! The steps live beside it: static checks in `validate`, backends in
//! `capabilities::setup`, builds in `plugins`, the event flow in `flow`,
//! probing in `instance`; this file runs them in order and locates errors.

use super::diagnostics::{Diagnostic, Diagnostics, SourceMap};
use super::engine::Runtime;
use super::event::{KindSet, kind_name};
use super::grants;
use super::instance::{self, InstanceError};
pub use super::loaded::{LoadedPipeline, LoadedStage};
use super::model::PipelineFile;
use super::plugins::{self, BuildFailure, Source};
use super::validate::{self, StagePlan};
use crate::bindings::FullStagePre;
use crate::bindings::types::{CallInfo, Descriptor};
use crate::capabilities::CapabilitySet;
use crate::capabilities::setup::Setup;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Build plugin crates that a stage names (with cargo).
    pub build_plugins: bool,
    /// Capture cargo's output rather than showing its progress.
    pub quiet: bool,
    /// Where default model files live (`callpipe models` puts them there).
    pub data_dir: PathBuf,
    /// Use this embedded knowledge store instead of the one the pipeline
    /// names (`kb eval --articles` measures on a store of its own).
    pub knowledge_store: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            build_plugins: true,
            quiet: true,
            data_dir: crate::config::default_data_dir(),
            knowledge_store: None,
        }
    }
}

/// Call info used to validate `init` at load time.
pub fn sample_call(language: &str) -> CallInfo {
    CallInfo {
        session_id: "check".into(),
        call_sid: "CAcheck".into(),
        technician_id: "technician".into(),
        technician_name: "Technician".into(),
        language: language.into(),
        speakers: vec![],
    }
}

pub async fn load(
    runtime: &Arc<Runtime>,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedPipeline, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.into(),
            line: 1,
            column: 1,
            stage: None,
            message: format!("cannot read the pipeline file: {e}"),
        }])
    })?;
    load_str(runtime, path, &text, options).await
}

pub async fn load_str(
    runtime: &Arc<Runtime>,
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<LoadedPipeline, Diagnostics> {
    let map = SourceMap { file: path, text };
    let file = PipelineFile::parse(path, text).map_err(|d| Diagnostics(vec![d]))?;
    let pipeline_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pipeline_dir = if pipeline_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        pipeline_dir
    };
    let factors = &runtime.config().factors;
    let (pending, mut diags) = validate::validate(
        &map,
        &file,
        &pipeline_dir,
        runtime.config().max_memory_mib,
        factors,
    );

    // Unknown sections are `validate`'s to report.
    let sections: Vec<(&str, &toml::Table)> = file
        .capabilities
        .sections()
        .filter(|(name, _)| factors.get(name).is_some())
        .map(|(name, section)| (name, section.get_ref()))
        .collect();
    let (capabilities, errors) = CapabilitySet::from_sections(
        factors,
        &sections,
        Setup {
            data_dir: &options.data_dir,
            base_dir: &pipeline_dir,
            knowledge_store: options.knowledge_store.as_deref(),
        },
    )
    .await;
    for error in errors {
        let span = file
            .capabilities
            .sections()
            .find(|(name, _)| *name == error.section)
            .map(|(_, section)| section.span());
        diags.push(map.at(span, None, error.message));
    }
    let capabilities = Arc::new(capabilities);

    let (built, failures) = plugins::build_sources(
        pending.iter().filter_map(|p| p.source.as_ref()),
        options.build_plugins,
        options.quiet,
    )
    .await;
    for failure in failures {
        match failure {
            BuildFailure::Crates(message) => diags.push(map.at(None, None, message)),
            BuildFailure::Foreign { dir, message } => {
                let span = pending.iter().find_map(|p| match &p.source {
                    Some(Source::Foreign { dir: d }) if *d == dir => {
                        Some(p.spec.get_ref().component.span())
                    }
                    _ => None,
                });
                diags.push(map.at(span, None, message));
            }
        }
    }

    // Compile, check grants, link, describe and init each stage.
    let mut stages = Vec::new();
    let mut flow = super::flow::Flow::default();
    // Once a stage fails to load, what it would emit is unknown: the event
    // flow of later stages cannot be judged.
    let mut flow_known = true;
    for p in pending {
        let s = p.spec.get_ref();
        let name = s.name.get_ref().clone();
        let at = |span, msg: String| map.at(Some(span), Some(&name), msg);
        let errors_before = diags.len();
        let spec = p.spec;
        let loaded = load_stage(
            runtime,
            &map,
            p,
            &built,
            &file.pipeline.language,
            &capabilities,
            &mut diags,
        )
        .await;
        let Some(stage) = loaded else {
            flow_known = false;
            continue;
        };
        if diags.len() > errors_before {
            flow_known = false;
        }
        if flow_known {
            // Every kind a stage waits for must be able to reach it.
            for kind in flow.unreachable(stage.on) {
                let span =
                    s.on.as_ref()
                        .and_then(|on| {
                            on.get_ref()
                                .iter()
                                .find(|k| k.get_ref() == kind_name(kind))
                                .map(|k| k.span())
                        })
                        .unwrap_or(spec.span());
                diags.push(at(
                    span,
                    format!(
                        "the stage handles `{}`, but no earlier stage emits it and the host does not inject it",
                        kind_name(kind)
                    ),
                ));
            }
        }
        flow.pass(stage.on, stage.emits);
        stages.push(Arc::new(stage));
    }

    if !diags.is_empty() {
        diags.sort_by_key(|d| (d.line, d.column));
        return Err(Diagnostics(diags));
    }
    Ok(LoadedPipeline {
        greetings: file.pipeline.greetings.clone(),
        name: file.pipeline.name.get_ref().clone(),
        language: file.pipeline.language.clone(),
        path: path.to_path_buf(),
        version: hex::encode(&Sha256::digest(text.as_bytes())[..6]),
        source: text.to_string(),
        queue: file.pipeline.queue,
        tick_ms: stages
            .iter()
            .any(|s| s.on.contains(crate::bindings::types::EventKind::Custom))
            .then_some(file.pipeline.tick_ms.max(20)),
        stages,
        runtime: runtime.clone(),
        capabilities,
    })
}

/// Compiles, checks grants, links, describes and inits one stage.
async fn load_stage(
    runtime: &Arc<Runtime>,
    map: &SourceMap<'_>,
    p: StagePlan<'_>,
    built: &plugins::Built,
    language: &str,
    capabilities: &Arc<crate::capabilities::CapabilitySet>,
    diags: &mut Vec<Diagnostic>,
) -> Option<LoadedStage> {
    let s = p.spec.get_ref();
    let name = s.name.get_ref().clone();
    let at = |span, msg: String| map.at(Some(span), Some(&name), msg);
    // Without a source or an artifact, the error is already reported.
    let wasm = plugins::artifact(p.source.as_ref()?, built)?;
    let rt = runtime.clone();
    let wasm_for_compile = wasm.clone();
    let component = match tokio::task::spawn_blocking(move || rt.compile(&wasm_for_compile)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            diags.push(at(
                s.component.span(),
                format!("component fails to compile: {e}"),
            ));
            return None;
        }
        Err(e) => {
            diags.push(at(s.component.span(), format!("compilation panicked: {e}")));
            return None;
        }
    };
    let factors = &runtime.config().factors;
    let grant_errors = grants::check_imports(runtime.engine(), &component, factors, &p.grants);
    if !grant_errors.is_empty() {
        for e in grant_errors {
            diags.push(at(s.component.span(), e.to_string()));
        }
        return None;
    }
    let pre = grants::linker(runtime.engine(), factors, &p.grants)
        .and_then(|l| l.instantiate_pre(&component))
        .and_then(FullStagePre::new);
    let pre = match pre {
        Ok(pre) => pre,
        Err(e) => {
            diags.push(at(
                s.component.span(),
                format!("the component does not fit the callpipe:stage contract: {e:#}"),
            ));
            return None;
        }
    };
    let config_json = s.config_json();
    let mut stage = LoadedStage {
        name: Arc::from(name.as_str()),
        component: s.component.get_ref().clone(),
        wasm,
        on: p.on.unwrap_or_default(),
        emits: KindSet::default(),
        grants: p.grants.clone(),
        config_json,
        limits: s.limits,
        descriptor: Descriptor {
            name: String::new(),
            version: String::new(),
            emits: vec![],
            default_on: vec![],
        },
        pre,
        capabilities: capabilities.clone(),
    };
    match instance::probe(runtime, &stage, &sample_call(language)).await {
        Ok(descriptor) => {
            stage.emits = descriptor.emits.iter().copied().collect();
            stage.descriptor = descriptor;
        }
        Err(InstanceError::Init(m)) => {
            let table = s.config.as_ref().map_or(p.spec.span(), |c| c.span());
            let span = key_span(map.text, table.clone(), &m).unwrap_or(table);
            diags.push(at(
                span,
                format!("the stage rejects its config: {}", strip_json_position(&m)),
            ));
            return None;
        }
        Err(e) => {
            diags.push(at(s.component.span(), e.to_string()));
            return None;
        }
    }
    if p.on.is_none() {
        stage.on = stage.descriptor.default_on.iter().copied().collect();
    }
    Some(stage)
}

/// serde_json ends messages with a position in the JSON the host built,
/// which means nothing to someone editing TOML.
fn strip_json_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}

/// Where, inside a stage's config table, the key an error names (``unknown
/// field `x` `` or ``... at `x` ``) is written; serde errors name keys, not spans.
fn key_span(
    text: &str,
    table: std::ops::Range<usize>,
    message: &str,
) -> Option<std::ops::Range<usize>> {
    let key = message.split('`').nth(1)?;
    // The table's span may cover only its `[stages.config]` header (or an
    // inline `{ ... }`): search from there up to the next table header.
    let rest = text.get(table.start..)?;
    let mut offset = table.start;
    for (n, line) in rest.split_inclusive('\n').enumerate() {
        if n > 0 && line.trim_start().starts_with('[') {
            break;
        }
        let mut from = 0;
        while let Some(found) = line[from..].find(key) {
            let at = from + found;
            let before_ok = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let after = line[at + key.len()..].trim_start();
            if before_ok && after.starts_with('=') && !after.starts_with("==") {
                return Some(offset + at..offset + at + key.len());
            }
            from = at + key.len();
        }
        offset += line.len();
    }
    None
}
