//! Capability grants: which WIT interfaces a stage may import. A component
//! importing an interface its stage is not granted is refused at load,
//! except `llm`, which is optional by design: every stage that asks a
//! model keeps a model-free path, so one component serves pipelines with
//! and without a model. An ungranted stage's `llm` calls are answered
//! `not-configured` at once; nothing reaches a model.

use super::state::StageState;
use crate::bindings::callpipe::stage as wit;
use crate::capabilities::CapabilityContext;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    Transcriber,
    Knowledge,
    Speech,
    Llm,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Transcriber,
        Capability::Knowledge,
        Capability::Speech,
        Capability::Llm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Transcriber => "transcriber",
            Capability::Knowledge => "knowledge",
            Capability::Speech => "speech",
            Capability::Llm => "llm",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Interfaces of our package that every stage may import without a grant.
const ALWAYS: [&str; 2] = ["types", "log"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error(
        "the component imports `{import}`, but the stage is not granted `{capability}` (add it to `grants`)"
    )]
    NotGranted {
        import: String,
        capability: &'static str,
    },
    #[error("the component imports `{import}`, which this host does not provide")]
    Unknown { import: String },
}

/// Checks every import of `component` against `grants`; all problems at once.
pub fn check_imports(
    engine: &Engine,
    component: &Component,
    grants: &[Capability],
) -> Vec<GrantError> {
    let mut errors = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let interface = name.split('@').next().unwrap_or(name);
        if let Some(ours) = interface.strip_prefix("callpipe:stage/") {
            if ALWAYS.contains(&ours) {
                continue;
            }
            match Capability::parse(ours) {
                Some(cap) if grants.contains(&cap) => {}
                Some(Capability::Llm) => {}
                Some(cap) => errors.push(GrantError::NotGranted {
                    import: name.to_string(),
                    capability: cap.name(),
                }),
                None => errors.push(GrantError::Unknown {
                    import: name.to_string(),
                }),
            }
        } else if !interface.starts_with("wasi:") {
            errors.push(GrantError::Unknown {
                import: name.to_string(),
            });
        }
    }
    errors
}

/// A linker with WASI (sandboxed: no files, sockets or environment), `log`,
/// and exactly the granted capabilities.
pub fn linker(engine: &Engine, grants: &[Capability]) -> wasmtime::Result<Linker<StageState>> {
    // Capabilities see their own context, never the whole store state.
    type Caps = HasSelf<CapabilityContext>;
    fn caps(s: &mut StageState) -> &mut CapabilityContext {
        &mut s.capabilities
    }
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::types::add_to_linker::<StageState, Caps>(&mut linker, caps)?;
    wit::log::add_to_linker::<StageState, Caps>(&mut linker, caps)?;
    for cap in grants {
        match cap {
            Capability::Transcriber => {
                wit::transcriber::add_to_linker::<StageState, Caps>(&mut linker, caps)?
            }
            Capability::Knowledge => {
                wit::knowledge::add_to_linker::<StageState, Caps>(&mut linker, caps)?
            }
            Capability::Speech => {
                wit::speech::add_to_linker::<StageState, Caps>(&mut linker, caps)?
            }
            Capability::Llm => wit::llm::add_to_linker::<StageState, Caps>(&mut linker, caps)?,
        }
    }
    if !grants.contains(&Capability::Llm) {
        wit::llm::add_to_linker::<StageState, NotGranted>(&mut linker, |_| NotGranted)?;
    }
    Ok(linker)
}

/// The `llm` of a stage that is not granted it: every call is refused at
/// once, so the stage takes its model-free path.
pub struct NotGranted;

impl wasmtime::component::HasData for NotGranted {
    type Data<'a> = NotGranted;
}

impl wit::llm::Host for NotGranted {
    async fn complete(
        &mut self,
        _request: wit::llm::CompletionRequest,
    ) -> wasmtime::Result<Result<wit::llm::Completion, wit::llm::LlmError>> {
        Ok(Err(wit::llm::LlmError::NotConfigured(
            "this stage is not granted `llm` (add it to the stage's `grants` and configure \
             [capabilities.llm])"
                .into(),
        )))
    }
}
