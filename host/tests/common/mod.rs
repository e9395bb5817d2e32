//! What the binary's test files share: paths, and one policy for fixtures
//! that come from outside the repository (the speech model, Debian's sounds).

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Real French phone prompts (Debian's asterisk-core-sounds-fr-wav).
pub const SOUNDS: &str = "/usr/share/asterisk/sounds/fr_CA_f_June";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Where `callpipe models` put the speech model (`.ci/run` sets it).
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
