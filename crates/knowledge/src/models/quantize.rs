//! Quantized Whisper models for whisper.cpp (q8_0, q5_1), written from its
//! f16 model file as whisper.cpp's own `quantize` tool does: every 2-D
//! weight matrix is quantized in blocks of 32 values along its rows; the
//! positional embeddings, convolutions, biases and norms stay as they are;
//! the header's `ftype` becomes `GGML_QNT_VERSION * 1000 + ftype`.
//!
//! Block layouts (ggml's `block_q8_0`, `block_q5_1`):
//! - q8_0: `f16 d; i8 qs[32]` (34 bytes), x = d * q;
//! - q5_1: `f16 d; f16 m; u8 qh[4]; u8 qs[16]` (24 bytes), x = d * q + m,
//!   q in 0..32: its low 4 bits in `qs` (value j in the low nibble of byte
//!   j, value j + 16 in its high nibble), its fifth bit in bit j of `qh`.

use super::ggml::Hparams;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// ggml's quantization format version, as whisper.cpp writes it.
const QNT_VERSION: i32 = 2;
const QNT_VERSION_FACTOR: i32 = 1000;
const BLOCK: usize = 32;

/// Tensors whisper.cpp keeps in f32 whatever the model's type.
const KEEP: [&str; 4] = [
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Q8_0,
    Q5_1,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "q8_0" => Some(Kind::Q8_0),
            "q5_1" => Some(Kind::Q5_1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Q8_0 => "q8_0",
            Kind::Q5_1 => "q5_1",
        }
    }

    /// ggml's tensor type.
    fn ggml_type(self) -> i32 {
        match self {
            Kind::Q8_0 => 8,
            Kind::Q5_1 => 7,
        }
    }

    /// ggml's file type (`GGML_FTYPE_MOSTLY_*`).
    fn ftype(self) -> i32 {
        match self {
            Kind::Q8_0 => 7,
            Kind::Q5_1 => 9,
        }
    }

    /// What quantizing the model `callpipe models` converts gives, checked
    /// after every quantization (the input is pinned, the arithmetic
    /// deterministic).
    pub fn expected(self) -> (u64, &'static str) {
        match self {
            Kind::Q8_0 => (
                81_768_585,
                "81cfccb75eb8eb4eecf9829be7448c60e3d4abcb5bdb0f00e2c8a726f7ae2f25",
            ),
            Kind::Q5_1 => (
                59_707_625,
                "ee4332cc5b3f700877fc8d00730b9c7a464a1265188d821bfc09e55d6dc5163c",
            ),
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Kind::Q8_0 => 34,
            Kind::Q5_1 => 24,
        }
    }

    fn quantize(self, x: &[f32], out: &mut Vec<u8>) {
        match self {
            Kind::Q8_0 => q8_0(x, out),
            Kind::Q5_1 => q5_1(x, out),
        }
    }
}

/// IEEE binary16 from f32, rounding to nearest even (as ggml's
/// `GGML_FP32_TO_FP16`).
fn half_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x007f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x0080_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rounded = (m + half - 1 + ((m >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    let rounded = mant + 0x0fff + ((mant >> 13) & 1);
    if rounded & 0x0080_0000 != 0 {
        let e = e + 1;
        if e >= 0x1f {
            return sign | 0x7c00;
        }
        return sign | ((e as u16) << 10);
    }
    sign | ((e as u16) << 10) | (rounded >> 13) as u16
}

/// ggml's `quantize_row_q8_0_ref`.
fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half_from_f32(d).to_le_bytes());
        for v in block {
            out.push((v * id).round() as i8 as u8);
        }
    }
}

/// ggml's `quantize_row_q5_1_ref`.
fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(BLOCK) {
        let min = block.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = block.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half_from_f32(d).to_le_bytes());
        out.extend_from_slice(&half_from_f32(min).to_le_bytes());
        let mut qh: u32 = 0;
        let mut qs = [0u8; BLOCK / 2];
        for j in 0..BLOCK / 2 {
            let x0 = (block[j] - min) * id;
            let x1 = (block[j + BLOCK / 2] - min) * id;
            let q0 = ((x0 + 0.5) as u8).min(31);
            let q1 = ((x1 + 0.5) as u8).min(31);
            qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + BLOCK / 2);
        }
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
}

/// What a quantization did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub tensors: usize,
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn read_i32(r: &mut impl Read) -> io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Where `callpipe models` keeps the `kind` copy of Whisper base.
pub fn path(models_dir: &Path, kind: Kind) -> std::path::PathBuf {
    models_dir.join(format!("ggml-base-{}.bin", kind.name()))
}

/// The `kind` copy of the f16 model `f16`, written next to it unless an
/// intact one is there, and checked against its pinned size and sha256.
/// Returns its path and, when it was written now, what was quantized.
pub fn ensure(
    models_dir: &Path,
    f16: &Path,
    kind: Kind,
) -> anyhow::Result<(std::path::PathBuf, Option<Report>)> {
    let out = path(models_dir, kind);
    let (size, sha) = kind.expected();
    if super::intact(&out, size, sha)? {
        return Ok((out, None));
    }
    // Written aside and moved into place, so an interrupted run leaves no
    // half-written model where the transcriber looks.
    let partial = out.with_extension("bin.partial");
    let report = quantize_file(f16, &partial, kind)
        .map_err(|e| anyhow::anyhow!("quantizing {} to {}: {e}", f16.display(), kind.name()))?;
    super::verify(&partial, size, sha, &format!("the {} model", kind.name()))?;
    std::fs::rename(&partial, &out)?;
    Ok((out, Some(report)))
}

/// Writes `output`, the `kind` quantization of the f16 model `input`.
pub fn quantize_file(input: &Path, output: &Path, kind: Kind) -> io::Result<Report> {
    let mut r = BufReader::new(std::fs::File::open(input)?);
    let tmp = output.with_extension("part");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    let mut hp = Hparams::read(&mut r)?;
    if hp.ftype != 1 {
        return Err(bad(format!(
            "{}: not an f16 model (ftype {})",
            input.display(),
            hp.ftype
        )));
    }
    hp.ftype = QNT_VERSION * QNT_VERSION_FACTOR + kind.ftype();
    hp.write(&mut w)?;
    // Mel filters and vocabulary pass through as they are.
    let n_mel = read_i32(&mut r)?;
    let n_fft = read_i32(&mut r)?;
    w.write_all(&n_mel.to_le_bytes())?;
    w.write_all(&n_fft.to_le_bytes())?;
    let mut filters = vec![0u8; (n_mel.max(0) as usize) * (n_fft.max(0) as usize) * 4];
    r.read_exact(&mut filters)?;
    w.write_all(&filters)?;
    let n_vocab = read_i32(&mut r)?;
    w.write_all(&n_vocab.to_le_bytes())?;
    for _ in 0..n_vocab.max(0) {
        let len = read_i32(&mut r)?;
        let mut token = vec![0u8; len.max(0) as usize];
        r.read_exact(&mut token)?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&token)?;
    }
    let mut report = Report::default();
    let mut values: Vec<f32> = Vec::new();
    let mut packed: Vec<u8> = Vec::new();
    loop {
        let mut b = [0u8; 4];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let n_dims = i32::from_le_bytes(b);
        let name_len = read_i32(&mut r)?;
        let ttype = read_i32(&mut r)?;
        if !(1..=4).contains(&n_dims) || !(0..=1).contains(&ttype) || !(1..=256).contains(&name_len)
        {
            return Err(bad(format!(
                "{}: unexpected tensor header (dims {n_dims}, type {ttype})",
                input.display()
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(read_i32(&mut r)?.max(0) as usize);
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name)?;
        let count: usize = ne.iter().product();
        let mut data = vec![0u8; count * if ttype == 0 { 4 } else { 2 }];
        r.read_exact(&mut data)?;
        report.tensors += 1;
        report.bytes_in += data.len() as u64;
        let named = String::from_utf8_lossy(&name);
        let quantize = n_dims == 2 && ne[0] % BLOCK == 0 && !KEEP.contains(&named.as_ref());
        let out_type = if quantize { kind.ggml_type() } else { ttype };
        w.write_all(&n_dims.to_le_bytes())?;
        w.write_all(&name_len.to_le_bytes())?;
        w.write_all(&out_type.to_le_bytes())?;
        for d in &ne {
            w.write_all(&(*d as i32).to_le_bytes())?;
        }
        w.write_all(&name)?;
        if quantize {
            values.clear();
            if ttype == 1 {
                values.extend(
                    data.chunks_exact(2)
                        .map(|c| super::f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
                );
            } else {
                values.extend(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            packed.clear();
            packed.reserve(count / BLOCK * kind.block_bytes());
            kind.quantize(&values, &mut packed);
            w.write_all(&packed)?;
            report.quantized += 1;
            report.bytes_out += packed.len() as u64;
        } else {
            w.write_all(&data)?;
            report.bytes_out += data.len() as u64;
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(h: u16) -> f32 {
        crate::models::f16_to_f32(h)
    }

    fn dq8(block: &[u8]) -> Vec<f32> {
        let d = f16(u16::from_le_bytes([block[0], block[1]]));
        block[2..34].iter().map(|&q| d * q as i8 as f32).collect()
    }

    fn dq5(block: &[u8]) -> Vec<f32> {
        let d = f16(u16::from_le_bytes([block[0], block[1]]));
        let m = f16(u16::from_le_bytes([block[2], block[3]]));
        let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
        let qs = &block[8..24];
        let mut out = vec![0f32; 32];
        for j in 0..16 {
            let lo0 = qs[j] & 0x0f;
            let lo1 = qs[j] >> 4;
            let hi0 = ((qh >> j) & 1) as u8;
            let hi1 = ((qh >> (j + 16)) & 1) as u8;
            out[j] = d * (lo0 | (hi0 << 4)) as f32 + m;
            out[j + 16] = d * (lo1 | (hi1 << 4)) as f32 + m;
        }
        out
    }

    fn sample() -> Vec<f32> {
        (0..64)
            .map(|i| ((i as f32) * 0.37).sin() * 0.2 - 0.03)
            .collect()
    }

    #[test]
    fn blocks_come_back_within_their_step() {
        let x = sample();
        let mut out = Vec::new();
        q8_0(&x, &mut out);
        assert_eq!(out.len(), 2 * 34);
        for (b, chunk) in out.chunks(34).zip(x.chunks(32)) {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (y, v) in dq8(b).iter().zip(chunk) {
                assert!((y - v).abs() <= amax / 127.0 * 0.51 + 1e-4, "{y} {v}");
            }
        }
        let mut out = Vec::new();
        q5_1(&x, &mut out);
        assert_eq!(out.len(), 2 * 24);
        for (b, chunk) in out.chunks(24).zip(x.chunks(32)) {
            let (lo, hi) = chunk
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            for (y, v) in dq5(b).iter().zip(chunk) {
                assert!((y - v).abs() <= (hi - lo) / 31.0 * 0.51 + 1e-3, "{y} {v}");
            }
        }
    }

    #[test]
    fn halves_round_like_ggml() {
        for x in [0.0f32, 1.0, -2.5, 0.1, 65504.0, 1e-5, -3.0e-8, 1e6] {
            let h = half_from_f32(x);
            let back = f16(h);
            let tol = (x.abs() * 1e-3).max(6e-8);
            if x.abs() <= 65504.0 {
                assert!((back - x).abs() <= tol, "{x} -> {back}");
            } else {
                assert!(back.is_infinite(), "{x} -> {back}");
            }
        }
    }
}
