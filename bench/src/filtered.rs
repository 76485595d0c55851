//! `floe-bench filtered`: filtered vector search on one indexed segment at
//! several selectivities — recall@10 against exact search over the
//! matching rows, and latency beside the unfiltered query's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use floe_core::Floe;
use floe_core::catalog::Metric;

use floe_core::api::wire::QueryResponse;

use crate::ann::{
    generate_held_out, ground_truth, run_queries, run_queries_with, top_10, upsert_vectors,
    wait_for_warm_up,
};

pub struct FilteredArgs {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    /// Matching rows per thousand, one table row each.
    pub per_mille: Vec<u64>,
    /// Call [`Floe::warm`] before measuring.
    pub warm: bool,
    /// `cache.auto_warm`; when on, measuring waits for the warm-up behind
    /// the first query.
    pub auto_warm: bool,
    pub out: PathBuf,
}

const NAME: &str = "filtered";

/// Row `i`'s `bucket` (0…999), scattered over the rows and clusters.
fn bucket(i: usize) -> u64 {
    (i as u64).wrapping_mul(2_654_435_761) % 1000
}

pub async fn run(args: FilteredArgs) -> Result<()> {
    let dim = args.dim;
    // A second set of queries no query before asked: the unfiltered
    // baseline of a new filter, whose candidates are new rows too.
    let (data, mut queries) = generate_held_out(args.n, 2 * args.queries, dim);
    let fresh_queries = queries.split_off(args.queries * dim);
    println!(
        "\nFiltered search: {} x {dim}-d L2 vectors (generated, seed 7), one indexed segment, an integer attribute `bucket` (0-999, scattered), {} queries, top 10, eventual, default knobs",
        args.n, args.queries
    );
    let dir = args.out.join("filtered-data");
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = floe_core::Settings {
        data_dir: dir,
        ..Default::default()
    };
    settings.cache.auto_warm = args.auto_warm;
    let floe = Floe::open(settings).await?;
    let config = serde_json::from_value(serde_json::json!({
        "name": NAME, "dimension": dim, "metric": "l2", "id_type": "u64",
        "attributes": [{"name": "bucket", "type": "i64"}],
        "index": {"seal_rows": args.n}
    }))?;
    floe.create_collection(config).await?;
    let t = Instant::now();
    upsert_vectors(&floe, NAME, &data, dim, |ids| {
        [(
            "bucket".to_string(),
            ids.map(|i| serde_json::json!(bucket(i))).collect(),
        )]
        .into_iter()
        .collect()
    })
    .await?;
    floe.flush(NAME).await?;
    for id in &floe.compact(NAME).await?.sealed {
        floe.build_index(NAME, id).await?;
    }
    println!("built in {:.1} s", t.elapsed().as_secs_f64());
    if args.warm {
        let t = Instant::now();
        floe.warm(NAME).await?;
        println!("warmed in {:.1} s", t.elapsed().as_secs_f64());
    }

    println!(
        "\n{:<12} {:>9} {:>10} {:>9} {:>9} {:>14}",
        "filter", "matching", "recall@10", "p50 ms", "p99 ms", "p50 / unfilt."
    );
    let truth = ground_truth(Metric::L2, &data, &queries, dim, 10);
    // One pass to settle: the build's writes to the disk tier of the cache
    // drain meanwhile, and every query's blocks are in memory.
    let t = Instant::now();
    run_queries(&floe, NAME, queries.chunks_exact(dim), &truth, |q| {
        top_10(q, None)
    })
    .await?;
    if args.auto_warm && !args.warm {
        wait_for_warm_up(&floe, NAME, t).await?;
    }
    let (recall, lat) = run_queries(&floe, NAME, queries.chunks_exact(dim), &truth, |q| {
        top_10(q, None)
    })
    .await?;
    let unfiltered = crate::percentile(&lat, 0.5);
    println!(
        "{:<12} {:>9} {recall:>10.4} {unfiltered:>9.2} {:>9.2} {:>14.2}",
        "none",
        args.n,
        crate::percentile(&lat, 0.99),
        1.0
    );
    let truth_fresh = ground_truth(Metric::L2, &data, &fresh_queries, dim, 10);
    let none = |_: usize| String::new();
    run_filtered(
        &floe,
        &fresh_queries,
        dim,
        &truth_fresh,
        &none,
        false,
        "none new",
        args.n,
        unfiltered,
    )
    .await?;
    for per_mille in &args.per_mille {
        // The same filter for every query (a tenant, a category)...
        let filter = format!("bucket < {per_mille}");
        let (matching, truth) = filtered_truth(&data, &queries, dim, |b| b < *per_mille);
        let same = |_: usize| filter.clone();
        let label = format!("{:.1}%", *per_mille as f64 / 10.0);
        run_filtered(
            &floe, &queries, dim, &truth, &same, true, &label, matching, unfiltered,
        )
        .await?;
        // ...and a filter no query asked before (a range of buckets of the
        // same width at another place): evaluated and its codes read anew.
        let starts: Vec<u64> = (0..args.queries as u64)
            .map(|i| (i * 7) % (1000 - per_mille))
            .collect();
        let truth: Vec<Vec<u64>> = starts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let q = &queries[i * dim..(i + 1) * dim];
                let (_, mut truth) =
                    filtered_truth(&data, q, dim, |b| (*s..s + per_mille).contains(&b));
                truth.pop().unwrap_or_default()
            })
            .collect();
        let fresh = |i: usize| {
            let s = starts[i];
            format!("bucket >= {s} and bucket < {}", s + per_mille)
        };
        let label = format!("{label} new");
        run_filtered(
            &floe, &queries, dim, &truth, &fresh, false, &label, matching, unfiltered,
        )
        .await?;
    }
    Ok(())
}

/// The rows whose bucket `keep` admits, and each query's true top 10 among
/// them (row numbers are ids).
fn filtered_truth(
    data: &[f32],
    queries: &[f32],
    dim: usize,
    keep: impl Fn(u64) -> bool,
) -> (usize, Vec<Vec<u64>>) {
    let matching: Vec<usize> = (0..data.len() / dim).filter(|i| keep(bucket(*i))).collect();
    let subset: Vec<f32> = matching
        .iter()
        .flat_map(|i| data[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let truth = ground_truth(Metric::L2, &subset, queries, dim, 10)
        .into_iter()
        .map(|rows| {
            rows.into_iter()
                .map(|r| matching[r as usize] as u64)
                .collect()
        })
        .collect();
    (matching.len(), truth)
}

/// One table row: query `i` with filter `filter(i)`, recall against
/// `truth[i]`, latency; after one unmeasured pass when `settle` (as for
/// the unfiltered row: warm figures); then the measured pass's phases
/// and blocks, per query on average.
#[allow(clippy::too_many_arguments)]
async fn run_filtered(
    floe: &Floe,
    queries: &[f32],
    dim: usize,
    truth: &[Vec<u64>],
    filter: &dyn Fn(usize) -> String,
    settle: bool,
    label: &str,
    matching: usize,
    unfiltered: f64,
) -> Result<()> {
    let request = |i: usize, q: &[f32]| {
        let mut r = top_10(q, None);
        r.filter = Some(filter(i)).filter(|f| !f.is_empty());
        r
    };
    // Phase times (in order of first appearance) and blocks, summed.
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut blocks = [0u64; 3];
    let mut pass = async |observe: bool| {
        let asked = std::cell::Cell::new(0);
        let next = |q: &[f32]| {
            let i = asked.get();
            asked.set(i + 1);
            let mut r = request(i, q);
            r.explain = observe;
            r
        };
        let sum = |r: &QueryResponse| {
            let Some(stats) = &r.explain else { return };
            for p in &stats.phases {
                match phases.iter_mut().find(|(name, _)| *name == p.name) {
                    Some((_, ms)) => *ms += p.ms,
                    None => phases.push((p.name.clone(), p.ms)),
                }
            }
            blocks[0] += stats.memory_hits;
            blocks[1] += stats.disk_hits;
            blocks[2] += stats.misses;
        };
        run_queries_with(floe, NAME, queries.chunks_exact(dim), truth, next, sum).await
    };
    if settle {
        pass(false).await?;
    }
    let (recall, lat) = pass(true).await?;
    let n = lat.len().max(1) as f64;
    let phases: Vec<String> = phases
        .iter()
        .map(|(name, ms)| format!("{name} {:.2}", ms / n))
        .collect();
    println!(
        "  per query (ms): {}; blocks: {:.1} memory, {:.1} disk, {:.1} fetched",
        phases.join(", "),
        blocks[0] as f64 / n,
        blocks[1] as f64 / n,
        blocks[2] as f64 / n
    );
    let p50 = crate::percentile(&lat, 0.5);
    println!(
        "{label:<12} {matching:>9} {recall:>10.4} {p50:>9.2} {:>9.2} {:>14.2}",
        crate::percentile(&lat, 0.99),
        p50 / unfiltered
    );
    Ok(())
}
