//! The static checks of a pipeline file: TOML in, a plan of stages and
//! located diagnostics out. No wasmtime and no backend is touched (only
//! component paths are resolved on disk), so `callpipe check` reports every
//! one of these at once and they are unit-tested here.

use super::diagnostics::{Diagnostic, SourceMap};
use super::event::{ALL_KINDS, KindSet, kind_name, parse_kind};
use super::model::{PipelineFile, StageSpec};
use super::plugins::{self, Source};
use super::state::StageState;
use crate::capabilities::Factors;
use crate::capabilities::factor::StageView;
use std::collections::HashSet;
use std::path::Path;
use toml::Spanned;

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

/// A stage that passed the static checks, waiting for its component.
pub struct StagePlan<'a> {
    pub spec: &'a Spanned<StageSpec>,
    /// Capability names, each one the runtime knows.
    pub grants: Vec<&'static str>,
    /// `None`: the stage's own default (its descriptor's `default-on`).
    pub on: Option<KindSet>,
    /// `None`: the component could not be resolved (already reported).
    pub source: Option<Source>,
}

/// Checks everything that can be checked without loading anything; every
/// problem becomes a diagnostic and checking goes on.
pub fn validate<'a>(
    map: &SourceMap<'_>,
    file: &'a PipelineFile,
    pipeline_dir: &Path,
    max_memory_mib: u32,
    factors: &Factors<StageState>,
) -> (Vec<StagePlan<'a>>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    pipeline_section(map, file, &mut diags);
    if file.stages.is_empty() {
        diags.push(map.at(None, None, "the pipeline has no [[stages]]"));
    }
    capability_checks(map, file, factors, &mut diags);
    let mut seen = HashSet::new();
    let plans = file
        .stages
        .iter()
        .map(|spec| {
            stage(
                map,
                spec,
                pipeline_dir,
                max_memory_mib,
                factors,
                &mut seen,
                &mut diags,
            )
        })
        .collect();
    (plans, diags)
}

fn pipeline_section(map: &SourceMap<'_>, file: &PipelineFile, diags: &mut Vec<Diagnostic>) {
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
    for (name, section) in file.capabilities.sections() {
        if let Err(message) = no_server_secrets(name, section.get_ref()) {
            diags.push(map.at(Some(section.span()), None, message));
        }
    }
}

/// Each configured capability's own checks of its section against the
/// stages (the `llm` one, for example, refuses a try longer than a
/// stage's budget).
fn capability_checks(
    map: &SourceMap<'_>,
    file: &PipelineFile,
    factors: &Factors<StageState>,
    diags: &mut Vec<Diagnostic>,
) {
    for (name, section) in file.capabilities.sections() {
        let Some(factor) = factors.get(name) else {
            diags.push(map.at(
                Some(section.span()),
                None,
                format!(
                    "unknown capability section [capabilities.{name}] (known: {})",
                    factors.names()
                ),
            ));
            continue;
        };
        let stages: Vec<StageView<'_>> = file
            .stages
            .iter()
            .map(|spec| {
                let s = spec.get_ref();
                StageView {
                    name: s.name.get_ref(),
                    granted: s.grants.iter().any(|g| g.get_ref() == name),
                    config: s.config.as_ref().map(|c| c.get_ref()),
                }
            })
            .collect();
        for (stage, message) in factor.check(section.get_ref(), &stages) {
            diags.push(map.at(Some(section.span()), stage.as_deref(), message));
        }
    }
}

fn stage<'a>(
    map: &SourceMap<'_>,
    spec: &'a Spanned<StageSpec>,
    pipeline_dir: &Path,
    max_memory_mib: u32,
    factors: &Factors<StageState>,
    seen: &mut HashSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> StagePlan<'a> {
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
        match factors.get(g.get_ref()) {
            Some(f) => grants.push(f.name()),
            None => diags.push(at(
                g.span(),
                format!(
                    "unknown capability `{}` in grants (known: {})",
                    g.get_ref(),
                    factors.names()
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
                        ALL_KINDS.map(kind_name).join(", ")
                    ),
                )),
            }
        }
        set
    });
    if s.limits.memory_mib == 0 || s.limits.memory_mib > max_memory_mib {
        diags.push(at(
            spec.span(),
            format!("limits.memory_mib must be between 1 and {max_memory_mib}"),
        ));
    }
    if s.limits.deadline_ms == 0 || s.limits.deadline_ms > MAX_DEADLINE_MS {
        diags.push(at(
            spec.span(),
            format!("limits.deadline_ms must be between 1 and {MAX_DEADLINE_MS}"),
        ));
    }
    let source = match plugins::resolve(s.component.get_ref(), pipeline_dir) {
        Ok(source) => Some(source),
        Err(e) => {
            diags.push(at(s.component.span(), e.to_string()));
            None
        }
    };
    StagePlan {
        spec,
        grants,
        on,
        source,
    }
}

fn is_kebab(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `text` as if it were `dir/pipeline.toml`, with a wasm file
    /// for `component = "stage.wasm"` to resolve to.
    fn check(text: &str) -> (Vec<(Option<String>, bool)>, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stage.wasm"), b"\0asm").expect("write");
        let path = dir.path().join("pipeline.toml");
        let file = PipelineFile::parse(&path, text).expect("parses");
        let map = SourceMap { file: &path, text };
        let (plans, diags) = validate(&map, &file, dir.path(), 64, &Factors::builtin());
        let plans = plans
            .iter()
            .map(|p| (p.on.map(|on| format!("{on:?}")), p.source.is_some()))
            .collect();
        let messages = diags
            .into_iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        (plans, messages)
    }

    fn stage(name: &str, extra: &str) -> String {
        format!("[[stages]]\nname = \"{name}\"\ncomponent = \"stage.wasm\"\n{extra}\n")
    }

    const HEAD: &str = "[pipeline]\nname = \"test-pipeline\"\n\n";

    #[test]
    fn a_clean_file_has_no_diagnostics_and_a_plan_per_stage() {
        let text = format!(
            "{HEAD}{}{}",
            stage("codec", ""),
            stage("vad", "on = [\"audio\"]")
        );
        let (plans, messages) = check(&text);
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(plans.len(), 2);
        assert!(plans.iter().all(|(_, resolved)| *resolved));
        assert!(plans[0].0.is_none() && plans[1].0.is_some());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_line() {
        let text = format!(
            "[pipeline]\nname = \"Not_Kebab\"\nqueue = 0\n\n{}{}{}",
            stage("Bad", "grants = [\"telepathy\"]"),
            stage(
                "dup",
                "on = [\"sound\"]\nlimits = { memory_mib = 0, deadline_ms = 700000 }"
            ),
            stage("dup", "")
        );
        let (_, messages) = check(&text);
        let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
        assert!(
            has("2:8 the pipeline name must be kebab-case"),
            "{messages:?}"
        );
        assert!(has("queue must be between 1 and 65536"));
        assert!(has("6:8 stage names must be kebab-case"));
        assert!(has("unknown capability `telepathy`"));
        assert!(has("unknown event kind `sound`"));
        assert!(has("limits.memory_mib must be between 1 and 64"));
        assert!(has("limits.deadline_ms must be between 1 and 600000"));
        assert!(has("another stage is already named `dup`"));
        assert_eq!(messages.len(), 8, "{messages:?}");
    }

    #[test]
    fn an_unresolvable_component_is_located_and_leaves_no_source() {
        let text = format!("{HEAD}[[stages]]\nname = \"ghost\"\ncomponent = \"missing.wasm\"\n");
        let (plans, messages) = check(&text);
        assert_eq!(plans, [(None, false)]);
        assert!(messages[0].starts_with("6:13 "), "{messages:?}");
    }

    #[test]
    fn a_model_try_longer_than_a_stages_budget_is_refused() {
        let llm = "[capabilities.llm]\nbackend = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n";
        let asking = |budget: u32| {
            stage(
                "clarifier",
                &format!("grants = [\"llm\"]\n[stages.config]\nllm_timeout_ms = {budget}"),
            )
        };
        let text = format!("{HEAD}{llm}timeout_ms = 3000\n\n{}", asking(1500));
        let (_, messages) = check(&text);
        assert!(
            // Located at the [capabilities.llm] section (line 4 or its first key).
            messages
                .iter()
                .any(|m| (m.starts_with("4:") || m.starts_with("5:"))
                    && m.contains("timeout_ms = 3000")
                    && m.contains("llm_timeout_ms = 1500")),
            "{messages:?}"
        );
        let text = format!("{HEAD}{llm}timeout_ms = 1500\n\n{}", asking(1500));
        assert!(check(&text).1.is_empty());
        // A stage without the grant sets no budget for the model.
        let text = format!(
            "{HEAD}{llm}timeout_ms = 3000\n\n{}",
            stage("other", "[stages.config]\nllm_timeout_ms = 100")
        );
        assert!(check(&text).1.is_empty());
    }

    #[test]
    fn no_stages_is_an_error() {
        let (_, messages) = check(HEAD);
        assert!(messages.iter().any(|m| m.contains("no [[stages]]")));
    }

    #[test]
    fn a_pipeline_cannot_send_the_servers_secrets() {
        let text = format!(
            "{HEAD}[capabilities.transcriber]\nbackend = \"openai\"\napi_key_env = \"twilio_auth_token\"\n\n\
             [capabilities.knowledge.embedder]\nbackend = \"openai\"\napi_key_env = \"CALLPIPE_API_TOKEN\"\n\n{}",
            stage("codec", "")
        );
        let (_, messages) = check(&text);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages.iter().all(|m| m.contains("server's own secrets")));
        assert!(
            no_server_secrets(
                "speech",
                &toml::from_str("api_key_env = \"OPENAI_API_KEY\"").expect("toml")
            )
            .is_ok()
        );
    }

    #[test]
    fn kebab_case() {
        assert!(is_kebab("energy-vad") && is_kebab("stage2"));
        for bad in ["", "-vad", "vad-", "energy--vad", "Energy", "energy_vad"] {
            assert!(!is_kebab(bad), "{bad}");
        }
    }
}
