//! The stage SDK: what a stage crate needs to become a callpipe component.
//!
//! ```ignore
//! use callpipe_sdk::{Stage, types::*};
//!
//! #[derive(Default, serde::Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! pub struct Config { threshold: f32 }
//!
//! pub struct Gate { config: Config }
//!
//! impl Stage for Gate {
//!     const NAME: &'static str = "gate";
//!     const EMITS: &'static [EventKind] = &[EventKind::Audio];
//!     const DEFAULT_ON: &'static [EventKind] = &[EventKind::Audio];
//!     type Config = Config;
//!     fn new(config: Config, _call: &CallInfo) -> Result<Self, StageError> { Ok(Gate { config }) }
//!     fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> { Ok(vec![event]) }
//! }
//!
//! callpipe_sdk::export_stage!(Gate);
//! ```
//!
//! The bindings are generated once here, for every interface a stage may
//! import; a built component imports only the interfaces whose functions
//! the stage calls (the component encoder drops the rest), so the host's
//! grant check still refuses a stage that calls an ungranted capability.

wit_bindgen::generate!({
    world: "full-stage",
    path: "../wit",
    default_bindings_module: "callpipe_sdk",
    pub_export_macro: true,
    export_macro_name: "__export_full_stage",
});

pub use callpipe::stage::types;
/// The capabilities a pipeline may grant; calling one the pipeline does not
/// grant gets the component refused at load.
pub use callpipe::stage::{knowledge, llm, log, speech, transcriber};

use serde::de::DeserializeOwned;
use types::{CallInfo, Event, EventKind, SpeakerRole, StageError};

/// A stage: one value per call (the host instantiates a stage per call).
pub trait Stage: Sized + 'static {
    /// The stage's name, as `describe` reports it.
    const NAME: &'static str;
    /// Kinds `handle` may return.
    const EMITS: &'static [EventKind];
    /// Kinds it handles unless the pipeline's `on` says otherwise.
    const DEFAULT_ON: &'static [EventKind];
    /// `[stages.config]` as JSON; an empty table means `Default`.
    type Config: DeserializeOwned + Default;

    fn new(config: Self::Config, call: &CallInfo) -> Result<Self, StageError>;

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError>;
}

/// `[stages.config]` as the host hands it: empty means the defaults; a
/// mistake is an `invalid-config` error naming the stage.
pub fn config<C: DeserializeOwned + Default>(stage: &str, json: &str) -> Result<C, StageError> {
    if json.trim().is_empty() {
        return Ok(C::default());
    }
    serde_json::from_str(json).map_err(|e| StageError::InvalidConfig(format!("{stage}: {e}")))
}

/// Name of the host's clock event (`custom`).
pub const TICK: &str = "callpipe.tick";

/// The stream time of a `callpipe.tick` event, if `event` is one.
pub fn tick_ms(event: &Event) -> Option<u64> {
    match event {
        Event::Custom(c) => tick_of(c),
        _ => None,
    }
}

/// The stream time a `custom` event carries, if it is the host's tick.
pub fn tick_of(custom: &types::Custom) -> Option<u64> {
    if custom.name != TICK {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&custom.json)
        .ok()?
        .get("stream_ms")?
        .as_u64()
}

/// A role from its name in a config (`technician`, `agent` or the
/// original's `support_agent`, `unknown`).
pub fn role_of(name: &str) -> Option<SpeakerRole> {
    match name {
        "technician" => Some(SpeakerRole::Technician),
        "agent" | "support_agent" => Some(SpeakerRole::Agent),
        "unknown" => Some(SpeakerRole::Unknown),
        _ => None,
    }
}

/// Logs through the host when running as a component; natively (unit
/// tests) it prints to stderr.
pub fn log(level: log::Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

pub mod alloc;
pub mod host;
pub mod language;
pub mod screen;
/// Natively only: a fake host and a call for a stage's own tests.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// Stages built with the SDK allocate small blocks from size-class free
/// lists (see [`alloc`]). A stage with an allocator of its own turns the
/// SDK's `allocator` feature off.
#[cfg(all(
    target_arch = "wasm32",
    not(target_feature = "atomics"),
    feature = "allocator"
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

/// The granted capabilities as plain functions. Inside the host they call
/// it; natively they answer that there is no host. Stage logic takes
/// `&mut dyn host::Host` instead, so its tests pass `testing::FakeHost`.
pub mod capability {
    use super::types::CapabilityError;
    use super::{knowledge, llm, transcriber};

    /// A capability error as one line.
    pub fn describe(e: &CapabilityError) -> String {
        match e {
            CapabilityError::NotConfigured(m) => format!("not configured: {m}"),
            CapabilityError::Timeout(m) => format!("timeout: {m}"),
            CapabilityError::Unavailable(m) => format!("unavailable: {m}"),
            CapabilityError::InvalidRequest(m) => format!("invalid request: {m}"),
            CapabilityError::Other(m) => m.clone(),
        }
    }

    /// Knowledge-base search (granted `knowledge`).
    pub fn search(request: &knowledge::SearchRequest) -> Result<Vec<knowledge::Hit>, String> {
        #[cfg(target_arch = "wasm32")]
        return knowledge::search(request).map_err(|e| describe(&e));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err("no host outside WebAssembly".into())
        }
    }

    /// Speech to text (granted `transcriber`).
    pub fn transcribe(
        request: &transcriber::TranscribeRequest,
    ) -> Result<transcriber::Transcription, String> {
        #[cfg(target_arch = "wasm32")]
        return transcriber::transcribe(request).map_err(|e| describe(&e));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err("the transcriber capability exists only inside the host".into())
        }
    }

    /// A language-model completion (granted `llm`, since contract 0.1.1).
    /// The error says its kind, so a stage can tell a timeout from a
    /// refusal; every stage keeps a path that needs no model.
    pub fn complete(request: &llm::CompletionRequest) -> Result<llm::Completion, llm::LlmError> {
        #[cfg(target_arch = "wasm32")]
        return llm::complete(request);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(llm::LlmError::NotConfigured(
                "the llm capability exists only inside the host".into(),
            ))
        }
    }

    /// A completion request of one system message and one user message,
    /// the shape every stage's question to a model takes.
    pub fn chat_request(
        system: String,
        user: String,
        max_tokens: u32,
        temperature: f32,
        json_schema: Option<String>,
        deadline_ms: u32,
    ) -> llm::CompletionRequest {
        llm::CompletionRequest {
            messages: vec![
                llm::Message {
                    role: llm::Role::System,
                    content: system,
                },
                llm::Message {
                    role: llm::Role::User,
                    content: user,
                },
            ],
            max_tokens,
            temperature,
            json_schema,
            deadline_ms,
        }
    }

    /// A language-model error as one line.
    pub fn describe_llm(e: &llm::LlmError) -> String {
        match e {
            llm::LlmError::NotConfigured(m) => format!("not configured: {m}"),
            llm::LlmError::Timeout(m) => format!("timeout: {m}"),
            llm::LlmError::Unavailable(m) => format!("unavailable: {m}"),
            llm::LlmError::Refused(m) => format!("refused: {m}"),
            llm::LlmError::InvalidRequest(m) => format!("invalid request: {m}"),
        }
    }

    /// A warning in the host's log, tagged with call and stage.
    pub fn warn(message: &str) {
        super::log(super::log::Level::Warn, message);
    }
}

/// The call a native test starts a stage with (`Harness`,
/// `testing::call_info`).
fn sample_call(language: &str) -> CallInfo {
    CallInfo {
        session_id: "test".into(),
        call_sid: "CAtest".into(),
        technician_id: "tech".into(),
        technician_name: "Tech".into(),
        language: language.into(),
        speakers: vec![],
    }
}

/// Runs a stage natively, as the host would, for the stage's own tests.
pub struct Harness<S: Stage> {
    pub stage: S,
}

impl<S: Stage> Harness<S> {
    /// `init` with `config_json` (as TOML would give it) for a call in `language`.
    pub fn new(config_json: &str, language: &str) -> Result<Self, StageError> {
        let call = sample_call(language);
        let config = crate::config(S::NAME, config_json)?;
        Ok(Harness {
            stage: S::new(config, &call)?,
        })
    }

    /// Feeds events in order and collects everything the stage returned.
    pub fn feed(
        &mut self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<Vec<Event>, StageError> {
        let mut out = Vec::new();
        for e in events {
            out.extend(self.stage.handle(e)?);
        }
        Ok(out)
    }
}

/// The component glue, in one place: per-call state, `describe`, `init`
/// (with uniform config errors) and `handle`.
#[doc(hidden)]
pub mod __glue {
    use super::Stage;
    pub use super::exports::callpipe::stage::stage::Guest;
    use super::types::{CallInfo, Descriptor, Event, StageError};
    use std::cell::RefCell;

    pub struct Cell<S>(RefCell<Option<S>>);

    impl<S> Cell<S> {
        pub const fn new() -> Self {
            Cell(RefCell::new(None))
        }
    }

    impl<S> Default for Cell<S> {
        fn default() -> Self {
            Self::new()
        }
    }

    pub fn describe<S: Stage>(version: &str) -> Descriptor {
        Descriptor {
            name: S::NAME.into(),
            version: version.into(),
            emits: S::EMITS.to_vec(),
            default_on: S::DEFAULT_ON.to_vec(),
        }
    }

    pub fn init<S: Stage>(
        cell: &Cell<S>,
        config_json: String,
        call: CallInfo,
    ) -> Result<(), StageError> {
        let config = super::config(S::NAME, &config_json)?;
        *cell.0.borrow_mut() = Some(S::new(config, &call)?);
        Ok(())
    }

    pub fn handle<S: Stage>(cell: &Cell<S>, event: Event) -> Result<Vec<Event>, StageError> {
        match cell.0.borrow_mut().as_mut() {
            Some(stage) => stage.handle(event),
            None => Err(StageError::Internal("handle called before init".into())),
        }
    }
}

/// Exports a [`Stage`] as the component's `stage` interface.
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        const _: () = {
            thread_local! {
                static CALLPIPE_STAGE: $crate::__glue::Cell<$stage> = const { $crate::__glue::Cell::new() };
            }
            struct CallpipeGlue;
            impl $crate::__glue::Guest for CallpipeGlue {
                fn describe() -> $crate::types::Descriptor {
                    $crate::__glue::describe::<$stage>(env!("CARGO_PKG_VERSION"))
                }
                fn init(
                    config_json: ::std::string::String,
                    call: $crate::types::CallInfo,
                ) -> ::std::result::Result<(), $crate::types::StageError> {
                    CALLPIPE_STAGE.with(|c| $crate::__glue::init::<$stage>(c, config_json, call))
                }
                fn handle(
                    event: $crate::types::Event,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::types::Event>,
                    $crate::types::StageError,
                > {
                    CALLPIPE_STAGE.with(|c| $crate::__glue::handle::<$stage>(c, event))
                }
            }
            #[cfg(target_arch = "wasm32")]
            $crate::__export_full_stage!(CallpipeGlue with_types_in $crate);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_stage_and_empty_means_default() {
        #[derive(Default, serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        struct C {
            a: u32,
        }
        assert_eq!(config::<C>("x", "").unwrap(), C::default());
        assert_eq!(config::<C>("x", "{\"a\": 3}").unwrap(), C { a: 3 });
        match config::<C>("gate", "{\"b\": 1}") {
            Err(StageError::InvalidConfig(m)) => {
                assert!(m.starts_with("gate: unknown field `b`"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ticks_and_roles() {
        let tick = Event::Custom(types::Custom {
            name: TICK.into(),
            json: "{\"stream_ms\": 1250}".into(),
        });
        assert_eq!(tick_ms(&tick), Some(1250));
        let other = Event::Custom(types::Custom {
            name: "x".into(),
            json: "{\"stream_ms\": 1}".into(),
        });
        assert_eq!(tick_ms(&other), None);
        assert_eq!(role_of("support_agent"), Some(SpeakerRole::Agent));
        assert_eq!(role_of("boss"), None);
    }
}
