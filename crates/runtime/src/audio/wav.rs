//! A small WAV reader: PCM 8/16/24/32-bit, IEEE float, mu-law and A-law,
//! plain or WAVE_FORMAT_EXTENSIBLE, any rate and channel count.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// Decoded audio: one vector of samples in -1.0..1.0 per channel.
#[derive(Debug, Clone)]
pub struct Recording {
    pub rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Recording {
    pub fn duration_ms(&self) -> u64 {
        let n = self.channels.first().map_or(0, Vec::len) as u64;
        if self.rate == 0 {
            0
        } else {
            n * 1000 / self.rate as u64
        }
    }
}

const PCM: u16 = 1;
const FLOAT: u16 = 3;
const ALAW: u16 = 6;
const MULAW: u16 = 7;
const EXTENSIBLE: u16 = 0xFFFE;

pub fn read(path: &Path) -> Result<Recording, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        path: path.into(),
        source,
    })?;
    parse(&bytes).map_err(|message| WavError::Format {
        path: path.into(),
        message,
    })
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Reads one sample (its bytes) as -1.0..1.0.
type SampleDecoder = dyn Fn(&[u8]) -> f32;

pub fn parse(bytes: &[u8]) -> Result<Recording, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut pos = 12;
    let mut format = None;
    let mut data = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(bytes, pos + 4).ok_or("truncated chunk header")? as usize;
        let body_end = (pos + 8).saturating_add(size).min(bytes.len());
        let body = &bytes[pos + 8..body_end];
        match id {
            b"fmt " => {
                let mut tag = u16_at(body, 0).ok_or("fmt chunk too short")?;
                let channels = u16_at(body, 2).ok_or("fmt chunk too short")?;
                let rate = u32_at(body, 4).ok_or("fmt chunk too short")?;
                let bits = u16_at(body, 14).ok_or("fmt chunk too short")?;
                if tag == EXTENSIBLE {
                    tag = u16_at(body, 24).ok_or("extensible fmt chunk too short")?;
                }
                format = Some((tag, channels, rate, bits));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        pos = pos + 8 + size + (size & 1); // chunks are word-aligned
    }
    let (tag, channels, rate, bits) = format.ok_or("no fmt chunk")?;
    let data = data.ok_or("no data chunk")?;
    if channels == 0 || rate == 0 {
        return Err(format!("unusable format: {channels} channels at {rate} Hz"));
    }
    let decode: Box<SampleDecoder> = match (tag, bits) {
        (PCM, 8) => Box::new(|b| (b[0] as f32 - 128.0) / 128.0),
        (PCM, 16) => Box::new(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
        (PCM, 24) => {
            Box::new(|b| (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0)
        }
        (PCM, 32) => {
            Box::new(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0)
        }
        (FLOAT, 32) => Box::new(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        (MULAW, 8) => Box::new(|b| callpipe_dsp::g711::decode(b[0]) as f32 / 32768.0),
        (ALAW, 8) => Box::new(|b| alaw_decode(b[0]) as f32 / 32768.0),
        _ => {
            return Err(format!(
                "unsupported encoding: format tag {tag} with {bits} bits per sample"
            ));
        }
    };
    let width = (bits as usize).div_ceil(8);
    let frame = width * channels as usize;
    let frames = data.len() / frame;
    let mut out = vec![Vec::with_capacity(frames); channels as usize];
    for f in data.chunks_exact(frame) {
        for (c, ch) in out.iter_mut().enumerate() {
            ch.push(decode(&f[c * width..(c + 1) * width]));
        }
    }
    Ok(Recording {
        rate,
        channels: out,
    })
}

/// G.711 A-law expansion (for completeness of input formats).
fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Writes mono or multi-channel PCM16 (for tools and tests).
pub fn write_pcm16(path: &Path, rate: u32, channels: &[Vec<i16>]) -> std::io::Result<()> {
    let n = channels.first().map_or(0, Vec::len);
    let ch = channels.len() as u16;
    let data_len = (n * channels.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&PCM.to_le_bytes());
    out.extend_from_slice(&ch.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * ch as u32 * 2).to_le_bytes());
    out.extend_from_slice(&(ch * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        for c in channels {
            out.extend_from_slice(&c.get(i).copied().unwrap_or(0).to_le_bytes());
        }
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        write_pcm16(&path, 8000, &[vec![0, 16384, -16384], vec![1, 2, 3]]).unwrap();
        let rec = read(&path).unwrap();
        assert_eq!(rec.rate, 8000);
        assert_eq!(rec.channels.len(), 2);
        assert_eq!(rec.channels[0], vec![0.0, 0.5, -0.5]);
    }

    #[test]
    fn reads_mulaw_and_rejects_garbage_with_the_file_name() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&MULAW.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&2u32.to_le_bytes());
        wav.extend_from_slice(&[0xFF, 0x80]);
        let rec = parse(&wav).unwrap();
        assert_eq!(rec.channels[0][0], 0.0);
        assert!((rec.channels[0][1] - 32124.0 / 32768.0).abs() < 1e-6);

        assert!(parse(b"hello").is_err());
        let err = read(Path::new("/nonexistent/x.wav"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.wav"), "{err}");
    }

    #[test]
    fn alaw_decodes_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
    }
}
