//! The few NumPy `.npz` members the model needs: C-order little-endian
//! uint8, float32 and a float64 scalar.

use crate::Error;
use std::io::Read;

pub struct Archive {
    zip: zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
}

impl Archive {
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        Ok(Archive {
            zip: zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .map_err(|e| Error::Format(format!("weights.npz: {e}")))?,
        })
    }

    fn member(&mut self, name: &str) -> Result<Vec<u8>, Error> {
        let mut file = self
            .zip
            .by_name(&format!("{name}.npy"))
            .map_err(|e| Error::Format(format!("weights.npz has no {name}: {e}")))?;
        let mut out = Vec::with_capacity(file.size() as usize);
        file.read_to_end(&mut out)
            .map_err(|e| Error::Format(format!("weights.npz, {name}: {e}")))?;
        Ok(out)
    }

    pub fn u8(&mut self, name: &str) -> Result<(Vec<usize>, Vec<u8>), Error> {
        let bytes = self.member(name)?;
        let (shape, data) = parse(&bytes, "|u1", name)?;
        let n: usize = shape.iter().product();
        Ok((shape, data[..n].to_vec()))
    }

    pub fn f32(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
        let bytes = self.member(name)?;
        let (shape, data) = parse(&bytes, "<f4", name)?;
        let n: usize = shape.iter().product();
        let values = data[..n * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((shape, values))
    }

    pub fn f64_scalar(&mut self, name: &str) -> Result<f64, Error> {
        let bytes = self.member(name)?;
        let (_, data) = parse(&bytes, "<f8", name)?;
        let b: [u8; 8] = data
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Format(format!("{name} is empty")))?;
        Ok(f64::from_le_bytes(b))
    }
}

/// Shape and raw data of an array of `descr`, checked long enough.
fn parse<'a>(bytes: &'a [u8], descr: &str, name: &str) -> Result<(Vec<usize>, &'a [u8]), Error> {
    let bad = |m: String| Error::Format(format!("{name}: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the NUMPY magic".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported version {v}"))),
    };
    let header = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("bad header".into()))?;
    if !header.contains(&format!("'descr': '{descr}'")) {
        return Err(bad(format!("expected {descr}, header: {header}")));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order".into()));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape".into()))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| bad(format!("bad shape {shape_text}")))
        })
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + len..];
    let width = match descr {
        "|u1" => 1,
        "<f4" => 4,
        _ => 8,
    };
    if data.len() < shape.iter().product::<usize>() * width {
        return Err(bad("truncated data".into()));
    }
    Ok((shape, data))
}
