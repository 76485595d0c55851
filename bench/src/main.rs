//! Floe's benchmark binary. Prints figures; never fails on a timing.
//!
//! ```text
//! floe-bench log       JetStream publish throughput: Floe's Log vs raw async-nats
//! floe-bench file-log  the embedded file log's append throughput
//! floe-bench manifest  manifest commits/s against S3 (and a local directory)
//! floe-bench lambda    cold starts of the Lambda artifacts under a local Runtime API
//! ```
//! Endpoints default to the variables `localstack/up.sh` writes.

mod ann;
mod auth;
mod build;
mod cold;
mod exact;
mod filtered;
mod lambda;
mod lifecycle;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use floe_core::log::{
    AppendOptions, FileLogOptions, FileLogs, JetStreamConfig, JetStreamLogs, Log, LogId,
    LogProvider,
};
use floe_core::manifest::{ManifestStore, Operation, SegmentEntry};
use floe_core::storage::{ObjectStoreConfig, open_object_store};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

#[derive(Parser)]
#[command(about = "Floe benchmarks: print measured figures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One sealed segment's index build: time and peak RSS (in a child
    /// process, optionally under a data limit), beside FAISS IVF-Flat.
    Build {
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value = "l2")]
        metric: String,
        /// Run the build under `prlimit --data` of this many GiB.
        #[arg(long)]
        limit_gb: Option<u64>,
        #[arg(long)]
        faiss: bool,
        #[arg(long, default_value = "bench-out/build")]
        out: std::path::PathBuf,
    },
    /// The child of `build`: builds the missing index of a prepared store.
    #[command(hide = true)]
    IndexBuild {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Collections of several sizes at default settings, with the
    /// background indexer: time to fully indexed, write amplification,
    /// warm recall and latency (beside FAISS with --faiss).
    Lifecycle {
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Upsert at most this many rows a second (default: as fast as possible).
        #[arg(long)]
        rate: Option<usize>,
        /// Then overwrite 30% and delete 10%, compact, and measure again.
        #[arg(long)]
        churn: bool,
        /// One client queries (eventual, default knobs) all through the
        /// load, flushes, compactions and index builds, and 10 s past the
        /// last: a timeline of its throughput and latency.
        #[arg(long)]
        query_during: bool,
        #[arg(long)]
        faiss: bool,
        #[arg(long, default_value = "bench-out/lifecycle")]
        out: std::path::PathBuf,
    },
    /// Publish throughput to JetStream for several record sizes.
    Log {
        #[arg(long, env = "FLOE_TEST_NATS_URL")]
        nats_url: String,
        /// Record sizes in bytes.
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 65536, 1048576])]
        sizes: Vec<usize>,
        /// Bytes to publish per size and mode (bounds the run).
        #[arg(long, default_value_t = 256 * 1024 * 1024)]
        bytes_per_run: usize,
        /// Most records per size and mode.
        #[arg(long, default_value_t = 20_000)]
        max_records: usize,
        /// Appends in flight at once in the concurrent modes.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
    },
    /// Append throughput of the embedded file log (fsync per append).
    FileLog {
        #[arg(long, default_value = ".")]
        dir: String,
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 65536, 1048576])]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 128 * 1024 * 1024)]
        bytes_per_run: usize,
        #[arg(long, default_value_t = 5_000)]
        max_records: usize,
    },
    /// What the API key check costs: alone, and per HTTP request.
    Auth(auth::AuthArgs),
    /// Upsert throughput and strong-query latency through the HTTP API.
    Api {
        /// `embedded` (local directory + file log) or `cloud` (S3 + NATS
        /// from the FLOE_TEST_* variables of the local stack).
        #[arg(long, default_value = "embedded")]
        mode: String,
        #[arg(long, default_value_t = 100_000)]
        vectors: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Upsert requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 300)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// How upserts carry vectors: `json` (rows of JSON numbers) or
        /// `base64` (columnar, every vector packed as one base64 string).
        #[arg(long, default_value = "json")]
        encoding: String,
    },
    /// Writes generated vectors (the `api` benchmark's clustered data, with
    /// an i64 attribute `group`) as a Parquet file for `floe import`.
    Parquet {
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// ANN index: recall@10 and latency over nprobe, beside FAISS.
    Ann {
        /// A 2-D float32 .npy file; default: generated clustered vectors.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value = "l2")]
        metric: String,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16, 32, 64])]
        nprobes: Vec<usize>,
        /// Also run FAISS IVF-Flat and HNSW (bench/python/faiss_ref.py).
        #[arg(long)]
        faiss: bool,
        /// Concurrent clients for a throughput table, e.g. 1,4,16.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<usize>,
        /// Also run the default-knob queries over HTTP (`floe serve` on
        /// loopback), the query vector as JSON numbers and as base64: what
        /// HTTP and JSON add to the engine's time.
        #[arg(long)]
        http: bool,
        /// The collection's `index.codes` (sq8 or rabitq; unset: the default).
        #[arg(long)]
        codes: Option<String>,
        #[arg(long, default_value = "target/ann-bench")]
        out: std::path::PathBuf,
    },
    /// Exact search over rows outside an index (log tail, unindexed
    /// segments) beside numpy brute force and FAISS IndexFlat.
    Exact {
        #[arg(long, default_value_t = 400_000)]
        n: usize,
        #[arg(long, default_value_t = 50)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value = "target/exact-bench")]
        out: std::path::PathBuf,
    },
    /// Filtered vector search at several selectivities: recall and latency
    /// beside the unfiltered query.
    Filtered {
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Matching rows per thousand.
        #[arg(long, value_delimiter = ',', default_values_t = [1u64, 10, 100, 500])]
        per_mille: Vec<u64>,
        /// Call the warm-up API (`POST …/warm`) before measuring.
        #[arg(long)]
        warm: bool,
        /// Turn `cache.auto_warm` off: the process is warm only for what
        /// the queries asked (by default the bench waits for the warm-up
        /// behind the first query to end before measuring).
        #[arg(long)]
        no_auto_warm: bool,
        #[arg(long, default_value = "target/filtered-bench")]
        out: std::path::PathBuf,
    },
    /// Cold (fresh process) and warm query latency on an indexed collection
    /// in the S3 server, with per-request latency injected.
    Cold {
        #[arg(long, env = "FLOE_TEST_S3_ENDPOINT")]
        s3_endpoint: String,
        #[arg(long, env = "FLOE_TEST_S3_BUCKET")]
        bucket: String,
        #[arg(long, default_value_t = 1_000_000)]
        n: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Queries run each in a fresh process (empty cache).
        #[arg(long, default_value_t = 30)]
        cold_queries: usize,
        #[arg(long, default_value_t = 200)]
        warm_queries: usize,
        /// Injected latency per GET/HEAD/LIST, uniform in [min, max] ms.
        #[arg(long, default_value_t = 20)]
        latency_min_ms: u64,
        #[arg(long, default_value_t = 60)]
        latency_max_ms: u64,
        /// Read from the local build directory (with the same injected
        /// latency) instead of the S3 server.
        #[arg(long)]
        local: bool,
        /// The collection's `index.codes` (sq8 or rabitq; unset: the default).
        #[arg(long)]
        codes: Option<String>,
        /// A 2-D float32 .npy file (its last rows are the queries, never
        /// inserted); default: `--n` generated vectors of `--dim`.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[arg(long, default_value = "l2")]
        metric: String,
        #[arg(long, default_value = "target/cold-bench")]
        out: std::path::PathBuf,
    },
    /// Cold starts of the Lambda artifacts (infra/build.sh) under a local
    /// Runtime API, against the S3 server and nats-server.
    Lambda(lambda::LambdaArgs),
    /// Manifest commits per second.
    Manifest {
        #[arg(long, env = "FLOE_TEST_S3_ENDPOINT")]
        s3_endpoint: String,
        #[arg(long, env = "FLOE_TEST_S3_BUCKET")]
        bucket: String,
        #[arg(long, default_value_t = 300)]
        commits: usize,
        /// Concurrent committers in the racing run.
        #[arg(long, default_value_t = 8)]
        committers: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Log {
            nats_url,
            sizes,
            bytes_per_run,
            max_records,
            in_flight,
        } => bench_log(&nats_url, &sizes, bytes_per_run, max_records, in_flight).await,
        Command::FileLog {
            dir,
            sizes,
            bytes_per_run,
            max_records,
        } => bench_file_log(&dir, &sizes, bytes_per_run, max_records).await,
        Command::Api {
            mode,
            vectors,
            dim,
            batch,
            concurrency,
            queries,
            top_k,
            encoding,
        } => {
            bench_api(
                &mode,
                vectors,
                dim,
                batch,
                concurrency,
                queries,
                top_k,
                &encoding,
            )
            .await
        }
        Command::Parquet { n, dim, out } => write_parquet(n, dim, &out),
        Command::Build {
            n,
            dim,
            metric,
            limit_gb,
            faiss,
            out,
        } => {
            build::run(build::BuildArgs {
                n,
                dim,
                metric,
                limit_gb,
                faiss,
                out,
            })
            .await
        }
        Command::IndexBuild { dir } => build::index_build(&dir).await,
        Command::Lifecycle {
            sizes,
            dim,
            queries,
            rate,
            churn,
            query_during,
            faiss,
            out,
        } => {
            lifecycle::run(lifecycle::LifecycleArgs {
                sizes,
                dim,
                queries,
                rate,
                churn,
                query_during,
                faiss,
                out,
            })
            .await
        }
        Command::Ann {
            data,
            n,
            dim,
            metric,
            queries,
            nprobes,
            faiss,
            clients,
            http,
            codes,
            out,
        } => {
            ann::run(ann::AnnArgs {
                http,
                codes,
                data,
                n,
                dim,
                metric,
                queries,
                nprobes,
                faiss,
                clients,
                out,
            })
            .await
        }
        Command::Exact {
            n,
            dim,
            queries,
            out,
        } => {
            std::fs::create_dir_all(&out)?;
            exact::run(exact::ExactArgs {
                n,
                dim,
                queries,
                out,
            })
            .await
        }
        Command::Filtered {
            n,
            dim,
            queries,
            per_mille,
            warm,
            no_auto_warm,
            out,
        } => {
            std::fs::create_dir_all(&out)?;
            filtered::run(filtered::FilteredArgs {
                n,
                dim,
                queries,
                per_mille,
                warm,
                auto_warm: !no_auto_warm,
                out,
            })
            .await
        }
        Command::Cold {
            s3_endpoint,
            bucket,
            n,
            dim,
            cold_queries,
            warm_queries,
            latency_min_ms,
            latency_max_ms,
            local,
            codes,
            data,
            metric,
            out,
        } => {
            cold::run(cold::ColdArgs {
                codes,
                data,
                metric,
                s3_endpoint,
                bucket,
                n,
                dim,
                cold_queries,
                warm_queries,
                latency_ms: (latency_min_ms, latency_max_ms),
                local,
                out,
            })
            .await
        }
        Command::Lambda(args) => lambda::run(args).await,
        Command::Auth(args) => auth::run(args).await,
        Command::Manifest {
            s3_endpoint,
            bucket,
            commits,
            committers,
        } => bench_manifest(&s3_endpoint, &bucket, commits, committers).await,
    }
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn row(size: usize, mode: &str, records: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{:>9} {:<34} {:>8} {:>12.0} {:>10.1}",
        size,
        mode,
        records,
        records as f64 / secs,
        (records * size) as f64 / secs / 1e6
    );
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:>9} {:<34} {:>8} {:>12} {:>10}",
        "bytes", "mode", "records", "records/s", "MB/s"
    );
}

/// Appends `n` records through `log`, `in_flight` at a time.
async fn drive_log(
    log: &Arc<dyn Log>,
    payload: &Bytes,
    n: usize,
    in_flight: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= in_flight
            && let Some(result) = pending.next().await
        {
            result?;
        }
        let log = Arc::clone(log);
        let payload = payload.clone();
        pending.push(async move { log.append(payload, AppendOptions::default()).await });
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(start.elapsed())
}

async fn bench_log(
    url: &str,
    sizes: &[usize],
    bytes_per_run: usize,
    max_records: usize,
    in_flight: usize,
) -> Result<()> {
    let id = run_id();
    let config = JetStreamConfig {
        url: url.to_string(),
        stream_prefix: format!("BENCH_{id}"),
        subject_prefix: format!("bench_{id}"),
        ..Default::default()
    };
    let logs = JetStreamLogs::connect(config.clone()).await?;
    // The reference: a bare async-nats client publishing to its own stream,
    // with acks awaited one by one, or pipelined like `nats bench js pub --batch`.
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    header(&format!(
        "JetStream publish-with-ack throughput ({url}, file storage, R1)"
    ));
    for &size in sizes {
        let n = (bytes_per_run / size).clamp(50, max_records);
        let payload = Bytes::from(vec![0x5au8; size]);
        let collection = format!("s{size}");
        let log_id = LogId {
            collection: &collection,
            incarnation: "bench",
        };
        let log = logs.create(log_id).await?;
        let elapsed = drive_log(&log, &payload, n, 1).await?;
        row(size, "floe Log::append, 1 in flight", n, elapsed);
        let elapsed = drive_log(&log, &payload, n, in_flight).await?;
        row(
            size,
            &format!("floe Log::append, {in_flight} in flight"),
            n,
            elapsed,
        );

        let stream = format!("RAW_{id}_{size}");
        let subject = format!("raw_{id}.{size}");
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        let start = Instant::now();
        for _ in 0..n {
            js.publish(subject.clone(), payload.clone()).await?.await?;
        }
        row(size, "raw async-nats, 1 in flight", n, start.elapsed());
        let start = Instant::now();
        let mut acks = FuturesUnordered::new();
        for _ in 0..n {
            if acks.len() >= in_flight
                && let Some(ack) = acks.next().await
            {
                ack?;
            }
            acks.push(
                js.publish(subject.clone(), payload.clone())
                    .await?
                    .into_future(),
            );
        }
        while let Some(ack) = acks.next().await {
            ack?;
        }
        row(
            size,
            &format!("raw async-nats, {in_flight} in flight"),
            n,
            start.elapsed(),
        );

        logs.delete(log_id).await?;
        js.delete_stream(&stream).await?;
    }
    Ok(())
}

async fn bench_file_log(
    dir: &str,
    sizes: &[usize],
    bytes_per_run: usize,
    max_records: usize,
) -> Result<()> {
    let root = tempfile_in(dir)?;
    let logs = FileLogs::new(&root, FileLogOptions::default());
    header(&format!(
        "embedded file log append throughput (fsync per append, {})",
        root.display()
    ));
    for &size in sizes {
        let n = (bytes_per_run / size).clamp(50, max_records);
        let payload = Bytes::from(vec![0x5au8; size]);
        let log = logs
            .create(LogId {
                collection: &format!("s{size}"),
                incarnation: "bench",
            })
            .await?;
        let elapsed = drive_log(&log, &payload, n, 1).await?;
        row(size, "floe FileLog::append, 1 in flight", n, elapsed);
        let elapsed = drive_log(&log, &payload, n, 16).await?;
        row(size, "floe FileLog::append, 16 in flight", n, elapsed);
    }
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

fn tempfile_in(dir: &str) -> Result<std::path::PathBuf> {
    let path = std::path::Path::new(dir).join(format!("floe-bench-{}", run_id()));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

fn segment(id: String) -> SegmentEntry {
    SegmentEntry {
        data_path: format!("segments/{id}/data.parquet"),
        id,
        rows: 1000,
        size_bytes: 1 << 20,
        min_lsn: 1,
        max_lsn: 1000,
        sealed: false,
        index: None,
        footer_bytes: 0,
        rows_lsn: None,
    }
}

async fn bench_manifest(
    endpoint: &str,
    bucket: &str,
    commits: usize,
    committers: usize,
) -> Result<()> {
    let s3 = open_object_store(&ObjectStoreConfig {
        url: format!("s3://{bucket}/bench-{}", run_id()),
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("floe-test".into()),
        secret_access_key: Some("floe-test".into()),
        allow_http: true,
    })?;
    let dir = tempfile_in(".")?;
    let local = open_object_store(&ObjectStoreConfig {
        url: format!("file://{}", std::fs::canonicalize(&dir)?.display()),
        ..Default::default()
    })?;
    println!(
        "\nmanifest commits (each: list after hint + read newest + create-only put + hint put)"
    );
    println!(
        "{:<28} {:>11} {:>8} {:>10} {:>12}",
        "store", "committers", "commits", "commits/s", "ms/commit"
    );
    for (name, store) in [
        (format!("s3 ({endpoint})"), s3),
        ("local directory".to_string(), local),
    ] {
        for writers in [1, committers] {
            let collection = format!("c{writers}");
            let start = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let ms = ManifestStore::new(Arc::clone(&store), &collection, "i");
                    let each = commits / writers;
                    tokio::spawn(async move {
                        for i in 0..each {
                            let op = Operation::Replace {
                                remove: vec![],
                                add: vec![segment(format!("w{w}-{i}"))],
                                drop_deletes: vec![],
                                add_deletes: vec![],
                                schema: 0,
                            };
                            ms.commit(None, &op).await?;
                        }
                        anyhow::Ok(each)
                    })
                })
                .collect();
            let mut done = 0;
            for task in tasks {
                done += task.await??;
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "{:<28} {:>11} {:>8} {:>10.1} {:>12.2}",
                name,
                writers,
                done,
                done as f64 / elapsed,
                elapsed * 1000.0 / done as f64
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `api` benchmark's data: 100 seeded centres in [-1, 1) and `n`
/// vectors around them (row i near centre i % 100), flattened.
fn clustered(n: usize, dim: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    for id in 0..n {
        for x in &centres[id % centres.len()] {
            data.push(x + rng.random_range(-0.1f32..0.1));
        }
    }
    (centres, data)
}

/// `floe-bench parquet`: the clustered data as a Parquet file with `id`,
/// `vector` and an i64 attribute `group`.
fn write_parquet(n: usize, dim: usize, out: &std::path::Path) -> Result<()> {
    use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let (_, data) = clustered(n, dim);
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::clone(&item), dim as i32),
            false,
        ),
        Field::new("group", DataType::Int64, true),
    ]));
    let file = std::fs::File::create(out).with_context(|| out.display().to_string())?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)?;
    for start in (0..n).step_by(65_536) {
        let end = (start + 65_536).min(n);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(start as i64..end as i64)),
            Arc::new(FixedSizeListArray::try_new(
                Arc::clone(&item),
                dim as i32,
                Arc::new(Float32Array::from(data[start * dim..end * dim].to_vec())),
                None,
            )?),
            Arc::new(Int64Array::from_iter_values(
                (start..end).map(|i| (i % 100) as i64),
            )),
        ];
        writer.write(&RecordBatch::try_new(Arc::clone(&schema), columns)?)?;
    }
    writer.close()?;
    println!("{n} rows x {dim}-d written to {}", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the `api` flags, one to one
async fn bench_api(
    mode: &str,
    vectors: usize,
    dim: usize,
    batch: usize,
    concurrency: usize,
    queries: usize,
    top_k: usize,
    encoding: &str,
) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    let dir = tempfile::tempdir()?;
    let mut settings = floe_core::Settings {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    // No background flushes during the measurement: flushes are explicit.
    settings.flush.max_age_secs = 3600;
    settings.flush.max_rows = usize::MAX / 4;
    settings.flush.max_bytes = usize::MAX / 4;
    if mode == "cloud" {
        let env = |k: &str| {
            std::env::var(k).with_context(|| format!("{k} (source the local stack's env file)"))
        };
        settings.object_store = Some(ObjectStoreConfig {
            url: format!("s3://{}/bench-{}", env("FLOE_TEST_S3_BUCKET")?, run_id()),
            endpoint: Some(env("FLOE_TEST_S3_ENDPOINT")?),
            region: Some("us-east-1".into()),
            access_key_id: Some("floe-test".into()),
            secret_access_key: Some("floe-test".into()),
            allow_http: true,
        });
        let id = run_id();
        settings.nats = Some(JetStreamConfig {
            url: env("FLOE_TEST_NATS_URL")?,
            stream_prefix: format!("BENCH_{id}"),
            subject_prefix: format!("bench_{id}"),
            ..Default::default()
        });
    } else if mode != "embedded" {
        anyhow::bail!("--mode must be embedded or cloud");
    }
    let floe = floe_core::Floe::open(settings).await?;
    let server = floe::serve::start(floe, "127.0.0.1:0", false, std::future::pending()).await?;
    let base = format!("http://{}/v1/collections/bench", server.addr);
    let http = reqwest::Client::new();
    let created = http
        .put(&base)
        .json(&json!({"dimension": dim, "metric": "l2"}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "create: {}",
        created.text().await?
    );

    // Seeded, clustered data: 100 centres with noise.
    let (centres, data) = clustered(vectors, dim);
    let mut rng = rand::rngs::StdRng::seed_from_u64(43);
    let bodies: Vec<String> = (0..vectors.div_ceil(batch))
        .map(|b| {
            let ids = b * batch..((b + 1) * batch).min(vectors);
            let vectors = &data[ids.start * dim..ids.end * dim];
            match encoding {
                "base64" => Ok(json!({"columns": {
                    "ids": ids.collect::<Vec<_>>(),
                    "vectors": floe_core::api::vectors::encode_base64(vectors),
                }})
                .to_string()),
                "json" => {
                    let rows: Vec<_> = ids
                        .zip(vectors.chunks_exact(dim))
                        .map(|(id, v)| json!({"id": id, "vector": v}))
                        .collect();
                    Ok(json!({ "rows": rows }).to_string())
                }
                other => anyhow::bail!("--encoding {other}: json or base64"),
            }
        })
        .collect::<Result<_>>()?;
    let payload_mb = bodies.iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;

    println!(
        "\nFloe API benchmark, mode {mode}: {vectors} vectors x {dim}-d, batches of {batch}, {concurrency} upserts in flight, vectors as {encoding}"
    );
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut latencies = Vec::new();
    for body in bodies {
        if pending.len() >= concurrency
            && let Some(r) = pending.next().await
        {
            latencies.push(r?);
        }
        let http = http.clone();
        let url = format!("{base}/upsert");
        pending.push(async move {
            let t = Instant::now();
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "upsert: {}", resp.text().await?);
            anyhow::Ok(t.elapsed().as_secs_f64() * 1000.0)
        });
    }
    while let Some(r) = pending.next().await {
        latencies.push(r?);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "upsert to acknowledged: {:.0} vectors/s ({:.1} MB/s of request bodies, {:.0} bytes per vector), request p50 {:.1} ms p99 {:.1} ms",
        vectors as f64 / secs,
        payload_mb / secs,
        payload_mb * 1e6 / vectors as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    let t = Instant::now();
    let flushed: serde_json::Value = http
        .post(format!("{base}/flush"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "flush of {} rows into segments: {:.2} s",
        flushed["rows_flushed"],
        t.elapsed().as_secs_f64()
    );

    for consistency in ["strong", "eventual"] {
        let mut lat = Vec::with_capacity(queries);
        // One warm-up query loads the segments into memory.
        for i in 0..queries + 1 {
            let q: Vec<f32> = centres[i % centres.len()]
                .iter()
                .map(|x| x + rng.random_range(-0.1f32..0.1))
                .collect();
            let t = Instant::now();
            let resp = http.post(format!("{base}/query")).json(&json!({"vector": q, "top_k": top_k, "consistency": consistency, "include_attributes": false})).send().await?;
            anyhow::ensure!(resp.status().is_success(), "query: {}", resp.text().await?);
            let body: serde_json::Value = resp.json().await?;
            anyhow::ensure!(
                body["results"].as_array().map(|r| r.len()) == Some(top_k),
                "short result"
            );
            if i > 0 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "{consistency} query, exact, top_k {top_k} over {vectors}: p50 {:.2} ms  p99 {:.2} ms  ({} queries, sequential)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len()
        );
    }
    Ok(())
}
