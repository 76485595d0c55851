//! The deployed Lambda code path, end to end on loopback: the `bootstrap`
//! executables from the zips `infra/build.sh` makes run as Lambda runs them
//! (the Runtime API, Lambda's environment, one process per function) behind
//! an API Gateway HTTP API routed by `infra/template.yaml`, against the S3
//! server and nats-server. The S3 notifications of sealed segments come
//! from the S3 server itself (through an SQS queue, the one hop that differs
//! from AWS) and go to the indexer function.
//!
//! Needs `FLOE_TEST_LAMBDA_DIR` (`target/lambda/<host arch>`, set by
//! `./test.sh` after `infra/build.sh`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_tests::lambda_emulator::{
    ApiGateway, Artifacts, Backends, FUNCTIONS, Function, FunctionSpec, TEST_ADMIN_KEY,
    template_routes,
};
use floe_tests::s3_events::{SqsQueue, event_keys, notify_bucket, object_created_events};
use floe_tests::server::Client;
use floe_tests::{fixture, oracle_distance, read_repo_file, required_env, unique};
use serde_json::{Value, json};

fn template() -> String {
    read_repo_file("infra/template.yaml")
}

#[test]
fn the_template_routes_every_api_operation_to_a_function() {
    let routes = template_routes(&template());
    let openapi: Value = serde_json::from_str(&read_repo_file("docs/openapi.json")).unwrap();
    let mut operations = Vec::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
        for method in item.as_object().unwrap().keys() {
            if methods.contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 10, "{operations:?}");
    for (method, path) in &operations {
        let owners: Vec<&str> = routes
            .iter()
            .filter(|r| &r.method == method && &r.path == path)
            .map(|r| r.function.as_str())
            .collect();
        assert_eq!(owners.len(), 1, "{method} {path} is routed to {owners:?}");
    }
    assert_eq!(routes.len(), operations.len(), "no route outside the API");
    // Least privilege: the query function serves only reads; deleting is the
    // indexer's alone.
    for r in &routes {
        match r.function.as_str() {
            "QueryFunction" => assert!(
                r.method == "GET" || r.path.ends_with("/query") || r.path.ends_with("/warm"),
                "{r:?}"
            ),
            "IndexerFunction" => assert_eq!(r.method, "DELETE", "{r:?}"),
            "IngestFunction" => assert!(r.method == "PUT" || r.method == "POST", "{r:?}"),
            other => panic!("route to an unknown function {other}"),
        }
    }
}

struct Stack {
    functions: HashMap<String, Arc<Function>>,
    init: Vec<(String, Duration)>,
    gateway: ApiGateway,
    queue: SqsQueue,
    prefix: String,
    _dir: tempfile::TempDir,
}

/// Starts the three functions (cold) with the configuration the template
/// gives them, and the gateway in front.
async fn stack(artifacts: &Artifacts) -> Stack {
    let backends = Backends {
        s3_endpoint: required_env("FLOE_TEST_S3_ENDPOINT"),
        // A bucket of its own: a bucket has one notification configuration.
        bucket: unique("lambda"),
        prefix: "floe".into(),
        nats_url: required_env("FLOE_TEST_NATS_URL"),
        streams: unique("lam").replace('-', "_"),
        query_cache_disk_mb: 256,
    };
    let queue = SqsQueue::create(&backends.s3_endpoint, &backends.bucket)
        .await
        .unwrap();
    notify_bucket(
        &backends.s3_endpoint,
        &backends.bucket,
        &format!("{}/collections/", backends.prefix),
        &["sealed.parquet", "/job.json"],
        &queue,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut functions = HashMap::new();
    let mut init = Vec::new();
    for (logical_id, binary) in FUNCTIONS {
        let (function, took) = backends
            .start(logical_id, artifacts, dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        init.push((binary.to_string(), took));
        functions.insert(logical_id.to_string(), Arc::new(function));
    }
    let gateway = ApiGateway::start(template_routes(&template()), functions.clone())
        .await
        .unwrap();
    Stack {
        functions,
        init,
        gateway,
        queue,
        prefix: backends.prefix,
        _dir: dir,
    }
}

impl Stack {
    async fn invoke(&self, logical_id: &str, event: Value) -> Value {
        self.functions[logical_id]
            .invoke_ok(event)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A pseudo-random vector per id (splitmix64), distinct for every id.
fn vector(i: u64) -> Vec<f32> {
    (0..8u64)
        .map(|d| {
            let mut z = (i * 8 + d).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_x86_64_artifacts_serve_the_api_and_index_on_s3_events() {
    serve_the_api_and_index_on_s3_events("x86_64").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_arm64_artifacts_serve_the_api_and_index_on_s3_events() {
    serve_the_api_and_index_on_s3_events("arm64").await;
}

/// The whole path for one architecture's artifacts (the other architecture
/// than this machine's runs under qemu's user-mode emulation).
async fn serve_the_api_and_index_on_s3_events(arch: &str) {
    let artifacts = Artifacts::from_env(arch);
    let stack = stack(&artifacts).await;
    for (name, took) in &stack.init {
        println!(
            "cold start ({arch}, {:?}): {name} init {:.1} ms",
            artifacts.launcher,
            took.as_secs_f64() * 1e3
        );
    }
    let anonymous = Client::new(&stack.gateway.url);
    let api = anonymous.with_key(TEST_ADMIN_KEY);
    let base = "/v1/collections/lam";

    // Keys are required: nothing without one.
    let (status, body) = anonymous.put(base, &json!({"dimension": 8})).await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );

    // Ingest function: create, upsert (two requests), a refused bad input.
    let first = Instant::now();
    let (status, body) = api
        .put(
            base,
            &json!({"dimension": 8, "metric": "l2",
                "attributes": [{"name": "n", "type": "i64"}], "index": {"seal_rows": 400}}),
        )
        .await;
    println!(
        "first invocation (ingest, create): {:.1} ms",
        first.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(status, 201, "{body}");
    for (batch, ids) in [(1u64, 0..500u64), (2, 500..1000)] {
        let rows: Vec<Value> = ids
            .map(|i| json!({"id": i, "vector": vector(i), "attributes": {"n": i}}))
            .collect();
        let (status, body) = api
            .post(&format!("{base}/upsert"), &json!({"rows": rows}))
            .await;
        assert_eq!((status, body["lsn"].as_u64()), (200, Some(batch)), "{body}");
    }
    let (status, body) = api
        .post(
            &format!("{base}/upsert"),
            &json!({"rows": [{"id": 5, "vector": [1.0]}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("rows[0].vector")),
        "{body}"
    );

    // Query function: a strong query sees the unflushed writes; exact answer.
    let q = vector(123);
    let mut oracle: Vec<(f64, u64)> = (0..1000)
        .map(|i| (oracle_distance("l2", &q, &vector(i)), i))
        .collect();
    oracle.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let expected: Vec<u64> = oracle[..5].iter().map(|(_, i)| *i).collect();
    let ids = |body: &Value| -> Vec<u64> {
        body["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    let (status, body) = api
        .post(&format!("{base}/query"), &json!({"vector": q, "top_k": 5}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), expected);
    let warm = Instant::now();
    let (status, _) = api.get("/healthz").await;
    println!(
        "warm invocation (query, healthz): {:.1} ms",
        warm.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(status, 200);
    // Routes the gateway does not have are its own 404, as on AWS.
    let (status, _) = api.get("/v2/collections").await;
    assert_eq!(status, 404);

    // Flush (ingest), then the schedule (indexer): compaction seals segments
    // but leaves their indexes to the S3 events.
    let (status, body) = api.post(&format!("{base}/flush"), &json!({})).await;
    assert_eq!(
        (status, body["rows_flushed"].as_u64()),
        (200, Some(1000)),
        "{body}"
    );
    let report = stack
        .invoke("IndexerFunction", fixture("eventbridge-scheduled.json"))
        .await;
    let sealed: Vec<String> = report["compacted"][0]["sealed"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing compacted: {report}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(sealed.len(), 2, "1000 rows at 400 a segment: {report}");
    assert_eq!(report["indexed"], json!([]), "{report}");

    // The S3 server's notifications for the sealed files reach the indexer.
    let mut indexed = Vec::new();
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed.len() < sealed.len() && Instant::now() < deadline {
        let messages = stack.queue.receive(Duration::from_secs(1)).await.unwrap();
        for event in object_created_events(messages) {
            keys.extend(event_keys(&event));
            let out = stack.invoke("IndexerFunction", event).await;
            indexed.extend(out["indexed"].as_array().cloned().unwrap_or_default());
        }
    }
    let mut built: Vec<String> = indexed
        .iter()
        .map(|r| r["replaced"].as_str().unwrap().to_string())
        .collect();
    built.sort();
    let mut want = sealed.clone();
    want.sort();
    assert_eq!(built, want, "events for {keys:?}");
    for key in &keys {
        // `<prefix>/collections/lam/<incarnation>/segments/…`, maybe URL-encoded.
        let key = key.replace("%2F", "/");
        let rest = key
            .strip_prefix(&format!("{}/collections/lam/", stack.prefix))
            .unwrap_or_else(|| panic!("{key}"));
        assert!(rest.split('/').nth(1) == Some("segments"), "{key}");
    }

    // The query function reads the indexed segments: same answer.
    let (status, body) = api.post(&format!("{base}/warm"), &json!({})).await;
    assert_eq!(
        (status, body["indexed_segments"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    let (status, body) = api
        .post(
            &format!("{base}/query"),
            &json!({"vector": q, "top_k": 5, "consistency": "eventual", "recall_target": 1.0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), expected);
    let (status, body) = api.get(&format!("{base}/rows/123")).await;
    assert_eq!(
        (status, body["attributes"]["n"].as_u64()),
        (200, Some(123)),
        "{body}"
    );

    // Keys minted on the ingest function work on the query function; a
    // read key cannot write, and once revoked (on the indexer) it stops
    // working within the key cache time (1 s here).
    let (status, minted) = api
        .post(
            "/v1/keys",
            &json!({"name": "reader", "role": "read", "collections": ["lam"]}),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let reader = anonymous.with_key(minted["key"].as_str().unwrap());
    let (status, body) = reader.get(&format!("{base}/rows/123")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = reader
        .post(
            &format!("{base}/upsert"),
            &json!({"rows": [{"id": 1, "vector": vector(1)}]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.get("/v1/keys").await;
    assert_eq!(
        (status, body["keys"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    let (status, body) = api
        .delete(&format!("/v1/keys/{}", minted["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    while reader.get(&format!("{base}/rows/123")).await.0 != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "a revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A bulk import (of an export of `lam`) into another collection: the
    // ingest function accepts the job, the S3 event of its job.json runs
    // it on the indexer, the query function reports it and reads the rows.
    let (status, body) = api
        .post(&format!("{base}/export"), &json!({"prefix": "lam/all"}))
        .await;
    assert_eq!((status, body["rows"].as_u64()), (200, Some(1000)), "{body}");
    let copy = "/v1/collections/lam-copy";
    let (status, body) = api
        .put(
            copy,
            &json!({"dimension": 8, "metric": "l2",
                           "attributes": [{"name": "n", "type": "i64"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, job) = api
        .post(
            &format!("{copy}/imports"),
            &json!({"source": "exports/lam/all/*.parquet", "job_id": "copy-1"}),
        )
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (202, Some("queued")),
        "{job}"
    );
    let mut imported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while imported.is_empty() && Instant::now() < deadline {
        let messages = stack.queue.receive(Duration::from_secs(1)).await.unwrap();
        for event in object_created_events(messages) {
            let out = stack.invoke("IndexerFunction", event).await;
            imported.extend(out["imported"].as_array().cloned().unwrap_or_default());
        }
    }
    assert_eq!(
        imported
            .first()
            .map(|s| (s["state"].clone(), s["rows_imported"].clone())),
        Some((json!("done"), json!(1000))),
        "{imported:?}"
    );
    let (status, body) = api.get(&format!("{copy}/imports/copy-1")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("done")),
        "{body}"
    );
    let (status, body) = api
        .post(&format!("{copy}/query"), &json!({"vector": q, "top_k": 5}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), expected);

    // Deleting is routed to the indexer.
    let (status, body) = api.delete(base).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.delete(base).await;
    assert_eq!(status, 404, "already gone: {body}");

    // The functions logged through Lambda's stdout/stderr, and none crashed.
    for (id, f) in &stack.functions {
        let log = f.output();
        assert!(!log.contains("panicked"), "{id}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_fails_the_init_with_a_message_naming_it() {
    let artifacts = Artifacts::from_env("x86_64");
    let dir = tempfile::tempdir().unwrap();
    // Nothing is reached: the settings are read before any connection.
    let backends = Backends {
        s3_endpoint: "http://127.0.0.1:9".into(),
        bucket: "unused".into(),
        prefix: "floe".into(),
        nats_url: "nats://127.0.0.1:9".into(),
        streams: "unused".into(),
        query_cache_disk_mb: 0,
    };
    let mut env = backends.function_env("IngestFunction", dir.path());
    env.push(("FLOE_NATS_REPLICAS".into(), "three".into()));
    let mut function = Function::start(
        FunctionSpec {
            name: "floe-ingest".into(),
            bootstrap: artifacts.bootstrap("floe-ingest"),
            launcher: artifacts.launcher.clone(),
            env,
            memory_mb: 128,
            timeout: Duration::from_secs(10),
        },
        dir.path(),
    )
    .await
    .unwrap();
    let failed = function
        .init_duration(Duration::from_secs(20))
        .await
        .expect_err("the init must fail");
    assert!(failed.contains("FLOE_NATS_REPLICAS"), "{failed}");
    assert!(
        function.exited().await.is_some(),
        "the process ends: {failed}"
    );
}
