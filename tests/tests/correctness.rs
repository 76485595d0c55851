//! Correct under races and restarts (issue 12): drops fence racing writes
//! and a re-created name starts empty; request ids are remembered across
//! flushes and restarts and refuse another body; a delete by filter removes
//! exactly what matches as of its own LSN; list and describe agree; every
//! error is the JSON shape. Each runs in both modes where the mode matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use floe_core::api::wire::{DeleteRequest, QueryRequest, UpsertRequest};
use floe_core::catalog::CollectionConfig;
use floe_core::log::{AppendOptions, Appended, Log, LogEntry, LogId, LogProvider, Lsn};
use floe_core::{Error, Floe, Settings};
use floe_tests::server::{TestServer, test_settings};
use floe_tests::{jetstream_config, s3_config};
use serde_json::{Value, json};

const C: &str = "/v1/collections";

fn rows(ids: std::ops::Range<u64>, dim: usize, genre: &str) -> Value {
    let rows: Vec<Value> = ids
        .map(|id| json!({"id": id, "vector": vec![id as f32; dim], "attributes": {"genre": genre}}))
        .collect();
    json!({ "rows": rows })
}

fn config(name: &str, dim: u32) -> CollectionConfig {
    serde_json::from_value(json!({
        "name": name, "dimension": dim, "metric": "l2", "id_type": "u64",
        "attributes": [{"name": "genre", "type": "string"}]
    }))
    .unwrap()
}

async fn create(s: &TestServer, name: &str, dim: u32) {
    let (status, body) = s
        .client
        .put(
            &format!("{C}/{name}"),
            &json!({"dimension": dim, "metric": "l2",
                "attributes": [{"name": "genre", "type": "string"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn describe(s: &TestServer, name: &str) -> Value {
    let (status, body) = s.client.get(&format!("{C}/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

// ---- drop fencing -----------------------------------------------------------

/// Four clients upsert 4-d rows while the collection is dropped and created
/// again with dimension 8: no write sent after DELETE returned is
/// acknowledged, the new collection starts empty with its new dimension,
/// and it stays readable.
async fn a_drop_fences_racing_writes(s: TestServer) {
    for round in 0..4 {
        let name = format!("race{round}");
        create(&s, &name, 4).await;
        let dropped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (client, dropped, stop, next_id, name) = (
                    s.client.clone(),
                    Arc::clone(&dropped),
                    Arc::clone(&stop),
                    Arc::clone(&next_id),
                    name.clone(),
                );
                tokio::spawn(async move {
                    let mut late_acks = Vec::new();
                    let mut acked = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        let after_drop = dropped.load(Ordering::SeqCst);
                        let (status, body) = client
                            .post(&format!("{C}/{name}/upsert"), &rows(id..id + 1, 4, "x"))
                            .await;
                        match status {
                            200 if after_drop => late_acks.push(body),
                            200 => acked += 1,
                            400 | 404 => {}
                            other => panic!("upsert racing a drop got {other}: {body}"),
                        }
                    }
                    (acked, late_acks)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30 + 20 * round)).await;
        let (status, body) = s.client.delete(&format!("{C}/{name}")).await;
        assert_eq!(status, 200, "{body}");
        dropped.store(true, Ordering::SeqCst);
        create(&s, &name, 8).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        let mut acked = 0;
        for w in writers {
            let (n, late) = w.await.unwrap();
            assert!(
                late.is_empty(),
                "{}: writes acknowledged after DELETE returned: {late:?}",
                s.mode
            );
            acked += n;
        }
        assert!(acked > 0, "the writers never got a write in");
        let info = describe(&s, &name).await;
        assert_eq!(info["dimension"], 8, "{info}");
        assert_eq!(
            (
                info["stats"]["rows"].as_u64(),
                info["stats"]["log_lsn"].as_u64()
            ),
            (Some(0), Some(0)),
            "{}: the new incarnation is empty: {info}",
            s.mode
        );
        let (status, _) = s
            .client
            .post(&format!("{C}/{name}/upsert"), &rows(0..1, 4, "x"))
            .await;
        assert_eq!(status, 400, "4-d rows no longer fit");
        s.client
            .ok(&format!("{C}/{name}/upsert"), &rows(0..3, 8, "x"))
            .await;
        s.client.ok(&format!("{C}/{name}/flush"), &json!({})).await;
        let hits = s
            .client
            .ok(
                &format!("{C}/{name}/query"),
                &json!({"vector": vec![0.0; 8], "top_k": 10}),
            )
            .await;
        assert_eq!(hits["results"].as_array().map(Vec::len), Some(3), "{hits}");
    }
}

/// A second process that has the collection open notices a drop: its
/// writes go to the new incarnation when the configuration is the same,
/// and are refused (404) when it is not; its reads follow.
async fn another_process_follows_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.object_store = Some(s3_config());
    settings.nats = Some(jetstream_config());
    let a = Floe::open(settings.clone()).await.unwrap();
    let b = Floe::open(settings).await.unwrap();
    let upsert = |floe: &Arc<Floe>, ids: std::ops::Range<u64>, dim: usize| {
        let floe = Arc::clone(floe);
        async move {
            let request: UpsertRequest = serde_json::from_value(rows(ids, dim, "x")).unwrap();
            floe_core::api::upsert(&floe, "shared", request).await
        }
    };
    let count = |floe: &Arc<Floe>| {
        let floe = Arc::clone(floe);
        async move {
            let q: QueryRequest =
                serde_json::from_value(json!({"filter": "id >= 0", "top_k": 100})).unwrap();
            floe_core::api::query(&floe, "shared", q)
                .await
                .map(|r| r.results.len())
        }
    };
    a.create_collection(config("shared", 4)).await.unwrap();
    upsert(&b, 0..5, 4).await.unwrap();
    assert_eq!(count(&b).await.unwrap(), 5);

    // Same configuration: B's next write and read land in the new incarnation.
    a.drop_collection("shared").await.unwrap();
    a.create_collection(config("shared", 4)).await.unwrap();
    upsert(&b, 10..12, 4).await.unwrap();
    assert_eq!(count(&a).await.unwrap(), 2, "only the write after the drop");
    assert_eq!(count(&b).await.unwrap(), 2);

    // Another configuration: B's write, checked against the old one, is refused.
    a.drop_collection("shared").await.unwrap();
    a.create_collection(config("shared", 8)).await.unwrap();
    let err = upsert(&b, 20..21, 4).await.unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{err}");
    upsert(&b, 20..21, 8).await.unwrap();
    assert_eq!(count(&a).await.unwrap(), 1);
    a.drop_collection("shared").await.unwrap();
}

// ---- request ids --------------------------------------------------------------

async fn a_request_id_with_another_body_is_a_conflict(s: TestServer) {
    create(&s, "ids", 2).await;
    let c = &s.client;
    let mut body = rows(1..2, 2, "x");
    body["request_id"] = json!("req-1");
    let first = c.ok(&format!("{C}/ids/upsert"), &body).await;
    let mut other = rows(2..3, 2, "x");
    other["request_id"] = json!("req-1");
    let (status, err) = c.post(&format!("{C}/ids/upsert"), &other).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["kind"], "conflict", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("req-1"),
        "{err}"
    );
    let (status, err) = c
        .post(
            &format!("{C}/ids/delete"),
            &json!({"ids": [1], "request_id": "req-1"}),
        )
        .await;
    assert_eq!(status, 409, "a delete reusing an upsert's id: {err}");
    let retry = c.ok(&format!("{C}/ids/upsert"), &body).await;
    assert_eq!(
        (retry["lsn"].clone(), retry["duplicate"].clone()),
        (first["lsn"].clone(), json!(true))
    );
    let info = describe(&s, "ids").await;
    assert_eq!(
        info["stats"]["log_lsn"], first["lsn"],
        "nothing else was written"
    );
}

/// Write with a request id, flush, restart the process, retry: still a
/// duplicate, in both modes (the embedded log used to forget ids in
/// flushed-and-trimmed files).
async fn request_ids_survive_a_flush_and_a_restart(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    if mode == "cloud" {
        settings.object_store = Some(s3_config());
        settings.nats = Some(jetstream_config());
    }
    let upsert = |floe: Arc<Floe>, request_id: &'static str, id: u64| async move {
        let mut body = rows(id..id + 1, 2, "x");
        body["request_id"] = json!(request_id);
        let request: UpsertRequest = serde_json::from_value(body).unwrap();
        floe_core::api::upsert(&floe, "dedupe", request)
            .await
            .unwrap()
    };
    let delete = |floe: Arc<Floe>| async move {
        let request: DeleteRequest =
            serde_json::from_value(json!({"ids": [1], "request_id": "del-1"})).unwrap();
        floe_core::api::delete(&floe, "dedupe", request)
            .await
            .unwrap()
    };
    let (first, deleted) = {
        let floe = Floe::open(settings.clone()).await.unwrap();
        floe.create_collection(config("dedupe", 2)).await.unwrap();
        let first = upsert(Arc::clone(&floe), "up-1", 1).await;
        let deleted = delete(Arc::clone(&floe)).await;
        floe.flush("dedupe").await.unwrap();
        // A maintenance round right after the flush must not forget them either.
        floe.maintain("dedupe", true).await.unwrap();
        (first, deleted)
    };
    let floe = Floe::open(settings).await.unwrap();
    // Re-upsert id 1: a retried delete must not hide it again.
    upsert(Arc::clone(&floe), "up-2", 1).await;
    let retry = upsert(Arc::clone(&floe), "up-1", 1).await;
    assert_eq!((retry.lsn, retry.duplicate), (first.lsn, true), "{mode}");
    let retry = delete(Arc::clone(&floe)).await;
    assert_eq!((retry.lsn, retry.duplicate), (deleted.lsn, true), "{mode}");
    let q: QueryRequest =
        serde_json::from_value(json!({"filter": "id == 1", "top_k": 10})).unwrap();
    let found = floe_core::api::query(&floe, "dedupe", q).await.unwrap();
    assert_eq!(
        found.results.len(),
        1,
        "{mode}: the re-upserted row is visible"
    );
}

// ---- delete by filter -----------------------------------------------------------

/// A log provider whose first append (of every append, or of the
/// conditional ones only) waits until the test lets it go, and whose next
/// delete can be made to fail.
#[derive(Debug)]
struct Gate {
    inner: Arc<dyn LogProvider>,
    state: Arc<GateState>,
}

#[derive(Debug)]
struct GateState {
    conditional_only: bool,
    reached: tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    fail_next_delete: AtomicBool,
}

impl Gate {
    /// A gate over `inner`, and the ends the test holds: "an append
    /// reached the gate" and "let it go".
    fn new(
        inner: Arc<dyn LogProvider>,
        conditional_only: bool,
    ) -> (
        Gate,
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        let gate = Gate {
            inner,
            state: Arc::new(GateState {
                conditional_only,
                reached: tokio::sync::Mutex::new(Some(reached_tx)),
                release: tokio::sync::Mutex::new(Some(release_rx)),
                fail_next_delete: AtomicBool::new(false),
            }),
        };
        (gate, reached_rx, release_tx)
    }
}

#[derive(Debug)]
struct GatedLog {
    inner: Arc<dyn Log>,
    gate: Arc<GateState>,
}

#[async_trait]
impl LogProvider for Gate {
    async fn create(&self, id: LogId<'_>) -> floe_core::Result<Arc<dyn Log>> {
        let inner = self.inner.create(id).await?;
        Ok(Arc::new(GatedLog {
            inner,
            gate: Arc::clone(&self.state),
        }))
    }
    async fn open(&self, id: LogId<'_>) -> floe_core::Result<Arc<dyn Log>> {
        let inner = self.inner.open(id).await?;
        Ok(Arc::new(GatedLog {
            inner,
            gate: Arc::clone(&self.state),
        }))
    }
    async fn delete(&self, id: LogId<'_>) -> floe_core::Result<()> {
        if self.state.fail_next_delete.swap(false, Ordering::SeqCst) {
            // A retryable failure, as a NATS timeout would be.
            return Err(Error::Log {
                op: "delete stream",
                message: "injected".into(),
            });
        }
        self.inner.delete(id).await
    }
    async fn list(&self) -> floe_core::Result<Vec<(String, String)>> {
        self.inner.list().await
    }
    async fn ping(&self) -> floe_core::Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Log for GatedLog {
    async fn append(
        &self,
        payload: Bytes,
        options: AppendOptions<'_>,
    ) -> floe_core::Result<Appended> {
        if (options.expected_last.is_some() || !self.gate.conditional_only)
            && let Some(reached) = self.gate.reached.lock().await.take()
        {
            let _ = reached.send(());
            if let Some(release) = self.gate.release.lock().await.take() {
                let _ = release.await;
            }
        }
        self.inner.append(payload, options).await
    }
    async fn find_request(
        &self,
        request: floe_core::log::RequestKey<'_>,
    ) -> floe_core::Result<Option<Appended>> {
        self.inner.find_request(request).await
    }
    async fn read(&self, from: Lsn, max: usize) -> floe_core::Result<Vec<LogEntry>> {
        self.inner.read(from, max).await
    }
    async fn last_lsn(&self) -> floe_core::Result<Lsn> {
        self.inner.last_lsn().await
    }
    async fn first_lsn(&self) -> floe_core::Result<Lsn> {
        self.inner.first_lsn().await
    }
    async fn trim(&self, through: Lsn) -> floe_core::Result<()> {
        self.inner.trim(through).await
    }
    fn max_record_bytes(&self) -> usize {
        self.inner.max_record_bytes()
    }
    fn duplicate_window(&self) -> Duration {
        self.inner.duplicate_window()
    }
}

/// A row re-upserted between a delete's filter scan and its append, with
/// attributes that no longer match, survives the delete.
async fn a_delete_by_filter_removes_what_matches_at_its_own_lsn(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (floe, _, reached_rx, release_tx, _) = gated(mode, dir.path(), true).await;
    floe.create_collection(config("df", 2)).await.unwrap();
    let upsert = |body: Value| {
        let floe = Arc::clone(&floe);
        async move {
            let request: UpsertRequest = serde_json::from_value(body).unwrap();
            floe_core::api::upsert(&floe, "df", request).await.unwrap()
        }
    };
    upsert(rows(0..4, 2, "sf")).await;
    let deleting = {
        let floe = Arc::clone(&floe);
        tokio::spawn(async move {
            let request: DeleteRequest =
                serde_json::from_value(json!({"filter": "genre == 'sf'"})).unwrap();
            floe_core::api::delete(&floe, "df", request).await
        })
    };
    reached_rx.await.unwrap();
    // Between the scan and the append: id 1 stops matching.
    upsert(rows(1..2, 2, "fantasy")).await;
    release_tx.send(()).unwrap();
    let ack = deleting.await.unwrap().unwrap();
    assert_eq!(ack.rows, 3, "{mode}: ids 0, 2 and 3");
    let q: QueryRequest =
        serde_json::from_value(json!({"filter": "id >= 0", "top_k": 10})).unwrap();
    let left = floe_core::api::query(&floe, "df", q).await.unwrap();
    let ids: Vec<Value> = left.results.iter().map(|r| json!(r.id)).collect();
    assert_eq!(ids, vec![json!(1)], "{mode}");
}

/// A patch whose row is re-upserted between its read and its append reads
/// again and patches the new version (its vector kept); of two racing
/// "only if absent" upserts of one id, exactly one lands.
async fn read_then_write_requests_apply_to_what_is_there_when_they_land(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (floe, _, reached_rx, release_tx, _) = gated(mode, dir.path(), true).await;
    floe.create_collection(config("rw", 2)).await.unwrap();
    let upsert = |body: Value| {
        let floe = Arc::clone(&floe);
        async move {
            let request: UpsertRequest = serde_json::from_value(body).unwrap();
            floe_core::api::upsert(&floe, "rw", request).await
        }
    };
    upsert(rows(0..2, 2, "sf")).await.unwrap();
    let patching = {
        let floe = Arc::clone(&floe);
        tokio::spawn(async move {
            let request: floe_core::api::wire::PatchRequest = serde_json::from_value(
                json!({"rows": [{"id": 1, "attributes": {"genre": "poetry"}}]}),
            )
            .unwrap();
            floe_core::api::patch(&floe, "rw", request).await
        })
    };
    reached_rx.await.unwrap();
    // Between the patch's read and its append: id 1 gets a new vector.
    upsert(json!({"rows": [{"id": 1, "vector": [9, 9], "attributes": {"genre": "fantasy"}}]}))
        .await
        .unwrap();
    release_tx.send(()).unwrap();
    let ack = patching.await.unwrap().unwrap();
    assert_eq!(ack.rows, 1);
    let row = floe
        .get_row("rw", "1", floe_core::engine::Consistency::Strong)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.vector,
        Some(vec![9.0, 9.0]),
        "{mode}: the new vector stays"
    );
    assert_eq!(row.version, ack.lsn, "{mode}");
    let genre = row
        .attributes
        .unwrap()
        .into_iter()
        .find(|a| a.name == "genre")
        .unwrap();
    assert_eq!(
        floe_core::api::rows::value_at(genre.value.as_ref(), 0),
        json!("poetry"),
        "{mode}"
    );

    // Two "only if absent" upserts of id 7 at once: one wins.
    let results = futures::future::join_all(
        (0..2).map(|i| upsert(json!({"rows": [{"id": 7, "vector": [i, i], "if_version": 0}]}))),
    )
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{mode}: {results:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(floe_core::Error::ConditionFailed { .. }))),
        "{mode}: {results:?}"
    );
}

/// The engine of one mode over a gated log, with what the test needs to see
/// underneath.
async fn gated(
    mode: &str,
    dir: &std::path::Path,
    conditional_only: bool,
) -> (
    Arc<Floe>,
    Arc<GateState>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
    Arc<dyn object_store::ObjectStore>,
) {
    let settings: Settings = test_settings(dir);
    let (store, logs): (_, Arc<dyn LogProvider>) = if mode == "cloud" {
        (
            floe_core::storage::open_object_store(&s3_config()).unwrap(),
            Arc::new(floe_tests::jetstream_logs(&jetstream_config()).await),
        )
    } else {
        (
            floe_core::storage::open_object_store(&settings.object_store_config()).unwrap(),
            Arc::new(floe_core::log::FileLogs::new(
                settings.log_dir(),
                Default::default(),
            )),
        )
    };
    let (gate, reached, release) = Gate::new(logs, conditional_only);
    let state = Arc::clone(&gate.state);
    let floe = Floe::new(Arc::clone(&store), Arc::new(gate), settings);
    (floe, state, reached, release, store)
}

/// An upsert already inside the log when the collection is dropped (and
/// created again with the same configuration) is not acknowledged once the
/// drop returned: it used to land in the deleted log's file and get a 200;
/// it must not land in the new collection either.
async fn a_write_held_across_a_drop_is_not_acknowledged(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (floe, _, reached, release, _) = gated(mode, dir.path(), false).await;
    floe.create_collection(config("held", 2)).await.unwrap();
    let writing = {
        let floe = Arc::clone(&floe);
        tokio::spawn(async move {
            let request: UpsertRequest = serde_json::from_value(rows(0..3, 2, "x")).unwrap();
            floe_core::api::upsert(&floe, "held", request).await
        })
    };
    reached.await.unwrap();
    floe.drop_collection("held").await.unwrap();
    assert!(matches!(
        floe.describe("held").await,
        Err(Error::CollectionNotFound(_))
    ));
    // Created again before the held write goes on: it stays empty.
    tokio::time::sleep(Duration::from_millis(2)).await;
    floe.create_collection(config("held", 2)).await.unwrap();
    release.send(()).unwrap();
    let err = writing.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{mode}: {err}");
    assert_eq!(
        floe.describe("held").await.unwrap().stats.log_lsn,
        0,
        "{mode}"
    );
    // A write sent now goes in.
    let request: UpsertRequest = serde_json::from_value(rows(0..3, 2, "x")).unwrap();
    floe_core::api::upsert(&floe, "held", request)
        .await
        .unwrap();
    floe.drop_collection("held").await.unwrap();
}

/// A drop whose log deletion fails answers 503; the name is already gone
/// from the listing and describe, and the retried drop finishes the job
/// (log and files), after which the drop is a 404.
async fn an_interrupted_drop_is_finished_by_the_next(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (floe, gate, _, release, store) = gated(mode, dir.path(), true).await;
    drop(release);
    floe.create_collection(config("half", 2)).await.unwrap();
    let request: UpsertRequest = serde_json::from_value(rows(0..3, 2, "x")).unwrap();
    floe_core::api::upsert(&floe, "half", request)
        .await
        .unwrap();
    floe.flush("half").await.unwrap();
    let incarnation = floe.describe("half").await.unwrap().incarnation;
    gate.fail_next_delete.store(true, Ordering::SeqCst);
    let err = floe.drop_collection("half").await.unwrap_err();
    assert_eq!(
        err.kind(),
        floe_core::ErrorKind::Unavailable,
        "{mode}: {err}"
    );
    assert!(
        !floe
            .list_collections()
            .await
            .unwrap()
            .contains(&"half".to_string())
    );
    assert!(matches!(
        floe.describe("half").await,
        Err(Error::CollectionNotFound(_))
    ));
    floe.drop_collection("half").await.unwrap();
    let files = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(
        &floe_core::storage::CollectionPaths::new("half", &incarnation).root(),
    )))
    .await
    .unwrap();
    assert!(files.is_empty(), "{mode}: left behind: {files:?}");
    assert!(matches!(
        floe.drop_collection("half").await,
        Err(Error::CollectionNotFound(_))
    ));
}

/// Flushed records stay in the log for the dedupe window, then a
/// maintenance round trims them (any process can: the manifest says when
/// each checkpoint was committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_records_are_trimmed_after_the_dedupe_window() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let options = floe_core::log::FileLogOptions {
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    };
    let logs = Arc::new(floe_core::log::FileLogs::new(settings.log_dir(), options));
    let store = floe_core::storage::open_object_store(&settings.object_store_config()).unwrap();
    let floe = Floe::new(store, Arc::clone(&logs) as Arc<dyn LogProvider>, settings);
    floe.create_collection(config("trim", 2)).await.unwrap();
    let incarnation = floe.describe("trim").await.unwrap().incarnation;
    let log = logs
        .open(LogId {
            collection: "trim",
            incarnation: &incarnation,
        })
        .await
        .unwrap();
    for i in 0..3 {
        let request: UpsertRequest = serde_json::from_value(rows(i..i + 1, 2, "x")).unwrap();
        floe_core::api::upsert(&floe, "trim", request)
            .await
            .unwrap();
    }
    floe.flush("trim").await.unwrap();
    assert_eq!(
        log.first_lsn().await.unwrap(),
        1,
        "kept for the dedupe window"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The next maintenance round trims them.
    floe.maintain("trim", false).await.unwrap();
    assert_eq!(
        log.first_lsn().await.unwrap(),
        4,
        "trimmed after the window"
    );
}

// ---- listing, errors ------------------------------------------------------------

/// Churn of creates and drops: at every step the listing names exactly the
/// collections that describe finds.
async fn list_and_describe_agree(s: TestServer) {
    let c = &s.client;
    for round in 0..3 {
        for name in ["l-a", "l-b", "l-c"] {
            create(&s, name, 2).await;
            c.ok(&format!("{C}/{name}/upsert"), &rows(0..3, 2, "x"))
                .await;
            c.ok(&format!("{C}/{name}/flush"), &json!({})).await;
        }
        let (status, _) = c.delete(&format!("{C}/l-b")).await;
        assert_eq!(status, 200);
        if round % 2 == 0 {
            let (status, _) = c.delete(&format!("{C}/l-a")).await;
            assert_eq!(status, 200);
        }
        let (_, list) = c.get(C).await;
        let listed: Vec<&str> = list["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for name in ["l-a", "l-b", "l-c"] {
            let (status, _) = c.get(&format!("{C}/{name}")).await;
            assert_eq!(
                status == 200,
                listed.contains(&name),
                "{}: {name} listed {listed:?} but describe says {status}",
                s.mode
            );
        }
        for name in listed {
            let _ = c.delete(&format!("{C}/{name}")).await;
        }
    }
}

async fn every_error_is_json(s: TestServer) {
    create(&s, "e", 2).await;
    let c = &s.client;
    let check = |status: u16, body: &Value, want: u16, field: Option<&str>| {
        assert_eq!(status, want, "{body}");
        assert!(
            body["error"]["message"].is_string(),
            "not the JSON shape: {body}"
        );
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    };
    let (status, body) = c.get(&format!("{C}/e/rows/1?at_least_lsn=abc")).await;
    check(status, &body, 400, Some("at_least_lsn"));
    let (status, body) = c.get(&format!("{C}/e/rows/1?bogus=1")).await;
    check(status, &body, 400, Some("query"));
    let (status, body) = c.post(&format!("{C}/e/query"), &json!({"top_k": 3})).await;
    check(status, &body, 400, Some("vector"));
    let long = "x".repeat(10_000);
    let (status, body) = c.get(&format!("{C}/e/rows/{long}")).await;
    check(status, &body, 414, Some("uri"));
    let http = reqwest::Client::new();
    let mut request = http.get(format!("{}/healthz", s.url));
    for i in 0..40 {
        request = request.header(format!("x-pad-{i}"), "y".repeat(1000));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    check(status, &body, 431, Some("headers"));
    // Liveness and readiness.
    let (status, body) = c.get("/readyz").await;
    assert_eq!(
        (status, body["log"].as_str(), body["object_store"].as_str()),
        (200, Some("ok"), Some("ok")),
        "{body}"
    );
}

floe_tests::both_modes!(
    a_drop_fences_racing_writes,
    a_request_id_with_another_body_is_a_conflict,
    list_and_describe_agree,
    every_error_is_json,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_follows_a_drop_in_cloud_mode() {
    another_process_follows_a_drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_survive_a_flush_and_a_restart_embedded() {
    request_ids_survive_a_flush_and_a_restart("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_survive_a_flush_and_a_restart_cloud() {
    request_ids_survive_a_flush_and_a_restart("cloud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_across_a_drop_is_not_acknowledged_embedded() {
    a_write_held_across_a_drop_is_not_acknowledged("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_across_a_drop_is_not_acknowledged_cloud() {
    a_write_held_across_a_drop_is_not_acknowledged("cloud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_drop_is_finished_by_the_next_embedded() {
    an_interrupted_drop_is_finished_by_the_next("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_drop_is_finished_by_the_next_cloud() {
    an_interrupted_drop_is_finished_by_the_next("cloud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_by_filter_removes_what_matches_at_its_own_lsn_embedded() {
    a_delete_by_filter_removes_what_matches_at_its_own_lsn("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_write_requests_apply_to_what_is_there_when_they_land_embedded() {
    read_then_write_requests_apply_to_what_is_there_when_they_land("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_write_requests_apply_to_what_is_there_when_they_land_cloud() {
    read_then_write_requests_apply_to_what_is_there_when_they_land("cloud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_by_filter_removes_what_matches_at_its_own_lsn_cloud() {
    a_delete_by_filter_removes_what_matches_at_its_own_lsn("cloud").await;
}
