//! Reader for CTranslate2's `model.bin` (format version 6): named tensors
//! plus aliases.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Tensor<'a> {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

#[derive(Debug)]
pub struct Model<'a> {
    pub spec: String,
    pub revision: u32,
    pub tensors: BTreeMap<String, Tensor<'a>>,
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a CTranslate2 model: {0}")]
pub struct Ct2Error(pub String);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Ct2Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Ct2Error(format!("truncated at byte {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Ct2Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Ct2Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Ct2Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// u16 length (NUL included), bytes, NUL.
    fn string(&mut self) -> Result<String, Ct2Error> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).map_err(|_| Ct2Error("a name is not UTF-8".into()))
    }
}

pub fn parse(buf: &[u8]) -> Result<Model<'_>, Ct2Error> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u32()?;
    if version != 6 {
        return Err(Ct2Error(format!(
            "unsupported format version {version} (expected 6)"
        )));
    }
    let spec = r.string()?;
    let revision = r.u32()?;
    let count = r.u32()?;
    let mut tensors = BTreeMap::new();
    for _ in 0..count {
        let name = r.string()?;
        let ndim = r.u8()? as usize;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u32()? as usize);
        }
        let dtype =
            DType::from_id(r.u8()?).ok_or_else(|| Ct2Error(format!("{name}: unknown dtype")))?;
        let nbytes = r.u32()? as usize;
        let data = r.take(nbytes)?;
        tensors.insert(name, Tensor { shape, dtype, data });
    }
    let mut aliases = BTreeMap::new();
    let n_aliases = r.u32()?;
    for _ in 0..n_aliases {
        let alias = r.string()?;
        let target = r.string()?;
        aliases.insert(alias, target);
    }
    Ok(Model {
        spec,
        revision,
        tensors,
        aliases,
    })
}

/// Writes a model file (for tests: tiny synthetic models).
pub fn write(
    spec: &str,
    tensors: &[(&str, Vec<usize>, DType, Vec<u8>)],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for (name, shape, dtype, data) in tensors {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(match dtype {
            DType::F32 => 0,
            DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 => 3,
            DType::F16 => 4,
            DType::BF16 => 5,
        });
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (a, t) in aliases {
        string(&mut out, a);
        string(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tensors_and_aliases() {
        let bytes = write(
            "WhisperSpec",
            &[
                ("a/b", vec![2, 3], DType::F16, vec![0; 12]),
                ("c", vec![], DType::I8, vec![7]),
            ],
            &[("x", "a/b")],
        );
        let m = parse(&bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.tensors["a/b"].shape, vec![2, 3]);
        assert_eq!(m.tensors["c"].data, &[7]);
        assert_eq!(m.aliases["x"], "a/b");
        assert!(parse(&bytes[..bytes.len() - 3]).is_err());
        assert!(parse(b"\x05\0\0\0").is_err());
    }
}
