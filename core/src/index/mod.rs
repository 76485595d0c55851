//! The ANN index of sealed segments: IVF with 8-bit scalar-quantised codes
//! and full-precision re-ranking, laid out for object storage (a small
//! header, then one contiguous code block per cluster).

mod ivf;
mod kmeans;

pub(crate) use ivf::{
    EXACT_FILTER_ROWS, IvfHeader, IvfIndex, IvfParams, SearchKnobs, default_rerank, rerank,
};
