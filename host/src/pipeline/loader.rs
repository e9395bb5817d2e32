//! Loading a pipeline file: everything `callpipe check` validates, ending in
//! one `InstancePre` per stage. A pipeline with any error is never returned.

use super::diagnostics::{Diagnostic, Diagnostics, SourceMap};
use super::engine::Runtime;
use super::event::{KindSet, kind_name, parse_kind};
use super::grants::{self, Capability};
use super::instance::{InstanceError, StageInstance};
use super::model::{Limits, PipelineFile, StageSpec};
use super::plugins::{self, Source};
use super::state::StageState;
use crate::bindings::FullStagePre;
use crate::bindings::types::{CallInfo, Descriptor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

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

#[derive(Clone)]
pub struct LoadedStage {
    pub name: Arc<str>,
    pub component: String,
    pub wasm: PathBuf,
    pub on: KindSet,
    pub emits: KindSet,
    pub grants: Vec<Capability>,
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
}

impl LoadedPipeline {
    /// The first stage that handles `kind`: where the chat path enters.
    pub fn first_handling(&self, kind: crate::bindings::types::EventKind) -> Option<usize> {
        self.stages.iter().position(|s| s.on.contains(kind))
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

fn is_kebab(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// A stage that passed the static checks, waiting for its component.
struct Pending<'a> {
    spec: &'a Spanned<StageSpec>,
    grants: Vec<Capability>,
    on: Option<KindSet>,
    source: Option<Source>,
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
    let mut diags = Vec::new();
    let pipeline_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pipeline_dir = if pipeline_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        pipeline_dir
    };

    if !is_kebab(file.pipeline.name.get_ref()) {
        diags.push(map.at(
            Some(file.pipeline.name.span()),
            None,
            "the pipeline name must be kebab-case",
        ));
    }
    if file.pipeline.queue == 0 || file.pipeline.queue > MAX_QUEUE {
        diags.push(map.at(
            None,
            None,
            format!("[pipeline] queue must be between 1 and {MAX_QUEUE}"),
        ));
    }
    // A pipeline file names environment variables for API keys; it must
    // not be able to send the server's own secrets to a URL it chooses.
    for (name, section) in [
        ("transcriber", &file.capabilities.transcriber),
        ("knowledge", &file.capabilities.knowledge),
        ("speech", &file.capabilities.speech),
    ] {
        if let Some(section) = section
            && let Err(message) = no_server_secrets(name, section.get_ref())
        {
            diags.push(map.at(Some(section.span()), None, message));
        }
    }
    let mut capabilities = crate::capabilities::CapabilitySet::default();
    if let Some(section) = &file.capabilities.transcriber {
        match build_transcriber(section, &options.data_dir, &pipeline_dir).await {
            Ok(t) => capabilities.transcriber = Some(Arc::new(t)),
            Err(message) => diags.push(map.at(Some(section.span()), None, message)),
        }
    }
    if let Some(section) = &file.capabilities.knowledge {
        match build_knowledge(section, options, &pipeline_dir).await {
            Ok(kb) => capabilities.knowledge = Some(kb),
            Err(message) => diags.push(map.at(Some(section.span()), None, message)),
        }
    }
    if let Some(section) = &file.capabilities.speech {
        let built = toml::Value::Table(section.get_ref().clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[capabilities.speech]: {}", e.message()))
            .and_then(|c: crate::capabilities::speech::SpeechConfig| {
                c.build().map_err(|e| e.to_string())
            });
        match built {
            Ok(s) => {
                tracing::info!("speech: {}", s.backend.summary());
                capabilities.speech = Some(Arc::new(s));
            }
            Err(message) => diags.push(map.at(Some(section.span()), None, message)),
        }
    }
    let capabilities = Arc::new(capabilities);
    if file.stages.is_empty() {
        diags.push(map.at(None, None, "the pipeline has no [[stages]]"));
    }

    // Static checks, stage by stage.
    let mut seen = HashSet::new();
    let mut pending = Vec::new();
    for spec in &file.stages {
        let s = spec.get_ref();
        let name = s.name.get_ref().as_str();
        let at = |span, msg: String| map.at(Some(span), Some(name), msg);
        if !is_kebab(name) {
            diags.push(at(
                s.name.span(),
                "stage names must be kebab-case (e.g. `energy-vad`)".into(),
            ));
        }
        if !seen.insert(name.to_string()) {
            diags.push(at(
                s.name.span(),
                format!("another stage is already named `{name}`"),
            ));
        }
        let mut grants = Vec::new();
        for g in &s.grants {
            match Capability::parse(g.get_ref()) {
                Some(c) => grants.push(c),
                None => diags.push(at(
                    g.span(),
                    format!(
                        "unknown capability `{}` in grants (known: {})",
                        g.get_ref(),
                        Capability::ALL.map(|c| c.name()).join(", ")
                    ),
                )),
            }
        }
        let on = s.on.as_ref().map(|on| {
            let mut set = KindSet::default();
            for k in on.get_ref() {
                match parse_kind(k.get_ref()) {
                    Some(kind) => set.insert(kind),
                    None => diags.push(at(
                        k.span(),
                        format!(
                            "unknown event kind `{}` in `on` (known: {})",
                            k.get_ref(),
                            super::event::ALL_KINDS.map(kind_name).join(", ")
                        ),
                    )),
                }
            }
            set
        });
        let max = runtime.config().max_memory_mib;
        if s.limits.memory_mib == 0 || s.limits.memory_mib > max {
            diags.push(at(
                spec.span(),
                format!("limits.memory_mib must be between 1 and {max}"),
            ));
        }
        if s.limits.deadline_ms == 0 || s.limits.deadline_ms > MAX_DEADLINE_MS {
            diags.push(at(
                spec.span(),
                format!("limits.deadline_ms must be between 1 and {MAX_DEADLINE_MS}"),
            ));
        }
        let source = match plugins::resolve(s.component.get_ref(), &pipeline_dir) {
            Ok(source) => Some(source),
            Err(e) => {
                diags.push(at(s.component.span(), e.to_string()));
                None
            }
        };
        pending.push(Pending {
            spec,
            grants,
            on,
            source,
        });
    }

    // Build every plugin crate the pipeline names, in one cargo run.
    let crates: Vec<(PathBuf, String)> = pending
        .iter()
        .filter_map(|p| match &p.source {
            Some(Source::Crate { dir, package }) => Some((dir.clone(), package.clone())),
            _ => None,
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let mut built = BTreeMap::new();
    if !crates.is_empty() {
        if options.build_plugins {
            let quiet = options.quiet;
            let result = tokio::task::spawn_blocking(move || plugins::build(&crates, quiet)).await;
            match result {
                Ok(Ok(b)) => built = b,
                Ok(Err(e)) => diags.push(map.at(None, None, e.to_string())),
                Err(e) => diags.push(map.at(None, None, format!("plugin build panicked: {e}"))),
            }
        } else {
            for (dir, package) in &crates {
                built.insert(
                    package.clone(),
                    plugins::artifact_path(&plugins::target_dir(dir), package),
                );
            }
        }
    }

    // Stages in other languages, each with its own tool (filed in `built`
    // under `foreign_key`).
    for p in &pending {
        let Some(Source::Foreign { dir }) = &p.source else {
            continue;
        };
        if built.contains_key(&foreign_key(dir)) {
            continue;
        }
        let path = if options.build_plugins {
            let (dir, quiet) = (dir.clone(), options.quiet);
            match tokio::task::spawn_blocking(move || plugins::build_foreign(&dir, quiet)).await {
                Ok(Ok(path)) => path,
                Ok(Err(e)) => {
                    diags.push(map.at(
                        Some(p.spec.get_ref().component.span()),
                        None,
                        e.to_string(),
                    ));
                    continue;
                }
                Err(e) => {
                    diags.push(map.at(None, None, format!("plugin build panicked: {e}")));
                    continue;
                }
            }
        } else {
            plugins::foreign_artifact(dir)
        };
        built.insert(foreign_key(dir), path);
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
/// How a foreign stage's component is filed beside the crates' (whose keys
/// are package names, which cannot contain `:`).
fn foreign_key(dir: &Path) -> String {
    format!("foreign:{}", dir.display())
}

async fn load_stage(
    runtime: &Arc<Runtime>,
    map: &SourceMap<'_>,
    p: Pending<'_>,
    built: &BTreeMap<String, PathBuf>,
    language: &str,
    capabilities: &Arc<crate::capabilities::CapabilitySet>,
    diags: &mut Vec<Diagnostic>,
) -> Option<LoadedStage> {
    let s = p.spec.get_ref();
    let name = s.name.get_ref().clone();
    let at = |span, msg: String| map.at(Some(span), Some(&name), msg);
    let wasm = match &p.source {
        Some(Source::Wasm(path)) => path.clone(),
        Some(Source::Crate { package, .. }) => match built.get(package) {
            Some(path) => path.clone(),
            None => return None, // the build error is already reported
        },
        Some(Source::Foreign { dir }) => match built.get(&foreign_key(dir)) {
            Some(path) => path.clone(),
            None => return None, // the build error is already reported
        },
        None => return None,
    };
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
    let grant_errors = grants::check_imports(runtime.engine(), &component, &p.grants);
    if !grant_errors.is_empty() {
        for e in grant_errors {
            diags.push(at(s.component.span(), e.to_string()));
        }
        return None;
    }
    let pre = grants::linker(runtime.engine(), &p.grants)
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
    match probe(runtime, &mut stage, language).await {
        Ok(()) => {}
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

/// Parses `[capabilities.transcriber]` and loads its backend (off the async
/// runtime: a model load is blocking).
async fn build_transcriber(
    section: &Spanned<toml::Table>,
    data_dir: &Path,
    base_dir: &Path,
) -> Result<crate::capabilities::transcriber::Configured, String> {
    use crate::capabilities::transcriber::TranscriberConfig;
    let config: TranscriberConfig = toml::Value::Table(section.get_ref().clone())
        .try_into()
        .map_err(|e: toml::de::Error| format!("[capabilities.transcriber]: {}", e.message()))?;
    let (data_dir, base_dir) = (data_dir.to_path_buf(), base_dir.to_path_buf());
    let built = tokio::task::spawn_blocking(move || config.build(&data_dir, &base_dir)).await;
    match built {
        Ok(Ok(t)) => {
            tracing::info!("transcriber: {}", t.backend.summary());
            Ok(t)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("loading the transcriber failed: {e}")),
    }
}

/// Events that may wait in front of one stage: past this a stuck stage
/// holds more memory per call than any pipeline needs.
pub const MAX_QUEUE: usize = 65_536;
/// Longest wall-clock budget of one event (ten minutes: a long transcription).
pub const MAX_DEADLINE_MS: u64 = 600_000;

/// Variables a pipeline's `api_key_env` may never name: the server's own
/// credentials.
const SERVER_SECRETS: &[&str] = &[
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "CALLPIPE_API_TOKEN",
    "CALLPIPE_DATABASE_URL",
    "DATABASE_URL",
    "CALLPIPE_STREAM_SECRET",
];

/// Refuses a section (at any depth) whose `api_key_env` names a server secret.
fn no_server_secrets(section: &str, table: &toml::Table) -> Result<(), String> {
    for (key, value) in table {
        match value {
            toml::Value::String(var)
                if key == "api_key_env"
                    && SERVER_SECRETS.iter().any(|s| s.eq_ignore_ascii_case(var)) =>
            {
                return Err(format!(
                    "[capabilities.{section}] api_key_env = \"{var}\" names one of the server's own secrets; \
                     a pipeline may only send keys of its own (e.g. OPENAI_API_KEY)"
                ));
            }
            toml::Value::Table(inner) => no_server_secrets(section, inner)?,
            _ => {}
        }
    }
    Ok(())
}

/// Parses `[capabilities.knowledge]` and opens the knowledge base.
async fn build_knowledge(
    section: &Spanned<toml::Table>,
    options: &LoadOptions,
    base_dir: &Path,
) -> Result<Arc<crate::knowledge::KnowledgeBase>, String> {
    let mut config = knowledge_config(section.get_ref())?;
    if let Some(store) = &options.knowledge_store {
        config.backend = crate::knowledge::Backend::Embedded;
        config.path = Some(store.clone());
    }
    match config.open(&options.data_dir, base_dir).await {
        Ok(kb) => {
            tracing::info!("knowledge: {}", kb.summary());
            Ok(Arc::new(kb))
        }
        Err(e) => Err(format!("[capabilities.knowledge]: {e}")),
    }
}

/// `[capabilities.knowledge]` as typed settings.
pub fn knowledge_config(table: &toml::Table) -> Result<crate::knowledge::KnowledgeConfig, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| format!("[capabilities.knowledge]: {}", e.message()))
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

/// Instantiates the stage once: reads its descriptor and checks that `init`
/// accepts the configured settings, so a bad config fails at load, not mid-call.
async fn probe(
    runtime: &Arc<Runtime>,
    stage: &mut LoadedStage,
    language: &str,
) -> Result<(), InstanceError> {
    let mut store = wasmtime::Store::new(
        runtime.engine(),
        StageState::new(
            super::state::StageContext {
                call_id: "check".into(),
                stage: stage.name.clone(),
            },
            wasmtime::StoreLimitsBuilder::new()
                .memory_size(stage.limits.memory_mib as usize * 1024 * 1024)
                .trap_on_grow_failure(true)
                .build(),
            stage.capabilities.clone(),
        ),
    );
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(runtime.ticks_for(2000));
    store.epoch_deadline_trap();
    let bindings = stage
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("{e:#}")))?;
    let descriptor = bindings
        .callpipe_stage_stage()
        .call_describe(&mut store)
        .await
        .map_err(|e| InstanceError::Instantiate(format!("describe trapped: {e:#}")))?;
    stage.emits = descriptor.emits.iter().copied().collect();
    stage.descriptor = descriptor;
    drop(store);
    // `init` through the same path a call uses.
    StageInstance::start(
        runtime.clone(),
        Arc::new(stage.clone()),
        "check".into(),
        sample_call(language),
    )
    .await
    .map(|_| ())
}
