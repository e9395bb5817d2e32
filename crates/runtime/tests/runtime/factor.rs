//! A capability added from outside the runtime, the way ARCHITECTURE.md's
//! recipe adds one: its WIT interface (here inline, in the test component),
//! one type implementing `Factor`, one `.with(...)` on the list. Nothing
//! else in the runtime learns its name, yet its section is built, its grant
//! checked, and a component that imports it reaches its backend.

use callpipe_runtime::capabilities::factor::{BuildFuture, ContextOf, Setup, StageView};
use callpipe_runtime::capabilities::{CapabilitySet, Factor, Factors, StageContext};
use callpipe_runtime::pipeline::grants::{self, GrantError};
use callpipe_runtime::pipeline::loader::{self, LoadOptions};
use callpipe_runtime::pipeline::state::StageState;
use callpipe_runtime::pipeline::{Runtime, RuntimeConfig};
use callpipe_runtime::test_support::wasm;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime::StoreLimits;
use wasmtime::component::{Component, Linker};

/// The backend: a counter that starts where its section says.
struct Counter {
    value: AtomicU32,
}

/// `[capabilities.counter] start = N`; WIT `callpipe:test/counter`
/// (`next: func(by: u32) -> u32`).
struct CounterFactor;

impl Factor<StageState> for CounterFactor {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn interface(&self) -> &'static str {
        "callpipe:test/counter"
    }

    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        _setup: Setup<'a>,
        set: &'a mut CapabilitySet,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let start = section
                .get("start")
                .and_then(toml::Value::as_integer)
                .ok_or("[capabilities.counter]: `start` (a number) is required")?;
            let start =
                u32::try_from(start).map_err(|_| "[capabilities.counter]: `start` out of range")?;
            set.insert(Arc::new(Counter {
                value: AtomicU32::new(start),
            }));
            Ok(())
        })
    }

    fn check(
        &self,
        section: &toml::Table,
        stages: &[StageView<'_>],
    ) -> Vec<(Option<String>, String)> {
        // Its own static rule: a counter nobody is granted is a mistake.
        if stages.iter().any(|s| s.granted) || section.contains_key("unused") {
            return Vec::new();
        }
        vec![(None, "[capabilities.counter] is granted to no stage".into())]
    }

    fn link(
        &self,
        linker: &mut Linker<StageState>,
        context: ContextOf<StageState>,
    ) -> wasmtime::Result<()> {
        linker
            .instance("callpipe:test/counter@0.1.0")?
            .func_wrap_async("next", move |mut store, (by,): (u32,)| {
                let counter = context(store.data_mut()).set.get::<Counter>();
                Box::new(async move {
                    let counter =
                        counter.ok_or_else(|| wasmtime::Error::msg("no counter configured"))?;
                    Ok((counter.value.fetch_add(by, Ordering::SeqCst) + by,))
                })
            })
    }
}

fn runtime(factors: Factors<StageState>) -> Arc<Runtime> {
    let cache = callpipe_testkit::root()
        .join("target")
        .join("test-component-cache");
    let mut config = RuntimeConfig::new(&cache);
    config.max_instances = 16;
    config.factors = factors;
    Runtime::new(config).expect("engine")
}

fn with_counter() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| runtime(Factors::builtin().with(CounterFactor)))
        .clone()
}

/// A component that imports the counter and exports `run`, which asks it
/// for `next(5)`.
const COUNTING: &str = r#"
(component
  (import "callpipe:test/counter@0.1.0" (instance $counter
    (export "next" (func (param "by" u32) (result u32)))))
  (core func $next (canon lower (func $counter "next")))
  (core module $m
    (import "host" "next" (func $next (param i32) (result i32)))
    (func (export "run") (result i32) (call $next (i32.const 5))))
  (core instance $i (instantiate $m (with "host" (instance (export "next" (func $next))))))
  (func (export "run") (result u32) (canon lift (core func $i "run"))))
"#;

async fn load(
    rt: &Arc<Runtime>,
    toml: &str,
) -> Result<callpipe_runtime::pipeline::LoadedPipeline, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("counter.toml");
    std::fs::write(&path, toml).expect("write");
    let options = LoadOptions {
        build_plugins: false,
        ..Default::default()
    };
    loader::load(rt, &path, &options)
        .await
        .map_err(|d| d.to_string())
}

fn pipeline(section: &str, grants: &str) -> String {
    format!(
        "[pipeline]\nname = \"counting\"\n\n{section}\n\n[[stages]]\nname = \"codec\"\ncomponent = \"{}\"\ngrants = [{grants}]\n",
        wasm("callpipe-stage-mulaw-codec")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_added_from_outside_is_configured_granted_and_checked() {
    let rt = with_counter();
    let loaded = load(
        &rt,
        &pipeline("[capabilities.counter]\nstart = 40", "\"counter\""),
    )
    .await
    .expect("the pipeline loads with the new capability");
    let counter = loaded
        .capabilities
        .get::<Counter>()
        .expect("its backend is built from its section");
    assert_eq!(counter.value.load(Ordering::SeqCst), 40);
    assert_eq!(loaded.stages[0].grants, ["counter"]);

    // Its section's errors and its own static check are located like the
    // built-in ones'.
    let err = load(
        &rt,
        &pipeline("[capabilities.counter]\nstart = \"many\"", "\"counter\""),
    )
    .await
    .err()
    .expect("a bad section is refused");
    assert!(
        err.contains("counter.toml:4:") && err.contains("`start` (a number) is required"),
        "{err}"
    );
    let err = load(&rt, &pipeline("[capabilities.counter]\nstart = 1", ""))
        .await
        .err()
        .expect("an unused counter is refused by its own check");
    assert!(err.contains("granted to no stage"), "{err}");

    // A runtime without the factor knows neither the section nor the grant.
    let plain = runtime(Factors::builtin());
    let err = load(
        &plain,
        &pipeline("[capabilities.counter]\nstart = 40", "\"counter\""),
    )
    .await
    .err()
    .expect("unknown without its factor");
    assert!(
        err.contains("unknown capability section [capabilities.counter] (known: transcriber, knowledge, speech, llm)"),
        "{err}"
    );
    assert!(
        err.contains("unknown capability `counter` in grants"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_the_added_capability_reaches_its_backend_only_when_granted() {
    let rt = with_counter();
    let factors = &rt.config().factors;
    let component = Component::new(rt.engine(), COUNTING).expect("the test component compiles");

    assert_eq!(
        grants::check_imports(rt.engine(), &component, factors, &["counter"]),
        []
    );
    assert_eq!(
        grants::check_imports(rt.engine(), &component, factors, &["knowledge"]),
        [GrantError::NotGranted {
            import: "callpipe:test/counter@0.1.0".into(),
            capability: "counter",
        }]
    );
    let builtin = Factors::builtin();
    assert_eq!(
        grants::check_imports(rt.engine(), &component, &builtin, &[]),
        [GrantError::Unknown {
            import: "callpipe:test/counter@0.1.0".into(),
        }]
    );

    let set = CapabilitySet::default().with(Arc::new(Counter {
        value: AtomicU32::new(10),
    }));
    let context = StageContext {
        call_id: Arc::from("call"),
        stage: Arc::from("counting"),
        language: Arc::from("fr"),
    };
    let mut store = wasmtime::Store::new(
        rt.engine(),
        StageState::new(context, StoreLimits::default(), Arc::new(set)),
    );
    store.set_epoch_deadline(60_000);
    let linker = grants::linker(rt.engine(), factors, &["counter"]).expect("linker");
    let instance = linker
        .instantiate_async(&mut store, &component)
        .await
        .expect("the granted component instantiates");
    let run = instance
        .get_typed_func::<(), (u32,)>(&mut store, "run")
        .expect("run");
    let (value,) = run.call_async(&mut store, ()).await.expect("run returns");
    assert_eq!(
        value, 15,
        "the host function read the backend through the stage's context"
    );

    // Not granted: the interface is not even in the stage's linker.
    let ungranted = grants::linker(rt.engine(), factors, &[]).expect("linker");
    assert!(ungranted.instantiate_pre(&component).is_err());
}
