//! whisper.cpp's model file ("ggml" format, as its convert-pt-to-ggml.py
//! writes it): hyperparameters, mel filters, vocabulary, then tensors.

use std::io::{self, Read, Write};

pub const MAGIC: u32 = 0x6767_6d6c; // "ggml"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1: f16 weights (small tensors stay f32).
    pub ftype: i32,
}

impl Hparams {
    fn fields(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    /// whisper.cpp's name for the model size, from its layer count.
    pub fn model_type(&self) -> &'static str {
        match self.n_audio_layer {
            4 => "tiny",
            6 => "base",
            12 => "small",
            24 => "medium",
            32 => "large",
            _ => "unknown",
        }
    }

    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&MAGIC.to_le_bytes())?;
        for v in self.fields() {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    /// Reads the header of a ggml file: what `callpipe models --check` and
    /// the transcriber report about a model before loading it.
    pub fn read(r: &mut impl Read) -> io::Result<Self> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        if u32::from_le_bytes(b) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a whisper.cpp ggml model (bad magic)",
            ));
        }
        let mut f = [0i32; 11];
        for v in &mut f {
            r.read_exact(&mut b)?;
            *v = i32::from_le_bytes(b);
        }
        Ok(Self {
            n_vocab: f[0],
            n_audio_ctx: f[1],
            n_audio_state: f[2],
            n_audio_head: f[3],
            n_audio_layer: f[4],
            n_text_ctx: f[5],
            n_text_state: f[6],
            n_text_head: f[7],
            n_text_layer: f[8],
            n_mels: f[9],
            ftype: f[10],
        })
    }
}

pub fn write_mel_filters(
    w: &mut impl Write,
    n_mel: usize,
    n_fft: usize,
    values: &[f32],
) -> io::Result<()> {
    w.write_all(&(n_mel as i32).to_le_bytes())?;
    w.write_all(&(n_fft as i32).to_le_bytes())?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

pub fn write_vocab(w: &mut impl Write, tokens: &[Vec<u8>]) -> io::Result<()> {
    w.write_all(&(tokens.len() as i32).to_le_bytes())?;
    for t in tokens {
        w.write_all(&(t.len() as i32).to_le_bytes())?;
        w.write_all(t)?;
    }
    Ok(())
}

/// Tensor data as stored: f16 bytes as they are, or values widened to f32.
pub enum Data<'a> {
    F16(&'a [u8]),
    F32(Vec<f32>),
}

/// One tensor; `shape` is in row-major order (written reversed, as ggml wants).
pub fn write_tensor(
    w: &mut impl Write,
    name: &str,
    shape: &[usize],
    data: &Data<'_>,
) -> io::Result<()> {
    let ftype: i32 = match data {
        Data::F32(_) => 0,
        Data::F16(_) => 1,
    };
    w.write_all(&(shape.len() as i32).to_le_bytes())?;
    w.write_all(&(name.len() as i32).to_le_bytes())?;
    w.write_all(&ftype.to_le_bytes())?;
    for d in shape.iter().rev() {
        w.write_all(&(*d as i32).to_le_bytes())?;
    }
    w.write_all(name.as_bytes())?;
    match data {
        Data::F16(bytes) => w.write_all(bytes),
        Data::F32(values) => {
            for v in values {
                w.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        }
    }
}
