//! The ANN index of sealed segments: IVF with 8-bit scalar-quantised codes
//! and full-precision re-ranking, laid out for object storage (a small
//! header, then one contiguous code block per cluster).

mod ivf;
mod kmeans;

pub(crate) use ivf::{
    EXACT_FILTER_ROWS, IvfHeader, IvfIndex, IvfParams, ProbeOrder, SearchKnobs, le_f32s, rerank,
    vectors_range,
};

/// `work` over contiguous shares of `items` (with the index of each
/// share's first item), one thread per core; results in order.
pub(crate) fn on_all_cores<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T], usize) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(16);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(i, share)| s.spawn(move || work(share, i * chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
