//! Capability grants: which WIT interfaces a stage may import. A component
//! importing an interface its stage is not granted is refused at load,
//! unless the capability's factor links a stand-in for ungranted stages
//! (`llm` does: every stage that asks a model keeps a model-free path).
//! Which capabilities exist, and how each links, is the runtime's
//! `Factors` list.

use super::state::StageState;
use crate::capabilities::{CapabilityContext, Factors};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// Interfaces of our package that every stage may import without a grant.
const ALWAYS: [&str; 2] = ["callpipe:stage/types", "callpipe:stage/log"];

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

/// Checks every import of `component` against `grants` (capability names);
/// all problems at once.
pub fn check_imports(
    engine: &Engine,
    component: &Component,
    factors: &Factors<StageState>,
    grants: &[&'static str],
) -> Vec<GrantError> {
    let mut errors = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let interface = name.split('@').next().unwrap_or(name);
        if ALWAYS.contains(&interface) || interface.starts_with("wasi:") {
            continue;
        }
        match factors.by_interface(name) {
            Some(f) if grants.contains(&f.name()) => {}
            Some(f) if f.optional() => {}
            Some(f) => errors.push(GrantError::NotGranted {
                import: name.to_string(),
                capability: f.name(),
            }),
            None => errors.push(GrantError::Unknown {
                import: name.to_string(),
            }),
        }
    }
    errors
}

/// A linker with WASI (sandboxed: no files, sockets or environment), `log`,
/// exactly the granted capabilities, and the stand-ins of the others.
pub fn linker(
    engine: &Engine,
    factors: &Factors<StageState>,
    grants: &[&'static str],
) -> wasmtime::Result<Linker<StageState>> {
    // Capabilities see their own context, never the whole store state.
    fn caps(s: &mut StageState) -> &mut CapabilityContext {
        &mut s.capabilities
    }
    type Caps = HasSelf<CapabilityContext>;
    use crate::bindings::callpipe::stage as wit;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::types::add_to_linker::<StageState, Caps>(&mut linker, caps)?;
    wit::log::add_to_linker::<StageState, Caps>(&mut linker, caps)?;
    for factor in factors.iter() {
        if grants.contains(&factor.name()) {
            factor.link(&mut linker, caps)?;
        } else if factor.optional() {
            factor.link_ungranted(&mut linker)?;
        }
    }
    Ok(linker)
}
