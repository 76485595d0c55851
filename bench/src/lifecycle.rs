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
use floe_core::api::wire::QueryRequest;
use floe_core::catalog::Metric;
use floe_core::id::Id;

use crate::ann::{faiss_reference, generate, ground_truth, upsert_vectors};

pub struct LifecycleArgs {
    pub sizes: Vec<usize>,
    pub dim: usize,
    pub queries: usize,
    pub faiss: bool,
    pub out: PathBuf,
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
        let mut all = generate(n + args.queries, dim, 7);
        let queries = all.split_off(n * dim);
        let data = all;
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
        let t = Instant::now();
        upsert_vectors(&floe, "life", &data, dim, |_| Default::default()).await?;
        let ingest = t.elapsed().as_secs_f64();
        // Until every row is in an indexed segment (the last flush waits for
        // the age threshold, 10 s by default).
        let t = Instant::now();
        let stats = loop {
            let s = floe.describe("life").await?.stats;
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
        let _ = stop_tx.send(());
        indexer.await.context("background indexer")?;
        let wrote = du(&dir.join("objects"));
        let kept = stats.segment_bytes + stats.index_bytes;
        let nlist = (n as f64).sqrt().round() as u32;
        let query = |q: &[f32]| QueryRequest {
            vector: Some(q.iter().map(|x| *x as f64).collect()),
            top_k: 10,
            filter: None,
            include_attributes: Some(serde_json::Value::Bool(false)),
            include_vector: false,
            consistency: Some(serde_json::json!("eventual")),
            cursor: None,
            nprobe: None,
            rerank: None,
            recall_target: None,
            explain: false,
        };
        for q in queries.chunks_exact(dim).take(20) {
            floe_core::api::query(&floe, "life", query(q)).await?;
        }
        let mut lat = Vec::new();
        let mut hit = 0usize;
        for (qi, q) in queries.chunks_exact(dim).enumerate() {
            let t = Instant::now();
            let r = floe_core::api::query(&floe, "life", query(q)).await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            hit += r
                .results
                .iter()
                .filter(|row| matches!(row.id, Id::U64(id) if truth[qi].contains(&id)))
                .count();
        }
        lat.sort_by(f64::total_cmp);
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
            hit as f64 / (10 * args.queries) as f64,
            crate::percentile(&lat, 0.5),
            crate::percentile(&lat, 0.99),
            nlist
        );
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
