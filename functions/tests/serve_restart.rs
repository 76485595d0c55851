//! `floe serve` as a real process: SIGKILL it and start it again on the same
//! data directory; nothing acknowledged is lost, and the background indexer
//! flushes the tail by itself.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test harness: failing loudly is the point

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::Floe;

/// Flushes after 1 s, looked for every 100 ms.
fn env() -> Vec<(String, String)> {
    common::vars(&[
        ("FLOE_FLUSH_MAX_AGE_SECS", "1"),
        ("FLOE_FLUSH_POLL_MS", "100"),
    ])
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let resp = http.post(url).json(&body).send().await.expect("request");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.expect("json")
}

#[tokio::test]
async fn sigkill_and_restart_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let floe = Floe::start(dir.path(), &env());
    let c = format!("{}/v1/collections/docs", floe.url);
    let resp = http
        .put(&c)
        .json(
            &json!({"dimension": 2, "metric": "l2", "attributes": [{"name": "v", "type": "i64"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    for batch in 0..20u64 {
        let rows: Vec<Value> = (0..10).map(|i| json!({"id": batch * 10 + i, "vector": [batch as f32, i as f32], "attributes": {"v": 1}})).collect();
        post(&http, format!("{c}/upsert"), json!({ "rows": rows })).await;
        if batch == 9 {
            post(&http, format!("{c}/flush"), json!({})).await;
        }
    }
    // Overwrite and delete some, acknowledged just before the kill.
    post(
        &http,
        format!("{c}/upsert"),
        json!({"rows": [{"id": 5, "vector": [0, 0], "attributes": {"v": 2}}]}),
    )
    .await;
    post(&http, format!("{c}/delete"), json!({"ids": [6, 150]})).await;
    floe.kill();

    let floe = Floe::start(dir.path(), &env());
    let c = format!("{}/v1/collections/docs", floe.url);
    let all = post(
        &http,
        format!("{c}/query"),
        json!({"top_k": 1000, "filter": "v >= 1"}),
    )
    .await;
    let ids: Vec<u64> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..200).filter(|id| *id != 6 && *id != 150).collect();
    assert_eq!(ids, want);
    let five = http
        .get(format!("{c}/rows/5"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(five["attributes"]["v"], 2);

    // The background indexer flushes the tail (age threshold 1 s) by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = http
            .get(&c)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["stats"]
            .clone();
        if stats["unflushed_records"] == 0 && stats["checkpoint_lsn"] == stats["log_lsn"] {
            assert_eq!(stats["rows"], 198);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background indexer did not flush: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let eventual = post(
        &http,
        format!("{c}/query"),
        json!({"top_k": 1000, "filter": "v >= 1", "consistency": "eventual"}),
    )
    .await;
    assert_eq!(eventual["results"].as_array().unwrap().len(), 198);
}

/// SIGTERM (what Docker and Kubernetes send) stops `floe serve` cleanly
/// while clients are writing: requests get a 200 or no answer at all
/// (never a 5xx), the process exits 0, and a restart finds every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut floe = Floe::start(dir.path(), &env());
    let c = format!("{}/v1/collections/term", floe.url);
    let resp = http
        .put(&c)
        .json(&json!({"dimension": 2, "metric": "l2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let (http, c) = (http.clone(), c.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let id = w * 1_000_000 + i;
                    let sent = http
                        .post(format!("{c}/upsert"))
                        .json(&json!({"rows": [{"id": id, "vector": [w as f32, i as f32]}]}))
                        .send()
                        .await;
                    match sent {
                        Ok(resp) => {
                            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
                            acked.push(id);
                        }
                        // Refused, or an idle keep-alive connection the
                        // server closed as the request went out (never
                        // read, so never acknowledged: a client retries
                        // with its request id).
                        Err(e) => {
                            assert!(e.is_connect() || e.is_request(), "{e:?}");
                            return acked;
                        }
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = floe.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = floe.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "floe serve ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(!acked.is_empty());

    let floe = Floe::start(dir.path(), &env());
    let c = format!("{}/v1/collections/term", floe.url);
    let mut found = std::collections::BTreeSet::new();
    let mut cursor = Value::Null;
    loop {
        let mut q = json!({"top_k": 1000, "filter": "id >= 0"});
        if !cursor.is_null() {
            q["cursor"] = cursor.clone();
        }
        let page = post(&http, format!("{c}/query"), q).await;
        found.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    for id in &acked {
        assert!(found.contains(id), "acknowledged id {id} lost");
    }
}

/// Logs to a pipe are JSON lines without ANSI codes, with an access line per
/// request carrying its request id; every response carries `x-request-id`
/// (the client's, or a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_with_an_access_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = env();
    vars.extend(common::vars(&[("RUST_LOG", "info")]));
    let floe = Floe::start(dir.path(), &vars);
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/v1/collections/nope", floe.url))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "trace-me-42"
    );
    let resp = http
        .get(format!("{}/healthz", floe.url))
        .send()
        .await
        .unwrap();
    let minted = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(!minted.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = floe.stderr.lock().unwrap().clone();
        for line in &lines {
            assert!(!line.contains('\u{1b}'), "ANSI codes in a log line: {line}");
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(parsed["level"].is_string(), "{line}");
        }
        let access = lines
            .iter()
            .find(|l| l.contains("trace-me-42") && l.contains("404"));
        if access.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no access line in {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
