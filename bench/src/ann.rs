//! `floe-bench ann`: build a collection end to end (upsert → log → flush →
//! compaction → IVF index build), then recall@10 against exact ground truth
//! and query latency over a range of nprobe, beside FAISS on the same files.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use floe_core::Floe;
use floe_core::api::rows::ColumnsIn;
use floe_core::api::vectors::{VectorIn, VectorsIn, encode_base64};
use floe_core::api::wire::{QueryRequest, QueryResponse, UpsertRequest};
use floe_core::catalog::Metric;
use floe_core::id::Id;
use floe_core::vector::QueryVector;
use rand::{Rng, SeedableRng};

pub struct AnnArgs {
    pub data: Option<PathBuf>,
    pub n: usize,
    pub dim: usize,
    pub metric: String,
    pub queries: usize,
    pub nprobes: Vec<usize>,
    pub faiss: bool,
    /// Concurrent clients of the concurrency table (empty: none).
    pub clients: Vec<usize>,
    /// Also over HTTP (see [`http_overhead`]).
    pub http: bool,
    /// The collection's `index.codes` (unset: the default).
    pub codes: Option<String>,
    pub out: PathBuf,
}

/// Reads a 2-D little-endian f32 `.npy` file.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("{}", path.display()))?
        .read_to_end(&mut bytes)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{} is not an .npy file", path.display());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bail!(
            "{}: need a C-order float32 array, header {header}",
            path.display()
        );
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let [rows, cols] = dims[..] else {
        bail!("need a 2-D array, shape ({shape})")
    };
    let body = &bytes[start + header_len..];
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.len() != rows * cols {
        bail!(
            "{}: {} values for shape ({rows}, {cols})",
            path.display(),
            values.len()
        );
    }
    Ok((values, rows, cols))
}

pub fn write_npy(path: &Path, descr: &str, rows: usize, cols: usize, body: &[u8]) -> Result<()> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut f = std::fs::File::create(path)?;
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(body)?;
    Ok(())
}

/// `n` generated rows (seed 7) and `queries` more from the same
/// distribution, held out: `(data, queries)`.
/// Vectors to insert and held-out queries (never inserted).
pub struct HeldOut {
    pub data: Vec<f32>,
    pub queries: Vec<f32>,
    pub dim: usize,
    /// Where the vectors came from, for the report.
    pub source: String,
}

/// The last `queries` rows of the 2-D f32 `.npy` at `path`, held out from
/// the rest; without a file, `n` generated vectors of `dim` and `queries`
/// more from the same distribution.
pub fn held_out(path: Option<&Path>, n: usize, dim: usize, queries: usize) -> Result<HeldOut> {
    let Some(path) = path else {
        let (data, queries) = generate_held_out(n, queries, dim);
        return Ok(HeldOut {
            data,
            queries,
            dim,
            source: "generated clustered (seed 7)".into(),
        });
    };
    let (mut data, rows, dim) = read_npy_f32(path)?;
    if rows <= queries {
        bail!("need more than {queries} rows");
    }
    let queries = data.split_off((rows - queries) * dim);
    Ok(HeldOut {
        data,
        queries,
        dim,
        source: path.display().to_string(),
    })
}

/// The metric named by `--metric`.
pub fn parse_metric(name: &str) -> Result<Metric> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .with_context(|| format!("--metric {name:?}: use l2, cosine or ip"))
}

pub fn generate_held_out(n: usize, queries: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut data = generate(n + queries, dim, 7);
    let queries = data.split_off(n * dim);
    (data, queries)
}

pub fn generate(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    // 1000 random centres in [-1, 1]^dim, points uniform within ±1 of one:
    // the clusters overlap, so neighbours straddle cluster boundaries.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..1000 * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.random_range(0..1000);
        out.extend(
            centres[c * dim..(c + 1) * dim]
                .iter()
                .map(|x| x + rng.random_range(-1.0f32..1.0)),
        );
    }
    out
}

pub fn ground_truth(
    metric: Metric,
    data: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
) -> Vec<Vec<u64>> {
    let nq = queries.len() / dim;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut out = vec![Vec::new(); nq];
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(nq.div_ceil(threads)).enumerate() {
            let start = t * nq.div_ceil(threads);
            s.spawn(move || {
                for (i, slot) in chunk.iter_mut().enumerate() {
                    let q = &queries[(start + i) * dim..(start + i + 1) * dim];
                    let q = QueryVector::new(q.to_vec(), metric);
                    let mut all: Vec<(f32, u64)> = data
                        .chunks_exact(dim)
                        .enumerate()
                        .map(|(r, v)| (q.distance(v), r as u64))
                        .collect();
                    all.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
                    all.truncate(k);
                    all.sort_by(|a, b| a.0.total_cmp(&b.0));
                    *slot = all.into_iter().map(|(_, r)| r).collect();
                }
            });
        }
    });
    out
}

/// Upserts `data` (row-major, ids 0…) in requests of about 4 MB of vectors,
/// with the attributes `attributes` gives for each id range.
pub async fn upsert_vectors(
    floe: &Floe,
    name: &str,
    data: &[f32],
    dim: usize,
    attributes: impl Fn(std::ops::Range<usize>) -> HashMap<String, Vec<serde_json::Value>>,
) -> Result<()> {
    upsert_ids(floe, name, data, dim, &|i| i as u64, attributes).await
}

/// [`upsert_vectors`] with row `i` under id `id(i)`.
pub async fn upsert_ids(
    floe: &Floe,
    name: &str,
    data: &[f32],
    dim: usize,
    id: &dyn Fn(usize) -> u64,
    attributes: impl Fn(std::ops::Range<usize>) -> HashMap<String, Vec<serde_json::Value>>,
) -> Result<()> {
    let n = data.len() / dim;
    let batch = (4_000_000 / (dim * 4)).clamp(1, 10_000);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let columns = ColumnsIn {
            ids: (start..end).map(|i| Id::U64(id(i))).collect(),
            vectors: VectorsIn::Packed(encode_base64(&data[start * dim..end * dim])),
            attributes: attributes(start..end),
            if_versions: None,
        };
        floe_core::api::upsert(
            floe,
            name,
            UpsertRequest {
                rows: None,
                columns: Some(columns),
                request_id: None,
            },
        )
        .await?;
    }
    Ok(())
}

pub async fn run(args: AnnArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let HeldOut {
        data,
        queries,
        dim,
        source,
    } = held_out(args.data.as_deref(), args.n, args.dim, args.queries)?;
    let n = data.len() / dim;
    println!(
        "\nANN benchmark: {n} x {dim}-d {} vectors from {source}, {} held-out queries, recall@10",
        args.metric, args.queries
    );

    let t = Instant::now();
    let metric = parse_metric(&args.metric)?;
    let truth = ground_truth(metric, &data, &queries, dim, 10);
    println!("exact ground truth: {:.1} s", t.elapsed().as_secs_f64());

    let dir = args.out.join("floe-data");
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = floe_core::Settings {
        data_dir: dir.clone(),
        ..Default::default()
    };
    settings.flush.max_rows = 200_000;
    let floe: Arc<Floe> = Floe::open(settings).await?;
    let mut index = serde_json::json!({"seal_rows": n, "row_group_rows": 8192});
    if let Some(codes) = &args.codes {
        index["codes"] = codes.clone().into();
    }
    let config = serde_json::from_value(serde_json::json!({
        "name": "ann", "dimension": dim, "metric": args.metric, "id_type": "u64",
        "index": index
    }))?;
    floe.create_collection(config).await?;
    let t = Instant::now();
    upsert_vectors(&floe, "ann", &data, dim, |_| Default::default()).await?;
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    floe.flush("ann").await?;
    let flush = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let compacted = floe.compact("ann").await?;
    let compact = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut built = None;
    for id in &compacted.sealed {
        built = floe.build_index("ann", id).await?;
    }
    let build = t.elapsed().as_secs_f64();
    let built = built.context("no index was built")?;
    println!(
        "floe: ingest {ingest:.1} s ({:.0} vectors/s), flush {flush:.1} s, compaction {compact:.1} s, index build {build:.1} s (nlist {}, {:.1} bytes/vector of index: {} B vectors, the rest codes and header)",
        n as f64 / ingest,
        built.nlist,
        built.index_bytes as f64 / n as f64,
        dim * 4
    );
    let engine = format!(
        "floe ivf-{}+rerank",
        args.codes.as_deref().unwrap_or("default")
    );

    // Warm: one query loads the segment and its index into memory, and
    // the warm-up behind it (default settings) loads the rest.
    let t = Instant::now();
    floe_core::api::query(&floe, "ann", top_10(&queries[..dim], Some(1))).await?;
    wait_for_warm_up(&floe, "ann", t).await?;
    println!(
        "\n{:<22} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "engine", "nprobe", "recall@10", "p50 ms", "p99 ms", "QPS"
    );
    let mut floe_rows = Vec::new();
    let mut settings_list: Vec<Option<usize>> = args.nprobes.iter().map(|n| Some(*n)).collect();
    settings_list.push(None);
    for nprobe in settings_list {
        let (recall, lat) = run_queries(&floe, "ann", queries.chunks_exact(dim), &truth, |q| {
            top_10(q, nprobe)
        })
        .await?;
        let mean = lat.iter().sum::<f64>() / lat.len() as f64;
        let label = nprobe
            .map(|n| n.to_string())
            .unwrap_or_else(|| "auto".into());
        println!(
            "{:<22} {:>8} {:>10.4} {:>9.2} {:>9.2} {:>9.0}",
            engine,
            label,
            recall,
            super::percentile(&lat, 0.5),
            super::percentile(&lat, 0.99),
            1000.0 / mean
        );
        floe_rows.push((label, recall, super::percentile(&lat, 0.5)));
    }

    if args.http {
        let engine_p50 = floe_rows.last().map(|r| r.2).unwrap_or(0.0);
        http_overhead(&floe, &queries, dim, &truth, engine_p50).await?;
    }
    if !args.clients.is_empty() {
        concurrency(&floe, &queries, dim, &args.clients).await?;
    }

    if args.faiss {
        let nprobes: Vec<String> = args.nprobes.iter().map(|n| n.to_string()).collect();
        let lines = faiss_reference(
            &args.out,
            &data,
            &queries,
            &truth,
            dim,
            &args.metric,
            built.nlist,
            &nprobes.join(","),
        )?;
        let mut ivf_flat = Vec::new();
        for v in lines {
            if let Some(b) = v.get("build_s") {
                println!(
                    "{:<22} build {:.1} s, {} bytes/vector",
                    v["engine"].as_str().unwrap_or(""),
                    b.as_f64().unwrap_or(0.0),
                    v["bytes_per_vector"]
                );
                continue;
            }
            let knob = v.get("nprobe").or(v.get("ef")).cloned().unwrap_or_default();
            let name = format!(
                "{}{}",
                v["engine"].as_str().unwrap_or(""),
                if v.get("ef").is_some() { " (ef)" } else { "" }
            );
            println!(
                "{:<22} {:>8} {:>10.4} {:>9.2} {:>9.2} {:>9.0}",
                name,
                knob.to_string(),
                v["recall"].as_f64().unwrap_or(0.0),
                v["p50_ms"].as_f64().unwrap_or(0.0),
                v["p99_ms"].as_f64().unwrap_or(0.0),
                v["qps"].as_f64().unwrap_or(0.0)
            );
            if v["engine"] == "faiss-ivf-flat" {
                ivf_flat.push((
                    v["recall"].as_f64().unwrap_or(0.0),
                    v["p50_ms"].as_f64().unwrap_or(f64::MAX),
                ));
            }
        }
        // The target: at recall@10 >= 0.95, Floe's warm p50 vs FAISS IVF-Flat's.
        let floe_best = floe_rows
            .iter()
            .filter(|r| r.1 >= 0.95)
            .map(|r| r.2)
            .fold(f64::MAX, f64::min);
        let faiss_best = ivf_flat
            .iter()
            .filter(|r| r.0 >= 0.95)
            .map(|r| r.1)
            .fold(f64::MAX, f64::min);
        if floe_best < f64::MAX && faiss_best < f64::MAX {
            println!(
                "\nat recall@10 >= 0.95: floe p50 {floe_best:.2} ms, faiss ivf-flat p50 {faiss_best:.2} ms, ratio {:.2}",
                floe_best / faiss_best
            );
        } else {
            println!("\nat recall@10 >= 0.95: not reached by one of the engines in this sweep");
        }
    }
    Ok(())
}

/// Runs `bench/python/faiss_ref.py` (FAISS IVF-Flat at `nlist` over
/// `nprobes`, and HNSW) on the same data, queries and ground truth; one
/// JSON object per line of its output.
#[allow(clippy::too_many_arguments)]
pub fn faiss_reference(
    out: &Path,
    data: &[f32],
    queries: &[f32],
    truth: &[Vec<u64>],
    dim: usize,
    metric: &str,
    nlist: u32,
    nprobes: &str,
) -> Result<Vec<serde_json::Value>> {
    let [data, queries, gt] = write_reference_files(out, data, queries, truth, dim)?;
    run_faiss(&[
        "--data".into(),
        data,
        "--queries".into(),
        queries,
        "--gt".into(),
        gt,
        "--metric".into(),
        metric.into(),
        "--nlist".into(),
        nlist.to_string(),
        "--nprobes".into(),
        nprobes.into(),
    ])
}

/// Writes `data`, `queries` and the top-10 ids `truth` as `data.npy`,
/// `queries.npy` and `gt.npy` under `out`, for the Python references;
/// their paths, in that order.
pub fn write_reference_files(
    out: &Path,
    data: &[f32],
    queries: &[f32],
    truth: &[Vec<u64>],
    dim: usize,
) -> Result<[String; 3]> {
    let (n, nq) = (data.len() / dim, queries.len() / dim);
    let body: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(&out.join("data.npy"), "<f4", n, dim, &body)?;
    let body: Vec<u8> = queries.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(&out.join("queries.npy"), "<f4", nq, dim, &body)?;
    let body: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|x| (*x as i64).to_le_bytes())
        .collect();
    write_npy(&out.join("gt.npy"), "<i8", nq, 10, &body)?;
    let path = |name: &str| out.join(name).display().to_string();
    Ok([path("data.npy"), path("queries.npy"), path("gt.npy")])
}

/// A warm top-10 query for `q` (eventual, ids only) at `nprobe`, or at the
/// default recall target.
pub fn top_10(q: &[f32], nprobe: Option<usize>) -> QueryRequest {
    QueryRequest {
        vector: Some(VectorIn::Numbers(q.iter().map(|x| *x as f64).collect())),
        vector_encoding: Default::default(),
        top_k: 10,
        filter: None,
        include_attributes: Some(serde_json::Value::Bool(false)),
        include_vector: false,
        consistency: Some(serde_json::json!("eventual")),
        cursor: None,
        nprobe,
        rerank: None,
        recall_target: None,
        explain: false,
    }
}

/// Waits until the warm-up behind the first query (`cache.auto_warm`)
/// has warmed every indexed segment, at most ten minutes.
pub async fn wait_for_warm_up(floe: &Floe, name: &str, since: Instant) -> Result<()> {
    loop {
        let stats = floe.describe(name).await?.stats;
        if stats.warm_segments == stats.indexed_segments {
            println!(
                "auto warm-up: done {:.1} s after the first query",
                since.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        anyhow::ensure!(
            since.elapsed().as_secs() < 600,
            "auto warm-up not done after 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs each query one at a time: recall@10 against `truth` (ids) and the
/// sorted latencies in milliseconds.
pub async fn run_queries<'q>(
    floe: &Floe,
    name: &str,
    queries: impl Iterator<Item = &'q [f32]>,
    truth: &[Vec<u64>],
    request: impl Fn(&[f32]) -> QueryRequest,
) -> Result<(f64, Vec<f64>)> {
    run_queries_with(floe, name, queries, truth, request, |_| {}).await
}

/// [`run_queries`], showing each response to `observe`.
pub async fn run_queries_with<'q>(
    floe: &Floe,
    name: &str,
    queries: impl Iterator<Item = &'q [f32]>,
    truth: &[Vec<u64>],
    request: impl Fn(&[f32]) -> QueryRequest,
    mut observe: impl FnMut(&QueryResponse),
) -> Result<(f64, Vec<f64>)> {
    let mut lat = Vec::new();
    let mut hit = 0usize;
    for (qi, q) in queries.enumerate() {
        let t = Instant::now();
        let r = floe_core::api::query(floe, name, request(q)).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        observe(&r);
        hit += r
            .results
            .iter()
            .filter(|row| matches!(row.id, Id::U64(id) if truth[qi].contains(&id)))
            .count();
    }
    lat.sort_by(f64::total_cmp);
    Ok((hit as f64 / (10 * truth.len().max(1)) as f64, lat))
}

/// The default-knob queries again, one at a time over HTTP to `floe
/// serve` on loopback (the bench's process serves it), the query vector
/// as JSON numbers and as base64: p50 beside the engine's `engine_p50`.
async fn http_overhead(
    floe: &Arc<Floe>,
    queries: &[f32],
    dim: usize,
    truth: &[Vec<u64>],
    engine_p50: f64,
) -> Result<()> {
    let server = floe::serve::start(
        Arc::clone(floe),
        "127.0.0.1:0",
        false,
        std::future::pending(),
    )
    .await?;
    let url = format!("http://{}/v1/collections/ann/query", server.addr);
    let http = reqwest::Client::new();
    println!(
        "\n{:<30} {:>10} {:>9} {:>9} {:>18}",
        "over HTTP, default knobs", "recall@10", "p50 ms", "p99 ms", "p50 - engine's"
    );
    for encoding in ["json", "base64"] {
        let bodies: Vec<String> = queries
            .chunks_exact(dim)
            .map(|q| {
                let vector = match encoding {
                    "json" => serde_json::json!(q),
                    _ => floe_core::api::vectors::encode_base64(q).into(),
                };
                serde_json::json!({"vector": vector, "top_k": 10, "consistency": "eventual"})
                    .to_string()
            })
            .collect();
        let mut lat = Vec::new();
        let mut hit = 0usize;
        // One pass to open the connection and settle, one measured.
        for pass in 0..2 {
            for (qi, body) in bodies.iter().enumerate() {
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "query: {}",
                    response.text().await?
                );
                let answer: serde_json::Value = response.json().await?;
                if pass == 1 {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    hit += answer["results"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r["id"].as_u64().is_some_and(|id| truth[qi].contains(&id)))
                        .count();
                }
            }
        }
        lat.sort_by(f64::total_cmp);
        let p50 = super::percentile(&lat, 0.5);
        println!(
            "{:<30} {:>10.4} {:>9.2} {:>9.2} {:>18.2}",
            format!("query vector as {encoding}"),
            hit as f64 / (10 * truth.len().max(1)) as f64,
            p50,
            super::percentile(&lat, 0.99),
            p50 - engine_p50
        );
    }
    Ok(())
}

/// QPS and latency with `clients` queries in flight at once (each a task
/// of the multi-threaded runtime, as connections of `floe serve` are),
/// `eventual` and `strong`, default knobs.
async fn concurrency(
    floe: &Arc<Floe>,
    queries: &[f32],
    dim: usize,
    clients: &[usize],
) -> Result<()> {
    println!(
        "\n{:<12} {:>8} {:>9} {:>9} {:>9} {:>11}",
        "consistency", "clients", "QPS", "p50 ms", "p99 ms", "cores busy"
    );
    let mut explained = top_10(&queries[..dim], None);
    explained.explain = true;
    if let Some(stats) = floe_core::api::query(floe, "ann", explained).await?.explain {
        println!(
            "(a warm query's blocks: {} from memory, {} from the disk tier, {} fetched)",
            stats.memory_hits, stats.disk_hits, stats.misses
        );
    }
    let queries: Arc<Vec<f32>> = Arc::new(queries.to_vec());
    let nq = queries.len() / dim;
    for consistency in ["eventual", "strong"] {
        for &c in clients {
            let total = (nq * 4).max(c * 50);
            let started = Instant::now();
            let cpu = process_cpu_seconds();
            let tasks: Vec<_> = (0..c)
                .map(|client| {
                    let (floe, queries) = (Arc::clone(floe), Arc::clone(&queries));
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        for i in (client..total).step_by(c) {
                            let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
                            let mut request = top_10(q, None);
                            request.consistency = Some(serde_json::json!(consistency));
                            let t = Instant::now();
                            floe_core::api::query(&floe, "ann", request).await?;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        anyhow::Ok(lat)
                    })
                })
                .collect();
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await??);
            }
            let wall = started.elapsed().as_secs_f64();
            // The whole process's CPU over the run: clients use up the
            // cores, or something makes them wait.
            let busy = match (cpu, process_cpu_seconds()) {
                (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall),
                _ => "-".into(),
            };
            lat.sort_by(f64::total_cmp);
            println!(
                "{consistency:<12} {c:>8} {:>9.0} {:>9.2} {:>9.2} {busy:>11}",
                lat.len() as f64 / wall,
                super::percentile(&lat, 0.5),
                super::percentile(&lat, 0.99)
            );
        }
    }
    Ok(())
}

/// CPU seconds (user and system, all threads) this process has used, from
/// `/proc/self/stat` (Linux; its ticks are 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Runs `bench/python/faiss_ref.py` with `args` in the benchmark venv;
/// one JSON object per line of its output.
pub fn run_faiss(args: &[String]) -> Result<Vec<serde_json::Value>> {
    run_python_reference("faiss_ref.py", args)
}

/// Runs `bench/python/<script>` with `args` in the benchmark venv; one JSON
/// object per line of its output.
pub fn run_python_reference(script: &str, args: &[String]) -> Result<Vec<serde_json::Value>> {
    let python = Command::new("bash")
        .arg("bench/python/setup.sh")
        .output()
        .context("bench/python/setup.sh")?;
    let python = String::from_utf8(python.stdout)?.trim().to_string();
    let output = Command::new(python)
        .arg(format!("bench/python/{script}"))
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !output.status.success() {
        bail!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

use std::process::Command;
