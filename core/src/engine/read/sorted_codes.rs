//! Codes in sorted order: an indexed segment's codes rearranged in the
//! order of one attribute's sorted values ([`SortedColumn`]), kept chunk
//! by chunk in the decoded cache. The rows a lookup in that column finds
//! are runs of positions, so their codes are runs of contiguous bytes: a
//! new selective filter scores its rows without a random read per row
//! among the clusters' codes. Only for codes scored alike in every
//! cluster (SQ8). Under L2 a chunk keeps each code's norm after its
//! codes ([`IvfHeader::code_norm`](crate::index::IvfHeader)), so a run is
//! scored by one integer inner product a code.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::IndexedSegment;
use super::sorted::SortedColumn;
use crate::cache::{Decoded, DecodedCache, DecodedKey, Part};
use crate::segment::RangeSource;

/// Positions per kept chunk (2 MiB of 128-byte codes).
const CHUNK: usize = 16 * 1024;

/// At most this share of the decoded cache goes to one column's codes.
const SHARE_OF_CACHE: usize = 4;

/// The codes of a sorted column's positions, for the chunks asked.
pub(crate) struct SortedCodes {
    column: Arc<SortedColumn>,
    chunks: HashMap<usize, Bytes>,
    code_len: usize,
    norm_len: usize,
}

impl SortedCodes {
    /// The kept codes of `ranges` of the positions of `column` (data-file
    /// field `field`); `None` when the segment's codes depend on their
    /// cluster or a chunk is not kept.
    pub(crate) fn get(
        source: &Arc<dyn RangeSource>,
        segment: &IndexedSegment,
        field: usize,
        column: Arc<SortedColumn>,
        ranges: &[Range<usize>],
    ) -> Option<SortedCodes> {
        if !segment.header.codes_span_clusters() {
            return None;
        }
        let decoded = source.decoded()?;
        let mut chunks = HashMap::new();
        for r in ranges.iter().filter(|r| r.start < r.end) {
            for chunk in r.start / CHUNK..=(r.end - 1) / CHUNK {
                if let std::collections::hash_map::Entry::Vacant(slot) = chunks.entry(chunk) {
                    slot.insert(kept_chunk(decoded, segment, field, column.len(), chunk)?);
                }
            }
        }
        Some(SortedCodes {
            column,
            chunks,
            code_len: segment.header.code_len(),
            norm_len: segment.header.norm_len(),
        })
    }

    /// Per run of `ranges` within one chunk: its rows, their codes one
    /// after another and their norms likewise (empty when the metric
    /// needs none); `ranges` within those [`SortedCodes::get`] had.
    pub(crate) fn runs(&self, ranges: &[Range<usize>]) -> Vec<(&[u32], &[u8], &[u8])> {
        let rows = self.column.rows();
        let mut out = Vec::new();
        for r in ranges {
            let mut at = r.start;
            while at < r.end {
                let chunk = at / CHUNK;
                let base = chunk * CHUNK;
                let end = r.end.min(base + CHUNK);
                let (codes, norms) = match self.chunks.get(&chunk) {
                    Some(kept) => {
                        let n = chunk_len(self.column.len(), chunk);
                        let norms_at = n * self.code_len;
                        (
                            kept.get((at - base) * self.code_len..(end - base) * self.code_len),
                            kept.get(
                                norms_at + (at - base) * self.norm_len
                                    ..norms_at + (end - base) * self.norm_len,
                            ),
                        )
                    }
                    None => (None, None),
                };
                if let (Some(codes), Some(norms), Some(rows)) = (codes, norms, rows.get(at..end)) {
                    out.push((rows, codes, norms));
                }
                at = end;
            }
        }
        out
    }
}

/// Positions in chunk `chunk` of a column of `len` positions.
fn chunk_len(len: usize, chunk: usize) -> usize {
    len.saturating_sub(chunk * CHUNK).min(CHUNK)
}

/// Chunk `chunk` of the codes of a sorted column of `len` positions
/// (data-file field `field`), if kept whole.
fn kept_chunk(
    decoded: &DecodedCache,
    segment: &IndexedSegment,
    field: usize,
    len: usize,
    chunk: usize,
) -> Option<Bytes> {
    match decoded.get(&key(segment, field, chunk))? {
        Decoded::Bytes(codes)
            if codes.len()
                == chunk_len(len, chunk)
                    * (segment.header.code_len() + segment.header.norm_len()) =>
        {
            Some(codes)
        }
        _ => None,
    }
}

/// Where chunk `chunk` of field `field`'s sorted codes is kept: under the
/// index file (its codes), by the data file's field.
fn key(segment: &IndexedSegment, field: usize, chunk: usize) -> DecodedKey {
    segment.decoded_key(Part::SortedCodes {
        column: field as u32,
        chunk: chunk as u32,
    })
}

/// Whether the codes of `column` (data-file field `field`) may be kept:
/// codes scored alike in every cluster, and all of them within a share
/// of the decoded cache. Some chunks may be kept already or not.
pub(crate) fn wanted(
    source: &Arc<dyn RangeSource>,
    segment: &IndexedSegment,
    field: usize,
    column: &SortedColumn,
) -> bool {
    let Some(decoded) = source.decoded() else {
        return false;
    };
    let bytes = segment.header.code_len() + segment.header.norm_len();
    segment.header.codes_span_clusters()
        && column.len() * bytes <= decoded.capacity() / SHARE_OF_CACHE
        && decoded.fits(CHUNK * bytes)
        && (0..column.len().div_ceil(CHUNK))
            .any(|chunk| kept_chunk(decoded, segment, field, column.len(), chunk).is_none())
}

/// Builds and keeps the chunks of `column`'s codes not kept yet (see
/// [`wanted`]), from the clusters' code blocks in the decoded cache;
/// nothing when one of those is not there (warm-up loads them all).
/// Rows with equal values sit in row order in every sort of a column, so
/// chunks built at different times agree.
pub(crate) fn build(
    source: &Arc<dyn RangeSource>,
    segment: &IndexedSegment,
    field: usize,
    column: &SortedColumn,
) {
    let Some(decoded) = source.decoded() else {
        return;
    };
    let header = &segment.header;
    let (code_len, norm_len) = (header.code_len(), header.norm_len());
    // Stops at the first cluster not kept: cheap when few are.
    let Some(blocks) = (0..header.nlist())
        .map(|c| segment.decoded_codes(source, c))
        .collect::<Option<Vec<Bytes>>>()
    else {
        return;
    };
    let rows = column.rows();
    for chunk in 0..rows.len().div_ceil(CHUNK) {
        if kept_chunk(decoded, segment, field, rows.len(), chunk).is_some() {
            continue;
        }
        let n = chunk_len(rows.len(), chunk);
        let mut codes = Vec::with_capacity(n * (code_len + norm_len));
        for &row in &rows[chunk * CHUNK..chunk * CHUNK + n] {
            let c = header.cluster_of(row as usize);
            // (A damaged header's offsets need not start at 0.)
            let Some(at) = (row as usize).checked_sub(header.offsets[c] as usize) else {
                return;
            };
            let at = at * code_len;
            match blocks[c].get(at..at + code_len) {
                Some(code) => codes.extend_from_slice(code),
                None => return,
            }
        }
        let norms = header.code_norms(&codes);
        codes.extend_from_slice(&norms);
        decoded.insert(
            key(segment, field, chunk),
            Decoded::Bytes(Bytes::from(codes)),
        );
    }
}
