//! `floe-bench lifecycle`: collections of several sizes loaded at default
//! settings, with the background indexer running as in `floe serve`: how
//! long until every row is served by an index, how many bytes the
//! lifecycle wrote for the bytes it keeps (write amplification), and warm
//! recall and latency at the default recall target, beside FAISS IVF-Flat.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use floe_core::Floe;
use floe_core::catalog::Metric;

use crate::ann::{
    faiss_reference, generate, generate_held_out, ground_truth, run_queries, top_10, upsert_ids,
    upsert_vectors,
};

pub struct LifecycleArgs {
    pub sizes: Vec<usize>,
    pub dim: usize,
    pub queries: usize,
    /// Upsert at most this many rows a second (steady ingest instead of a bulk load).
    pub rate: Option<usize>,
    /// After indexing: overwrite 30% and delete 10% of the rows, compact,
    /// and report storage before and after and recall after.
    pub churn: bool,
    /// A client querying all along (see [`QueryTimeline`]).
    pub query_during: bool,
    pub faiss: bool,
    pub out: PathBuf,
}

/// Warm recall@10 and latency percentiles (ms) of `queries` against
/// `truth` (ids), one query at a time.
async fn measure(
    floe: &Floe,
    dim: usize,
    queries: &[f32],
    truth: &[Vec<u64>],
) -> Result<(f64, f64, f64)> {
    let query = |q: &[f32]| top_10(q, None);
    for q in queries.chunks_exact(dim).take(20) {
        floe_core::api::query(floe, "life", query(q)).await?;
    }
    let mut explained = query(&queries[..dim]);
    explained.explain = true;
    if let Some(stats) = floe_core::api::query(floe, "life", explained)
        .await?
        .explain
    {
        let phases: Vec<String> = stats
            .phases
            .iter()
            .map(|p| format!("{} {:.2}", p.name, p.ms))
            .collect();
        println!("  one warm query (ms): {}", phases.join(", "));
    }
    let (recall, lat) = run_queries(floe, "life", queries.chunks_exact(dim), truth, query).await?;
    Ok((
        recall,
        crate::percentile(&lat, 0.5),
        crate::percentile(&lat, 0.99),
    ))
}

/// One client querying a collection as it is loaded and indexed: each
/// query's start and latency, and the collection's indexed rows and
/// segments as the loader saw them.
struct QueryTimeline {
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    client: tokio::task::JoinHandle<Result<Vec<(f64, f64)>>>,
    /// `(seconds, indexed rows, segments)` whenever either changed.
    marks: std::sync::Mutex<Vec<(f64, u64, usize)>>,
}

/// What [`QueryTimeline::stop`] gathered.
struct Timeline {
    /// `(seconds since the start, latency ms)` of each query.
    queries: Vec<(f64, f64)>,
    marks: Vec<(f64, u64, usize)>,
}

impl QueryTimeline {
    fn start(floe: Arc<Floe>, queries: Vec<f32>, dim: usize) -> Self {
        let started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let client = tokio::spawn(async move {
            let mut out = Vec::new();
            for q in queries.chunks_exact(dim).cycle() {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let answer = floe_core::api::query(&floe, "life", top_10(q, None)).await?;
                // From the first rows on: before them the collection is empty.
                if !answer.results.is_empty() || !out.is_empty() {
                    out.push((
                        (t - started).as_secs_f64(),
                        t.elapsed().as_secs_f64() * 1000.0,
                    ));
                }
            }
            Ok(out)
        });
        QueryTimeline {
            started,
            stop,
            client,
            marks: Default::default(),
        }
    }

    fn mark(&self, indexed_rows: u64, segments: usize) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks
            .last()
            .is_none_or(|m| (m.1, m.2) != (indexed_rows, segments))
        {
            marks.push((self.started.elapsed().as_secs_f64(), indexed_rows, segments));
        }
    }

    async fn stop(self) -> Result<Timeline> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let queries = self.client.await.context("query client")??;
        let marks = self.marks.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(Timeline { queries, marks })
    }
}

impl Timeline {
    /// Two-second windows from the first query that found rows: queries
    /// per second, p50 and p99, and the collection's indexed rows and
    /// segments at the window's end (as seen once the load returned).
    fn print(&self) {
        println!(
            "  query client, 2 s windows: {:>6} {:>8} {:>8} {:>9} {:>13} {:>5}",
            "from s", "QPS", "p50 ms", "p99 ms", "indexed rows", "segs"
        );
        let end = self.queries.last().map_or(0.0, |q| q.0);
        let mut from = self.queries.first().map_or(0.0, |q| q.0.floor());
        while from <= end {
            let mut lat: Vec<f64> = self
                .queries
                .iter()
                .filter(|q| q.0 >= from && q.0 < from + 2.0)
                .map(|q| q.1)
                .collect();
            lat.sort_by(f64::total_cmp);
            let (indexed, segments) = self
                .marks
                .iter()
                .rev()
                .find(|m| m.0 < from + 2.0)
                .map_or((0, 0), |m| (m.1, m.2));
            println!(
                "  {:>34} {:>8.0} {:>8.2} {:>9.2} {:>13} {:>5}",
                format!("{from:.0}"),
                lat.len() as f64 / 2.0,
                // None finished in the window: a query longer than it.
                if lat.is_empty() {
                    f64::NAN
                } else {
                    crate::percentile(&lat, 0.5)
                },
                if lat.is_empty() {
                    f64::NAN
                } else {
                    crate::percentile(&lat, 0.99)
                },
                indexed,
                segments
            );
            from += 2.0;
        }
    }
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub async fn run(args: LifecycleArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let dim = args.dim;
    println!(
        "\nLifecycle at default settings: {dim}-d L2 generated vectors, loaded in requests of ~4 MB with the background indexer running; {} held-out queries, recall@10, default recall target",
        args.queries
    );
    println!(
        "{:>9} {:>9} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}",
        "rows",
        "ingest s",
        "indexed s",
        "segs (idx)",
        "wrote MB",
        "kept MB",
        "amplif.",
        "recall",
        "p50 ms",
        "p99 ms",
        "nlist"
    );
    let mut faiss_runs = Vec::new();
    for &n in &args.sizes {
        let (data, queries) = generate_held_out(n, args.queries, dim);
        let truth = ground_truth(Metric::L2, &data, &queries, dim, 10);
        let dir = args.out.join(format!("floe-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = floe_core::Settings {
            data_dir: dir.clone(),
            ..Default::default()
        };
        let floe: Arc<Floe> = Floe::open(settings).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let indexer = floe.spawn_background_indexer(async move {
            let _ = stop_rx.await;
        });
        let config = serde_json::from_value(serde_json::json!({
            "name": "life", "dimension": dim, "metric": "l2", "id_type": "u64"
        }))?;
        floe.create_collection(config).await?;
        let timeline = args
            .query_during
            .then(|| QueryTimeline::start(Arc::clone(&floe), queries.clone(), dim));
        let t = Instant::now();
        match args.rate {
            None => upsert_vectors(&floe, "life", &data, dim, |_| Default::default()).await?,
            Some(rate) => {
                // Half a second of rows per request, paced to the rate.
                let step = (rate / 2).max(1);
                for start in (0..n).step_by(step) {
                    let end = (start + step).min(n);
                    let rows = &data[start * dim..end * dim];
                    upsert_ids(&floe, "life", rows, dim, &|i| (start + i) as u64, |_| {
                        Default::default()
                    })
                    .await?;
                    let due = Duration::from_secs_f64(end as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        let ingest = t.elapsed().as_secs_f64();
        // Until every row is in an indexed segment (the last flush waits for
        // the age threshold, 10 s by default).
        let t = Instant::now();
        let stats = loop {
            let s = floe.describe("life").await?.stats;
            if let Some(timeline) = &timeline {
                timeline.mark(s.indexed_rows, s.segments);
            }
            if s.unflushed_records == 0 && s.indexed_rows == n as u64 && s.segment_rows == n as u64
            {
                break s;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("{n} rows: not fully indexed after 600 s: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let indexed = t.elapsed().as_secs_f64();
        if let Some(timeline) = timeline {
            tokio::time::sleep(Duration::from_secs(10)).await;
            timeline.stop().await?.print();
        }
        let _ = stop_tx.send(());
        indexer.await.context("background indexer")?;
        let wrote = du(&dir.join("objects"));
        let kept = stats.segment_bytes + stats.index_bytes;
        let nlist = (n as f64).sqrt().round() as u32;
        let truth_ids: Vec<Vec<u64>> = truth.iter().map(|t| t.to_vec()).collect();
        let (recall, p50, p99) = measure(&floe, dim, &queries, &truth_ids).await?;
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "{:>9} {:>9.1} {:>10.1} {:>12} {:>9.1} {:>9.1} {:>9.2} {:>7.3} {:>9.2} {:>9.2} {:>8}",
            n,
            ingest,
            indexed,
            format!("{} ({})", stats.segments, stats.indexed_segments),
            mb(wrote),
            mb(kept),
            wrote as f64 / kept.max(1) as f64,
            recall,
            p50,
            p99,
            nlist
        );
        if args.churn {
            churn(&floe, n, dim, &data, &queries).await?;
        }
        if args.faiss {
            faiss_runs.push((n, data, queries, truth, nlist));
        }
    }
    for (n, data, queries, truth, nlist) in faiss_runs {
        let lines = faiss_reference(
            &args.out,
            &data,
            &queries,
            &truth,
            dim,
            "l2",
            nlist,
            "4,8,16,32,64",
        )?;
        for v in lines.iter().filter(|v| v.get("recall").is_some()) {
            let knob = v.get("nprobe").or(v.get("ef")).cloned().unwrap_or_default();
            println!(
                "{:>9} {:<16} {:>6} recall {:.3} p50 {:.3} ms p99 {:.3} ms",
                n,
                v["engine"].as_str().unwrap_or(""),
                knob.to_string(),
                v["recall"].as_f64().unwrap_or(0.0),
                v["p50_ms"].as_f64().unwrap_or(0.0),
                v["p99_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

/// Overwrites 30% and deletes 10% of the `n` rows (disjoint, random) in
/// batches of 10,000, flushes, then compacts: storage before and after,
/// and recall against the live rows after.
async fn churn(floe: &Floe, n: usize, dim: usize, data: &[f32], queries: &[f32]) -> Result<()> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut ids: Vec<usize> = (0..n).collect();
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(9));
    let (over, rest) = ids.split_at(n * 3 / 10);
    let gone = &rest[..n / 10];
    // New points from the same distribution (the same generator, past the
    // rows and queries it already gave).
    let nq = queries.len() / dim;
    let fresh = generate(n + nq + over.len(), dim, 7).split_off((n + nq) * dim);
    let t = Instant::now();
    for (b, chunk) in over.chunks(10_000).enumerate() {
        let rows = &fresh[b * 10_000 * dim..(b * 10_000 + chunk.len()) * dim];
        upsert_ids(floe, "life", rows, dim, &|i| chunk[i] as u64, |_| {
            Default::default()
        })
        .await?;
    }
    for chunk in gone.chunks(10_000) {
        let request: floe_core::api::wire::DeleteRequest = serde_json::from_value(
            serde_json::json!({ "ids": chunk.iter().map(|i| *i as u64).collect::<Vec<_>>() }),
        )?;
        floe_core::api::delete(floe, "life", request).await?;
    }
    while floe.describe("life").await?.stats.unflushed_records > 0 {
        floe.flush("life").await?;
    }
    let churned = t.elapsed().as_secs_f64();
    let before = floe.describe("life").await?.stats;
    let t = Instant::now();
    let report = floe.compact("life").await?;
    let compact = t.elapsed().as_secs_f64();
    let after = floe.describe("life").await?.stats;
    // The live rows, and the exact neighbours among them.
    let mut live: Vec<Option<&[f32]>> = data.chunks_exact(dim).map(Some).collect();
    for (i, id) in over.iter().enumerate() {
        live[*id] = Some(&fresh[i * dim..(i + 1) * dim]);
    }
    for id in gone {
        live[*id] = None;
    }
    let live_ids: Vec<u64> = (0..n as u64)
        .filter(|i| live[*i as usize].is_some())
        .collect();
    let live_data: Vec<f32> = live
        .iter()
        .flatten()
        .flat_map(|v| v.iter().copied())
        .collect();
    let truth: Vec<Vec<u64>> = ground_truth(Metric::L2, &live_data, queries, dim, 10)
        .into_iter()
        .map(|t| t.into_iter().map(|r| live_ids[r as usize]).collect())
        .collect();
    let (recall, p50, p99) = measure(floe, dim, queries, &truth).await?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "  churn ({} overwritten, {} deleted, applied and flushed in {churned:.1} s): stored rows {} -> {} for {} live, data+index {:.1} -> {:.1} MB, delete files {} -> {}; compaction {compact:.1} s ({} segments purged); after: recall {recall:.3}, p50 {p50:.2} ms, p99 {p99:.2} ms",
        over.len(),
        gone.len(),
        before.segment_rows,
        after.segment_rows,
        after.rows,
        mb(before.segment_bytes + before.index_bytes),
        mb(after.segment_bytes + after.index_bytes),
        before.delete_files,
        after.delete_files,
        report.purged,
    );
    Ok(())
}
