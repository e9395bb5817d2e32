//! NumPy `.npy` arrays (little-endian float32, C order) and `.npz` archives.

use std::io::Read;

#[derive(Debug, thiserror::Error)]
#[error("cannot read NumPy data: {0}")]
pub struct NpyError(pub String);

/// Shape and values of a little-endian float32 array.
pub fn parse_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let err = |m: &str| NpyError(m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("missing the NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(NpyError(format!("unsupported version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    if !header.contains("'descr': '<f4'") {
        return Err(NpyError(format!(
            "expected little-endian float32, header: {header}"
        )));
    }
    if header.contains("'fortran_order': True") {
        return Err(err("Fortran order is not supported"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| err("no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| NpyError(format!("bad shape `{shape_text}`")))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() < n * 4 {
        return Err(err("truncated data"));
    }
    let values = data[..n * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

/// One array from an `.npz` archive.
pub fn npz_f32(archive: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(|e| NpyError(e.to_string()))?;
    let mut file = zip
        .by_name(&format!("{name}.npy"))
        .map_err(|e| NpyError(format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| NpyError(e.to_string()))?;
    parse_f32(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_float32_matrix() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1f32, 2., 3., 4., 5., 6.] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let (shape, values) = parse_f32(&bytes).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(values[5], 6.0);
        assert!(parse_f32(&bytes[..20]).is_err());
        assert!(parse_f32(b"not numpy at all").is_err());
    }
}
