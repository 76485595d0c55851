//! The fault suite: the real `floe serve` binary killed with SIGKILL at
//! random moments while a client writes through the HTTP API (upserts,
//! overwrites, deletes, each with a request id), with flush, compaction and
//! index-build thresholds so small that every phase is hit, in embedded
//! mode and against the local stack (S3 API server + nats-server).
//!
//! After every restart it checks: every acknowledged write is there with
//! the right vector; nothing deleted came back; the request in flight at the
//! kill, retried with its request id, is written at most once; retries of
//! acknowledged requests are answered as duplicates; no response was a 500.
//! Each scenario is bounded in rounds and prints its counts.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test harness: failing loudly is the point

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;
use common::Floe;

/// Thresholds so small that flushes, compactions and index builds all run
/// between kills.
fn small_thresholds() -> Vec<(String, String)> {
    common::vars(&[
        ("FLOE_FLUSH_MAX_ROWS", "60"),
        ("FLOE_FLUSH_MAX_AGE_SECS", "1"),
        ("FLOE_FLUSH_POLL_MS", "40"),
    ])
}

/// One write as sent, so that it can be sent again.
#[derive(Clone, Debug)]
struct Write {
    path: &'static str,
    body: Value,
    /// What it does to the oracle: upserted `(id, version)`s or deleted ids.
    upserts: Vec<(u64, u64)>,
    deletes: Vec<u64>,
}

/// What the collection must hold: id → version (the vector is `[id, version]`).
#[derive(Default)]
struct Oracle {
    live: BTreeMap<u64, u64>,
    deleted: BTreeSet<u64>,
}

impl Oracle {
    fn apply(&mut self, w: &Write) {
        for (id, version) in &w.upserts {
            self.live.insert(*id, *version);
            self.deleted.remove(id);
        }
        for id in &w.deletes {
            if self.live.remove(id).is_some() {
                self.deleted.insert(*id);
            }
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    rounds: usize,
    acknowledged_writes: usize,
    acknowledged_rows: usize,
    lost: usize,
    resurrected: usize,
    wrong_vector: usize,
    duplicated: usize,
    in_flight_retried: usize,
    in_flight_had_landed: usize,
    acked_retries_deduped: usize,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `None` when the server is gone (connection refused or reset).
    async fn post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}/v1/collections/f{path}", self.base))
            .json(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let body = resp.json().await.ok()?;
        assert_ne!(status, 500, "a 500 from {path}: {body}");
        Some((status, body))
    }

    /// Every row, page by page, in id order.
    async fn all_rows(&self) -> BTreeMap<u64, Vec<f64>> {
        let mut out = BTreeMap::new();
        let mut cursor = Value::Null;
        loop {
            let mut q = json!({"filter": "id >= 0", "top_k": 1000, "include_vector": true});
            if !cursor.is_null() {
                q["cursor"] = cursor.clone();
            }
            let (status, page) = self.post("/query", &q).await.expect("query");
            assert_eq!(status, 200, "{page}");
            for r in page["results"].as_array().unwrap() {
                let v = r["vector"]
                    .as_array()
                    .map(|v| v.iter().map(|x| x.as_f64().unwrap()).collect())
                    .unwrap_or_default();
                out.insert(r["id"].as_u64().unwrap(), v);
            }
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                return out;
            }
        }
    }
}

fn next_write(rng: &mut StdRng, seq: u64, next_id: &mut u64, oracle: &Oracle) -> Write {
    let request_id = format!("w{seq}");
    let existing: Vec<u64> = oracle.live.keys().copied().collect();
    let roll = rng.random_range(0..10);
    if roll < 2 && existing.len() > 20 {
        let ids: Vec<u64> = (0..5)
            .map(|_| existing[rng.random_range(0..existing.len())])
            .collect();
        return Write {
            path: "/delete",
            body: json!({"ids": ids, "request_id": request_id}),
            upserts: vec![],
            deletes: ids,
        };
    }
    let upserts: Vec<(u64, u64)> = if roll < 4 && existing.len() > 20 {
        (0..10)
            .map(|_| {
                let id = existing[rng.random_range(0..existing.len())];
                (id, seq)
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect()
    } else {
        let first = *next_id;
        *next_id += 20;
        (first..first + 20).map(|id| (id, seq)).collect()
    };
    let rows: Vec<Value> = upserts
        .iter()
        .map(|(id, v)| json!({"id": id, "vector": [*id as f32, *v as f32]}))
        .collect();
    Write {
        path: "/upsert",
        body: json!({"rows": rows, "request_id": request_id}),
        upserts,
        deletes: vec![],
    }
}

async fn check(client: &Client, oracle: &Oracle, counts: &mut Counts) {
    let rows = client.all_rows().await;
    for (id, version) in &oracle.live {
        match rows.get(id) {
            None => counts.lost += 1,
            Some(v) if v != &vec![*id as f64, *version as f64] => counts.wrong_vector += 1,
            Some(_) => {}
        }
    }
    counts.resurrected += oracle
        .deleted
        .iter()
        .filter(|id| rows.contains_key(id))
        .count();
}

async fn kill_rounds(mode: &str, env: Vec<(String, String)>, rounds: usize) {
    let seed: u64 = rand::random();
    println!("fault suite ({mode}): seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut oracle = Oracle::default();
    let mut counts = Counts::default();
    let mut acked: Vec<(Write, u64)> = Vec::new();
    let mut in_flight: Vec<Write> = Vec::new();
    let (mut seq, mut next_id) = (0u64, 0u64);

    let floe = Floe::start(dir.path(), &env);
    let resp = http
        .put(format!("{}/v1/collections/f", floe.url))
        .json(&json!({"dimension": 2, "metric": "l2", "index": {"seal_rows": 300, "row_group_rows": 64}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let mut floe = Some(floe);
    for round in 0..=rounds {
        let server = match floe.take() {
            Some(f) => f,
            None => Floe::start(dir.path(), &env),
        };
        let client = Client {
            http: http.clone(),
            base: server.url.clone(),
        };
        if round > 0 {
            // The request in flight at the kill: retried with its id, it is
            // written at most once.
            for w in std::mem::take(&mut in_flight) {
                let (status, ack) = client.post(w.path, &w.body).await.expect("retry");
                assert_eq!(status, 200, "{ack}");
                counts.in_flight_retried += 1;
                if ack["duplicate"] == true {
                    counts.in_flight_had_landed += 1;
                }
                oracle.apply(&w);
                acked.push((w, ack["lsn"].as_u64().unwrap()));
            }
            // Acknowledged requests retried after the restart are duplicates.
            for (w, lsn) in acked.iter().rev().take(3) {
                let (status, ack) = client.post(w.path, &w.body).await.expect("retry");
                assert_eq!(status, 200, "{ack}");
                if ack["duplicate"] == true && ack["lsn"].as_u64() == Some(*lsn) {
                    counts.acked_retries_deduped += 1;
                } else {
                    counts.duplicated += 1;
                }
            }
            check(&client, &oracle, &mut counts).await;
        }
        if round == rounds {
            break;
        }
        // Write until the kill: a random moment 0.3–1.5 s in.
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(300..1500));
        let writes = {
            let mut local = Vec::new();
            while Instant::now() < kill_at {
                seq += 1;
                let w = next_write(&mut rng, seq, &mut next_id, &oracle);
                match client.post(w.path, &w.body).await {
                    Some((200, ack)) => {
                        oracle.apply(&w);
                        counts.acknowledged_writes += 1;
                        counts.acknowledged_rows += w.upserts.len() + w.deletes.len();
                        local.push((w, ack["lsn"].as_u64().unwrap()));
                    }
                    Some((status, body)) => panic!("{mode}: write got {status}: {body}"),
                    None => panic!("{mode}: the server went away before the kill"),
                }
            }
            local
        };
        acked.extend(writes);
        // A few more writes race the kill: their outcome is unknown.
        let racing: Vec<Write> = (0..4)
            .map(|_| {
                seq += 1;
                next_write(&mut rng, seq, &mut next_id, &oracle)
            })
            .collect();
        // Upserts of fresh ids only: their outcomes cannot interfere.
        let racing: Vec<Write> = racing
            .into_iter()
            .filter(|w| {
                w.deletes.is_empty()
                    && w.upserts.iter().all(|(id, _)| {
                        !oracle.live.contains_key(id) && !oracle.deleted.contains(id)
                    })
            })
            .collect();
        let sends = futures::future::join_all(racing.iter().map(|w| client.post(w.path, &w.body)));
        let delay = Duration::from_micros(rng.random_range(0..4000));
        let kill = async move {
            tokio::time::sleep(delay).await;
            server.kill();
        };
        let (outcomes, ()) = tokio::join!(sends, kill);
        for (w, outcome) in racing.into_iter().zip(outcomes) {
            match outcome {
                Some((200, ack)) => {
                    oracle.apply(&w);
                    acked.push((w, ack["lsn"].as_u64().unwrap()));
                }
                _ => in_flight.push(w),
            }
        }
        counts.rounds += 1;
    }
    println!("fault suite ({mode}): {counts:?}");
    assert_eq!(
        (
            counts.lost,
            counts.resurrected,
            counts.wrong_vector,
            counts.duplicated
        ),
        (0, 0, 0, 0),
        "{mode}: {counts:?} (seed {seed})"
    );
    assert!(counts.acknowledged_writes > rounds, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rounds_embedded() {
    kill_rounds("embedded", small_thresholds(), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rounds_cloud() {
    let mut env = small_thresholds();
    env.extend(common::cloud_env("faults"));
    kill_rounds("cloud", env, 5).await;
}
