//! What a query costs in object-store requests, measured against the S3
//! server with injected latency (so parallel requests really overlap): the
//! cold query's round trips and requests stay within budget, a repeated
//! query costs nothing, a new manifest costs only the new files, a fresh
//! process with the same disk cache costs nothing, and warm-up leaves only
//! the candidates' rows to fetch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use floe_core::Floe;
use floe_core::api::wire::{DeleteRequest, QueryRequest, UpsertRequest};
use floe_core::cache::QueryStats;
use floe_core::storage::{
    CollectionPaths, CountingStore, FaultConfig, FaultyStore, OpFilter, Request, open_object_store,
    sequential_round_trips,
};
use floe_tests::server::test_settings;
use floe_tests::{jetstream_config, jetstream_logs, s3_config};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DIM: usize = 16;

fn rows(ids: std::ops::Range<u64>, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    ids.map(|id| {
        let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        json!({"id": id, "vector": v, "attributes": {"cat": (id % 100) as i64, "title": format!("row {id}")}})
    })
    .collect()
}

async fn upsert(floe: &Floe, name: &str, rows: Vec<Value>) {
    let request: UpsertRequest = serde_json::from_value(json!({ "rows": rows })).unwrap();
    floe_core::api::upsert(floe, name, request).await.unwrap();
}

/// Data requests (segments, indexes, delete files), not catalog or manifests.
fn data(log: &[Request]) -> Vec<&Request> {
    log.iter()
        .filter(|r| CollectionPaths::is_data_file(&r.path))
        .collect()
}

/// The writing process: S3 and NATS without injected latency.
async fn writer(
    s3: &floe_core::storage::ObjectStoreConfig,
    nats: &floe_core::log::JetStreamConfig,
    dir: &std::path::Path,
) -> Arc<Floe> {
    let mut settings = test_settings(&dir.join("writer"));
    settings.object_store = Some(s3.clone());
    settings.nats = Some(nats.clone());
    Floe::open(settings).await.unwrap()
}

/// Collection `c`: two attributes, sealed (and indexed) at 2,000 rows.
fn collection_config() -> floe_core::catalog::CollectionConfig {
    serde_json::from_value(json!({
        "name": "c", "dimension": DIM, "metric": "l2", "id_type": "u64",
        "attributes": [{"name": "cat", "type": "i64"}, {"name": "title", "type": "string"}],
        "index": {"seal_rows": 2000, "row_group_rows": 512}
    }))
    .unwrap()
}

/// A query process: its own cache directory, S3 behind 20–40 ms of latency
/// per GET and HEAD, every request counted. It warms nothing by itself:
/// these tests count what single queries read (auto warm-up has its own).
async fn reader(
    s3: &floe_core::storage::ObjectStoreConfig,
    nats: &floe_core::log::JetStreamConfig,
    cache_dir: &std::path::Path,
) -> (Arc<Floe>, CountingStore) {
    reader_with(s3, nats, cache_dir, |s| s.cache.auto_warm = false).await
}

/// [`reader`] from default settings as `adjust` leaves them.
async fn reader_with(
    s3: &floe_core::storage::ObjectStoreConfig,
    nats: &floe_core::log::JetStreamConfig,
    cache_dir: &std::path::Path,
    adjust: impl FnOnce(&mut floe_core::Settings),
) -> (Arc<Floe>, CountingStore) {
    let slow = FaultyStore::new(
        open_object_store(s3).unwrap(),
        FaultConfig {
            seed: 5,
            ops: OpFilter::GETS,
            latency: Some((Duration::from_millis(20), Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let counting = CountingStore::new(Arc::new(slow));
    let mut settings = test_settings(cache_dir);
    settings.cache.disk_mb = 128;
    adjust(&mut settings);
    let floe = Floe::new(
        Arc::new(counting.clone()),
        Arc::new(jetstream_logs(nats).await),
        settings,
    );
    (floe, counting)
}

async fn query(floe: &Floe, q: &[f32], consistency: &str) -> (Vec<Value>, QueryStats) {
    let body = json!({"vector": q, "top_k": 10, "consistency": consistency});
    query_with(floe, "c", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_warm_and_incremental_queries_stay_within_their_request_budget() {
    let (s3, nats) = (s3_config(), jetstream_config());
    let dir = tempfile::tempdir().unwrap();
    let writer = writer(&s3, &nats, dir.path()).await;
    // Three indexed segments, one small unindexed one, one delete file.
    three_indexed_segments(&writer).await;
    upsert(&writer, "c", rows(6000..6300, 6000)).await;
    let delete: DeleteRequest = serde_json::from_value(json!({"ids": [1, 2, 3]})).unwrap();
    floe_core::api::delete(&writer, "c", delete).await.unwrap();
    writer.flush("c").await.unwrap();
    let info = writer.describe("c").await.unwrap();
    assert_eq!(
        (
            info.stats.segments,
            info.stats.delete_files,
            info.stats.rows
        ),
        (4, 1, 6297)
    );

    let mut rng = StdRng::seed_from_u64(11);
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let (expected, _) = query(&writer, &q, "strong").await;

    // Cold: a fresh process with empty caches.
    let cache_dir = dir.path().join("reader");
    let (cold, counting) = reader(&s3, &nats, &cache_dir).await;
    let (results, stats) = query(&cold, &q, "strong").await;
    assert_eq!(results, expected);
    let log = counting.requests();
    let fetched = data(&log);
    let data_trips = sequential_round_trips(fetched.iter().copied());
    println!(
        "cold: {} data requests, {} bytes, {data_trips} sequential data round trips \
         (+{} for catalog and manifest); stats {stats:?}",
        fetched.len(),
        stats.bytes_fetched,
        sequential_round_trips(&log) - data_trips,
    );
    // Discovery is one round trip: the catalog entry and the collection's
    // head (its manifest with the segments' headers and footers), side by
    // side. Then two data round trips: the probed clusters' codes (with
    // the small files and the keys of segments whose keys others need),
    // then the candidates' vectors, keys and attribute pages.
    let discovery: Vec<&Request> = log
        .iter()
        .filter(|r| !CollectionPaths::is_data_file(&r.path))
        .collect();
    assert_eq!(
        sequential_round_trips(discovery.iter().copied()),
        1,
        "{discovery:#?}"
    );
    assert!(
        discovery.iter().all(|r| !r.path.contains("/manifests/")),
        "a fresh reader listed or read manifests: {discovery:#?}"
    );
    assert!(data_trips <= 2, "cold query: {data_trips} data round trips");
    assert!(sequential_round_trips(&log) <= 3, "{log:#?}");
    assert!(stats.round_trips <= 2, "{stats:?}");
    assert_eq!(stats.requests as usize, fetched.len(), "{stats:?}");
    // Per indexed segment: keys, codes, vectors, attribute pages; the
    // unindexed segment and the delete file: one GET each.
    assert!(
        fetched.len() <= 3 * 12 + 2,
        "{} data requests: {:#?}",
        fetched.len(),
        fetched.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // Each block at most once: never more than the files themselves (at
    // this small scale a cold query reads most of them; the benchmark
    // measures the share on a million vectors).
    let files = stored_bytes(&s3, "c", CollectionPaths::is_data_file).await;
    assert!(
        stats.bytes_fetched <= files,
        "{} of {files}",
        stats.bytes_fetched
    );

    // The keys the cold query skipped are loaded behind it: let that end.
    settle(&counting).await;

    // The same query again: no data requests; eventual needs none at all.
    counting.clear_requests();
    let (again, stats) = query(&cold, &q, "strong").await;
    assert_eq!(again, expected);
    assert!(data(&counting.requests()).is_empty(), "{stats:?}");
    assert_eq!((stats.requests, stats.round_trips), (0, 0));
    // Codes, re-ranked vectors and attribute pages come decoded from
    // memory; whatever it reads of blocks, none comes from disk or S3.
    assert_eq!((stats.misses, stats.disk_hits), (0, 0), "{stats:?}");
    counting.clear_requests();
    let (again, _) = query(&cold, &q, "eventual").await;
    assert_eq!(again, expected);
    assert!(counting.requests().is_empty(), "{:?}", counting.requests());

    // A new manifest: only the new segment's file is fetched. (A strong
    // read within a second of the last manifest check may answer from the
    // log instead, which still holds the flushed records: wait that out.)
    let seen: HashSet<String> = fetched.iter().map(|r| r.path.clone()).collect();
    upsert(&writer, "c", rows(7000..7200, 7000)).await;
    writer.flush("c").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    counting.clear_requests();
    let (results, stats) = query(&cold, &q, "strong").await;
    assert_eq!(results, query(&writer, &q, "strong").await.0);
    let log = counting.requests();
    let new_files: HashSet<&str> = data(&log).iter().map(|r| r.path.as_str()).collect();
    assert_eq!(new_files.len(), 1, "{new_files:?}");
    assert!(
        new_files.iter().all(|p| !seen.contains(*p)),
        "{new_files:?}"
    );
    assert_eq!(stats.requests, 1, "{stats:?}");
    let expected = results;

    // A fresh process on the same disk cache: everything comes from disk.
    cold.close_cache().await.unwrap();
    drop(cold);
    let (restarted, counting) = reader(&s3, &nats, &cache_dir).await;
    let (results, stats) = query(&restarted, &q, "strong").await;
    assert_eq!(results, expected);
    assert!(data(&counting.requests()).is_empty(), "{stats:?}");
    assert!(stats.disk_hits > 0 && stats.requests == 0, "{stats:?}");

    // Warm-up: headers, keys, codes and vectors are loaded; a query then
    // fetches only its results' attribute pages, in one wave, and nothing
    // of an index file, whichever rows it meets.
    let (warmed, counting) = reader(&s3, &nats, &dir.path().join("warmed")).await;
    let report = warmed.warm("c").await.unwrap();
    assert_eq!(report.indexed_segments, 3);
    assert!(report.cache.memory_bytes > 0, "{report:?}");
    assert!(
        report.stats.phases.iter().any(|p| p.name == "vectors"),
        "{report:?}"
    );
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..5 {
        let q: Vec<f32> = if i == 0 {
            q.clone()
        } else {
            (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        };
        counting.clear_requests();
        let (results, stats) = query(&warmed, &q, "strong").await;
        if i == 0 {
            assert_eq!(results, expected);
        }
        assert!(stats.round_trips <= 1, "{stats:?}");
        let log = counting.requests();
        assert!(sequential_round_trips(data(&log)) <= 1);
        let index_reads: Vec<&str> = data(&log)
            .iter()
            .map(|r| r.path.as_str())
            .filter(|p| p.ends_with(".ivf"))
            .collect();
        assert!(index_reads.is_empty(), "{index_reads:?}");
    }
}

/// Creates collection `c` with rows 0..6000 in three indexed segments.
async fn three_indexed_segments(writer: &Floe) {
    writer.create_collection(collection_config()).await.unwrap();
    for start in (0..6000).step_by(1000) {
        upsert(writer, "c", rows(start..start + 1000, start)).await;
        writer.flush("c").await.unwrap();
    }
    let compacted = writer.compact("c").await.unwrap();
    assert_eq!(compacted.sealed.len(), 3);
    for id in &compacted.sealed {
        writer.build_index("c", id).await.unwrap().expect("built");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_query_warms_the_collection_behind_itself() {
    let (s3, nats) = (s3_config(), jetstream_config());
    let dir = tempfile::tempdir().unwrap();
    let writer = writer(&s3, &nats, dir.path()).await;
    three_indexed_segments(&writer).await;
    let mut rng = StdRng::seed_from_u64(12);
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let (expected, _) = query(&writer, &q, "eventual").await;

    // Default settings: warm-up follows the first query by itself. Small
    // blocks, so that one query does not read these small index files
    // whole.
    let small_blocks = |s: &mut floe_core::Settings| s.cache.block_kib = 4;
    let (reader, counting) =
        reader_with(&s3, &nats, &dir.path().join("reader"), small_blocks).await;
    assert!(reader.settings().cache.auto_warm);
    let (results, _) = query(&reader, &q, "eventual").await;
    assert_eq!(results, expected);
    let mut warm = 0;
    for _ in 0..300 {
        warm = reader.describe("c").await.unwrap().stats.warm_segments;
        if warm == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(warm, 3, "not warmed within 30 s");
    settle(&counting).await;

    // Every cluster's codes and every vector are local now: a query
    // probing every cluster and re-ranking every row reads nothing of an
    // index file (one default query read only its own clusters).
    counting.clear_requests();
    let body = json!({"vector": q, "top_k": 10, "nprobe": 65536, "rerank": 10000, "consistency": "eventual"});
    let (results, stats) = query_with(&reader, "c", body.clone()).await;
    assert_eq!(results, query_with(&writer, "c", body).await.0);
    let index_reads: Vec<String> = data(&counting.requests())
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.ends_with(".ivf"))
        .collect();
    assert!(index_reads.is_empty(), "{index_reads:?} {stats:?}");
    // And warm-up happens once per segment.
    counting.clear_requests();
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    query(&reader, &q, "eventual").await;
    settle(&counting).await;
    assert!(
        data(&counting.requests())
            .iter()
            .all(|r| !r.path.ends_with(".ivf")),
        "{:?}",
        counting.requests()
    );
}

/// Waits until a process makes no more requests (what a query started
/// behind itself has ended), 5 s at most.
async fn settle(counting: &CountingStore) {
    let mut seen = usize::MAX;
    for _ in 0..25 {
        let now = counting.requests().len();
        if now == seen {
            return;
        }
        seen = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids and versions a query answered.
fn versions(results: &[Value]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = results
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["version"].as_u64().unwrap()))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_missing_or_foreign_head_never_serves_wrong_rows() {
    let (s3, nats) = (s3_config(), jetstream_config());
    let dir = tempfile::tempdir().unwrap();
    let writer = writer(&s3, &nats, dir.path()).await;
    let store = open_object_store(&s3).unwrap();
    let head = floe_core::storage::collection_head("c");
    writer.create_collection(collection_config()).await.unwrap();
    upsert(&writer, "c", rows(0..2000, 1)).await;
    writer.flush("c").await.unwrap();
    let compacted = writer.compact("c").await.unwrap();
    for id in &compacted.sealed {
        writer.build_index("c", id).await.unwrap().expect("built");
    }
    let old_head = store.get(&head).await.unwrap().bytes().await.unwrap();
    // Newer versions of some rows, in a newer segment.
    upsert(&writer, "c", rows(0..500, 2)).await;
    writer.flush("c").await.unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let (expected, _) = query(&writer, &q, "strong").await;
    assert!(
        versions(&expected).iter().any(|(id, _)| *id < 500),
        "the query should meet rewritten rows: {expected:?}"
    );

    // A head that lags (its committer died before writing the newest):
    // a strong read still answers from the newest state, through the log.
    store.put(&head, old_head.clone().into()).await.unwrap();
    let (fresh, _) = reader(&s3, &nats, &dir.path().join("r1")).await;
    assert_eq!(query(&fresh, &q, "strong").await.0, expected);
    // An eventual read may serve the head's manifest, for a second at most.
    let (fresh, _) = reader(&s3, &nats, &dir.path().join("r2")).await;
    query(&fresh, &q, "eventual").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(query(&fresh, &q, "eventual").await.0, expected);

    // No head at all: the manifests are listed, as before heads existed.
    store.delete(&head).await.unwrap();
    let (fresh, counting) = reader(&s3, &nats, &dir.path().join("r3")).await;
    assert_eq!(query(&fresh, &q, "strong").await.0, expected);
    assert!(
        counting
            .requests()
            .iter()
            .any(|r| r.path.contains("/manifests/")),
        "without a head the manifests are read"
    );

    // A dropped collection's head goes with it; a head of an earlier
    // incarnation of the name is never taken for the new one.
    writer.flush("c").await.unwrap();
    upsert(&writer, "c", rows(9000..9001, 4)).await;
    writer.flush("c").await.unwrap();
    assert!(store.head(&head).await.is_ok(), "a commit writes the head");
    writer.drop_collection("c").await.unwrap();
    assert!(
        store.head(&head).await.is_err(),
        "the drop removes the head"
    );
    writer.create_collection(collection_config()).await.unwrap();
    upsert(&writer, "c", rows(5000..5100, 5)).await;
    let (expected, _) = query(&writer, &q, "strong").await;
    store.put(&head, old_head.into()).await.unwrap();
    let (fresh, _) = reader(&s3, &nats, &dir.path().join("r4")).await;
    let (results, _) = query(&fresh, &q, "strong").await;
    assert_eq!(results, expected);
    assert!(
        versions(&results)
            .iter()
            .all(|(id, _)| (5000..5100).contains(id))
    );
}

/// Bytes of the objects of collection `name` whose path `keep` admits.
async fn stored_bytes(
    s3: &floe_core::storage::ObjectStoreConfig,
    name: &str,
    keep: impl Fn(&str) -> bool,
) -> u64 {
    open_object_store(s3)
        .unwrap()
        .list(Some(&object_store::path::Path::from(format!(
            "collections/{name}"
        ))))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .filter(|m| keep(m.location.as_ref()))
        .map(|m| m.size)
        .sum()
}

/// What a query asked with `body` (explain on) answered and cost.
async fn query_with(floe: &Floe, name: &str, body: Value) -> (Vec<Value>, QueryStats) {
    let mut body = body;
    body["explain"] = json!(true);
    let request: QueryRequest = serde_json::from_value(body).unwrap();
    let response = floe_core::api::query(floe, name, request).await.unwrap();
    let results = response
        .results
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    (results, response.explain.expect("explain was asked for"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_reads_only_the_columns_it_names() {
    let (s3, nats) = (s3_config(), jetstream_config());
    let dir = tempfile::tempdir().unwrap();
    let writer = writer(&s3, &nats, dir.path()).await;
    // A small filtered attribute beside a large one no filter names.
    writer
        .create_collection(
            serde_json::from_value(json!({
                "name": "f", "dimension": DIM, "metric": "l2", "id_type": "u64",
                "attributes": [{"name": "cat", "type": "i64"}, {"name": "body", "type": "string"}],
                "index": {"seal_rows": 2000, "row_group_rows": 512}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    let rows: Vec<Value> = (0..2000u64)
        .map(|id| {
            let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let body: String = (0..2048)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            json!({"id": id, "vector": v, "attributes": {"cat": (id % 100) as i64, "body": body}})
        })
        .collect();
    upsert(&writer, "f", rows).await;
    writer.flush("f").await.unwrap();
    let compacted = writer.compact("f").await.unwrap();
    assert_eq!(compacted.sealed.len(), 1);
    writer
        .build_index("f", &compacted.sealed[0])
        .await
        .unwrap()
        .expect("built");
    let data_file = stored_bytes(&s3, "f", |path| path.ends_with(".parquet")).await;
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    // (Returned attributes are read by page, for the rows returned: not
    // asked for here, to see what the filters read.)
    let asks = [
        json!({"vector": q, "top_k": 10, "filter": "cat == 7", "include_attributes": ["cat"]}),
        // A filter-only scan.
        json!({"top_k": 5, "filter": "cat < 3", "include_attributes": false}),
        // A filter on `id`, a column the keys hold too.
        json!({"vector": q, "top_k": 10, "filter": "id >= 1990", "include_attributes": false}),
    ];
    for (i, ask) in asks.into_iter().enumerate() {
        let (expected, _) = query_with(&writer, "f", ask.clone()).await;
        assert!(!expected.is_empty(), "{ask}");
        // A fresh process: what it fetches is what the query needs.
        let (cold, _) = reader(&s3, &nats, &dir.path().join(format!("r{i}"))).await;
        let (results, stats) = query_with(&cold, "f", ask.clone()).await;
        assert_eq!(results, expected, "{ask}");
        // The body column is most of the data files: a read of every
        // column would fetch it whole.
        assert!(
            stats.bytes_fetched * 10 < data_file,
            "{ask}: fetched {} bytes of a {data_file}-byte data file: {stats:#?}",
            stats.bytes_fetched
        );
        // Warm: the filter's columns come from the decoded cache.
        let (again, stats) = query_with(&cold, "f", ask.clone()).await;
        assert_eq!(again, expected, "{ask}");
        assert_eq!(stats.requests, 0, "{ask}: {stats:?}");
    }

    // A filter on the large column, in a process whose decoded cache is
    // too small to keep it: the first search reads it whole (about 40
    // blocks); a repeated one, answered by the filter's kept mask, reads
    // none of it. Both read the same re-ranked vectors' blocks.
    let mut settings = test_settings(&dir.path().join("small"));
    settings.object_store = Some(s3.clone());
    settings.nats = Some(nats.clone());
    settings.cache.decoded_mb = 1;
    let small = Floe::open(settings).await.unwrap();
    let ask =
        json!({"vector": q, "top_k": 10, "filter": "body like 'a%'", "include_attributes": false});
    let (expected, first) = query_with(&small, "f", ask.clone()).await;
    assert!(!expected.is_empty());
    let blocks = |s: &QueryStats| s.memory_hits + s.disk_hits + s.misses;
    let (again, repeated) = query_with(&small, "f", ask).await;
    assert_eq!(again, expected);
    assert!(
        blocks(&first) >= blocks(&repeated) + 30,
        "{first:?}\n{repeated:?}"
    );
}
