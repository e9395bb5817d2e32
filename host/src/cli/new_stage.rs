//! `callpipe new-stage NAME`: a plugin crate to start from, as `spin new`
//! does. Rust on the stage SDK (`callpipe-sdk`: the WIT bindings, the
//! `Stage` trait, `export_stage!`, a test harness), so the crate holds only
//! the stage and its tests; the example (flag configured keywords the
//! technician says) is a real stage with real tests, not an empty shell.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stage's name: lowercase letters, digits and dashes
    /// (e.g. `keyword-flag`). Also the crate's and the component's name.
    name: String,
    /// Where the crate goes. Inside this repository's `plugins/` the crate
    /// joins the workspace and uses the repository's SDK and `wit/`.
    #[arg(long, default_value = "plugins")]
    dir: PathBuf,
    /// The world the stage targets: which host capabilities it may import.
    #[arg(long, value_enum, default_value = "audio-stage")]
    world: World,
    /// The stage SDK to depend on (a callpipe checkout's `sdk/` directory),
    /// for a crate outside this repository. Default: the SDK of the checkout
    /// this `callpipe` was built from, when it is still there.
    #[arg(long, value_name = "DIR", conflicts_with = "vendor_sdk")]
    sdk: Option<PathBuf>,
    /// Copy the SDK and its WIT into the crate instead (a crate that must
    /// build without any callpipe checkout, e.g. in another repository).
    #[arg(long)]
    vendor_sdk: bool,
}

/// Where a new crate's `callpipe-sdk` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Sdk {
    /// The repository's, the SDK of a checkout given or found, by path.
    Path(PathBuf),
    /// A copy of the SDK and its WIT inside the crate.
    Vendored,
}

impl Sdk {
    /// The SDK for a crate made in `dir`: `--vendor-sdk`, `--sdk`, this
    /// repository's when `dir` is its `plugins/`, else the SDK of the
    /// checkout this binary was built from.
    pub fn choose(dir: &Path, given: Option<&Path>, vendor: bool) -> anyhow::Result<Sdk> {
        if vendor {
            return Ok(Sdk::Vendored);
        }
        if let Some(given) = given {
            let manifest = given.join("Cargo.toml");
            let ok = std::fs::read_to_string(&manifest)
                .is_ok_and(|t| t.contains("name = \"callpipe-sdk\""));
            if !ok {
                bail!(
                    "{} is not the callpipe stage SDK (no Cargo.toml naming callpipe-sdk); \
                     give a callpipe checkout's sdk/ directory",
                    given.display()
                );
            }
            return Ok(Sdk::Path(given.canonicalize()?));
        }
        if dir.join("..").join("sdk").join("Cargo.toml").is_file() {
            return Ok(Sdk::Path(PathBuf::from("../../sdk")));
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk");
        if built_from.join("Cargo.toml").is_file() {
            return Ok(Sdk::Path(built_from.canonicalize()?));
        }
        bail!(
            "no callpipe stage SDK found for a crate outside the repository: give --sdk \
             PATH/TO/callpipe/sdk, or --vendor-sdk to copy one into the crate"
        )
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum World {
    /// Logs only: audio processing, routing, rules.
    AudioStage,
    /// May call the transcriber.
    TranscriberStage,
    /// May search the knowledge base.
    KnowledgeStage,
    /// May synthesise speech.
    SpeechStage,
    /// May ask a language model (contract 0.1.1).
    LlmStage,
}

impl World {
    fn wit_name(self) -> &'static str {
        match self {
            World::AudioStage => "audio-stage",
            World::TranscriberStage => "transcriber-stage",
            World::KnowledgeStage => "knowledge-stage",
            World::SpeechStage => "speech-stage",
            World::LlmStage => "llm-stage",
        }
    }

    /// What the pipeline must grant for this world.
    fn grant(self) -> Option<&'static str> {
        match self {
            World::AudioStage => None,
            World::TranscriberStage => Some("transcriber"),
            World::KnowledgeStage => Some("knowledge"),
            World::SpeechStage => Some("speech"),
            World::LlmStage => Some("llm"),
        }
    }
}

/// The stage SDK, embedded so a crate made outside this repository gets the
/// same version of it (its manifest without the workspace's settings).
/// Every file of `sdk/src` (a test checks none is missing).
const SDK_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("alloc.rs", include_str!("../../../sdk/src/alloc.rs")),
    ("host.rs", include_str!("../../../sdk/src/host.rs")),
    ("language.rs", include_str!("../../../sdk/src/language.rs")),
    ("screen.rs", include_str!("../../../sdk/src/screen.rs")),
    ("testing.rs", include_str!("../../../sdk/src/testing.rs")),
];
const SDK_CARGO_TOML: &str = r#"[package]
name = "callpipe-sdk"
description = "Write a callpipe stage (copied by callpipe new-stage)"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
doctest = false

[features]
default = ["allocator"]
# The size-class allocator for stages (src/alloc.rs); off for a stage that
# brings its own #[global_allocator].
allocator = []

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
"#;

/// The contract, embedded so a crate made outside this repository gets the
/// same version of it.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    (
        "capabilities.wit",
        include_str!("../../../wit/capabilities.wit"),
    ),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sdk = Sdk::choose(&args.dir, args.sdk.as_deref(), args.vendor_sdk)?;
    let made = scaffold(&args.name, &args.dir, args.world, &sdk)?;
    println!("created {}", made.display());
    println!(
        "\n  cargo test --manifest-path {}/Cargo.toml      # the stage's own tests, natively",
        made.display()
    );
    println!("\nthen add it to a pipeline and build it with the pipeline's other plugins:\n");
    println!("  [[stages]]\n  name = \"{}\"", args.name);
    println!("  component = \"{}\"", args.name);
    if let Some(grant) = args.world.grant() {
        println!("  grants = [\"{grant}\"]");
    }
    println!("  config = {{ keywords = [\"alarme\", \"fumée\"] }}\n");
    println!("  callpipe build pipelines/your-pipeline.toml");
    Ok(ExitCode::SUCCESS)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// Writes the crate `dir/name`; returns its directory.
pub fn scaffold(name: &str, dir: &Path, world: World, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    if !valid_name(name) {
        bail!(
            "`{name}` cannot name a stage: use lowercase letters, digits and dashes, starting with a letter (e.g. keyword-flag)"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or --dir",
            root.display()
        );
    }
    // By path, one SDK and one wit/ for every stage; a vendored copy is
    // the SDK beside a `wit/` it reads.
    let (sdk_path, copy_sdk) = match sdk {
        Sdk::Path(p) => {
            let Some(p) = p.to_str() else {
                bail!(
                    "the SDK's path {} is not UTF-8, which Cargo.toml cannot hold",
                    p.display()
                );
            };
            (p.to_string(), false)
        }
        Sdk::Vendored => ("callpipe-sdk".to_string(), true),
    };
    // A TOML string, quoted and escaped (a path may hold a quote or a
    // backslash).
    let sdk_path = toml::Value::String(sdk_path).to_string();
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let write = |rel: &str, text: String| -> anyhow::Result<()> {
        let path = root.join(rel);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if copy_sdk {
        std::fs::create_dir_all(root.join("wit"))?;
        for (file, text) in WIT {
            write(&format!("wit/{file}"), (*text).to_string())?;
        }
        std::fs::create_dir_all(root.join("callpipe-sdk").join("src"))?;
        write("callpipe-sdk/Cargo.toml", SDK_CARGO_TOML.to_string())?;
        for (file, text) in SDK_SOURCES {
            write(&format!("callpipe-sdk/src/{file}"), (*text).to_string())?;
        }
    }
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{world}}", world.wit_name())
            .replace("{{sdk}}", &sdk_path)
    };
    write("Cargo.toml", fill(CARGO_TOML))?;
    write("src/lib.rs", fill(LIB_RS))?;
    write("src/stage.rs", fill(STAGE_RS))?;
    write("README.md", fill(README_MD))?;
    Ok(root)
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
description = "A callpipe stage"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: the native tests.
crate-type = ["cdylib", "rlib"]
doctest = false

[dependencies]
callpipe-sdk = { path = {{sdk}} }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const LIB_RS: &str = r#"//! `{{name}}`: a callpipe stage. The stage itself, with its tests, is in
//! `stage.rs`; the SDK makes it a component.

mod stage;

pub use stage::{Config, State};

callpipe_sdk::export_stage!(State);
"#;

const STAGE_RS: &str = r##"//! Flags the configured keywords the technician says: each transcript is
//! passed on, followed by a `custom` event `{{name}}.keywords` naming the
//! keywords found in it.

use callpipe_sdk::types::{CallInfo, Custom, Event, EventKind, SpeakerRole, StageError};

/// The stage's `config` table in the pipeline TOML.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// One call's state: the host makes one per call.
pub struct State {
    keywords: Vec<String>,
}

impl callpipe_sdk::Stage for State {
    const NAME: &'static str = "{{name}}";
    // What `handle` may return: the transcript (passed on) and a flag.
    const EMITS: &'static [EventKind] = &[EventKind::Transcript, EventKind::Custom];
    // What it handles unless the pipeline's `on` says otherwise; other
    // events go past it untouched.
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Transcript];
    type Config = Config;

    fn new(config: Config, _call: &CallInfo) -> Result<State, StageError> {
        if config.keywords.iter().any(|k| k.trim().is_empty()) {
            return Err(StageError::InvalidConfig("a keyword is empty".into()));
        }
        Ok(State {
            keywords: config.keywords.iter().map(|k| k.to_lowercase()).collect(),
        })
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        let flag = match &event {
            Event::Transcript(t) if matches!(t.role, SpeakerRole::Technician) => {
                let text = t.text.to_lowercase();
                let found: Vec<&str> = self
                    .keywords
                    .iter()
                    .filter(|k| text.contains(k.as_str()))
                    .map(String::as_str)
                    .collect();
                (!found.is_empty()).then(|| {
                    Event::Custom(Custom {
                        name: "{{name}}.keywords".into(),
                        json: serde_json::json!({
                            "utterance_id": t.utterance_id,
                            "keywords": found,
                        })
                        .to_string(),
                    })
                })
            }
            _ => None,
        };
        // What the stage does not consume goes on to the next one.
        let mut out = vec![event];
        out.extend(flag);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_sdk::Harness;
    use callpipe_sdk::types::{Track, Transcript};

    fn said(role: SpeakerRole, text: &str) -> Event {
        Event::Transcript(Transcript {
            utterance_id: 7,
            track: Track::Inbound,
            speaker_id: "tech-1".into(),
            role,
            start_ms: 0,
            end_ms: 1500,
            text: text.into(),
            language: "fr".into(),
            confidence: 0.9,
        })
    }

    #[test]
    fn flags_the_keywords_the_technician_says() {
        let mut h = Harness::<State>::new(r#"{"keywords": ["Alarme", "fumée"]}"#, "fr").unwrap();
        let out = h
            .feed([said(SpeakerRole::Technician, "L'alarme sonne, pas de fumée")])
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Event::Transcript(_)), "passed on first");
        let Event::Custom(c) = &out[1] else { panic!("a flag: {out:?}") };
        assert_eq!(c.name, "{{name}}.keywords");
        let doc: serde_json::Value = serde_json::from_str(&c.json).unwrap();
        assert_eq!(doc["keywords"], serde_json::json!(["alarme", "fumée"]));
        assert_eq!(doc["utterance_id"], 7);
    }

    #[test]
    fn the_agent_and_other_words_pass_untouched() {
        let mut h = Harness::<State>::new(r#"{"keywords": ["alarme"]}"#, "fr").unwrap();
        assert_eq!(h.feed([said(SpeakerRole::Agent, "l'alarme ?")]).unwrap().len(), 1);
        assert_eq!(h.feed([said(SpeakerRole::Technician, "la caméra")]).unwrap().len(), 1);
    }

    #[test]
    fn a_bad_config_is_refused_at_init() {
        assert!(matches!(
            Harness::<State>::new(r#"{"keyword": ["typo"]}"#, "fr"),
            Err(StageError::InvalidConfig(_))
        ));
        assert!(Harness::<State>::new("", "fr").is_ok());
    }
}
"##;

const README_MD: &str = r#"# {{name}}

A callpipe stage (world `{{world}}`), made by `callpipe new-stage`.

- `src/stage.rs`: what the stage does (`impl callpipe_sdk::Stage`), with
  its tests (`callpipe_sdk::Harness` feeds it events natively). Start here.
- `src/lib.rs`: one line, `callpipe_sdk::export_stage!(State)`, makes it a
  component. The SDK's capability functions (`callpipe_sdk::capability::search`,
  `transcribe`, `warn`) call the host; a stage imports only what it calls,
  and the pipeline must grant it.

```sh
cargo test                                   # the stage's tests, natively
callpipe build pipelines/your-pipeline.toml  # builds every plugin a pipeline names
callpipe check pipelines/your-pipeline.toml  # loads it as `serve` would
```

In the pipeline:

```toml
[[stages]]
name = "{{name}}"
component = "{{name}}"
config = { keywords = ["alarme", "fumée"] }
```

The contract (events, worlds, capabilities) is callpipe's WIT; its README
explains each event and what the host does with what a stage returns.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sdk_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src")
    }

    /// The vendored SDK's manifest asks for what the repository's asks
    /// for (its dependencies resolved through the workspace) and has the
    /// same features: a copy that drifted would build another SDK.
    #[test]
    fn the_vendored_sdk_manifest_matches_the_repositorys() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: std::path::PathBuf| -> toml::Table {
            toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
        };
        let repo = read(root.join("sdk/Cargo.toml"));
        let workspace = read(root.join("Cargo.toml"));
        let vendored: toml::Table = toml::from_str(SDK_CARGO_TOML).unwrap();
        assert_eq!(repo["features"], vendored["features"]);
        let shared = workspace["workspace"]["dependencies"].as_table().unwrap();
        let deps = repo["dependencies"].as_table().unwrap();
        let copied = vendored["dependencies"].as_table().unwrap();
        assert_eq!(
            deps.keys().collect::<Vec<_>>(),
            copied.keys().collect::<Vec<_>>()
        );
        let spec = |v: &toml::Value| -> (String, Vec<String>, bool) {
            match v {
                toml::Value::String(version) => (version.clone(), vec![], true),
                toml::Value::Table(t) => (
                    t.get("version")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .into(),
                    t.get("features")
                        .and_then(|f| f.as_array())
                        .map(|f| {
                            f.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    t.get("default-features")
                        .and_then(|d| d.as_bool())
                        .unwrap_or(true),
                ),
                other => panic!("{other:?}"),
            }
        };
        for (name, dep) in deps {
            let resolved = if dep.get("workspace").is_some() {
                &shared[name]
            } else {
                dep
            };
            assert_eq!(spec(resolved), spec(&copied[name]), "{name}");
        }
    }

    /// A path with a quote or a backslash still makes a valid manifest.
    #[test]
    fn the_sdk_path_is_written_as_a_toml_string() {
        let dir = tempfile::tempdir().unwrap();
        let odd = std::path::PathBuf::from("/opt/call\\pipe \"v2\"/sdk");
        let made = scaffold(
            "odd-path",
            dir.path(),
            World::AudioStage,
            &Sdk::Path(odd.clone()),
        )
        .unwrap();
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(made.join("Cargo.toml")).unwrap()).unwrap();
        assert_eq!(
            manifest["dependencies"]["callpipe-sdk"]["path"].as_str(),
            odd.to_str()
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["keyword-flag", "a", "stage2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Keyword",
            "2stage",
            "key_word",
            "trailing-",
            "a b",
            "../x",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn outside_the_repository_the_crate_depends_on_a_checkouts_sdk_or_vendors_one() {
        let dir = tempfile::tempdir().unwrap();
        // By default: the SDK of the checkout this binary was built from, by path.
        let found = Sdk::choose(dir.path(), None, false).unwrap();
        let Sdk::Path(path) = &found else {
            panic!("{found:?}")
        };
        assert!(
            path.is_absolute() && path.join("Cargo.toml").is_file(),
            "{path:?}"
        );
        let linked = scaffold("by-path", dir.path(), World::AudioStage, &found).unwrap();
        let manifest = std::fs::read_to_string(linked.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!(
                "callpipe-sdk = {{ path = \"{}\" }}",
                path.display()
            )),
            "{manifest}"
        );
        assert!(!linked.join("callpipe-sdk").exists() && !linked.join("wit").exists());
        let not_sdk = Sdk::choose(dir.path(), Some(dir.path()), false).unwrap_err();
        assert!(
            not_sdk
                .to_string()
                .contains("is not the callpipe stage SDK"),
            "{not_sdk}"
        );

        // --vendor-sdk: a copy of the SDK and its WIT.
        let made = scaffold(
            "keyword-flag",
            dir.path(),
            World::AudioStage,
            &Sdk::Vendored,
        )
        .unwrap();
        let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(lib.contains("callpipe_sdk::export_stage!(State);"), "{lib}");
        let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(r#"callpipe-sdk = { path = "callpipe-sdk" }"#),
            "{manifest}"
        );
        assert!(made.join("wit/worlds.wit").is_file());
        // Every file of the SDK goes with it (a module left out would not build).
        let sdk = crate::cli::new_stage::tests::sdk_dir();
        for entry in std::fs::read_dir(&sdk).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                made.join("callpipe-sdk/src").join(&name).is_file(),
                "sdk/src/{name} is not in SDK_SOURCES"
            );
        }
        for file in ["src/lib.rs", "src/stage.rs", "Cargo.toml", "README.md"] {
            let text = std::fs::read_to_string(made.join(file)).unwrap();
            assert!(!text.contains("{{"), "every placeholder filled in {file}");
        }
        let again = scaffold(
            "keyword-flag",
            dir.path(),
            World::AudioStage,
            &Sdk::Vendored,
        )
        .unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }
}
