//! IVF with SQ8 or RaBitQ codes: centroids, rows grouped by cluster,
//! compact codes per row, re-ranking at full precision.
//!
//! The data file of an indexed segment stores its rows cluster by cluster,
//! so cluster `c` is rows `offsets[c]..offsets[c+1]` there and one contiguous
//! block of codes (and of full-precision vectors) in the index file:
//!
//! ```text
//! "FLOEIVF2" u32 format u8 metric [3]pad u32 dim u32 nlist u64 rows u32 ncal
//! ncal × (u32 nprobe, f32 recall@10)      calibration: recall by nprobe
//! nlist × dim f32                         centroids
//! (nlist + 1) × u32                       row offsets of the clusters
//! dim × f32 min, dim × f32 scale          SQ8 parameters (format 2)
//!   or u64 rotation seed                  RaBitQ parameters (format 3)
//! rows × code_len u8                      codes, cluster-major
//! rows × dim f32                          vectors, cluster-major (re-rank)
//! ```
//! An SQ8 code is `dim` bytes (one per dimension, scaled to the segment's
//! range); a RaBitQ code one bit per dimension plus 8 bytes
//! ([`rabitq`]).
//! Everything before the codes is the header ([`IvfHeader`]): a cold query
//! reads it once, then only the code blocks of the clusters it probes, then
//! only the vectors of the candidates it re-ranks.

//!
//! | file | what |
//! |---|---|
//! | `format.rs` | the file layout: header parse/write, where codes and vectors are |
//! | `probe.rs` | the search: probe order, approximate distances, the one `ProbeLoop`, re-ranking |
//! | `build.rs` | k-means, the codes, the cluster-ordered rewrite, recall calibration |
//! | `rabitq.rs` | RaBitQ: rotation, codes, the bit-count distance estimate |

mod build;
mod format;
mod probe;
mod rabitq;

pub(crate) use format::{le_f32s, vectors_range};
pub(crate) use probe::{ProbeOrder, rerank};

use crate::catalog::{CodeKind, Metric};

/// Recall target of the default (automatic) search.
pub(super) const DEFAULT_RECALL_TARGET: f32 = 0.95;
/// The default of `search.exact_filter_rows`: up to this many matching rows
/// in a segment, a filtered search scores just those rows instead of
/// probing more clusters.
pub(crate) const EXACT_FILTER_ROWS: usize = 20_000;

#[derive(Debug, Clone)]
pub(crate) struct IvfParams {
    /// Clusters; default `√rows` clamped to 1…4096.
    pub nlist: Option<usize>,
    pub iterations: usize,
    /// Rows k-means trains on.
    pub train_sample: usize,
    /// Queries used to calibrate recall by nprobe.
    pub calibration_queries: usize,
    pub seed: u64,
    pub codes: CodeKind,
}

impl Default for IvfParams {
    fn default() -> Self {
        Self {
            nlist: None,
            iterations: 10,
            train_sample: 100_000,
            calibration_queries: 100,
            seed: 42,
            codes: CodeKind::Sq8,
        }
    }
}

/// How hard a search looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchKnobs {
    /// Clusters to probe; `None` picks from `recall_target`.
    pub nprobe: Option<usize>,
    /// Candidates re-ranked with full-precision vectors.
    pub rerank: Option<usize>,
    pub recall_target: f32,
}

impl Default for SearchKnobs {
    fn default() -> Self {
        Self {
            nprobe: None,
            rerank: None,
            recall_target: DEFAULT_RECALL_TARGET,
        }
    }
}

/// Everything a search needs before it touches codes or vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IvfHeader {
    pub metric: Metric,
    pub dim: usize,
    pub centroids: Vec<f32>,
    pub offsets: Vec<u32>,
    pub quantizer: Quantizer,
    /// `(nprobe, recall@10)` measured at build time, nprobe ascending.
    pub calibration: Vec<(u32, f32)>,
}

#[cfg(test)]
impl IvfHeader {
    /// One cluster of `rows` SQ8 codes around the origin, coded with `min`
    /// and `scale` (tests of scoring alone).
    pub(crate) fn sq8_one_cluster(
        metric: Metric,
        min: Vec<f32>,
        scale: Vec<f32>,
        rows: u32,
    ) -> IvfHeader {
        let dim = min.len();
        IvfHeader {
            metric,
            dim,
            centroids: vec![0.0; dim],
            offsets: vec![0, rows],
            quantizer: Quantizer::Sq8 { min, scale },
            calibration: Vec::new(),
        }
    }
}

/// How rows are coded for the approximate first pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Quantizer {
    /// 8 bits per dimension over the segment's range of each dimension.
    Sq8 { min: Vec<f32>, scale: Vec<f32> },
    /// One bit per dimension of the rotated residual from the centroid.
    RaBitQ(rabitq::RaBitQ),
}

/// A built index: the header and all codes, in memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IvfIndex {
    pub header: IvfHeader,
    pub codes: Vec<u8>,
}

impl std::ops::Deref for IvfIndex {
    type Target = IvfHeader;
    fn deref(&self) -> &IvfHeader {
        &self.header
    }
}

impl IvfHeader {
    pub(crate) fn nlist(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(crate) fn rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    /// Whether a row's code is scored the same whatever its cluster
    /// (SQ8; RaBitQ codes the residual from the cluster's centroid): then
    /// codes of rows of many clusters can be scored as one run.
    pub(crate) fn codes_span_clusters(&self) -> bool {
        matches!(self.quantizer, Quantizer::Sq8 { .. })
    }

    /// The cluster holding `row` (rows are stored cluster by cluster).
    pub(crate) fn cluster_of(&self, row: usize) -> usize {
        self.offsets
            .partition_point(|&start| start as usize <= row)
            .saturating_sub(1)
            .min(self.nlist().saturating_sub(1))
    }

    /// Bytes of one row's code.
    pub(crate) fn code_len(&self) -> usize {
        match &self.quantizer {
            Quantizer::Sq8 { .. } => self.dim,
            Quantizer::RaBitQ(q) => q.code_len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::build::BuiltIndex;
    use super::*;
    use crate::vector::QueryVector;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        (0..n)
            .flat_map(|i| {
                centres[i % 20]
                    .iter()
                    .map(|x| x + rng.random_range(-0.2f32..0.2))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn params(codes: CodeKind) -> IvfParams {
        IvfParams {
            codes,
            ..IvfParams::default()
        }
    }

    #[test]
    fn rows_belong_to_the_cluster_whose_range_holds_them() {
        let header = IvfHeader {
            metric: Metric::L2,
            dim: 1,
            centroids: vec![0.0; 4],
            // Cluster 1 and 3 are empty.
            offsets: vec![0, 5, 5, 10, 10],
            quantizer: Quantizer::Sq8 {
                min: vec![0.0],
                scale: vec![1.0],
            },
            calibration: Vec::new(),
        };
        let of: Vec<usize> = (0..10).map(|r| header.cluster_of(r)).collect();
        assert_eq!(of, [0, 0, 0, 0, 0, 2, 2, 2, 2, 2]);
        assert!(header.codes_span_clusters());
    }

    #[test]
    fn round_trips_through_bytes_and_rejects_damage() {
        for codes in [CodeKind::Sq8, CodeKind::Rabitq] {
            round_trip(codes);
        }
    }

    fn round_trip(codes: CodeKind) {
        let v = data(500, 8, 1);
        let BuiltIndex { index, order } =
            IvfIndex::build(&v, 8, Metric::L2, &params(codes)).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..500).collect::<Vec<u32>>(),
            "the order is a permutation"
        );
        let clustered: Vec<f32> = order
            .iter()
            .flat_map(|r| v[*r as usize * 8..(*r as usize + 1) * 8].to_vec())
            .collect();
        let bytes = index.to_bytes(&v, &order);
        assert_eq!(bytes.len() as u64, index.file_len());
        let (back, vectors) = IvfIndex::from_bytes(&bytes).unwrap();
        assert_eq!((back, vectors), (index.clone(), clustered.clone()));
        let header = IvfHeader::parse(&bytes[..index.header_len() as usize]).unwrap();
        assert_eq!(header, index.header);
        let c = 3;
        let codes =
            &bytes[header.codes_range(c).start as usize..header.codes_range(c).end as usize];
        let (first, len) = (header.offsets[c] as usize, header.code_len());
        assert_eq!(
            codes,
            &index.codes[first * len..header.offsets[c + 1] as usize * len]
        );
        let row = first + 1;
        let code = header.row_codes_range(row);
        assert_eq!(
            &bytes[code.start as usize..code.end as usize],
            &index.codes[row * len..(row + 1) * len]
        );
        let at = header.vector_range(row);
        assert_eq!(
            le_f32s(&bytes[at.start as usize..at.end as usize]),
            clustered[row * 8..(row + 1) * 8]
        );
        assert!(IvfIndex::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(IvfHeader::parse(&bytes[..index.header_len() as usize - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(IvfIndex::from_bytes(&bad).is_err());
    }

    #[test]
    fn recall_is_calibrated_and_reached_for_every_metric_and_code() {
        for (metric, codes) in [Metric::L2, Metric::Cosine, Metric::Ip]
            .into_iter()
            .flat_map(|m| [(m, CodeKind::Sq8), (m, CodeKind::Rabitq)])
        {
            let (n, dim) = (4000, 16);
            let v = data(n, dim, 2);
            let BuiltIndex { index, order, .. } =
                IvfIndex::build(&v, dim, metric, &params(codes)).unwrap();
            let clustered: Vec<f32> = order
                .iter()
                .flat_map(|r| v[*r as usize * dim..(*r as usize + 1) * dim].to_vec())
                .collect();
            assert!(
                index.calibration.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                index.calibration
            );
            let nprobe = index.nprobe_for(0.95);
            let norms = index.code_norms(&index.codes);
            let mut rng = SmallRng::seed_from_u64(9);
            let (mut found, mut total) = (0, 0);
            for _ in 0..50 {
                // A stored row moved further than the blobs' own spread.
                let r = rng.random_range(0..n);
                let q: Vec<f32> = (0..dim)
                    .map(|d| v[r * dim + d] + rng.random_range(-0.4f32..0.4))
                    .collect();
                let q = QueryVector::new(q, metric);
                let mut all: Vec<(f32, u32)> = (0..n)
                    .map(|r| (q.distance(&clustered[r * dim..(r + 1) * dim]), r as u32))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0));
                let want: Vec<u32> = all[..10].iter().map(|x| x.1).collect();
                let row = |r: u32| clustered.get(r as usize * dim..(r as usize + 1) * dim);
                let got = index.search_rows(&q, 10, nprobe, 100, &row, &|_| true, &norms);
                found += got.iter().filter(|(_, r)| want.contains(r)).count();
                total += 10;
            }
            let recall = found as f32 / total as f32;
            assert!(
                recall >= 0.9,
                "{metric:?} {codes:?}: recall {recall} at nprobe {nprobe} ({:?})",
                index.calibration
            );
        }
    }
}
