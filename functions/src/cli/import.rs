//! `floe import`: rows from Parquet, NumPy or JSON Lines files (local or
//! `s3://`) into a collection over HTTP. Every row is checked first; a bad
//! row stops the import before anything is written (unless told to skip
//! bad rows), and the report names its file, row and field. With
//! `--on-server` the server imports files of its own store itself (a bulk
//! import job) and this follows the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use floe_core::api::rows::batch_to_columns;
use floe_core::catalog::CollectionConfig;
use floe_core::import::{
    Checked, Columns, Format, ImportFile, ReadOptions, RowError, drop_repeated_ids, resolve,
};
use floe_core::storage::ObjectStoreConfig;

use super::client::{Retry, Server, collection_path};
use super::output;

/// What `floe import` was asked.
#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    /// The collection to write into (it must exist).
    pub collection: String,
    /// Files: local paths or s3://bucket/key; the last segment may hold `*`
    /// (`s3://bucket/dump/*.parquet`).
    #[arg(required = true)]
    pub files: Vec<String>,
    /// parquet, npy or jsonl (default: from each file's extension).
    #[arg(long)]
    pub format: Option<String>,
    /// NumPy: a 1-D .npy of integer ids, row for row with the vectors.
    #[arg(long)]
    pub ids: Option<String>,
    /// NumPy without --ids: the first vector's id (then counting up).
    #[arg(long, default_value_t = 0)]
    pub id_offset: u64,
    /// Parquet: the id column.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Parquet: the vector column (lists of floats).
    #[arg(long, default_value = "vector")]
    pub vector_column: String,
    /// Parquet: skip columns that are not attributes of the collection.
    #[arg(long)]
    pub ignore_unknown_columns: bool,
    /// Import the good rows and report the bad ones (default: import
    /// nothing if any row is bad).
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// How many bad rows to list.
    #[arg(long, default_value_t = 20)]
    pub max_errors: usize,
    /// Largest request body (API Gateway takes 6 MB).
    #[arg(long, default_value_t = 4_000_000)]
    pub request_bytes: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Create the collection if it does not exist, shaped by the first
    /// file: its dimension, id type and (Parquet, JSON Lines) attributes.
    #[arg(long)]
    pub create: bool,
    /// With --create: l2, cosine or ip.
    #[arg(long, default_value = "cosine", requires = "create")]
    pub metric: String,
    /// The files are in the server's object store: the server imports them
    /// itself (a bulk import job: segments written straight to storage,
    /// one write in the log) and this follows its progress. FILES is then
    /// one source: a key relative to the store or an s3:// URL under it.
    #[arg(long, conflicts_with_all = ["create", "request_bytes", "concurrency"])]
    pub on_server: bool,
    /// With --on-server: the job's id (a rerun with the same id and
    /// options follows the same job instead of starting another).
    #[arg(long, requires = "on_server")]
    pub job_id: Option<String>,
    /// With --on-server: start the job and print it, without waiting.
    #[arg(long, requires = "on_server")]
    pub no_wait: bool,
}

/// Runs `floe import`.
pub(super) async fn run(server: &Server, args: ImportArgs, as_json: bool) -> anyhow::Result<()> {
    if args.on_server {
        return run_on_server(server, args, as_json).await;
    }
    let started = Instant::now();
    let format = args.format.as_deref().map(parse_format).transpose()?;
    let s3 = s3_from_env();
    let mut files = Vec::new();
    for spec in &args.files {
        files.extend(
            resolve(spec, &s3, format)
                .await
                .map_err(anyhow::Error::new)?,
        );
    }
    let columns = Columns {
        id: args.id_column.clone(),
        vector: args.vector_column.clone(),
        ignore_unknown: args.ignore_unknown_columns,
    };
    let config = match fetch_config(server, &args.collection).await? {
        Some(config) => config,
        None if !args.create => bail!(
            "collection {} not found (pass --create to make it from the first file)",
            args.collection
        ),
        None => {
            let metric = serde_json::from_value(json!(args.metric))
                .with_context(|| format!("--metric {:?}: l2, cosine or ip", args.metric))?;
            let config = files[0]
                .infer_collection(&args.collection, metric, &columns)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", files[0].name))?;
            let body = json!({"dimension": config.dimension, "metric": config.metric,
                              "id_type": config.id_type, "attributes": config.attributes});
            server
                .call(
                    reqwest::Method::PUT,
                    &collection_path(&args.collection),
                    Some(&body),
                    Retry::Safe,
                )
                .await?;
            eprintln!(
                "created {} ({}-d, {}, attributes {})",
                args.collection,
                config.dimension,
                args.metric,
                serde_json::to_string(&config.attributes).unwrap_or_default()
            );
            config
        }
    };
    let npy_ids = match &args.ids {
        Some(spec) => {
            if files.len() != 1 || files[0].format != Format::Npy {
                bail!("--ids goes with exactly one .npy file of vectors");
            }
            let mut found = resolve(spec, &s3, Some(Format::Npy)).await?;
            if found.len() != 1 {
                bail!("--ids {spec}: names {} files, not one", found.len());
            }
            found.pop()
        }
        None => None,
    };
    let options = ReadOptions {
        columns,
        batch_rows: 8192,
        npy_ids,
        id_offset: args.id_offset,
    };

    // Pass 1: read and check every row; nothing is sent.
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} checking {msg}: {human_pos} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut report = Report::default();
    let mut seen = HashMap::new();
    for file in &files {
        spinner.set_message(file.name.clone());
        let mut batches = file.batches(&config, &options).await?;
        while let Some(checked) = batches.next().await {
            let checked = checked.map_err(|e| anyhow::anyhow!("{}: {e}", file.name))?;
            let checked = drop_repeated_ids(
                checked,
                &mut seen,
                &options.columns.id,
                file.format == Format::JsonLines,
            )?;
            spinner.inc((checked.rows.len() + checked.errors.len()) as u64);
            report.add(file, checked.rows.len(), checked.errors, args.max_errors);
        }
    }
    spinner.finish_and_clear();
    drop(seen);
    if report.bad > 0 {
        for e in &report.first_errors {
            eprintln!("{e}");
        }
        if report.bad > report.first_errors.len() {
            eprintln!(
                "… and {} more bad rows",
                report.bad - report.first_errors.len()
            );
        }
        if !args.skip_bad_rows {
            bail!(
                "nothing imported: {} of {} rows are bad; fix them, or pass --skip-bad-rows to import the {} good ones",
                report.bad,
                report.bad + report.good,
                report.good
            );
        }
    }

    // Pass 2: read again and send the good rows.
    let bar = ProgressBar::new(report.good as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:32}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let import_id = uuid::Uuid::new_v4().simple().to_string();
    let path = format!("{}/upsert", collection_path(&args.collection));
    let mut seen = HashMap::new();
    let mut last_lsn = 0u64;
    let mut sent_rows = 0usize;
    let mut new_errors = 0usize;
    for (index, file) in files.iter().enumerate() {
        let batches = file.batches(&config, &options).await?;
        let ctx = Arc::new(Sender {
            server,
            path: &path,
            budget: args.request_bytes,
            request_prefix: format!("import-{import_id}-{index}"),
            file: &file.name,
        });
        let chunks = batches
            .map(|checked| -> anyhow::Result<Checked> {
                let checked = checked.map_err(|e| anyhow::anyhow!("{}: {e}", file.name))?;
                let checked = drop_repeated_ids(
                checked,
                &mut seen,
                &options.columns.id,
                file.format == Format::JsonLines,
            )?;
                new_errors += checked.errors.len();
                // The check found no bad row, so one now means the file
                // changed: stop before sending any of this batch.
                if new_errors > report.bad && !args.skip_bad_rows {
                    bail!(
                        "{}: the file changed between the check and the import (a bad row appeared); rows before it may have been imported",
                        file.name
                    );
                }
                Ok(checked)
            })
            .map_ok(|checked| {
                let ranges = request_ranges(&checked.batch, args.request_bytes);
                let batch = Arc::new(checked.batch);
                let rows = Arc::new(checked.rows);
                futures::stream::iter(
                    ranges
                        .into_iter()
                        .map(move |r| Ok((Arc::clone(&batch), Arc::clone(&rows), r))),
                )
            })
            .try_flatten();
        let mut sent = chunks
            .map_ok(|(batch, rows, range)| {
                let ctx = Arc::clone(&ctx);
                async move { ctx.send(&batch, &rows, range).await }
            })
            .try_buffer_unordered(args.concurrency.max(1));
        while let Some((rows, lsn)) = sent.try_next().await? {
            bar.inc(rows as u64);
            sent_rows += rows;
            last_lsn = last_lsn.max(lsn);
        }
    }
    bar.finish_and_clear();
    if new_errors != report.bad || sent_rows != report.good {
        bail!(
            "the files changed between the check and the import: {sent_rows} rows imported (the check found {} good), {new_errors} bad (the check found {})",
            report.good,
            report.bad
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "collection": args.collection,
        "files": files.len(),
        "rows": report.good,
        "rejected": report.bad,
        "seconds": (seconds * 10.0).round() / 10.0,
        "rows_per_second": (report.good as f64 / seconds.max(1e-9)).round(),
        "lsn": last_lsn,
    });
    if as_json {
        output::json(&summary);
    } else {
        println!(
            "imported {} rows into {} from {} file{} in {:.1} s ({:.0} rows/s){}; write token (lsn) {last_lsn}",
            report.good,
            args.collection,
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            seconds,
            report.good as f64 / seconds.max(1e-9),
            if report.bad > 0 {
                format!(", {} bad rows skipped", report.bad)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `floe import --on-server`: starts a bulk import job and follows it.
async fn run_on_server(server: &Server, args: ImportArgs, as_json: bool) -> anyhow::Result<()> {
    let [source] = &args.files[..] else {
        bail!("--on-server takes one source (a key in the store, with * wildcards if need be)");
    };
    let started = Instant::now();
    // Minted here, so that a retried POST is the same job.
    let job_id = args
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let mut body = json!({
        "source": source,
        "id_column": args.id_column,
        "vector_column": args.vector_column,
        "skip_bad_rows": args.skip_bad_rows,
        "ignore_unknown_columns": args.ignore_unknown_columns,
        "job_id": job_id,
    });
    if let Some(format) = &args.format {
        body["format"] = json!(format);
    }
    match &args.ids {
        Some(ids) => body["ids"] = json!(ids),
        None if args.id_offset > 0 => body["id_offset"] = json!(args.id_offset),
        None => {}
    }
    let jobs = format!("{}/imports", collection_path(&args.collection));
    let mut status = server.post(&jobs, &body).await?;
    if args.no_wait {
        output::json(&status);
        return Ok(());
    }
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg}: {human_pos} rows read ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let path = format!("{jobs}/{job_id}");
    loop {
        let state = status["state"].as_str().unwrap_or_default().to_string();
        if state == "done" || state == "failed" {
            break;
        }
        bar.set_message(format!(
            "{state}, file {} of {}",
            status["files_done"].as_u64().unwrap_or(0),
            status["files"].as_u64().unwrap_or(0)
        ));
        bar.set_position(status["rows_read"].as_u64().unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        status = server.get(&path).await?;
    }
    bar.finish_and_clear();
    let errors = status["errors"].as_array().cloned().unwrap_or_default();
    for e in &errors {
        eprintln!(
            "{}: row {}, {}: {}",
            e["file"].as_str().unwrap_or_default(),
            e["row"],
            e["field"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default()
        );
    }
    let rejected = status["rows_rejected"].as_u64().unwrap_or(0);
    if rejected > errors.len() as u64 {
        eprintln!("… and {} more bad rows", rejected - errors.len() as u64);
    }
    if status["state"] == "failed" {
        bail!(
            "import {job_id} failed: {}",
            status["error"].as_str().unwrap_or("see the errors above")
        );
    }
    let rows = status["rows_imported"].as_u64().unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    if as_json {
        output::json(&status);
    } else {
        println!(
            "imported {rows} rows into {} on the server (job {job_id}) in {seconds:.1} s ({:.0} rows/s){}; write token (lsn) {}",
            args.collection,
            rows as f64 / seconds.max(1e-9),
            if rejected > 0 {
                format!(", {rejected} bad rows skipped")
            } else {
                String::new()
            },
            status["lsn"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

/// What `floe export` was asked.
#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    /// The collection.
    pub collection: String,
    /// Where under exports/ in the object store (must hold nothing yet).
    #[arg(long)]
    pub prefix: String,
    /// Rows per file.
    #[arg(long)]
    pub rows_per_file: Option<usize>,
    /// strong, eventual, or a write token (lsn): the snapshot exported.
    #[arg(long, default_value = "strong")]
    pub consistency: String,
    /// Copy the files into this local directory (reads the object store:
    /// its directory in embedded mode, S3 with AWS_* / FLOE_S3_* settings).
    #[arg(long)]
    pub download: Option<std::path::PathBuf>,
}

/// Runs `floe export`.
pub(super) async fn export(server: &Server, args: ExportArgs, as_json: bool) -> anyhow::Result<()> {
    let consistency = super::consistency(&args.consistency)?;
    let mut body = json!({"prefix": args.prefix, "consistency": consistency});
    if let Some(n) = args.rows_per_file {
        body["rows_per_file"] = json!(n);
    }
    let spinner = ProgressBar::new_spinner().with_message(format!("exporting {}", args.collection));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let path = format!("{}/export", collection_path(&args.collection));
    // Not repeated once sent: a second export would find the prefix taken
    // (or race the first), so a lost answer is reported, not retried.
    let report = server
        .call(reqwest::Method::POST, &path, Some(&body), Retry::IfUnsent)
        .await;
    spinner.finish_and_clear();
    let report = report?;
    let location = report["location"].as_str().unwrap_or_default().to_string();
    let mut downloaded = Vec::new();
    if let Some(dir) = &args.download {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let spec = format!(
            "{}/*.parquet",
            location.strip_prefix("file://").unwrap_or(&location)
        );
        for file in resolve(&spec, &s3_from_env(), Some(Format::Parquet)).await? {
            let name = file
                .name
                .rsplit('/')
                .next()
                .unwrap_or("part.parquet")
                .to_string();
            let target = dir.join(&name);
            std::fs::write(&target, file.bytes().await?)
                .with_context(|| format!("writing {}", target.display()))?;
            downloaded.push(target.display().to_string());
        }
    }
    if as_json {
        let mut report = report;
        if args.download.is_some() {
            report["downloaded"] = json!(downloaded);
        }
        output::json(&report);
    } else {
        println!(
            "exported {} rows of {} as of lsn {} into {} files at {location}",
            report["rows"],
            args.collection,
            report["lsn"],
            report["files"].as_array().map_or(0, Vec::len)
        );
        for f in &downloaded {
            println!("{f}");
        }
    }
    Ok(())
}

/// What the check pass found.
#[derive(Default)]
struct Report {
    good: usize,
    bad: usize,
    first_errors: Vec<String>,
}

impl Report {
    fn add(&mut self, file: &ImportFile, good: usize, errors: Vec<RowError>, keep: usize) {
        self.good += good;
        self.bad += errors.len();
        for e in errors {
            if self.first_errors.len() < keep {
                // Lines as an editor numbers them; rows as numpy and pandas do.
                let at = match file.format {
                    Format::JsonLines => format!("line {}", e.row + 1),
                    Format::Parquet | Format::Npy => format!("row {}", e.row),
                };
                self.first_errors
                    .push(format!("{}: {at}, {}: {}", file.name, e.field, e.message));
            }
        }
    }
}

/// One file's requests: each carries an id made of the import, the file
/// and its rows, so a retried request is written once.
struct Sender<'a> {
    server: &'a Server,
    path: &'a str,
    budget: usize,
    request_prefix: String,
    file: &'a str,
}

impl Sender<'_> {
    /// Sends rows `range` of `batch`; a body the server finds too large is
    /// split in two. Returns the rows sent and the last write's lsn.
    async fn send(
        &self,
        batch: &RecordBatch,
        rows: &[u64],
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<(usize, u64)> {
        let columns = batch_to_columns(batch, range.clone())?;
        let (first, last) = (rows[range.start], rows[range.end - 1]);
        let body = json!({
            "columns": columns,
            "request_id": format!("{}-{first}-{last}", self.request_prefix),
        });
        match self.server.post(self.path, &body).await {
            Ok(answer) => Ok((range.len(), answer["lsn"].as_u64().unwrap_or(0))),
            Err(e) if e.status() == Some(413) && range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                let a = Box::pin(self.send(batch, rows, range.start..mid)).await?;
                let b = Box::pin(self.send(batch, rows, mid..range.end)).await?;
                Ok((a.0 + b.0, a.1.max(b.1)))
            }
            Err(e) => Err(anyhow::anyhow!(
                "{}: rows {first} to {last}: {e} (rows before them may have been imported; the budget per request was {} bytes)",
                self.file,
                self.budget
            )),
        }
    }
}

/// Splits `batch` into row ranges whose request bodies stay under
/// `budget` bytes, sized from the packed vector bytes and a sample of the
/// ids' and attributes' JSON.
fn request_ranges(batch: &RecordBatch, budget: usize) -> Vec<std::ops::Range<usize>> {
    let n = batch.num_rows();
    if n == 0 {
        return Vec::new();
    }
    let sample = n.min(64);
    let side = batch_to_columns(batch, 0..sample)
        .map(|c| {
            serde_json::to_string(&c.ids).map_or(0, |s| s.len())
                + serde_json::to_string(&c.attributes).map_or(0, |s| s.len())
        })
        .unwrap_or(0);
    let dim = batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::FixedSizeListArray>()
        .map_or(1, |v| v.value_length() as usize);
    let per_row = dim * 16 / 3 + side / sample + 8;
    let rows = ((budget as f64 * 0.9) as usize / per_row).max(1);
    (0..n).step_by(rows).map(|s| s..(s + rows).min(n)).collect()
}

/// The collection's configuration, from `describe`; `None` if it does
/// not exist.
async fn fetch_config(server: &Server, name: &str) -> anyhow::Result<Option<CollectionConfig>> {
    let mut info = match server.get(&collection_path(name)).await {
        Ok(info) => info,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("collection {name}: {e}")),
    };
    if let Some(o) = info.as_object_mut() {
        o.remove("incarnation");
        o.remove("stats");
    }
    let config = serde_json::from_value(info).context("reading the collection's configuration")?;
    Ok(Some(config))
}

fn parse_format(text: &str) -> anyhow::Result<Format> {
    match text {
        "parquet" => Ok(Format::Parquet),
        "npy" | "numpy" => Ok(Format::Npy),
        "jsonl" | "ndjson" | "json-lines" => Ok(Format::JsonLines),
        other => bail!("--format {other:?}: expected parquet, npy or jsonl"),
    }
}

/// S3 access for `s3://` files: AWS_* variables, plus Floe's own
/// `FLOE_S3_ENDPOINT`, `FLOE_S3_REGION` and `FLOE_S3_ALLOW_HTTP`.
fn s3_from_env() -> ObjectStoreConfig {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    ObjectStoreConfig {
        endpoint: var("FLOE_S3_ENDPOINT"),
        region: var("FLOE_S3_REGION"),
        allow_http: var("FLOE_S3_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1"),
        ..Default::default()
    }
}
