//! Finding a stage's component and building plugin crates to wasm32-wasip2,
//! so a pipeline that names `energy-vad` just works from a source checkout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Also in `.cargo/config.toml`; set here too because cargo reads config
/// files from the working directory, which may be anywhere.
const WASM_RUSTFLAGS: &str = "-C target-feature=+simd128";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A compiled component.
    Wasm(PathBuf),
    /// A plugin crate, built on demand.
    Crate { dir: PathBuf, package: String },
    /// A stage in another language, described by its `callpipe-stage.toml`
    /// and built on demand (Python: componentize-py).
    Foreign { dir: PathBuf },
}

/// Built components, filed by [`artifact_key`].
pub type Built = BTreeMap<String, PathBuf>;

/// A build that failed.
#[derive(Debug)]
pub enum BuildFailure {
    /// The one cargo run that builds every plugin crate of a pipeline.
    Crates(String),
    /// One stage in another language.
    Foreign { dir: PathBuf, message: String },
}

/// How a source's component is filed in [`Built`]: crates by package name,
/// foreign stages by directory (package names cannot contain `:`).
fn artifact_key(source: &Source) -> Option<String> {
    match source {
        Source::Wasm(_) => None,
        Source::Crate { package, .. } => Some(package.clone()),
        Source::Foreign { dir } => Some(format!("foreign:{}", dir.display())),
    }
}

/// The component a source stands for, once built (`None`: its build failed).
pub fn artifact(source: &Source, built: &Built) -> Option<PathBuf> {
    match source {
        Source::Wasm(path) => Some(path.clone()),
        _ => artifact_key(source).and_then(|key| built.get(&key).cloned()),
    }
}

/// Builds every source of a pipeline once: all crates in one cargo run,
/// each foreign stage with its own tool, off the async runtime. Without
/// `build`, each component is expected where a build would put it.
pub async fn build_sources<'a>(
    sources: impl IntoIterator<Item = &'a Source>,
    build: bool,
    quiet: bool,
) -> (Built, Vec<BuildFailure>) {
    let mut crates = BTreeMap::new();
    let mut foreign = BTreeMap::new();
    for source in sources {
        match source {
            Source::Wasm(_) => {}
            Source::Crate { dir, package } => {
                crates.insert(dir.clone(), package.clone());
            }
            Source::Foreign { dir } => {
                foreign.insert(dir.clone(), source.clone());
            }
        }
    }
    let mut built = Built::new();
    let mut failures = Vec::new();
    if !crates.is_empty() {
        let crates: Vec<(PathBuf, String)> = crates.into_iter().collect();
        if build {
            match tokio::task::spawn_blocking(move || self::build(&crates, quiet)).await {
                Ok(Ok(b)) => built = b,
                Ok(Err(e)) => failures.push(BuildFailure::Crates(e.to_string())),
                Err(e) => {
                    failures.push(BuildFailure::Crates(format!("plugin build panicked: {e}")))
                }
            }
        } else {
            for (dir, package) in &crates {
                built.insert(package.clone(), artifact_path(&target_dir(dir), package));
            }
        }
    }
    for (dir, source) in foreign {
        let path = if build {
            let (d, q) = (dir.clone(), quiet);
            match tokio::task::spawn_blocking(move || build_foreign(&d, q)).await {
                Ok(Ok(path)) => path,
                Ok(Err(e)) => {
                    failures.push(BuildFailure::Foreign {
                        dir,
                        message: e.to_string(),
                    });
                    continue;
                }
                Err(e) => {
                    failures.push(BuildFailure::Foreign {
                        dir,
                        message: format!("plugin build panicked: {e}"),
                    });
                    continue;
                }
            }
        } else {
            foreign_artifact(&dir)
        };
        if let Some(key) = artifact_key(&source) {
            built.insert(key, path);
        }
    }
    (built, failures)
}

/// What makes a directory a stage in another language than Rust.
pub const FOREIGN_MANIFEST: &str = "callpipe-stage.toml";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("component `{component}` not found (looked for {looked})")]
    NotFound { component: String, looked: String },
    #[error("cannot read {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("cannot run cargo to build plugins: {0}")]
    Spawn(std::io::Error),
    #[error("building plugins failed (cargo exited with {status}):\n{output}")]
    Build { status: String, output: String },
    #[error("cargo built `{package}` but {path} is missing")]
    MissingArtifact { package: String, path: PathBuf },
    #[error("{path}: {message}")]
    Foreign { path: PathBuf, message: String },
    #[error(
        "the Rust target {WASM_TARGET} that stages are built for is not installed, and `rustup target add {WASM_TARGET}` failed ({0}); run it yourself, then start again"
    )]
    Target(String),
}

/// Makes sure cargo can build for the stages' target: with rustup, adds
/// the target when it is missing (a stock toolchain lacks it, and
/// rust-toolchain.toml does not add it to an installed one). Without
/// rustup there is nothing to check; cargo will say what is missing.
pub fn ensure_target(rustup: &std::ffi::OsStr) -> Result<(), PluginError> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    check_target(rustup)?;
    let _ = DONE.set(());
    Ok(())
}

/// One check; `Ok(true)` when the target had to be added.
fn check_target(rustup: &std::ffi::OsStr) -> Result<bool, PluginError> {
    let installed = match Command::new(rustup)
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => return Ok(false),
    };
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(false);
    }
    {
        tracing::warn!(
            "the Rust target {WASM_TARGET} is missing: running `rustup target add {WASM_TARGET}`"
        );
        let out = Command::new(rustup)
            .args(["target", "add", WASM_TARGET])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PluginError::Target(e.to_string()))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(PluginError::Target(
                why.lines().last().unwrap_or("no output").trim().to_string(),
            ));
        }
    }
    Ok(true)
}

/// Directories searched for a bare component name.
pub fn search_dirs(pipeline_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CALLPIPE_PLUGIN_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(pipeline_dir.join("..").join("plugins"));
    dirs.push(pipeline_dir.join("plugins"));
    dirs
}

/// Resolves the `component` value of a stage: a `.wasm` path, a crate
/// directory (relative to the pipeline file), or the name of a plugin.
pub fn resolve(component: &str, pipeline_dir: &Path) -> Result<Source, PluginError> {
    let as_path = pipeline_dir.join(component);
    if component.ends_with(".wasm") {
        return if as_path.is_file() {
            Ok(Source::Wasm(as_path))
        } else {
            Err(PluginError::NotFound {
                component: component.into(),
                looked: as_path.display().to_string(),
            })
        };
    }
    let mut looked = Vec::new();
    let candidates: Vec<PathBuf> = if component.contains('/') || component.starts_with('.') {
        vec![as_path]
    } else {
        search_dirs(pipeline_dir)
            .into_iter()
            .flat_map(|d| [d.join(format!("{component}.wasm")), d.join(component)])
            .collect()
    };
    for candidate in candidates {
        if candidate.extension().is_some_and(|e| e == "wasm") && candidate.is_file() {
            return Ok(Source::Wasm(candidate));
        }
        if candidate.join(FOREIGN_MANIFEST).is_file() {
            return Ok(Source::Foreign { dir: candidate });
        }
        let manifest = candidate.join("Cargo.toml");
        if manifest.is_file() {
            let package = package_name(&manifest)?;
            return Ok(Source::Crate {
                dir: candidate,
                package,
            });
        }
        looked.push(candidate.display().to_string());
    }
    Err(PluginError::NotFound {
        component: component.into(),
        looked: looked.join(", "),
    })
}

fn package_name(manifest: &Path) -> Result<String, PluginError> {
    let err = |message: String| PluginError::Manifest {
        path: manifest.into(),
        message,
    };
    let text = std::fs::read_to_string(manifest).map_err(|e| err(e.to_string()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| err("no [package] name".into()))
}

/// Where plugin builds go: beside, not inside, the host's own build, so a
/// plugin build never waits for the lock of a host build in progress.
pub fn target_dir(crate_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CALLPIPE_PLUGIN_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("plugins");
    }
    let root = crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(crate_dir);
    root.join("target").join("plugins")
}

pub fn artifact_path(target_dir: &Path, package: &str) -> PathBuf {
    target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds plugin crates (one cargo invocation) and returns each package's
/// component. `quiet` captures cargo's output instead of showing progress.
pub fn build(
    crates: &[(PathBuf, String)],
    quiet: bool,
) -> Result<BTreeMap<String, PathBuf>, PluginError> {
    let Some((first_dir, _)) = crates.first() else {
        return Ok(BTreeMap::new());
    };
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    ensure_target(&std::env::var_os("RUSTUP").unwrap_or_else(|| "rustup".into()))?;
    let target = target_dir(first_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg(first_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // Small, fast components: no debug info, whole-program optimisation.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false")
        .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", WASM_RUSTFLAGS)
        .env_remove("CARGO_TARGET_DIR");
    for (_, package) in crates {
        cmd.arg("-p").arg(package);
    }
    let output = if quiet {
        cmd.stdin(Stdio::null())
            .output()
            .map_err(PluginError::Spawn)?
    } else {
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .map_err(PluginError::Spawn)?;
        std::process::Output {
            status,
            stdout: vec![],
            stderr: vec![],
        }
    };
    if !output.status.success() {
        return Err(PluginError::Build {
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let mut built = BTreeMap::new();
    for (_, package) in crates {
        let path = artifact_path(&target, package);
        if !path.is_file() {
            return Err(PluginError::MissingArtifact {
                package: package.clone(),
                path,
            });
        }
        built.insert(package.clone(), path);
    }
    Ok(built)
}

/// `callpipe-stage.toml` of a stage in another language.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignManifest {
    /// Only `python` for now.
    language: String,
    /// The WIT world it targets, e.g. `audio-stage`.
    world: String,
    /// The module that defines the exported `Stage` class.
    #[serde(default = "default_module")]
    module: String,
    /// The WIT directory, relative to the stage's directory.
    #[serde(default = "default_wit")]
    wit: PathBuf,
}

fn default_module() -> String {
    "app".into()
}

fn default_wit() -> PathBuf {
    PathBuf::from("../../wit")
}

/// Where a foreign stage's component goes.
pub fn foreign_artifact(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "stage".into(), |n| n.to_string_lossy().into_owned());
    target_dir(dir).join("foreign").join(format!("{name}.wasm"))
}

fn newest(paths: impl Iterator<Item = PathBuf>) -> Option<std::time::SystemTime> {
    paths
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds a stage written in another language; skipped when the component
/// is newer than its sources, its manifest and the WIT.
pub fn build_foreign(dir: &Path, quiet: bool) -> Result<PathBuf, PluginError> {
    let manifest_path = dir.join(FOREIGN_MANIFEST);
    let err = |message: String| PluginError::Foreign {
        path: manifest_path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| err(e.to_string()))?;
    let manifest: ForeignManifest =
        toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
    if manifest.language != "python" {
        return Err(err(format!(
            "language `{}` is not supported (python is)",
            manifest.language
        )));
    }
    let wit = dir.join(&manifest.wit);
    let out = foreign_artifact(dir);
    let sources = files_in(dir, "py")
        .into_iter()
        .chain(files_in(&wit, "wit"))
        .chain([manifest_path.clone()]);
    if let (Some(built), Some(inputs)) = (newest([out.clone()].into_iter()), newest(sources))
        && built >= inputs
    {
        return Ok(out);
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    let tool =
        std::env::var_os("CALLPIPE_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into());
    let output = Command::new(&tool)
        .arg("-d")
        .arg(&wit)
        .arg("-w")
        .arg(&manifest.world)
        .arg("componentize")
        .arg(&manifest.module)
        .arg("-p")
        .arg(dir)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            err(format!(
                "cannot run {} ({e}): install it with `pip install componentize-py==0.25.1`, \
                 or set CALLPIPE_COMPONENTIZE_PY to its path",
                tool.to_string_lossy()
            ))
        })?;
    if !output.status.success() {
        return Err(PluginError::Build {
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    if !quiet {
        eprintln!("built {} ({})", out.display(), dir.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// A stand-in for rustup: lists `listed`, and answers `target add` with
    /// `add_status` (recording that it was asked).
    #[cfg(unix)]
    fn fake_rustup(dir: &std::path::Path, listed: &str, add_status: i32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("rustup");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nif [ \"$2\" = list ]; then printf '%s\\n' {listed}; exit 0; fi\n\
                 touch \"{}/asked\"\necho 'error: could not download' >&2\nexit {add_status}\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_stage_target_is_added_or_named() {
        let dir = tempfile::tempdir().unwrap();
        let present = fake_rustup(dir.path(), "x86_64-unknown-linux-gnu wasm32-wasip2", 0);
        assert!(!check_target(present.as_os_str()).unwrap());
        assert!(!dir.path().join("asked").exists());

        let dir = tempfile::tempdir().unwrap();
        let missing = fake_rustup(dir.path(), "x86_64-unknown-linux-gnu", 0);
        assert!(check_target(missing.as_os_str()).unwrap());
        assert!(
            dir.path().join("asked").exists(),
            "rustup target add was not run"
        );

        let dir = tempfile::tempdir().unwrap();
        let failing = fake_rustup(dir.path(), "x86_64-unknown-linux-gnu", 1);
        let e = check_target(failing.as_os_str()).unwrap_err().to_string();
        assert!(
            e.contains("rustup target add wasm32-wasip2") && e.contains("could not download"),
            "{e}"
        );
        // No rustup at all: nothing to check.
        assert!(!check_target(dir.path().join("absent").as_os_str()).unwrap());
    }

    use super::*;

    #[test]
    fn resolves_names_paths_and_reports_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let pipelines = dir.path().join("pipelines");
        let plugin = dir.path().join("plugins").join("my-stage");
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::write(
            plugin.join("Cargo.toml"),
            "[package]\nname = \"acme-my-stage\"\n",
        )
        .unwrap();
        std::fs::write(pipelines.join("x.wasm"), b"\0asm").unwrap();

        match resolve("my-stage", &pipelines).unwrap() {
            Source::Crate { package, .. } => assert_eq!(package, "acme-my-stage"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("x.wasm", &pipelines).unwrap(),
            Source::Wasm(_)
        ));
        let err = resolve("nope", &pipelines).unwrap_err().to_string();
        assert!(
            err.contains("`nope` not found") && err.contains("plugins"),
            "{err}"
        );
        assert!(resolve("missing.wasm", &pipelines).is_err());
    }
}
