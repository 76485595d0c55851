//! `floe-bench exact`: exact search over rows not in an index — the log
//! tail (`strong` reads of unflushed rows) and unindexed segments — beside
//! plain numpy brute force and FAISS IndexFlat on the same data.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use floe_core::Floe;
use floe_core::catalog::Metric;

use crate::ann::{
    generate_held_out, ground_truth, run_python_reference, run_queries, top_10, upsert_vectors,
    write_reference_files,
};

pub struct ExactArgs {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub out: PathBuf,
}

const NAME: &str = "exact";

pub async fn run(args: ExactArgs) -> Result<()> {
    let dim = args.dim;
    let (data, queries) = generate_held_out(args.n, args.queries, dim);
    println!(
        "\nExact search: {} x {dim}-d L2 vectors (generated, seed 7), {} queries, top 10, one at a time",
        args.n, args.queries
    );
    let truth = ground_truth(Metric::L2, &data, &queries, dim, 10);

    let dir = args.out.join("exact-data");
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = floe_core::Settings {
        data_dir: dir,
        ..Default::default()
    };
    // Nothing flushes on its own (this process runs no background indexer
    // anyway): the first table reads every row from the log tail.
    settings.flush.max_rows = usize::MAX / 2;
    let floe = Floe::open(settings).await?;
    let config = serde_json::from_value(serde_json::json!({
        "name": NAME, "dimension": dim, "metric": "l2", "id_type": "u64",
    }))?;
    floe.create_collection(config).await?;
    let t = Instant::now();
    upsert_vectors(&floe, NAME, &data, dim, |_| Default::default()).await?;
    println!("ingest {:.1} s", t.elapsed().as_secs_f64());

    println!(
        "\n{:<34} {:>10} {:>9} {:>9}",
        "engine", "recall@10", "p50 ms", "p99 ms"
    );
    let strong = |q: &[f32]| {
        let mut r = top_10(q, None);
        r.consistency = Some(serde_json::json!("strong"));
        r
    };
    // The first query decodes the tail; the rest reuse it.
    floe_core::api::query(&floe, NAME, strong(&queries[..dim])).await?;
    let (recall, lat) = run_queries(&floe, NAME, queries.chunks_exact(dim), &truth, strong).await?;
    print_row("floe, log tail (strong)", recall, &lat);

    floe.flush(NAME).await?;
    let info = floe.describe(NAME).await?;
    floe_core::api::query(&floe, NAME, top_10(&queries[..dim], None)).await?;
    let (recall, lat) = run_queries(&floe, NAME, queries.chunks_exact(dim), &truth, |q| {
        top_10(q, None)
    })
    .await?;
    print_row(
        &format!("floe, {} unindexed segment(s)", info.stats.segments),
        recall,
        &lat,
    );

    let [data, queries, gt] = write_reference_files(&args.out, &data, &queries, &truth, dim)?;
    let lines = run_python_reference(
        "flat_ref.py",
        &[
            "--data".into(),
            data,
            "--queries".into(),
            queries,
            "--gt".into(),
            gt,
        ],
    )?;
    for v in lines {
        println!(
            "{:<34} {:>10.4} {:>9.2} {:>9.2}",
            v["engine"].as_str().unwrap_or(""),
            v["recall"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn print_row(label: &str, recall: f64, lat: &[f64]) {
    println!(
        "{label:<34} {recall:>10.4} {:>9.2} {:>9.2}",
        crate::percentile(lat, 0.5),
        crate::percentile(lat, 0.99)
    );
}
