//! The index file's layout: the header (parsed by a cold query before it
//! touches anything else) and where each cluster's codes and each row's
//! vector are.

use arrow::datatypes::ToByteSlice;

use super::rabitq::RaBitQ;
use super::{IvfHeader, IvfIndex, Quantizer};
use crate::catalog::Metric;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"FLOEIVF2";
/// Format 2: SQ8 codes; format 3: RaBitQ codes.
const FORMAT_SQ8: u32 = 2;
const FORMAT_RABITQ: u32 = 3;
/// Bytes before the calibration table.
const FIXED_HEADER: usize = 36;

impl IvfHeader {
    /// Bytes of the header: everything before the codes.
    pub(crate) fn header_len(&self) -> u64 {
        let quantizer = match &self.quantizer {
            Quantizer::Sq8 { .. } => self.dim * 8,
            Quantizer::RaBitQ(_) => 8,
        };
        (FIXED_HEADER
            + self.calibration.len() * 8
            + self.nlist() * self.dim * 4
            + (self.nlist() + 1) * 4
            + quantizer) as u64
    }

    /// Where cluster `c`'s codes are in the index file.
    pub(crate) fn codes_range(&self, c: usize) -> std::ops::Range<u64> {
        let row_start = |r: u32| self.row_codes_range(r as usize).start;
        row_start(self.offsets[c])..row_start(self.offsets[c + 1])
    }

    /// Where row `row`'s code is in the index file (rows are stored by
    /// cluster, so a cluster's codes are its rows' codes in order).
    pub(crate) fn row_codes_range(&self, row: usize) -> std::ops::Range<u64> {
        let (len, h) = (self.code_len() as u64, self.header_len());
        h + row as u64 * len..h + (row as u64 + 1) * len
    }

    /// Where row `row`'s full-precision vector is in the index file.
    pub(crate) fn vector_range(&self, row: usize) -> std::ops::Range<u64> {
        let row = row as u64;
        vectors_range(
            self.file_len(),
            self.rows() as u64,
            self.dim as u64,
            row..row + 1,
        )
    }

    /// Where all the full-precision vectors are in the index file.
    pub(crate) fn vectors_section(&self) -> std::ops::Range<u64> {
        let rows = self.rows() as u64;
        vectors_range(self.file_len(), rows, self.dim as u64, 0..rows)
    }

    /// Size of the whole index file.
    pub(crate) fn file_len(&self) -> u64 {
        self.header_len() + self.rows() as u64 * (self.code_len() + self.dim * 4) as u64
    }

    /// Parses a header (the first [`IvfHeader::header_len`] bytes; more is
    /// ignored).
    pub(crate) fn parse(bytes: &[u8]) -> Result<IvfHeader> {
        let bad = |what: &str| Error::corrupt("ivf index", what);
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("bad magic (an index of an older format: rebuild it)"));
        }
        let format = r.u32().ok_or_else(|| bad("too short"))?;
        if format != FORMAT_SQ8 && format != FORMAT_RABITQ {
            return Err(bad("unknown format"));
        }
        let metric = match r.take(4).ok_or_else(|| bad("too short"))?[0] {
            0 => Metric::L2,
            1 => Metric::Cosine,
            2 => Metric::Ip,
            _ => return Err(bad("unknown metric")),
        };
        let dim = r.u32().ok_or_else(|| bad("too short"))? as usize;
        let nlist = r.u32().ok_or_else(|| bad("too short"))? as usize;
        let rows = r.u64().ok_or_else(|| bad("too short"))? as usize;
        let ncal = r.u32().ok_or_else(|| bad("too short"))? as usize;
        if dim == 0 || nlist == 0 || ncal > 64 {
            return Err(bad("bad header"));
        }
        let mut calibration = Vec::with_capacity(ncal);
        for _ in 0..ncal {
            calibration.push((
                r.u32().ok_or_else(|| bad("too short"))?,
                r.f32().ok_or_else(|| bad("too short"))?,
            ));
        }
        let centroids = r
            .f32s(nlist.checked_mul(dim).ok_or_else(|| bad("overflow"))?)
            .ok_or_else(|| bad("too short"))?;
        let offsets: Vec<u32> = (0..=nlist)
            .map(|_| r.u32())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("too short"))?;
        let quantizer = if format == FORMAT_SQ8 {
            Quantizer::Sq8 {
                min: r.f32s(dim).ok_or_else(|| bad("too short"))?,
                scale: r.f32s(dim).ok_or_else(|| bad("too short"))?,
            }
        } else {
            let seed = r.u64().ok_or_else(|| bad("too short"))?;
            Quantizer::RaBitQ(RaBitQ::new(seed, dim, nlist))
        };
        if offsets.windows(2).any(|w| w[0] > w[1]) || offsets.last().copied() != Some(rows as u32) {
            return Err(bad("bad cluster offsets"));
        }
        Ok(IvfHeader {
            metric,
            dim,
            centroids,
            offsets,
            quantizer,
            calibration,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        let format = match self.quantizer {
            Quantizer::Sq8 { .. } => FORMAT_SQ8,
            Quantizer::RaBitQ(_) => FORMAT_RABITQ,
        };
        out.extend_from_slice(&format.to_le_bytes());
        out.push(match self.metric {
            Metric::L2 => 0,
            Metric::Cosine => 1,
            Metric::Ip => 2,
        });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.nlist() as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows() as u64).to_le_bytes());
        out.extend_from_slice(&(self.calibration.len() as u32).to_le_bytes());
        for (n, r) in &self.calibration {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&r.to_le_bytes());
        }
        for v in &self.centroids {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        match &self.quantizer {
            Quantizer::Sq8 { min, scale } => {
                for v in min.iter().chain(scale) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Quantizer::RaBitQ(q) => out.extend_from_slice(&q.seed.to_le_bytes()),
        }
    }
}

impl IvfIndex {
    /// The index file: header, codes, then `vectors` (the clustered
    /// full-precision vectors, row-major).
    pub(crate) fn to_bytes(&self, vectors: &[f32], order: &[u32]) -> Vec<u8> {
        let dim = self.dim;
        let mut out = Vec::with_capacity(self.file_len() as usize);
        self.header.write(&mut out);
        out.extend_from_slice(&self.codes);
        for r in order {
            let at = *r as usize * dim;
            // f32 in native order: little-endian, as Arrow (and this file) assume.
            out.extend_from_slice(vectors[at..at + dim].to_byte_slice());
        }
        out
    }

    /// Parses a whole index file: the index and its vectors.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<(IvfIndex, Vec<f32>)> {
        let header = IvfHeader::parse(bytes)?;
        if bytes.len() as u64 != header.file_len() {
            return Err(Error::corrupt(
                "ivf index",
                format!("{} bytes, expected {}", bytes.len(), header.file_len()),
            ));
        }
        let h = header.header_len() as usize;
        let n = header.rows() * header.code_len();
        let codes = bytes[h..h + n].to_vec();
        let vectors = le_f32s(&bytes[h + n..]);
        Ok((IvfIndex { header, codes }, vectors))
    }
}

/// Where the vectors of rows `rows` are in an index file of `file_len`
/// bytes, `total_rows` rows of `dim` dimensions: its last bytes, 4·dim a
/// row (whatever the codes before them).
pub(crate) fn vectors_range(
    file_len: u64,
    total_rows: u64,
    dim: u64,
    rows: std::ops::Range<u64>,
) -> std::ops::Range<u64> {
    let start = file_len.saturating_sub(total_rows * dim * 4);
    start + rows.start * dim * 4..start + rows.end * dim * 4
}

/// Little-endian f32s, as the index file stores them.
pub(crate) fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Option<f32> {
        self.u32().map(f32::from_bits)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn f32s(&mut self, n: usize) -> Option<Vec<f32>> {
        self.take(n.checked_mul(4)?).map(le_f32s)
    }
}
