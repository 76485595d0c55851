//! NumPy `.npy` files (format 1.0 to 3.0): the header, and rows read as
//! byte ranges so a big file is never loaded whole.

use crate::error::{Error, Result};

/// An element type this reader takes (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `<i4`
    I32,
    /// `<i8`
    I64,
    /// `<u4`
    U32,
    /// `<u8`
    U64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

/// What an `.npy` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The element type.
    pub dtype: Dtype,
    /// Rows (the first dimension).
    pub rows: u64,
    /// Elements per row (1 for a 1-D array).
    pub cols: usize,
    /// Where the data starts.
    pub data_offset: u64,
}

impl Header {
    /// The byte range of rows `start..end` (within the file: `parse_header`
    /// checked that every row fits).
    pub fn byte_range(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        let row = (self.cols * self.dtype.size()) as u64;
        self.data_offset + start * row..self.data_offset + end * row
    }

    /// Bytes of data the shape calls for, if that fits a u64.
    fn data_bytes(&self) -> Option<u64> {
        (self.cols as u64)
            .checked_mul(self.dtype.size() as u64)?
            .checked_mul(self.rows)
    }
}

/// Parses the header at the start of an `.npy` file (`prefix` holds at
/// least its first bytes; 64 KiB always suffices) of `size` bytes.
pub fn parse_header(prefix: &[u8], size: u64, file: &str) -> Result<Header> {
    let bad = |why: String| Error::invalid(file, format!("not a usable .npy file: {why}"));
    if prefix.len() < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Err(bad("no \\x93NUMPY magic".into()));
    }
    let (len, start) = match prefix[6] {
        1 => (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10),
        2 | 3 if prefix.len() >= 12 => (
            u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("format version {v}"))),
    };
    let text = prefix
        .get(start..start + len)
        .ok_or_else(|| bad("header longer than the file".into()))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("header is not text".into()))?;
    let value = |key: &str| -> Option<&str> {
        let at = text.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = value("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad("no descr".into()))?;
    let dtype = match descr {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i4" => Dtype::I32,
        "<i8" => Dtype::I64,
        "<u4" => Dtype::U32,
        "<u8" => Dtype::U64,
        other => {
            return Err(bad(format!(
                "element type {other}; use little-endian float32/float64 or (u)int32/64"
            )));
        }
    };
    if value("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(bad(
            "Fortran order; save a C-order array (np.ascontiguousarray)".into(),
        ));
    }
    let shape = value("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape".into()))?;
    let dims: Vec<u64> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("shape ({shape})"))))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims[..] {
        [rows] => (rows, 1),
        [rows, cols] if (1..=65_536).contains(&cols) => (rows, cols as usize),
        [_, cols] => return Err(bad(format!("{cols} columns; vectors have 1 to 65536"))),
        _ => return Err(bad(format!("shape ({shape}); need 1 or 2 dimensions"))),
    };
    let header = Header {
        dtype,
        rows,
        cols,
        data_offset: (start + len) as u64,
    };
    let data = size.saturating_sub(header.data_offset);
    if header.data_bytes() != Some(data) || header.data_offset > size {
        return Err(bad(format!(
            "shape ({shape}) of {descr} does not match the file's {data} bytes of data"
        )));
    }
    Ok(header)
}

/// Elements of `bytes` as f32 (floats) — for vectors.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        Dtype::U32 => bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::U64 => bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    }
}

/// Elements of `bytes` as i128 (integers, for ids; floats are refused by
/// the caller).
pub fn to_i128(dtype: Dtype, bytes: &[u8]) -> Vec<i128> {
    match dtype {
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|b| i128::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::U32 => bytes
            .chunks_exact(4)
            .map(|b| i128::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|b| i128::from(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
            .collect(),
        Dtype::U64 => bytes
            .chunks_exact(8)
            .map(|b| i128::from(u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
            .collect(),
        Dtype::F32 | Dtype::F64 => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(descr: &str, shape: &str, data: usize) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(vec![0u8; data]);
        out
    }

    #[test]
    fn headers_parse_and_lie_detected() {
        let f = file("<f4", "(3, 2)", 24);
        let h = parse_header(&f, f.len() as u64, "v.npy").unwrap();
        let offset = (f.len() - 24) as u64;
        assert_eq!(
            (h.dtype, h.rows, h.cols, h.data_offset),
            (Dtype::F32, 3, 2, offset)
        );
        assert_eq!(offset % 64, 0, "numpy aligns the data");
        assert_eq!(h.byte_range(1, 2), offset + 8..offset + 16);
        let ids = file("<i8", "(3,)", 24);
        let h = parse_header(&ids, ids.len() as u64, "ids.npy").unwrap();
        assert_eq!((h.dtype, h.rows, h.cols), (Dtype::I64, 3, 1));
        let short = file("<f4", "(3, 2)", 20);
        assert!(parse_header(&short, short.len() as u64, "v.npy").is_err());
        let huge = file("<f4", "(4611686018427387904, 4)", 0);
        assert!(
            parse_header(&huge, huge.len() as u64, "v.npy").is_err(),
            "overflow"
        );
        let no_columns = file("<f4", "(1000000000000, 0)", 0);
        assert!(parse_header(&no_columns, no_columns.len() as u64, "v.npy").is_err());
        let big_endian = file(">f4", "(3, 2)", 24);
        assert!(parse_header(&big_endian, big_endian.len() as u64, "v.npy").is_err());
        assert!(parse_header(b"PK\x03\x04 not numpy", 16, "v.npy").is_err());
    }

    #[test]
    fn elements_convert() {
        let bytes: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(to_f32(Dtype::F64, &bytes), vec![1.5, -2.0]);
        let ints: Vec<u8> = [-1i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(to_i128(Dtype::I64, &ints), vec![-1, 7]);
    }
}
