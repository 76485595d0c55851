//! Lambda cold starts on loopback: each function's zipped `bootstrap` (from
//! `infra/build.sh`) is started again and again under the local Runtime API
//! (`floe_tests::lambda_emulator`), against the S3 server and nats-server.
//! Per function: the init duration (process start → first `next`, what
//! Lambda reports as `Init Duration`), the first invocation after init, warm
//! invocations, and peak resident memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use floe_tests::lambda_emulator::{
    ApiGateway, Artifacts, Backends, FUNCTIONS, Function, template_routes,
};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct LambdaArgs {
    /// `target/lambda/<arch>`: the artifacts of this machine's architecture.
    #[arg(long, default_value = "target/lambda/x86_64")]
    artifacts: PathBuf,
    #[arg(long, env = "FLOE_TEST_S3_ENDPOINT")]
    s3_endpoint: String,
    #[arg(long, env = "FLOE_TEST_S3_BUCKET")]
    bucket: String,
    #[arg(long, env = "FLOE_TEST_NATS_URL")]
    nats_url: String,
    /// Cold starts per function.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Warm invocations after each cold start.
    #[arg(long, default_value_t = 20)]
    warm: usize,
    /// The query function's disk cache tier in MB (0: memory only).
    #[arg(long, default_value_t = 256)]
    query_cache_disk_mb: u64,
}

type Request = (reqwest::Method, String, Option<Value>);

/// An upsert of rows `ids` into `collection`.
fn upsert(collection: &str, ids: std::ops::Range<u64>) -> Request {
    let rows: Vec<Value> = ids
        .map(|id| json!({"id": id, "vector": vector(id)}))
        .collect();
    (
        reqwest::Method::POST,
        format!("/v1/collections/{collection}/upsert"),
        Some(json!({ "rows": rows })),
    )
}

/// The `i`th request an HTTP function serves in the benchmark. The ingest
/// function writes to a collection of its own, so the query function's
/// collection stays flushed.
fn request(logical_id: &str, i: u64) -> Request {
    match logical_id {
        "IngestFunction" => upsert("bench-ingest", i * 100..(i + 1) * 100),
        _ => (
            reqwest::Method::POST,
            "/v1/collections/bench/query".into(),
            Some(json!({"vector": vector(i), "top_k": 10})),
        ),
    }
}

fn vector(i: u64) -> Vec<f32> {
    (0..128)
        .map(|d| ((i.wrapping_mul(2654435761) ^ d) % 1000) as f32 / 1000.0)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn call(
    http: &reqwest::Client,
    gateway: &ApiGateway,
    (method, path, body): Request,
) -> Result<f64> {
    let started = Instant::now();
    let mut req = http.request(method, format!("{}{path}", gateway.url));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{path}: {status}: {text}");
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

pub async fn run(args: LambdaArgs) -> Result<()> {
    let backends = Backends {
        s3_endpoint: args.s3_endpoint,
        bucket: args.bucket,
        prefix: format!("lambda-bench-{}", crate::run_id()),
        nats_url: args.nats_url,
        streams: format!("lb_{}", crate::run_id()),
        query_cache_disk_mb: args.query_cache_disk_mb,
    };
    let dir = tempfile::tempdir()?;
    let artifacts = Artifacts {
        dir: args.artifacts.clone(),
        launcher: Vec::new(),
    };
    let routes = template_routes(&floe_tests::read_repo_file("infra/template.yaml"));
    let http = reqwest::Client::new();

    // A collection with flushed rows, so queries read a segment.
    {
        let (ingest, _) = backends
            .start("IngestFunction", &artifacts, dir.path())
            .await
            .map_err(|e| anyhow!(e))?;
        let gateway = gateway_for(&routes, "IngestFunction", ingest).await?;
        for name in ["bench", "bench-ingest"] {
            call(
                &http,
                &gateway,
                (
                    reqwest::Method::PUT,
                    format!("/v1/collections/{name}"),
                    Some(json!({"dimension": 128, "metric": "l2"})),
                ),
            )
            .await?;
        }
        for i in 0..100u64 {
            call(&http, &gateway, upsert("bench", i * 100..(i + 1) * 100)).await?;
        }
        call(
            &http,
            &gateway,
            (
                reqwest::Method::POST,
                "/v1/collections/bench/flush".into(),
                Some(json!({})),
            ),
        )
        .await?;
    }

    println!(
        "Lambda cold starts ({} starts per function, {} warm invocations each; artifacts {})",
        args.starts,
        args.warm,
        args.artifacts.display()
    );
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10}",
        "function", "init p50", "init max", "first p50", "warm p50", "warm p99", "peak RSS"
    );
    for (logical_id, binary) in FUNCTIONS {
        let (mut init, mut first, mut warm, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
        for start in 0..args.starts {
            let (function, took) = backends
                .start(logical_id, &artifacts, dir.path())
                .await
                .map_err(|e| anyhow!(e))?;
            init.push(took.as_secs_f64() * 1e3);
            let function = Arc::new(function);
            if logical_id == "IndexerFunction" {
                // Its scheduled round, invoked as EventBridge does.
                let schedule = floe_tests::fixture("eventbridge-scheduled.json");
                let t = Instant::now();
                function
                    .invoke_ok(schedule.clone())
                    .await
                    .map_err(|e| anyhow!(e))?;
                first.push(t.elapsed().as_secs_f64() * 1e3);
                for _ in 0..args.warm {
                    let t = Instant::now();
                    function
                        .invoke_ok(schedule.clone())
                        .await
                        .map_err(|e| anyhow!(e))?;
                    warm.push(t.elapsed().as_secs_f64() * 1e3);
                }
            } else {
                let gateway = gateway_for(&routes, logical_id, Arc::clone(&function)).await?;
                let n = (start * 1000) as u64;
                first.push(call(&http, &gateway, request(logical_id, n)).await?);
                for i in 0..args.warm as u64 {
                    warm.push(call(&http, &gateway, request(logical_id, n + i + 1)).await?);
                }
            }
            rss = rss.max(function.peak_rss_kib().unwrap_or(0));
        }
        for v in [&mut init, &mut first, &mut warm] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        println!(
            "{:<14} {:>8.1}ms {:>8.1}ms {:>10.1}ms {:>10.2}ms {:>10.2}ms {:>7.1}MiB",
            binary,
            percentile(&init, 0.5),
            init.last().copied().unwrap_or(f64::NAN),
            percentile(&first, 0.5),
            percentile(&warm, 0.5),
            percentile(&warm, 0.99),
            rss as f64 / 1024.0
        );
    }
    println!(
        "(init: process start to the runtime's first `next`; first: the first request after it)"
    );
    Ok(())
}

async fn gateway_for(
    routes: &[floe_tests::lambda_emulator::Route],
    logical_id: &str,
    function: impl Into<Arc<Function>>,
) -> Result<ApiGateway> {
    let functions = HashMap::from([(logical_id.to_string(), function.into())]);
    Ok(ApiGateway::start(routes.to_vec(), functions).await?)
}
