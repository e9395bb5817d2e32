//! A capability as one unit, in the manner of Spin's factors: its name (the
//! `[capabilities.NAME]` section and the `grants = ["NAME"]` entry), the WIT
//! interface a component imports for it, how its section becomes a backend,
//! what a pipeline may not combine with it, and how its host functions join
//! a stage's linker, and its numbers on /metrics. The loader, the grant
//! checks, `callpipe check` and /metrics read all of that from a
//! [`Factors`] list.
//!
//! Adding one: its interface in `wit/`, one file here implementing
//! [`Factor`], one line in `Factors::builtin` (in `capabilities/mod.rs`).
//! ARCHITECTURE.md shows the recipe and what the SDK's worlds need;
//! `crates/runtime/tests/runtime/factor.rs` adds one from outside.
//!
//! `T` is the stage's store data; the pipeline chooses it, so this module
//! never imports the pipeline that imports it.

use super::CapabilitySet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use wasmtime::component::Linker;

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

/// What [`Factor::build`] returns (the trait stays object-safe).
pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where a capability's host functions find their context in the store.
pub type ContextOf<T> = fn(&mut T) -> &mut super::CapabilityContext;

/// A stage as a factor's static checks see it.
pub struct StageView<'a> {
    pub name: &'a str,
    pub granted: bool,
    /// The stage's `config` table, if any.
    pub config: Option<&'a toml::Table>,
}

pub trait Factor<T>: Send + Sync + 'static {
    /// The section, grant and interface name: `knowledge`.
    fn name(&self) -> &'static str;

    /// The WIT interface a component imports for it, without its version:
    /// `callpipe:stage/knowledge`.
    fn interface(&self) -> &'static str;

    /// Parses the section and puts the backend it describes into `set`
    /// (where the host functions find it with `set.get::<Backend>()`). The
    /// error is shown as the section's, at its location.
    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        setup: Setup<'a>,
        set: &'a mut CapabilitySet,
    ) -> BuildFuture<'a>;

    /// Checks the section against the stages, before anything is built:
    /// `(stage, message)` for each problem (no stage: the section's own).
    fn check(
        &self,
        _section: &toml::Table,
        _stages: &[StageView<'_>],
    ) -> Vec<(Option<String>, String)> {
        Vec::new()
    }

    /// Its calls' outcomes and latencies, shown on /metrics.
    fn metrics(&self) -> Option<&'static crate::metrics::CapabilityMetrics> {
        None
    }

    /// Adds the interface's host functions to a granted stage's linker.
    fn link(&self, linker: &mut Linker<T>, context: ContextOf<T>) -> wasmtime::Result<()>;

    /// Whether a stage may import the interface without the grant (it is
    /// then linked to [`Factor::link_ungranted`]'s stand-in); if not, such
    /// a component is refused at load.
    fn optional(&self) -> bool {
        false
    }

    /// The stand-in an ungranted stage gets when [`Factor::optional`]; an
    /// optional capability must give one (the default says so at load).
    fn link_ungranted(&self, _linker: &mut Linker<T>) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(format!(
            "capability `{}` is optional but links no stand-in for ungranted stages",
            self.name()
        )))
    }
}

/// The capabilities a runtime knows, in the order their sections are built.
pub struct Factors<T>(Vec<Arc<dyn Factor<T>>>);

impl<T: 'static> Factors<T> {
    /// No capability at all (`Factors::builtin` lists the shipped ones).
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The list with one more capability (a host's own, or a test's).
    ///
    /// # Panics
    /// When the list already has one of that name or interface: two would
    /// link the same functions, and every stage would fail to load.
    pub fn with(mut self, factor: impl Factor<T>) -> Self {
        let clash = self
            .0
            .iter()
            .find(|f| f.name() == factor.name() || f.interface() == factor.interface());
        if let Some(other) = clash {
            panic!(
                "capability `{}` ({}) is already in the list as `{}` ({})",
                factor.name(),
                factor.interface(),
                other.name(),
                other.interface()
            );
        }
        self.0.push(Arc::new(factor));
        self
    }

    pub fn get(&self, name: &str) -> Option<&dyn Factor<T>> {
        self.0.iter().find(|f| f.name() == name).map(|f| &**f)
    }

    /// The factor whose interface `import` (`package/interface@version`) is.
    pub fn by_interface(&self, import: &str) -> Option<&dyn Factor<T>> {
        let interface = import.split('@').next().unwrap_or(import);
        self.0
            .iter()
            .find(|f| f.interface() == interface)
            .map(|f| &**f)
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Factor<T>> {
        self.0.iter().map(|f| &**f)
    }

    /// `transcriber, knowledge, ...`, for error messages.
    pub fn names(&self) -> String {
        self.0
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl<T: 'static> Clone for Factors<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: 'static> std::fmt::Debug for Factors<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| c.name()))
            .finish()
    }
}

/// Parses a section into a capability's typed settings; the error names
/// the section.
pub fn typed<C: serde::de::DeserializeOwned>(
    section: &str,
    table: &toml::Table,
) -> Result<C, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| format!("[capabilities.{section}]: {}", e.message()))
}
