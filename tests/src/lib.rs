//! Harness for Floe's integration tests: the real services started by
//! `localstack/up.sh` (found through `FLOE_TEST_*` variables), the object
//! stores every storage test runs against, and the log conformance suite.
//!
//! A test that needs a service and does not find it fails with a message
//! saying how to start it; nothing is skipped silently.

pub mod lambda_emulator;
pub mod log_conformance;
pub mod s3_events;
pub mod server;

use std::sync::Arc;

use floe_core::log::{JetStreamConfig, JetStreamLogs};
use floe_core::storage::{ObjectStoreConfig, open_object_store};
use object_store::ObjectStore;

/// Reads a variable set by `localstack/up.sh`, or fails the test.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests with ./test.sh, or start the stack with \
             `localstack/up.sh DIR` and `source DIR/env`"
        ),
    }
}

/// A file of this repository, by its path from the repository's root.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Reads a file of this repository, or fails the test naming it.
pub fn read_repo_file(path: &str) -> String {
    let full = repo_file(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A real event payload from `functions/fixtures/`.
pub fn fixture(name: &str) -> serde_json::Value {
    let text = read_repo_file(&format!("functions/fixtures/{name}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A name no other test or run uses: tests share one server of each kind and
/// are isolated by prefix and stream name.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// The S3 API server's configuration, rooted at a fresh prefix.
pub fn s3_config() -> ObjectStoreConfig {
    ObjectStoreConfig {
        url: format!(
            "s3://{}/{}",
            required_env("FLOE_TEST_S3_BUCKET"),
            unique("t")
        ),
        endpoint: Some(required_env("FLOE_TEST_S3_ENDPOINT")),
        region: Some("us-east-1".into()),
        access_key_id: Some("floe-test".into()),
        secret_access_key: Some("floe-test".into()),
        allow_http: true,
    }
}

/// One object store under test, with whatever keeps it alive.
pub struct TestStore {
    pub name: &'static str,
    pub store: Arc<dyn ObjectStore>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn memory() -> Self {
        let config = ObjectStoreConfig {
            url: "memory://".into(),
            ..Default::default()
        };
        Self {
            name: "memory",
            store: open_object_store(&config).expect("memory store"),
            _dir: None,
        }
    }

    pub fn local() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ObjectStoreConfig {
            url: format!("file://{}", dir.path().display()),
            ..Default::default()
        };
        Self {
            name: "local",
            store: open_object_store(&config).expect("local store"),
            _dir: Some(dir),
        }
    }

    pub fn s3() -> Self {
        Self {
            name: "s3",
            store: open_object_store(&s3_config()).expect("s3 store"),
            _dir: None,
        }
    }

    /// In-memory, local directory and the S3 API server.
    pub fn all() -> Vec<TestStore> {
        vec![Self::memory(), Self::local(), Self::s3()]
    }
}

/// JetStream settings for the shared nats-server with a fresh stream prefix.
pub fn jetstream_config() -> JetStreamConfig {
    // Both prefixes must be unique: streams on one server may not share subjects.
    let id = unique("t").replace('-', "_");
    JetStreamConfig {
        url: required_env("FLOE_TEST_NATS_URL"),
        stream_prefix: id.to_uppercase(),
        subject_prefix: id,
        ..Default::default()
    }
}

pub async fn jetstream_logs(config: &JetStreamConfig) -> JetStreamLogs {
    JetStreamLogs::connect(config.clone())
        .await
        .expect("connect to nats-server")
}

/// The distance a brute-force oracle uses, in f64: squared L2, 1 − cosine,
/// or negative inner product, by metric name.
pub fn oracle_distance(metric: &str, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum();
    match metric {
        "l2" => q
            .iter()
            .zip(v)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum(),
        "ip" => -dot,
        _ => {
            let norm = |x: &[f32]| x.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (norm(q) * norm(v))
        }
    }
}

/// One sample of a Prometheus text exposition: name, labels, value.
pub type PromSample = (String, std::collections::BTreeMap<String, String>, f64);

/// Parses Prometheus exposition `text` with the reference parser (the
/// official Python client's, in the local stack's venv), panicking with
/// the parser's complaint if it is not valid exposition format.
pub fn parse_prometheus(text: &str) -> Vec<PromSample> {
    use std::io::Write;
    let python = required_env("FLOE_TEST_PYTHON");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "not Prometheus exposition format: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser JSON")
}
