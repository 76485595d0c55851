//! Faults below the API: an object store that fails one request in N and
//! loses responses (the write landed, the client saw an error), under two
//! indexers racing each other over one collection while a client writes.
//! (The kill -9 rounds against the real binary are in
//! `functions/tests/faults.rs`; a NATS restart in `nats_restart.rs`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use floe_core::api::wire::{DeleteRequest, QueryRequest, UpsertRequest};
use floe_core::catalog::CollectionConfig;
use floe_core::storage::{FaultConfig, FaultyStore, OpFilter, open_object_store};
use floe_core::{ErrorKind, Floe};
use floe_tests::server::test_settings;
use floe_tests::{jetstream_config, jetstream_logs, s3_config};
use object_store::ObjectStore;
use serde_json::json;

const NAME: &str = "flaky";

/// What the collection must hold: id → the version in its vector.
type Oracle = BTreeMap<u64, u64>;

async fn upsert(floe: &Floe, ids: &[u64], version: u64, request_id: String) {
    let rows: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "vector": [*id as f32, version as f32]}))
        .collect();
    let request: UpsertRequest =
        serde_json::from_value(json!({"rows": rows, "request_id": request_id})).unwrap();
    floe_core::api::upsert(floe, NAME, request).await.unwrap();
}

/// Runs maintenance over and over until told to stop; failures of the
/// store are expected (and counted), a bug or corruption is not.
async fn indexer(floe: Arc<Floe>, stop: Arc<AtomicBool>) -> (usize, usize) {
    let (mut rounds, mut failed) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        for result in [
            floe.maintain(NAME, rounds % 4 == 0).await.map(|_| ()),
            floe.compact(NAME).await.map(|_| ()),
            floe.index_missing(NAME).await.map(|_| ()),
        ] {
            if let Err(e) = result {
                assert_ne!(
                    e.kind(),
                    ErrorKind::Internal,
                    "a maintenance step broke: {e}"
                );
                failed += 1;
            }
        }
        rounds += 1;
    }
    (rounds, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_store_and_two_racing_indexers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    let store_config = s3_config();
    let log_config = jetstream_config();
    settings.object_store = Some(store_config.clone());
    settings.nats = Some(log_config.clone());
    let s3 = open_object_store(&store_config).unwrap();
    let flaky = |seed: u64, lost_responses: bool| {
        Arc::new(FaultyStore::new(
            Arc::clone(&s3),
            FaultConfig {
                seed,
                ops: OpFilter::ALL,
                fail_probability: 0.08,
                fail_after_request: lost_responses,
                ..Default::default()
            },
        ))
    };
    let (store_a, store_b) = (flaky(1, false), flaky(2, true));
    let writer = Floe::new(
        Arc::clone(&s3),
        Arc::new(jetstream_logs(&log_config).await),
        settings.clone(),
    );
    let config: CollectionConfig = serde_json::from_value(json!({
        "name": NAME, "dimension": 2, "metric": "l2", "id_type": "u64",
        "index": {"seal_rows": 150, "row_group_rows": 32}
    }))
    .unwrap();
    writer.create_collection(config).await.unwrap();
    let a = Floe::new(
        Arc::clone(&store_a) as Arc<dyn ObjectStore>,
        Arc::new(jetstream_logs(&log_config).await),
        settings.clone(),
    );
    let b = Floe::new(
        Arc::clone(&store_b) as Arc<dyn ObjectStore>,
        Arc::new(jetstream_logs(&log_config).await),
        settings.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let indexers = [
        tokio::spawn(indexer(Arc::clone(&a), Arc::clone(&stop))),
        tokio::spawn(indexer(Arc::clone(&b), Arc::clone(&stop))),
    ];

    let mut oracle = Oracle::new();
    for batch in 0..60u64 {
        let fresh: Vec<u64> = (batch * 20..batch * 20 + 20).collect();
        upsert(&writer, &fresh, batch, format!("u{batch}")).await;
        oracle.extend(fresh.iter().map(|id| (*id, batch)));
        if batch % 5 == 4 {
            // Overwrite some older rows, delete others.
            let old: Vec<u64> = oracle.keys().copied().step_by(7).take(10).collect();
            upsert(&writer, &old, 1000 + batch, format!("o{batch}")).await;
            oracle.extend(old.iter().map(|id| (*id, 1000 + batch)));
            let doomed: Vec<u64> = oracle.keys().copied().skip(3).step_by(11).take(5).collect();
            let request: DeleteRequest =
                serde_json::from_value(json!({"ids": doomed, "request_id": format!("d{batch}")}))
                    .unwrap();
            floe_core::api::delete(&writer, NAME, request)
                .await
                .unwrap();
            for id in &doomed {
                oracle.remove(id);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = 0;
    for task in indexers {
        let (rounds, failed) = task.await.unwrap();
        assert!(rounds > 0);
        failures += failed;
    }
    let injected = store_a.failures() + store_b.failures();
    println!("flaky store: {injected} injected failures, {failures} maintenance steps failed");
    assert!(injected > 0, "no fault was injected");

    // Faults off: one more round settles everything.
    store_a.set_config(FaultConfig::default());
    // The first attempt may find A fenced by B's last claim; the next
    // claims the role back.
    let mut settled = false;
    for _ in 0..3 {
        let steps = [
            a.flush(NAME).await.map(|_| ()),
            a.compact(NAME).await.map(|_| ()),
            a.index_missing(NAME).await.map(|_| ()),
        ];
        if steps.iter().all(Result::is_ok) {
            settled = true;
            break;
        }
    }
    assert!(settled, "maintenance without faults kept failing");
    let info = a.describe(NAME).await.unwrap();
    assert_eq!(info.stats.unflushed_records, 0);

    // A fresh reader on the clean store sees exactly the oracle.
    let reader = Floe::new(
        Arc::clone(&s3),
        Arc::new(jetstream_logs(&log_config).await),
        settings,
    );
    for consistency in ["strong", "eventual"] {
        let mut found = BTreeMap::new();
        let mut cursor = serde_json::Value::Null;
        loop {
            let mut q = json!({"filter": "id >= 0", "top_k": 1000, "include_vector": true,
                "consistency": consistency});
            if !cursor.is_null() {
                q["cursor"] = cursor.clone();
            }
            let request: QueryRequest = serde_json::from_value(q).unwrap();
            let page = floe_core::api::query(&reader, NAME, request).await.unwrap();
            let page = serde_json::to_value(page).unwrap();
            for r in page["results"].as_array().unwrap() {
                let v = r["vector"].as_array().unwrap();
                found.insert(r["id"].as_u64().unwrap(), v[1].as_f64().unwrap() as u64);
            }
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(found, oracle, "{consistency}");
    }
    writer.drop_collection(NAME).await.unwrap();
}

/// An import job cancelled mid-way (its part 1 uploaded, its record not
/// yet written) is resumed by a later run after part 0: every row once,
/// one import marker, all parts' rows at its LSN.
#[tokio::test]
async fn an_interrupted_import_resumes_after_its_last_part() {
    let (floe, faulty, _dir) = import_started("resumed", "cut").await;
    let hold = faulty.hold_next(OpFilter::PUTS, "part-00001.json");
    let first = tokio::spawn({
        let floe = Arc::clone(&floe);
        async move { floe.run_import("resumed", "cut").await }
    });
    hold.held().await;
    first.abort();
    let _ = first.await;
    hold.release();
    let status = floe.import_status("resumed", "cut").await.unwrap();
    assert_eq!(status.segments, 1, "cut after part 0: {status:?}");

    let done = floe.run_import("resumed", "cut").await.unwrap();
    assert_eq!(
        done.state,
        floe_core::import::job::ImportState::Done,
        "{done:?}"
    );
    assert_eq!((done.rows_imported, done.segments), (300, 3), "{done:?}");
    let lsn = done.lsn.unwrap();
    assert_eq!(lsn, 1, "one marker in the log");
    let info = floe.describe("resumed").await.unwrap();
    assert_eq!(info.stats.rows, 300);
    assert_eq!(info.stats.segment_rows, 300, "no row twice");
    for id in [0u64, 150, 299] {
        let row = floe
            .get_row(
                "resumed",
                &id.to_string(),
                floe_core::engine::Consistency::Strong,
            )
            .await
            .unwrap();
        assert_eq!(row.map(|r| r.version), Some(lsn), "{id}");
    }
}

/// An embedded engine over a store that can hold requests, with
/// collection `name` (2-d, sealed at 100 rows) and import `job` of three
/// JSON Lines files of 100 rows each (`uploads/*.jsonl`) accepted, not run.
async fn import_started(name: &str, job: &str) -> (Arc<Floe>, Arc<FaultyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let local: Arc<dyn ObjectStore> = open_object_store(&floe_core::storage::ObjectStoreConfig {
        url: dir.path().join("objects").display().to_string(),
        ..Default::default()
    })
    .unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::clone(&local), FaultConfig::default()));
    let floe = Floe::new(
        Arc::clone(&faulty) as Arc<dyn ObjectStore>,
        Arc::new(floe_core::log::FileLogs::new(
            dir.path().join("log"),
            Default::default(),
        )),
        settings,
    );
    let config: CollectionConfig = serde_json::from_value(json!({
        "name": name, "dimension": 2, "metric": "l2", "id_type": "u64",
        "index": {"seal_rows": 100}
    }))
    .unwrap();
    floe.create_collection(config).await.unwrap();
    for f in 0..3u64 {
        let text: String = (f * 100..f * 100 + 100)
            .map(|id| format!("{}\n", json!({"id": id, "vector": [id as f32, 1.0]})))
            .collect();
        let path = object_store::path::Path::from(format!("uploads/f{f}.jsonl"));
        object_store::ObjectStoreExt::put(local.as_ref(), &path, text.into_bytes().into())
            .await
            .unwrap();
    }
    let request: floe_core::import::job::ImportRequest =
        serde_json::from_value(json!({"source": "uploads/*.jsonl", "job_id": job})).unwrap();
    floe.start_import(name, request, true).await.unwrap();
    (floe, faulty, dir)
}

/// A strong read that meets an import's marker before the flush that
/// commits it waits for that flush, then sees every imported row.
#[tokio::test]
async fn a_strong_read_waits_for_the_flush_of_an_import_marker() {
    let (floe, faulty, _dir) = import_started("waited", "w").await;
    // The flush that commits the import: its manifest is held.
    let hold = faulty.hold_next(OpFilter::PUTS, "/manifests/");
    let run = tokio::spawn({
        let floe = Arc::clone(&floe);
        async move { floe.run_import("waited", "w").await }
    });
    hold.held().await;
    let query = tokio::spawn({
        let floe = Arc::clone(&floe);
        async move {
            let request: QueryRequest =
                serde_json::from_value(json!({"vector": [150.0, 1.0], "top_k": 300})).unwrap();
            floe_core::api::query(&floe, "waited", request).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !query.is_finished(),
        "the read waits for the import's flush"
    );
    hold.release();
    let done = run.await.unwrap().unwrap();
    let answer = serde_json::to_value(query.await.unwrap().unwrap()).unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 300, "{answer}");
    assert_eq!(answer["lsn"].as_u64(), done.lsn);
}
