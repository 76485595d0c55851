//! `floe-bench build`: the index build of one sealed segment, its time and
//! peak memory, beside FAISS IVF-Flat train+add on the same vectors with
//! the same threads. The build runs in a child process (`floe-bench
//! index-build`), so its peak RSS is the build's own, optionally under an
//! address-space-free data limit (`--limit-gb`, RLIMIT_DATA through
//! `prlimit`): the proof that a build fits an indexer function.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use floe_core::Floe;

use crate::ann::{generate, run_faiss, upsert_vectors, write_npy};

pub struct BuildArgs {
    pub n: usize,
    pub dim: usize,
    pub metric: String,
    pub limit_gb: Option<u64>,
    pub faiss: bool,
    pub out: PathBuf,
}

const NAME: &str = "build";

fn settings(dir: &Path) -> floe_core::Settings {
    let mut s = floe_core::Settings {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    s.flush.max_rows = 1 << 30;
    s.flush.max_bytes = 256 << 20;
    s
}

/// Peak and current resident memory of this process, in MiB.
pub fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub async fn run(args: BuildArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let dir = args.out.join(format!("floe-{}x{}", args.n, args.dim));
    let _ = std::fs::remove_dir_all(&dir);
    let vector_mb = (args.n * args.dim * 4) as f64 / (1 << 20) as f64;
    println!(
        "\nIndex build of one sealed segment: {} x {}-d {} generated vectors ({vector_mb:.0} MiB of f32), {} threads",
        args.n,
        args.dim,
        args.metric,
        std::thread::available_parallelism().map_or(1, |t| t.get())
    );
    {
        let data = generate(args.n, args.dim, 7);
        if args.faiss {
            let body: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            write_npy(&args.out.join("build.npy"), "<f4", args.n, args.dim, &body)?;
        }
        let floe: Arc<Floe> = Floe::open(settings(&dir)).await?;
        let config = serde_json::from_value(serde_json::json!({
            "name": NAME, "dimension": args.dim, "metric": args.metric, "id_type": "u64",
            "index": {"seal_rows": args.n, "seal_bytes": 1u64 << 50}
        }))?;
        floe.create_collection(config).await?;
        let t = Instant::now();
        upsert_vectors(&floe, NAME, &data, args.dim, |_| Default::default()).await?;
        drop(data);
        while floe.describe(NAME).await?.stats.unflushed_records > 0 {
            floe.flush(NAME).await?;
        }
        let compacted = floe.compact(NAME).await?;
        if compacted.sealed.len() != 1 {
            bail!("expected one sealed segment: {compacted:?}");
        }
        println!(
            "prepared (ingest, flush, compaction) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let exe = std::env::current_exe()?;
    let mut cmd = match args.limit_gb {
        Some(gb) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--data={}", gb << 30)).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let output = cmd
        .args(["index-build", "--dir"])
        .arg(&dir)
        .output()
        .context("running floe-bench index-build")?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "the index build failed{}: {}",
            args.limit_gb
                .map(|g| format!(" under a {g} GiB data limit"))
                .unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let peak = v["peak_rss_mb"].as_f64().unwrap_or(0.0);
    println!(
        "{:<16} build {:>7.1} s   peak RSS {:>7.0} MiB ({:.2}x the vectors){}",
        "floe ivf-sq8",
        v["build_s"].as_f64().unwrap_or(0.0),
        peak,
        peak / vector_mb,
        args.limit_gb
            .map(|g| format!(", under a {g} GiB data limit (prlimit --data)"))
            .unwrap_or_default()
    );
    if args.faiss {
        let nlist = ((args.n as f64).sqrt().round() as usize).clamp(1, 4096);
        let lines = run_faiss(&[
            "--data".into(),
            args.out.join("build.npy").display().to_string(),
            "--metric".into(),
            args.metric.clone(),
            "--nlist".into(),
            nlist.to_string(),
            "--build-only".into(),
        ])?;
        for v in lines {
            let peak = v["peak_rss_mb"].as_f64().unwrap_or(0.0);
            let before = v["rss_before_build_mb"].as_f64().unwrap_or(0.0);
            println!(
                "{:<16} build {:>7.1} s   peak RSS {:>7.0} MiB ({:.0} MiB before the build: the loaded vectors)",
                "faiss ivf-flat",
                v["build_s"].as_f64().unwrap_or(0.0),
                peak,
                before
            );
        }
    }
    Ok(())
}

/// The child: opens the prepared store and builds the missing index.
pub async fn index_build(dir: &Path) -> Result<()> {
    let floe: Arc<Floe> = Floe::open(settings(dir)).await?;
    let t = Instant::now();
    let built = floe.index_missing(NAME).await?;
    let build_s = t.elapsed().as_secs_f64();
    if built.len() != 1 {
        bail!("expected one index build, got {}", built.len());
    }
    let (peak, _) = rss_mb();
    println!(
        "{}",
        serde_json::json!({"build_s": build_s, "peak_rss_mb": peak, "nlist": built[0].nlist})
    );
    Ok(())
}
