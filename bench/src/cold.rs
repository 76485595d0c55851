//! `floe-bench cold`: query latency of a fresh process (empty cache), of a
//! warmed-up one, and of one that has served a while, on an indexed
//! collection in the S3 server with per-request latency injected to model
//! real S3. Prints round trips, requests and bytes per cold query, and the
//! cache's footprint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use floe_core::Floe;
use floe_core::api::vectors::VectorIn;
use floe_core::api::wire::QueryRequest;
use floe_core::id::Id;
use floe_core::log::{FileLogOptions, FileLogs, LogId, LogProvider};
use floe_core::manifest::ManifestStore;
use floe_core::storage::{
    CollectionPaths, CountingStore, FaultConfig, FaultyStore, ObjectStoreConfig, OpFilter,
    open_object_store, sequential_round_trips,
};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::ann::{HeldOut, ground_truth, held_out, parse_metric, upsert_vectors};

pub struct ColdArgs {
    pub s3_endpoint: String,
    pub bucket: String,
    pub n: usize,
    pub dim: usize,
    pub cold_queries: usize,
    pub warm_queries: usize,
    pub latency_ms: (u64, u64),
    /// Read from the build directory instead of the S3 server (isolates the
    /// injected latency from the S3 server's own per-request cost).
    pub local: bool,
    /// The collection's `index.codes` (unset: the default).
    pub codes: Option<String>,
    /// Vectors from this .npy file instead of generated ones.
    pub data: Option<PathBuf>,
    pub metric: String,
    pub out: PathBuf,
}

const NAME: &str = "cold";

pub async fn run(args: ColdArgs) -> Result<()> {
    let nq = args.cold_queries.max(args.warm_queries);
    let HeldOut {
        data,
        queries,
        dim,
        source,
    } = held_out(args.data.as_deref(), args.n, args.dim, nq)?;
    let n = data.len() / dim;
    let metric = parse_metric(&args.metric)?;
    println!(
        "\nCold/warm benchmark: {n} x {dim}-d {} vectors ({source}), S3 server with {}–{} ms per request",
        args.metric, args.latency_ms.0, args.latency_ms.1
    );
    let truth = ground_truth(metric, &data, &queries, dim, 10);

    // Build on a local directory (fast), then copy what the newest manifest
    // references into the S3 server.
    let dir = args.out.join("cold-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let local = dir.join("build");
    let mut settings = floe_core::Settings {
        data_dir: local.clone(),
        ..Default::default()
    };
    settings.flush.max_rows = usize::MAX / 2;
    let t = Instant::now();
    let builder = Floe::open(settings.clone()).await?;
    let mut index = serde_json::json!({"seal_rows": n, "row_group_rows": 8192});
    if let Some(codes) = &args.codes {
        index["codes"] = codes.clone().into();
    }
    let config = serde_json::from_value(serde_json::json!({
        "name": NAME, "dimension": dim, "metric": args.metric, "id_type": "u64",
        "attributes": [{"name": "tag", "type": "string"}],
        "index": index
    }))?;
    builder.create_collection(config).await?;
    upsert_vectors(&builder, NAME, &data, dim, |ids| {
        [(
            "tag".to_string(),
            ids.map(|i| serde_json::json!(format!("item-{i}")))
                .collect(),
        )]
        .into_iter()
        .collect()
    })
    .await?;
    builder.flush(NAME).await?;
    let compacted = builder.compact(NAME).await?;
    for id in &compacted.sealed {
        builder.build_index(NAME, id).await?;
    }
    println!("built locally in {:.1} s", t.elapsed().as_secs_f64());

    let source_config = settings.object_store_config();
    let source = open_object_store(&source_config)?;
    let incarnation = builder.describe(NAME).await?.incarnation;
    let manifest = ManifestStore::new(Arc::clone(&source), NAME, &incarnation)
        .latest()
        .await?;
    let collection_bytes: u64 = manifest
        .segments
        .iter()
        .map(|s| s.size_bytes + s.index.as_ref().map_or(0, |i| i.size_bytes))
        .chain(manifest.deletes.iter().map(|d| d.size_bytes))
        .sum();
    let s3 = if args.local {
        println!("reading from the local build directory");
        source_config
    } else {
        let s3 = ObjectStoreConfig {
            url: format!("s3://{}/cold-{}", args.bucket, crate::run_id()),
            endpoint: Some(args.s3_endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("floe-test".into()),
            secret_access_key: Some("floe-test".into()),
            allow_http: true,
        };
        let target = open_object_store(&s3)?;
        let t = Instant::now();
        let mut files: Vec<String> = source
            .list(Some(&Path::from(format!("collections/{NAME}"))))
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|p| !CollectionPaths::is_data_file(p))
            .collect();
        for s in &manifest.segments {
            files.push(s.data_path.clone());
            if let Some(index) = &s.index {
                files.push(index.path.clone());
            }
        }
        files.extend(manifest.deletes.iter().map(|d| d.path.clone()));
        // The collection's head: what a fresh process reads first.
        files.push(floe_core::storage::collection_head(NAME).to_string());
        for f in &files {
            let bytes = source.get(&Path::from(f.as_str())).await?.bytes().await?;
            target.put(&Path::from(f.as_str()), bytes.into()).await?;
        }
        println!(
            "copied {} files ({:.1} MB of segments and indexes) to the S3 server in {:.1} s",
            files.len(),
            collection_bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        s3
    };

    let reader = |cache_dir: PathBuf| {
        let s3 = s3.clone();
        let incarnation = incarnation.clone();
        let latency = args.latency_ms;
        async move {
            let slow = FaultyStore::new(
                open_object_store(&s3)?,
                FaultConfig {
                    seed: 3,
                    ops: OpFilter::GETS | OpFilter::LISTS,
                    latency: Some((
                        Duration::from_millis(latency.0),
                        Duration::from_millis(latency.1),
                    )),
                    ..Default::default()
                },
            );
            let counting = CountingStore::new(Arc::new(slow));
            let _ = std::fs::remove_dir_all(&cache_dir);
            let mut settings = floe_core::Settings {
                data_dir: cache_dir,
                ..Default::default()
            };
            settings.cache.memory_mb = 1024;
            settings.cache.disk_mb = 2048;
            // The bench's fresh processes share one OS process: a warm-up
            // behind one's cold query would run beside the next one's. The
            // warmed process below asks for its warm-up instead.
            settings.cache.auto_warm = false;
            // Everything was flushed: the reader's log is empty, as the
            // shared one is after a flush trims it.
            let logs = Arc::new(FileLogs::new(
                settings.data_dir.join("log"),
                FileLogOptions::default(),
            ));
            logs.create(LogId {
                collection: NAME,
                incarnation: &incarnation,
            })
            .await?;
            anyhow::Ok((
                Floe::new(Arc::new(counting.clone()), logs, settings),
                counting,
            ))
        }
    };
    let request_with = |q: &[f32], consistency: &str| QueryRequest {
        vector: Some(VectorIn::Numbers(q.iter().map(|x| *x as f64).collect())),
        vector_encoding: Default::default(),
        top_k: 10,
        filter: None,
        include_attributes: None,
        include_vector: false,
        consistency: Some(serde_json::json!(consistency)),
        cursor: None,
        nprobe: None,
        rerank: None,
        recall_target: None,
        explain: true,
    };
    let request = |q: &[f32]| request_with(q, "strong");
    let recall_of = |results: &[floe_core::api::wire::RowOut], want: &[u64]| {
        results
            .iter()
            .filter(|r| matches!(r.id, Id::U64(id) if want.contains(&id)))
            .count() as f64
            / want.len() as f64
    };

    // Cold: a fresh process (empty memory and disk cache) per query.
    let mut cold = Vec::new();
    let mut after_manifest = Vec::new();
    let (mut trips, mut requests, mut bytes, mut recall) = (0usize, 0u64, 0u64, 0.0);
    let mut meta_trips = 0usize;
    for i in 0..args.cold_queries {
        let (floe, counting) = reader(dir.join(format!("cold-{i}"))).await?;
        let q = &queries[i * dim..(i + 1) * dim];
        let t = Instant::now();
        let response = floe_core::api::query(&floe, NAME, request(q)).await?;
        cold.push(t.elapsed());
        let stats = response.explain.context("explain")?;
        if i == 0 {
            let phases: Vec<String> = stats
                .phases
                .iter()
                .map(|p| format!("{} {:.0} ms ({} requests)", p.name, p.ms, p.requests))
                .collect();
            println!("first cold query: {}", phases.join(", "));
        }
        let data_ms: f64 = stats
            .phases
            .iter()
            .filter(|p| {
                !["total", "collection config", "manifest+log", "cache open"]
                    .contains(&p.name.as_str())
            })
            .map(|p| p.ms)
            .sum();
        after_manifest.push(Duration::from_secs_f64(data_ms / 1e3));
        let log = counting.requests();
        let data: Vec<_> = log
            .iter()
            .filter(|r| CollectionPaths::is_data_file(&r.path))
            .collect();
        let data_trips = sequential_round_trips(data.iter().copied());
        trips = trips.max(data_trips);
        meta_trips = meta_trips.max(sequential_round_trips(&log) - data_trips);
        requests += stats.requests;
        bytes += stats.bytes_fetched;
        recall += recall_of(&response.results, &truth[i]);
        // The reader loads the keys its query skipped behind it: let that
        // end, so that each fresh process starts on an idle machine.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(floe);
        let _ = std::fs::remove_dir_all(dir.join(format!("cold-{i}")));
    }
    let nc = args.cold_queries.max(1) as f64;
    println!(
        "\ncold (fresh process, empty cache), {} queries, recall@10 {:.3}:",
        args.cold_queries,
        recall / nc
    );
    print_latency("  end to end (catalog + manifest + data)", &mut cold);
    print_latency("  after the manifest is known", &mut after_manifest);
    println!(
        "  at most {trips} sequential data round trips (+{meta_trips} for catalog and manifest); \
         {:.1} requests and {:.2} MB per query = {:.2}% of the collection's {:.0} MB",
        requests as f64 / nc,
        bytes as f64 / nc / 1e6,
        100.0 * bytes as f64 / nc / collection_bytes as f64,
        collection_bytes as f64 / 1e6
    );

    // Warmed: POST /warm, then each query's first touch of its rows.
    let (floe, _) = reader(dir.join("warm")).await?;
    let t = Instant::now();
    let report = floe.warm(NAME).await?;
    println!(
        "\nwarm-up: {:.1} s, {} requests, {:.1} MB fetched, {} round trips",
        t.elapsed().as_secs_f64(),
        report.stats.requests,
        report.stats.bytes_fetched as f64 / 1e6,
        report.stats.round_trips
    );
    let nw = args.warm_queries;
    let mut warmed = Vec::new();
    let mut first_trips = 0;
    for i in 0..nw {
        let q = &queries[i * dim..(i + 1) * dim];
        let t = Instant::now();
        let response = floe_core::api::query(&floe, NAME, request(q)).await?;
        warmed.push(t.elapsed());
        first_trips = first_trips.max(response.explain.map(|s| s.round_trips).unwrap_or(0));
    }
    println!(
        "\nafter warm-up, first run of {nw} queries (candidates' rows fetched; ≤ {first_trips} round trip):"
    );
    print_latency("  latency", &mut warmed);

    // Hot: the same queries again; everything is cached.
    let mut hot = Vec::new();
    let mut hot_recall = 0.0;
    let mut hot_requests = 0;
    for i in 0..nw {
        let q = &queries[i * dim..(i + 1) * dim];
        let t = Instant::now();
        let response = floe_core::api::query(&floe, NAME, request(q)).await?;
        hot.push(t.elapsed());
        hot_requests += response.explain.map(|s| s.requests).unwrap_or(0);
        hot_recall += recall_of(&response.results, &truth[i]);
    }
    println!(
        "\nwarm (repeat; {hot_requests} object-store requests in all), recall@10 {:.3}:",
        hot_recall / nw.max(1) as f64
    );
    print_latency("  strong (one log position request per query)", &mut hot);
    let mut eventual = Vec::new();
    for i in 0..nw {
        let q = &queries[i * dim..(i + 1) * dim];
        let t = Instant::now();
        floe_core::api::query(&floe, NAME, request_with(q, "eventual")).await?;
        eventual.push(t.elapsed());
    }
    print_latency("  eventual (no request at all)", &mut eventual);
    let footprint = floe.cache_footprint();
    println!(
        "\ncache footprint: memory {:.1} MB of {:.0} MB, disk written {:.1} MB of {:.0} MB",
        footprint.memory_bytes as f64 / 1e6,
        footprint.memory_capacity as f64 / 1e6,
        footprint.disk_written as f64 / 1e6,
        footprint.disk_capacity as f64 / 1e6
    );
    floe.close_cache().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print_latency(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "{label}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
