//! Vectors on the wire: a JSON array of numbers, or — so clients can skip
//! printing and parsing floats on big upserts and queries — a string of
//! standard base64 over the little-endian `f32` bytes (numpy's
//! `v.astype("<f4").tobytes()`). A columnar upsert may also send all its
//! vectors as one such string, row after row.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One vector as a request carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorIn {
    /// `[0.1, 0.2, …]`.
    Numbers(Vec<f64>),
    /// Base64 of little-endian `f32`s.
    Base64(String),
}

impl VectorIn {
    /// Its components as `f32`s: exactly `dim` of them, all finite, or an
    /// error naming `field` (`field[i]` for a bad component).
    pub fn decode(&self, dim: usize, field: &str) -> Result<Vec<f32>> {
        let values = match self {
            VectorIn::Numbers(v) => {
                check_len(v.len(), dim, field)?;
                v.iter().map(|x| *x as f32).collect()
            }
            VectorIn::Base64(text) => decode_base64(text, field)?,
        };
        check_len(values.len(), dim, field)?;
        check_finite(&values, field)?;
        Ok(values)
    }
}

/// All vectors of a columnar upsert.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorsIn {
    /// One entry per row.
    Each(Vec<VectorIn>),
    /// Every row's components, row after row, as one base64 string.
    Packed(String),
}

impl VectorsIn {
    /// `n` vectors of `dim` finite components, flattened row by row, or an
    /// error naming `field` (`field[i]` for a bad row).
    pub fn decode(&self, n: usize, dim: usize, field: &str) -> Result<Vec<f32>> {
        match self {
            VectorsIn::Each(each) => {
                if each.len() != n {
                    return Err(Error::invalid(
                        field,
                        format!("has {} vectors for {n} ids", each.len()),
                    ));
                }
                let mut out = Vec::with_capacity(n * dim);
                for (i, v) in each.iter().enumerate() {
                    out.extend(v.decode(dim, &format!("{field}[{i}]"))?);
                }
                Ok(out)
            }
            VectorsIn::Packed(text) => {
                let values = decode_base64(text, field)?;
                if values.len() != n * dim {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "holds {} floats; {n} ids of dimension {dim} need {}",
                            values.len(),
                            n * dim
                        ),
                    ));
                }
                for (i, row) in values.chunks_exact(dim.max(1)).enumerate() {
                    check_finite(row, &format!("{field}[{i}]"))?;
                }
                Ok(values)
            }
        }
    }
}

fn check_len(len: usize, dim: usize, field: &str) -> Result<()> {
    if len != dim {
        return Err(Error::invalid(
            field,
            format!("expected {dim} components (the collection's dimension), got {len}"),
        ));
    }
    Ok(())
}

fn check_finite(values: &[f32], field: &str) -> Result<()> {
    match values.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::invalid(
            format!("{field}[{i}]"),
            "components must be finite 32-bit floats",
        )),
        None => Ok(()),
    }
}

fn decode_base64(text: &str, field: &str) -> Result<Vec<f32>> {
    let bytes = STANDARD.decode(text).map_err(|e| {
        Error::invalid(
            field,
            format!("not a JSON array of numbers nor standard base64 of little-endian f32s: {e}"),
        )
    })?;
    if bytes.len() % 4 != 0 {
        return Err(Error::invalid(
            field,
            format!(
                "base64 decodes to {} bytes, not a whole number of 4-byte floats",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Base64 of little-endian `f32`s, the inverse of a `VectorIn::Base64`.
pub fn encode_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

/// How a response carries vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorEncoding {
    /// JSON arrays of numbers.
    #[default]
    Json,
    /// Base64 strings of little-endian `f32`s.
    Base64,
}

/// A vector in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorOut {
    /// `[0.1, 0.2, …]`.
    Numbers(Vec<f32>),
    /// Base64 of little-endian `f32`s.
    Base64(String),
}

impl VectorOut {
    /// `values` in `encoding`.
    pub fn new(values: Vec<f32>, encoding: VectorEncoding) -> Self {
        match encoding {
            VectorEncoding::Json => VectorOut::Numbers(values),
            VectorEncoding::Base64 => VectorOut::Base64(encode_base64(&values)),
        }
    }
}

struct VectorVisitor;

impl<'de> Visitor<'de> for VectorVisitor {
    type Value = VectorIn;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers or a base64 string of little-endian f32s")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<VectorIn, E> {
        Ok(VectorIn::Base64(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<VectorIn, E> {
        Ok(VectorIn::Base64(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<VectorIn, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16_384));
        while let Some(x) = seq.next_element::<f64>()? {
            out.push(x);
        }
        Ok(VectorIn::Numbers(out))
    }
}

impl<'de> Deserialize<'de> for VectorIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(VectorVisitor)
    }
}

impl Serialize for VectorIn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            VectorIn::Numbers(v) => v.serialize(s),
            VectorIn::Base64(t) => t.serialize(s),
        }
    }
}

struct VectorsVisitor;

impl<'de> Visitor<'de> for VectorsVisitor {
    type Value = VectorsIn;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of vectors or one base64 string of every row's little-endian f32s")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<VectorsIn, E> {
        Ok(VectorsIn::Packed(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<VectorsIn, E> {
        Ok(VectorsIn::Packed(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<VectorsIn, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
        while let Some(v) = seq.next_element::<VectorIn>()? {
            out.push(v);
        }
        Ok(VectorsIn::Each(out))
    }
}

impl<'de> Deserialize<'de> for VectorsIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(VectorsVisitor)
    }
}

impl Serialize for VectorsIn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            VectorsIn::Each(v) => v.serialize(s),
            VectorsIn::Packed(t) => t.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::Invalid { field, .. } => field,
            other => panic!("not invalid: {other}"),
        }
    }

    #[test]
    fn base64_and_numbers_decode_alike() {
        let v = [0.5f32, -1.25, 3.0];
        let text = encode_base64(&v);
        let a: VectorIn = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        let b: VectorIn = serde_json::from_str("[0.5, -1.25, 3]").unwrap();
        assert_eq!(a.decode(3, "vector").unwrap(), v);
        assert_eq!(b.decode(3, "vector").unwrap(), v);
        let packed: VectorsIn =
            serde_json::from_str(&format!("\"{}\"", encode_base64(&[1.0, 2.0, 3.0, 4.0]))).unwrap();
        assert_eq!(packed.decode(2, 2, "v").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let mixed: VectorsIn =
            serde_json::from_str(&format!("[[1,2], \"{}\"]", encode_base64(&[3.0, 4.0]))).unwrap();
        assert_eq!(mixed.decode(2, 2, "v").unwrap(), [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn bad_vectors_name_the_field() {
        let nan = VectorIn::Base64(encode_base64(&[1.0, f32::NAN]));
        assert_eq!(field_of(nan.decode(2, "vector").unwrap_err()), "vector[1]");
        let short = VectorIn::Base64(encode_base64(&[1.0]));
        assert_eq!(field_of(short.decode(2, "vector").unwrap_err()), "vector");
        let junk = VectorIn::Base64("not base64!".into());
        assert_eq!(field_of(junk.decode(2, "vector").unwrap_err()), "vector");
        let ragged = VectorIn::Base64(STANDARD.encode([0u8; 5]));
        assert_eq!(field_of(ragged.decode(2, "vector").unwrap_err()), "vector");
        let packed = VectorsIn::Packed(encode_base64(&[1.0, 2.0, f32::INFINITY, 4.0]));
        assert_eq!(field_of(packed.decode(2, 2, "v").unwrap_err()), "v[1][0]");
        let wrong_n = VectorsIn::Packed(encode_base64(&[1.0, 2.0]));
        assert_eq!(field_of(wrong_n.decode(2, 2, "v").unwrap_err()), "v");
        let big = VectorIn::Numbers(vec![1e300, 0.0]);
        assert_eq!(field_of(big.decode(2, "vector").unwrap_err()), "vector[0]");
    }

    #[test]
    fn output_encodes_as_asked() {
        let out = VectorOut::new(vec![1.0, 2.0], VectorEncoding::Base64);
        let VectorOut::Base64(text) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(
            VectorIn::Base64(text.clone()).decode(2, "v").unwrap(),
            [1.0, 2.0]
        );
        assert_eq!(
            serde_json::to_string(&VectorOut::new(vec![1.0], VectorEncoding::Json)).unwrap(),
            "[1.0]"
        );
    }
}
