//! `floe-bench auth`: what the API key check costs per request.
//!
//! Two measurements in one run: the check alone (`Keys::authenticate` on a
//! minted key whose record is cached, and on the admin key), and whole
//! HTTP requests (`GET /v1/collections/{name}`, a read that touches no
//! object store once the collection is open) against two embedded servers
//! alike but for keys, interleaved so machine noise hits both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use floe_core::auth::{Grant, Keys, Role};

/// What to run.
#[derive(clap::Args)]
pub struct AuthArgs {
    /// Checks timed in the micro-benchmark.
    #[arg(long, default_value_t = 200_000)]
    checks: usize,
    /// HTTP requests per server.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
}

const ADMIN: &str = "bench-admin-key-0123456789";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(args: AuthArgs) -> Result<()> {
    // The check alone.
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let settings = floe_core::config::AuthSettings {
        admin_key: Some(ADMIN.to_string().into()),
        ..Default::default()
    };
    let keys = Keys::new(store, &settings);
    let minted = keys
        .create(
            "bench",
            Grant {
                role: Role::Read,
                collections: Some(vec!["bench".into()]),
            },
        )
        .await?;
    println!("## API key check alone ({} checks each)\n", args.checks);
    println!("| key | ns per check |");
    println!("|---|---:|");
    for (what, header) in [
        (
            "minted key, record cached",
            format!("Bearer {}", minted.key),
        ),
        ("admin key", format!("Bearer {ADMIN}")),
    ] {
        let started = Instant::now();
        for _ in 0..args.checks {
            keys.authenticate(Some(&header)).await?;
        }
        let ns = started.elapsed().as_nanos() as f64 / args.checks as f64;
        println!("| {what} | {ns:.0} |");
    }

    // Whole requests, keys off and on.
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for with_keys in [false, true] {
        let dir = tempfile::tempdir()?;
        let mut settings = floe_core::Settings {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        if with_keys {
            settings.auth.admin_key = Some(ADMIN.to_string().into());
        }
        let floe = floe_core::Floe::open(settings).await?;
        let server = floe::serve::start(floe, "127.0.0.1:0", false, std::future::pending()).await?;
        let base = format!("http://{}/v1/collections/bench", server.addr);
        let http = reqwest::Client::new();
        let created = http
            .put(&base)
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"dimension": 4, "metric": "l2"}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status().is_success(),
            "create: {}",
            created.text().await?
        );
        let key = if with_keys {
            let minted = http
                .post(format!("http://{}/v1/keys", server.addr))
                .bearer_auth(ADMIN)
                .json(
                    &serde_json::json!({"name": "bench", "role": "read", "collections": ["bench"]}),
                )
                .send()
                .await?
                .json::<serde_json::Value>()
                .await?;
            Some(minted["key"].as_str().context("minted key")?.to_string())
        } else {
            None
        };
        servers.push((base, key, server));
        dirs.push(dir);
    }
    let http = reqwest::Client::new();
    let mut latencies = [Vec::new(), Vec::new()];
    for round in 0..args.requests + 200 {
        for (i, (base, key, _)) in servers.iter().enumerate() {
            let request = http.get(base);
            let request = match key {
                Some(key) => request.bearer_auth(key),
                None => request,
            };
            let started = Instant::now();
            let response = request.send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "describe: {}",
                response.status()
            );
            response.bytes().await?;
            // The first 200 rounds warm connections and caches.
            if round >= 200 {
                latencies[i].push(started.elapsed());
            }
        }
    }
    println!(
        "\n## GET /v1/collections/{{name}} over HTTP, one client ({} requests each, interleaved)\n",
        args.requests
    );
    println!("| server | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    let mut p50s = Vec::new();
    for (what, l) in ["no keys", "keys on (minted read key)"]
        .iter()
        .zip(latencies.iter_mut())
    {
        l.sort();
        let (p50, p99) = (percentile(l, 0.5), percentile(l, 0.99));
        p50s.push(p50);
        println!(
            "| {what} | {:.1} | {:.1} |",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!(
        "\nkeys on / no keys, p50: {:.3}",
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64()
    );
    Ok(())
}
