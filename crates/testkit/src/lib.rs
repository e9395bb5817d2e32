//! What every test binary of the workspace shares: where things are, and
//! one policy for fixtures that come from outside the repository (the
//! models, Debian's sounds, a Postgres or Qdrant server).
//!
//! Nothing of callpipe's own: the store's and the knowledge base's tests use
//! it without linking the runtime.

use std::path::{Path, PathBuf};

/// Real French phone prompts (Debian's asterisk-core-sounds-fr-wav).
pub const SOUNDS: &str = "/usr/share/asterisk/sounds/fr_CA_f_June";

/// The workspace root (this crate lives in `crates/testkit`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .to_path_buf()
}

/// Where `callpipe models` put the models (`.ci/run` sets it).
pub fn data_dir() -> PathBuf {
    std::env::var_os("CALLPIPE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("data"))
}

/// Whether a test may use an external fixture: when it is absent the test
/// skips loudly on a developer's machine and fails under CI, where `.ci/run`
/// must have provided it.
pub fn fixture_present(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide {what} (see .ci/run)"
        );
        eprintln!("SKIPPED: needs {what}");
    }
    present
}

pub mod postgres;
pub mod speech;
