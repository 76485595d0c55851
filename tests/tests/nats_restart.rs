//! A nats-server restart between publishes loses no acknowledged record.
//! This test runs its own nats-server (the binary the local stack installed)
//! so it can kill it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_core::log::{JetStreamConfig, JetStreamLogs, LogProvider};
use floe_tests::log_conformance::{id, req};
use floe_tests::required_env;

struct Server {
    child: Child,
}

impl Server {
    /// Starts nats-server with JetStream on `port` (0: let it choose) and
    /// returns it with its client port.
    fn start(dir: &Path, port: u16) -> (Server, u16) {
        let bin = required_env("FLOE_TEST_NATS_BIN");
        let ports_dir = dir.join(format!("ports-{port}"));
        std::fs::create_dir_all(&ports_dir).unwrap();
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = json["nats"][0].as_str()
            {
                break url.rsplit(':').next().unwrap().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not write its ports file"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (Server { child }, port)
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_publishes_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = Server::start(dir.path(), 0);
    let config = JetStreamConfig {
        url: format!("nats://127.0.0.1:{port}"),
        timeout_ms: 1_000,
        ..Default::default()
    };
    let logs = JetStreamLogs::connect(config).await.unwrap();
    let log = logs.create(id("restart")).await.unwrap();

    let mut acked = Vec::new();
    for i in 0..50 {
        let p = Bytes::from(format!("before-{i}"));
        acked.push((
            log.append(p.clone(), req(&format!("id-{i}"), &p))
                .await
                .unwrap()
                .lsn,
            p,
        ));
    }
    server.kill();
    // While NATS is down a write fails as retryable: once the client knows
    // it is disconnected, at once, without waiting on the server (the
    // message says which path answered).
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs.ping().await.is_ok() {
        assert!(Instant::now() < deadline, "the client never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (Its outcome is unknown, as for any failed write: the client may
    // still deliver what it buffered once NATS is back.)
    let err = log
        .append(Bytes::from("unknown"), req("unknown", b"unknown"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), floe_core::ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("not connected to NATS"), "{err}");
    let (_server, _) = Server::start(dir.path(), port);

    // Publishing resumes once the client has reconnected; attempts during the
    // outage fail and are not acknowledged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while acked.len() < 100 {
        let p = Bytes::from(format!("after-{i}"));
        match log.append(p.clone(), req(&format!("after-{i}"), &p)).await {
            Ok(ack) => {
                assert!(!ack.duplicate);
                acked.push((ack.lsn, p));
                i += 1;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect within 30 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A retry of a pre-restart request is still recognised.
    let retry = log
        .append(Bytes::from("before-3"), req("id-3", b"before-3"))
        .await
        .unwrap();
    assert_eq!((retry.lsn, retry.duplicate), (acked[3].0, true));

    let records = log
        .read_range(1, log.last_lsn().await.unwrap())
        .await
        .unwrap();
    for (lsn, payload) in &acked {
        let found = records.iter().find(|e| e.lsn == *lsn);
        assert_eq!(
            found.map(|e| &e.payload),
            Some(payload),
            "acknowledged lsn {lsn} lost"
        );
    }
    let known = records.iter().filter(|e| e.payload != "unknown").count();
    assert_eq!(known, 100, "nothing was written twice");
}

/// With NATS down, through the HTTP API: `eventual` queries are still
/// served from the manifest, writes and strong reads fail fast with a 503
/// and `Retry-After`, `/readyz` says the log is unreachable while
/// `/healthz` stays 200; once NATS is back, writes go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_eventual_reads_go_on_and_writes_fail_fast() {
    use floe_tests::server::{TestServer, test_settings};
    use serde_json::json;

    let nats_dir = tempfile::tempdir().unwrap();
    let (server, port) = Server::start(nats_dir.path(), 0);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.object_store = Some(floe_tests::s3_config());
    settings.nats = Some(JetStreamConfig {
        url: format!("nats://127.0.0.1:{port}"),
        timeout_ms: 1_000,
        ..Default::default()
    });
    let fresh_settings = settings.clone();
    let s = TestServer::start("cloud", settings, dir).await;
    let c = &s.client;
    let (status, _) = c
        .put(
            "/v1/collections/down",
            &json!({"dimension": 2, "metric": "l2"}),
        )
        .await;
    assert_eq!(status, 201);
    c.ok(
        "/v1/collections/down/upsert",
        &json!({"rows": [{"id": 1, "vector": [1, 1]}, {"id": 2, "vector": [2, 2]}]}),
    )
    .await;
    c.ok("/v1/collections/down/flush", &json!({})).await;
    server.kill();

    let eventual = json!({"vector": [1, 1], "top_k": 5, "consistency": "eventual"});
    let hits = c.ok("/v1/collections/down/query", &eventual).await;
    assert_eq!(hits["results"].as_array().map(Vec::len), Some(2), "{hits}");
    // Once the server knows NATS is gone, writes and strong reads fail on
    // the spot, without a request to NATS.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ready) = c.get("/readyz").await;
        if ready["log"]
            .as_str()
            .is_some_and(|l| l.contains("not connected to NATS"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never noticed: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    for (path, body) in [
        ("upsert", json!({"rows": [{"id": 3, "vector": [3, 3]}]})),
        ("query", json!({"vector": [1, 1], "top_k": 5})),
    ] {
        let response = http
            .post(format!("{}/v1/collections/down/{path}", s.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{path}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{path}"
        );
        let err: serde_json::Value = response.json().await.unwrap();
        assert_eq!(err["error"]["kind"], "unavailable", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not connected to NATS")),
            "{path}: {err}"
        );
    }
    let (status, ready) = c.get("/readyz").await;
    assert_eq!(
        (status, ready["object_store"].as_str()),
        (503, Some("ok")),
        "{ready}"
    );
    assert_ne!(ready["log"], "ok", "{ready}");
    let (status, _) = c.get("/healthz").await;
    assert_eq!(status, 200);
    // A process started during the outage (a cold Lambda) serves them too.
    let fresh = floe_core::Floe::open(fresh_settings).await.unwrap();
    let request = serde_json::from_value(eventual.clone()).unwrap();
    let hits = floe_core::api::query(&fresh, "down", request)
        .await
        .unwrap();
    assert_eq!(hits.results.len(), 2);

    let (_server, _) = Server::start(nats_dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = c
            .post(
                "/v1/collections/down/upsert",
                &json!({"rows": [{"id": 3, "vector": [3, 3]}]}),
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = c.get("/readyz").await;
    assert_eq!(status, 200);
}
