//! No lock is held across a network round trip: while one request of a
//! collection waits on a slow object store, the collection's other work
//! goes on. The store here is the S3 server behind injected latency, and
//! one chosen request is held in flight until the test releases it.

use std::sync::Arc;
use std::time::Duration;

use floe_core::Floe;
use floe_core::api::wire::{QueryRequest, UpsertRequest};
use floe_core::storage::{FaultConfig, FaultyStore, OpFilter, open_object_store};
use floe_tests::server::test_settings;
use floe_tests::{jetstream_config, jetstream_logs, s3_config};
use serde_json::{Value, json};

/// Far longer than any request here takes; only a query stuck behind the
/// held request runs into it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn upsert(floe: &Floe, ids: std::ops::Range<u64>) {
    let rows: Vec<Value> = ids
        .map(|id| json!({"id": id, "vector": [id as f32, 1.0]}))
        .collect();
    let request: UpsertRequest = serde_json::from_value(json!({ "rows": rows })).unwrap();
    floe_core::api::upsert(floe, "c", request).await.unwrap();
}

async fn count(floe: &Floe, consistency: &str) -> usize {
    let request: QueryRequest = serde_json::from_value(json!({
        "filter": "id >= 0", "top_k": 1000, "consistency": consistency
    }))
    .unwrap();
    let response = floe_core::api::query(floe, "c", request).await.unwrap();
    response.results.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_do_not_wait_for_a_flush_check_held_in_the_object_store() {
    let (s3, nats) = (s3_config(), jetstream_config());
    let slow = FaultyStore::new(
        open_object_store(&s3).unwrap(),
        FaultConfig {
            seed: 11,
            ops: OpFilter::GETS | OpFilter::LISTS,
            latency: Some((Duration::from_millis(20), Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::new(
        Arc::new(slow.clone()),
        Arc::new(jetstream_logs(&nats).await),
        test_settings(dir.path()),
    );
    let config = serde_json::from_value(json!({
        "name": "c", "dimension": 2, "metric": "l2", "id_type": "u64"
    }))
    .unwrap();
    floe.create_collection(config).await.unwrap();
    upsert(&floe, 0..100).await;
    floe.flush("c").await.unwrap();
    upsert(&floe, 100..150).await;
    assert_eq!(count(&floe, "strong").await, 150);

    // The background indexer's flush check asks the store for the newest
    // manifest; that request is held.
    let hold = slow.hold_next(OpFilter::GETS | OpFilter::LISTS, "/manifests/");
    let flusher = {
        let floe = Arc::clone(&floe);
        tokio::spawn(async move { floe.flush_if_due("c").await })
    };
    tokio::time::timeout(PATIENCE, hold.held())
        .await
        .expect("the flush check reached the object store");

    // Meanwhile the collection answers reads at every level, each making
    // its own requests to the (slow) store.
    for consistency in ["strong", "eventual", "strong"] {
        let seen = tokio::time::timeout(PATIENCE, count(&floe, consistency))
            .await
            .unwrap_or_else(|_| panic!("a {consistency} query waited for the held flush check"));
        let want = if consistency == "eventual" { 100 } else { 150 };
        assert_eq!(seen, want, "{consistency}");
    }
    upsert(&floe, 150..160).await;
    assert_eq!(count(&floe, "strong").await, 160);

    hold.release();
    let flushed = tokio::time::timeout(PATIENCE, flusher)
        .await
        .expect("the flush check finished once released")
        .unwrap()
        .unwrap();
    // Not due: the test settings flush by age after an hour.
    assert!(flushed.is_none(), "{flushed:?}");
    assert_eq!(count(&floe, "strong").await, 160);
}
