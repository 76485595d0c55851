//! The `floe` CLI's client commands, as a user runs them: the real binary
//! against a real `floe serve` with API keys, in both modes. Files to import
//! are real Parquet, .npy and JSON Lines files, on disk and (cloud mode) in
//! the S3 server.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test harness: failing loudly is the point

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Builder, Int64Array, ListBuilder, RecordBatch,
    StringBuilder,
};
use arrow::datatypes::{Field, Schema};
use serde_json::{Value, json};

mod common;
use common::Floe;

struct Cli {
    url: String,
    key: String,
    env: Vec<(String, String)>,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(args)
            .env("FLOE_URL", &self.url)
            .env("FLOE_API_KEY", &self.key)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run floe");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.ok,
            "floe {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Runs a command that must fail, returning its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.ok, "floe {args:?} should fail:\n{}", out.stdout);
        out.stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn rows(&self, collection: &str) -> u64 {
        self.json(&["collections", "describe", collection])["stats"]["rows"]
            .as_u64()
            .unwrap()
    }
}

fn vector(i: usize) -> [f32; 4] {
    let x = i as f32;
    [x, (x * 0.37).sin(), (x * 0.11).cos(), 1.0]
}

/// A Parquet file of rows `ids` (vectors as fixed-size lists of f32, a
/// nullable i64 and a string list), with `bad` applied to the vectors.
fn write_parquet(path: &Path, ids: &[i64], bad: &dyn Fn(usize, &mut Vec<f32>)) {
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 4);
    let mut tags = ListBuilder::new(StringBuilder::new());
    for (row, id) in ids.iter().enumerate() {
        let mut v = vector(*id as usize).to_vec();
        bad(row, &mut v);
        // A wrong length cannot live in a fixed-size list: pad with NaN so
        // the row stays bad.
        v.resize(4, f32::NAN);
        vectors.values().append_slice(&v[..4]);
        vectors.append(true);
        tags.values().append_value(format!("t{}", id % 3));
        tags.append(true);
    }
    let years: Int64Array = ids
        .iter()
        .map(|i| (i % 5 != 0).then_some(2000 + i))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(vectors.finish()),
        Arc::new(years),
        Arc::new(tags.finish()),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .zip(["id", "vector", "year", "tags"])
            .map(|(c, n)| Field::new(n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(700))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_npy(path: &Path, descr: &str, shape: &str, body: &[u8]) {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(body);
    std::fs::write(path, out).unwrap();
}

fn start(env: Vec<(String, String)>) -> (Floe, Cli, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("floe-test-admin-{:032x}", rand::random::<u128>());
    let mut server_env = env.clone();
    server_env.push(("FLOE_ADMIN_KEY".into(), key.clone()));
    let floe = Floe::start(dir.path(), &server_env);
    let cli = Cli {
        url: floe.url.clone(),
        key,
        env,
    };
    (floe, cli, dir)
}

/// Creates `name` as the tests' films: 4-d, l2, `year` and `tags`.
fn create_films_like(cli: &Cli, name: &str) {
    cli.ok(&[
        "collections",
        "create",
        name,
        "--dimension",
        "4",
        "--metric",
        "l2",
        "--attribute",
        "year:i64",
        "--attribute",
        "tags:string_list",
    ]);
}

fn collections_and_queries(cli: &Cli) {
    create_films_like(cli, "films");
    // Creating the identical collection again is fine; a different one is not.
    create_films_like(cli, "films");
    let err = cli.fails(&["collections", "create", "films", "--dimension", "8"]);
    assert!(err.contains("409 conflict"), "{err}");
    let err = cli.fails(&[
        "collections",
        "create",
        "x",
        "--dimension",
        "4",
        "--attribute",
        "year",
    ]);
    assert!(err.contains("NAME:TYPE"), "{err}");
    assert_eq!(cli.ok(&["collections", "list"]).trim(), "films");
    let described = cli.ok(&["collections", "describe", "films"]);
    assert!(
        described.contains("year:i64, tags:string_list"),
        "{described}"
    );
    let err = cli.fails(&["query", "nope", "--vector", "[1,2,3,4]"]);
    assert!(
        err.starts_with("error: ") && err.contains("404 not_found"),
        "{err}"
    );
    let err = cli.fails(&["query", "films", "--vector", "[1,2]"]);
    assert!(
        err.contains("400 bad_request") && err.contains("field vector"),
        "{err}"
    );
    let err = cli.fails(&["collections", "drop", "films"]);
    assert!(err.contains("--yes"), "{err}");
}

fn imports(cli: &Cli, dir: &Path) {
    // Parquet: 2,000 rows in three row groups.
    let ids: Vec<i64> = (0..2000).collect();
    let parquet = dir.join("films.parquet");
    write_parquet(&parquet, &ids, &|_, _| {});
    let summary = cli.json(&[
        "import",
        "films",
        parquet.to_str().unwrap(),
        "--request-bytes",
        "20000",
    ]);
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(2000), Some(0))
    );
    let lsn = summary["lsn"].as_u64().unwrap().to_string();
    assert_eq!(cli.rows("films"), 2000);
    let hit = cli.json(&[
        "query",
        "films",
        "--vector",
        &serde_json::to_string(&vector(1234)).unwrap(),
        "--top-k",
        "1",
        "--consistency",
        &lsn,
        "--include-vector",
    ]);
    assert_eq!(hit["results"][0]["id"], 1234, "{hit}");
    assert_eq!(hit["results"][0]["attributes"]["year"], 3234);
    assert_eq!(
        hit["results"][0]["attributes"]["tags"],
        serde_json::json!(["t1"])
    );
    let v: Vec<f32> = serde_json::from_value(hit["results"][0]["vector"].clone()).unwrap();
    assert_eq!(v, vector(1234), "vectors arrive bit for bit");
    let nulls = cli.json(&["get", "films", "1235"]);
    assert_eq!(nulls["attributes"]["year"], Value::Null);

    // Bad rows: nothing is written, and each is named by file, row and field.
    let bad = dir.join("bad.parquet");
    let bad_ids: Vec<i64> = vec![5000, 5001, 5002, 5001, -7, 5005];
    write_parquet(&bad, &bad_ids, &|row, v| match row {
        1 => v[2] = f32::NAN,
        2 => v.truncate(3),
        _ => {}
    });
    let err = cli.fails(&["import", "films", bad.to_str().unwrap()]);
    for want in [
        "bad.parquet: row 1, vector[2]: components must be finite",
        "bad.parquet: row 2, vector[3]",
        "bad.parquet: row 4, id: ids must be non-negative",
        "nothing imported: 3 of 6 rows are bad",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(cli.rows("films"), 2000, "a refused import writes nothing");
    // With --skip-bad-rows the good ones go in; row 3 repeats id 5001 of a
    // bad row, so it is the id's first good row and is kept.
    let summary = cli.json(&["import", "films", bad.to_str().unwrap(), "--skip-bad-rows"]);
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(cli.rows("films"), 2003);
    let dup = dir.join("dup.parquet");
    write_parquet(&dup, &[6000, 6001, 6000], &|_, _| {});
    let err = cli.fails(&["import", "films", dup.to_str().unwrap()]);
    assert!(
        err.contains("row 2, id: duplicate id 6000 (first at row 0)"),
        "{err}"
    );

    // A column that is not an attribute refuses the file unless told.
    let extra = dir.join("extra.jsonl");
    std::fs::write(&extra, "{\"id\": 7000, \"vector\": [1, 2, 3, 4], \"attributes\": {\"year\": 1999}}\n\n{\"id\": 7001, \"vector\": [1, 2, 3]}\n{\"id\": 7002, \"vector\": [1, 2, 3, 4], \"attributes\": {\"colour\": \"red\"}}\nnot json\n").unwrap();
    let err = cli.fails(&["import", "films", extra.to_str().unwrap()]);
    for want in [
        "extra.jsonl: line 3, vector: expected 4 components",
        "extra.jsonl: line 4, attributes.colour: unknown attribute",
        "extra.jsonl: line 5, line: not a valid row",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // NumPy: float64 vectors with uint64 ids beside them.
    let n = 300usize;
    let vectors: Vec<u8> = (0..n)
        .flat_map(|i| vector(10_000 + i).map(f64::from))
        .flat_map(f64::to_le_bytes)
        .collect();
    let ids: Vec<u8> = (0..n as u64)
        .flat_map(|i| (10_000 + i).to_le_bytes())
        .collect();
    let (vpath, ipath) = (dir.join("v.npy"), dir.join("ids.npy"));
    write_npy(&vpath, "<f8", &format!("({n}, 4)"), &vectors);
    write_npy(&ipath, "<u8", &format!("({n},)"), &ids);
    cli.ok(&[
        "import",
        "films",
        vpath.to_str().unwrap(),
        "--ids",
        ipath.to_str().unwrap(),
    ]);
    assert_eq!(cli.rows("films"), 2003 + n as u64);
    let row = cli.json(&["get", "films", "10299"]);
    let v: Vec<f32> = serde_json::from_value(row["vector"].clone()).unwrap();
    assert_eq!(v, vector(10_299));
    write_npy(&ipath, "<u8", "(3,)", &ids[..24]);
    let err = cli.fails(&[
        "import",
        "films",
        vpath.to_str().unwrap(),
        "--ids",
        ipath.to_str().unwrap(),
    ]);
    assert!(err.contains("3 ids for 300 vectors"), "{err}");
    let err = cli.fails(&[
        "import",
        "films",
        dir.join("missing.parquet").to_str().unwrap(),
    ]);
    assert!(err.contains("missing.parquet"), "{err}");
}

fn scans_flush_and_keys(cli: &Cli) {
    let table = cli.ok(&["query", "films", "--filter", "year >= 3995", "--top-k", "3"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("ATTRIBUTES"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[1].starts_with("1996 "), "{table}");
    let flushed = cli.json(&["flush", "films"]);
    assert!(
        flushed["rows_flushed"].as_u64().unwrap() > 2000,
        "{flushed}"
    );
    cli.ok(&["warm", "films"]);
    let deleted = cli.json(&["delete", "films", "--ids", "1,2,3"]);
    assert_eq!(deleted["rows"], 3);
    let deleted = cli.json(&["delete", "films", "--filter", "id >= 10000"]);
    assert_eq!(deleted["rows"], 300);
    let created = cli.json(&[
        "keys",
        "create",
        "reader",
        "--role",
        "read",
        "--collection",
        "films",
    ]);
    let secret = created["key"].as_str().unwrap().to_string();
    let reader = Cli {
        url: cli.url.clone(),
        key: secret,
        env: Vec::new(),
    };
    assert_eq!(reader.ok(&["collections", "list"]).trim(), "films");
    let err = reader.fails(&["delete", "films", "--ids", "4"]);
    assert!(err.contains("403 forbidden"), "{err}");
    let listed = cli.ok(&["keys", "list"]);
    assert!(
        listed.contains("reader") && listed.contains("read"),
        "{listed}"
    );
    let id = created["id"].as_str().unwrap();
    cli.ok(&["keys", "revoke", id]);
    cli.ok(&["collections", "drop", "films", "--yes"]);
    assert_eq!(cli.ok(&["collections", "list"]).trim(), "");
}

/// `--create` makes a missing collection from the first file's shape.
fn imports_create_collections(cli: &Cli, dir: &Path) {
    let parquet = dir.join("new.parquet");
    write_parquet(&parquet, &(0..50).collect::<Vec<i64>>(), &|_, _| {});
    let err = cli.fails(&["import", "fresh", parquet.to_str().unwrap()]);
    assert!(err.contains("--create"), "{err}");
    let summary = cli.json(&[
        "import",
        "fresh",
        parquet.to_str().unwrap(),
        "--create",
        "--metric",
        "l2",
    ]);
    assert_eq!(summary["rows"].as_u64(), Some(50), "{summary}");
    let info = cli.json(&["collections", "describe", "fresh"]);
    assert_eq!(
        (&info["dimension"], &info["metric"], &info["id_type"]),
        (&json!(4), &json!("l2"), &json!("u64")),
        "{info}"
    );
    assert_eq!(
        info["attributes"],
        json!([{"name": "year", "type": "i64"}, {"name": "tags", "type": "string_list"}])
    );
    let jsonl = dir.join("new.jsonl");
    std::fs::write(&jsonl, "{\"id\": \"a\", \"vector\": [1, 2, 3], \"attributes\": {\"score\": 0.5, \"seen\": true, \"n\": 3}}\n").unwrap();
    cli.ok(&["import", "fresh-json", jsonl.to_str().unwrap(), "--create"]);
    let info = cli.json(&["collections", "describe", "fresh-json"]);
    assert_eq!(
        (&info["dimension"], &info["metric"], &info["id_type"]),
        (&json!(3), &json!("cosine"), &json!("string")),
        "{info}"
    );
    assert_eq!(
        info["attributes"],
        json!([{"name": "n", "type": "i64"}, {"name": "score", "type": "f64"}, {"name": "seen", "type": "bool"}])
    );
    for name in ["fresh", "fresh-json"] {
        cli.ok(&["collections", "drop", name, "--yes"]);
    }
}

/// An export downloaded and imported into a new collection gives the same
/// rows back.
fn export_round_trip(cli: &Cli, dir: &Path) {
    let rows = cli.rows("films");
    let out = dir.join("exported");
    let report = cli.json(&[
        "export",
        "films",
        "--prefix",
        "films/one",
        "--rows-per-file",
        "900",
        "--download",
        out.to_str().unwrap(),
    ]);
    assert_eq!(report["rows"].as_u64(), Some(rows), "{report}");
    let files = report["downloaded"].as_array().unwrap().len();
    assert_eq!(files as u64, rows.div_ceil(900), "{report}");
    let err = cli.fails(&["export", "films", "--prefix", "films/one"]);
    assert!(err.contains("409"), "{err}");
    create_films_like(cli, "films2");
    let spec = format!("{}/*.parquet", out.display());
    let summary = cli.json(&["import", "films2", &spec]);
    assert_eq!(summary["rows"].as_u64(), Some(rows), "{summary}");
    for id in ["0", "1999", "5001"] {
        let (a, b) = (
            cli.json(&["get", "films", id]),
            cli.json(&["get", "films2", id]),
        );
        assert_eq!(
            (&a["vector"], &a["attributes"]),
            (&b["vector"], &b["attributes"]),
            "{id}"
        );
    }
    cli.ok(&["collections", "drop", "films2", "--yes"]);
}

/// `floe import --on-server`: the server imports files of its own store
/// (put there by `put(key, bytes)`, named by `source_prefix` + key) as a
/// bulk import job, which `floe serve`'s indexer runs; the CLI follows it.
fn server_side_imports(cli: &Cli, dir: &Path, source_prefix: &str, put: &dyn Fn(&str, Vec<u8>)) {
    create_films_like(cli, "bulk");
    for (name, ids) in [("a", 0..1500), ("b", 1500..3000)] {
        let local = dir.join(format!("bulk-{name}.parquet"));
        write_parquet(&local, &ids.collect::<Vec<i64>>(), &|_, _| {});
        put(
            &format!("uploads/bulk/{name}.parquet"),
            std::fs::read(&local).unwrap(),
        );
    }
    let source = format!("{source_prefix}uploads/bulk/*.parquet");
    let args = [
        "import",
        "bulk",
        source.as_str(),
        "--on-server",
        "--job-id",
        "bulk-1",
    ];
    let status = cli.json(&args);
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_imported"].as_u64(), Some(3000), "{status}");
    assert_eq!(cli.rows("bulk"), 3000);
    let row = cli.json(&["get", "bulk", "2999"]);
    let got: Vec<f32> = serde_json::from_value(row["vector"].clone()).unwrap();
    assert_eq!(got, vector(2999), "{row}");
    assert_eq!(row["version"], status["lsn"], "{row}");
    // The same job again: followed, not imported twice.
    assert_eq!(cli.json(&args)["lsn"], status["lsn"]);
    // A bad row fails the job: nothing imported, the row named.
    let bad = dir.join("bulk-bad.parquet");
    write_parquet(&bad, &(5000..5010).collect::<Vec<i64>>(), &|row, v| {
        if row == 7 {
            v[2] = f32::NAN;
        }
    });
    put("uploads/bulk/bad.parquet", std::fs::read(&bad).unwrap());
    let source = format!("{source_prefix}uploads/bulk/bad.parquet");
    let err = cli.fails(&["import", "bulk", &source, "--on-server"]);
    assert!(
        err.contains("bad.parquet: row 7, vector") && err.contains("failed"),
        "{err}"
    );
    assert_eq!(cli.rows("bulk"), 3000);
    // Files outside the server's store are refused.
    let err = cli.fails(&["import", "bulk", "s3://elsewhere/x.parquet", "--on-server"]);
    assert!(err.contains("source"), "{err}");
}

#[test]
fn cli_against_embedded_floe() {
    let (_floe, cli, data) = start(Vec::new());
    let files = tempfile::tempdir().unwrap();
    collections_and_queries(&cli);
    imports(&cli, files.path());
    imports_create_collections(&cli, files.path());
    export_round_trip(&cli, files.path());
    scans_flush_and_keys(&cli);
    // Embedded, the store is the data directory's objects/.
    let objects = data.path().join("objects");
    server_side_imports(&cli, files.path(), "", &|key, bytes| {
        let path = objects.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    });
}

/// Requests the server finds too large (413: nothing written) are split
/// until they fit, and the import still writes every row once.
#[test]
fn cli_splits_requests_the_server_finds_too_large() {
    let (floe, cli, _data) = start(common::vars(&[("FLOE_MAX_REQUEST_BYTES", "20000")]));
    let files = tempfile::tempdir().unwrap();
    create_films_like(&cli, "films");
    let parquet = files.path().join("films.parquet");
    write_parquet(&parquet, &(0..3000).collect::<Vec<i64>>(), &|_, _| {});
    let summary = cli.json(&[
        "import",
        "films",
        parquet.to_str().unwrap(),
        "--request-bytes",
        "4000000",
    ]);
    assert_eq!(summary["rows"].as_u64(), Some(3000), "{summary}");
    assert_eq!(cli.rows("films"), 3000);
    let log_lsn = cli.json(&["collections", "describe", "films"])["stats"]["log_lsn"]
        .as_u64()
        .unwrap();
    // One request of 3,000 rows (~160 KB) halved until each is under 20 KB.
    assert!(log_lsn >= 8, "the request was split: {log_lsn} writes");
    drop(floe);
}

#[test]
fn cli_imports_from_s3_against_cloud_floe() {
    let env = common::cloud_env("cli");
    // The CLI reads s3:// files with the same S3 server settings.
    let store_url = env
        .iter()
        .find(|(k, _)| k == "FLOE_STORE_URL")
        .unwrap()
        .1
        .clone();
    let (_floe, cli, _data) = start(env);
    let files = tempfile::tempdir().unwrap();
    collections_and_queries(&cli);
    imports(&cli, files.path());
    // Two Parquet parts under a prefix in the bucket, named by a glob.
    let bucket = common::required_env("FLOE_TEST_S3_BUCKET");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(common::required_env("FLOE_TEST_S3_ENDPOINT"))
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id("floe-test")
        .with_secret_access_key("floe-test")
        .build()
        .unwrap();
    let prefix = format!(
        "{}-import",
        store_url.trim_start_matches(&format!("s3://{bucket}/"))
    );
    for (part, range) in [(0, 20_000..20_500), (1, 20_500..21_000)] {
        let local: PathBuf = files.path().join(format!("part-{part}.parquet"));
        write_parquet(&local, &range.collect::<Vec<i64>>(), &|_, _| {});
        let bytes = std::fs::read(&local).unwrap();
        let path = object_store::path::Path::from(format!("{prefix}/part-{part}.parquet"));
        let put = object_store::ObjectStoreExt::put(&store, &path, bytes.into());
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(put)
            .unwrap();
    }
    let spec = format!("s3://{bucket}/{prefix}/*.parquet");
    let summary = cli.json(&["import", "films", &spec]);
    assert_eq!(
        (summary["files"].as_u64(), summary["rows"].as_u64()),
        (Some(2), Some(1000)),
        "{summary}"
    );
    assert_eq!(cli.rows("films"), 2303 + 1000);
    export_round_trip(&cli, files.path());
    // Server-side imports name files under the store's own prefix.
    let store_prefix = store_url
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    server_side_imports(
        &cli,
        files.path(),
        &format!("{store_url}/"),
        &|key, bytes| {
            let path = object_store::path::Path::from(format!("{store_prefix}/{key}"));
            let put = object_store::ObjectStoreExt::put(&store, &path, bytes.into());
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(put)
                .unwrap();
        },
    );
}
