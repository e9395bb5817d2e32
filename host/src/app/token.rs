//! The API token: given, explicitly off, or made at first start and kept
//! in the data dir (readable by its owner only), where `simulate` finds it.

use anyhow::Context;
use std::path::Path;

/// The token file in the data dir; `callpipe simulate` reads it too.
pub const TOKEN_FILE: &str = "api-token";

/// What CALLPIPE_API_TOKEN (or --api-token) says.
pub enum TokenSetting {
    /// `off`: no token, for local use.
    Off,
    Given(String),
    /// Unset or empty: the one kept in the data dir.
    Stored,
}

pub fn token_setting(given: Option<&str>) -> TokenSetting {
    match given.map(str::trim) {
        Some("off") => TokenSetting::Off,
        Some(t) if !t.is_empty() => TokenSetting::Given(t.to_string()),
        _ => TokenSetting::Stored,
    }
}

/// The token kept in the data dir, if there is one.
pub fn stored_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The API token: given, explicitly off (`None`), or the data dir's own,
/// made on first use. The bool says whether it was made or read here.
pub(super) fn api_token(
    given: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(Option<String>, bool)> {
    match token_setting(given) {
        TokenSetting::Off => Ok((None, false)),
        TokenSetting::Given(t) => Ok((Some(t), false)),
        TokenSetting::Stored => {
            if let Some(t) = stored_token(data_dir) {
                return Ok((Some(t), true));
            }
            let path = data_dir.join(TOKEN_FILE);
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot make an API token: {e}"))?;
            let token = hex::encode(bytes);
            write_private(&path, &token)
                .with_context(|| format!("cannot write the API token to {}", path.display()))?;
            Ok((Some(token), true))
        }
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
