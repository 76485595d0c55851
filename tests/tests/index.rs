//! Sealed segments with IVF indexes: recall against exact search for every
//! metric, filters inside the scan, compaction (superseded and deleted rows
//! gone, concurrent compactors), the object-created trigger, and garbage
//! collection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use floe_core::Floe;
use floe_core::api::wire::{DeleteRequest, QueryRequest, UpsertRequest};
use floe_tests::server::test_settings;
use floe_tests::{jetstream_config, s3_config};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DIM: usize = 16;

fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..25)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    (0..n)
        .map(|i| {
            centres[i % 25]
                .iter()
                .map(|x| x + rng.random_range(-0.25f32..0.25))
                .collect()
        })
        .collect()
}

fn rows(ids: std::ops::Range<u64>, vs: &[Vec<f32>]) -> Vec<Value> {
    ids.map(|id| json!({"id": id, "vector": vs[id as usize], "attributes": {"cat": (id % 100) as i64, "year": 1990 + (id % 40) as i64}}))
        .collect()
}

fn oracle(
    metric: &str,
    live: &BTreeMap<u64, Vec<f32>>,
    q: &[f32],
    k: usize,
    keep: &dyn Fn(u64) -> bool,
) -> Vec<u64> {
    let mut all: Vec<(f64, u64)> = live
        .iter()
        .filter(|(id, _)| keep(**id))
        .map(|(id, v)| (floe_tests::oracle_distance(metric, q, v), *id))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|(_, id)| id).collect()
}

async fn embedded(dir: &std::path::Path) -> Arc<Floe> {
    Floe::open(test_settings(dir)).await.unwrap()
}

fn cloud_settings(dir: &std::path::Path) -> floe_core::Settings {
    let mut s = test_settings(dir);
    s.object_store = Some(s3_config());
    s.nats = Some(jetstream_config());
    s
}

async fn create(floe: &Floe, name: &str, metric: &str, seal_rows: u64) {
    create_with(
        floe,
        name,
        metric,
        json!({"seal_rows": seal_rows, "row_group_rows": 512}),
    )
    .await
}

async fn create_with(floe: &Floe, name: &str, metric: &str, index: Value) {
    let config = serde_json::from_value(json!({
        "name": name, "dimension": DIM, "metric": metric, "id_type": "u64",
        "attributes": [{"name": "cat", "type": "i64"}, {"name": "year", "type": "i64"}],
        "index": index
    }))
    .unwrap();
    floe.create_collection(config).await.unwrap();
}

async fn upsert(floe: &Floe, name: &str, rows: Vec<Value>) {
    let request: UpsertRequest = serde_json::from_value(json!({ "rows": rows })).unwrap();
    floe_core::api::upsert(floe, name, request).await.unwrap();
}

async fn query(floe: &Floe, name: &str, body: Value) -> Vec<u64> {
    let request: QueryRequest = serde_json::from_value(body).unwrap();
    let response = floe_core::api::query(floe, name, request).await.unwrap();
    response
        .results
        .iter()
        .map(|r| match &r.id {
            floe_core::id::Id::U64(v) => *v,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn recall(got: &[u64], want: &[u64]) -> f64 {
    got.iter().filter(|id| want.contains(id)).count() as f64 / want.len().max(1) as f64
}

/// Loads `n` rows in flushed batches of 1000, compacts, and builds the
/// indexes through the in-process object-created events.
async fn load_and_index(floe: &Arc<Floe>, name: &str, vs: &[Vec<f32>], n: u64) -> usize {
    let mut events = floe.subscribe_object_events();
    for start in (0..n).step_by(1000) {
        upsert(floe, name, rows(start..(start + 1000).min(n), vs)).await;
        floe.flush(name).await.unwrap();
    }
    let report = floe.compact(name).await.unwrap();
    assert_eq!(report.rows_out, n);
    for _ in &report.sealed {
        let key = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(key.ends_with("/sealed.parquet"), "{key}");
        let built = floe
            .on_object_created(&key)
            .await
            .unwrap()
            .expect("index built");
        assert!(built.nlist > 1);
    }
    report.sealed.len()
}

/// Filters inside the scan: 0.1% and 1% selective (by default the matching
/// rows' codes, clusters scaled by selectivity) and broad (probing widens
/// until enough candidates pass): recall@10 of each at least 0.9.
async fn filter_recall(
    floe: &Floe,
    name: &str,
    metric: &str,
    live: &BTreeMap<u64, Vec<f32>>,
    rng: &mut StdRng,
) {
    let (mut rare, mut selective, mut broad) = (0.0, 0.0, 0.0);
    for _ in 0..10 {
        let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let want = oracle(metric, live, &q, 10, &|id| id % 100 == 7);
        selective += recall(
            &query(
                floe,
                name,
                json!({"vector": q, "top_k": 10, "filter": "cat == 7"}),
            )
            .await,
            &want,
        );
        // ids 103, 303, 503, 703, 903: 0.08%.
        let want = oracle(metric, live, &q, 10, &|id| {
            id % 100 == 3 && id % 40 == 23 && id < 1000
        });
        rare += recall(
            &query(
                floe,
                name,
                json!({"vector": q, "top_k": 10, "filter": "cat == 3 and year == 2013 and id < 1000"}),
            )
            .await,
            &want,
        );
        let want = oracle(metric, live, &q, 10, &|id| 1990 + (id % 40) > 2000);
        broad += recall(
            &query(
                floe,
                name,
                json!({"vector": q, "top_k": 10, "filter": "year > 2000"}),
            )
            .await,
            &want,
        );
    }
    assert!(
        rare / 10.0 >= 0.9,
        "{metric}: 0.1% filter recall {}",
        rare / 10.0
    );
    assert!(
        selective / 10.0 >= 0.9,
        "{metric}: 1% filter recall {}",
        selective / 10.0
    );
    assert!(
        broad / 10.0 >= 0.9,
        "{metric}: broad filter recall {}",
        broad / 10.0
    );
}

/// With `search.exact_filter_rows` at 0 every filter takes the widening
/// path (which filters matching more than 20,000 rows of a segment take at
/// the default): selective filters keep their recall there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_keep_their_recall_on_the_widening_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.search.exact_filter_rows = 0;
    let floe = Floe::open(settings).await.unwrap();
    create(&floe, "widen", "l2", 2000).await;
    let n = 6000u64;
    let vs = vectors(n as usize, 1);
    assert_eq!(load_and_index(&floe, "widen", &vs, n).await, 3);
    let live: BTreeMap<u64, Vec<f32>> = (0..n).map(|id| (id, vs[id as usize].clone())).collect();
    filter_recall(&floe, "widen", "l2", &live, &mut StdRng::seed_from_u64(9)).await;
}

/// A selective filter keeps its matching rows' codes after the first
/// search; rows deleted or overwritten later must still be hidden (or
/// found at their new place) when a search scores those kept codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_selective_filter_sees_later_deletes_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let floe = embedded(dir.path()).await;
    create(&floe, "kept", "l2", 2000).await;
    let n = 6000u64;
    let vs = vectors(n as usize, 4);
    assert_eq!(load_and_index(&floe, "kept", &vs, n).await, 3);
    let mut live: BTreeMap<u64, Vec<f32>> =
        (0..n).map(|id| (id, vs[id as usize].clone())).collect();
    let filtered = |q: &[f32]| json!({"vector": q, "top_k": 10, "filter": "cat == 7"});
    let q = vs[707].clone();
    let first = query(&floe, "kept", filtered(&q)).await;
    assert_eq!(first.first(), Some(&707));

    // 707 deleted; 1007 moved to where 707 was; 2007 moved far away.
    let request: DeleteRequest = serde_json::from_value(json!({ "ids": [707] })).unwrap();
    floe_core::api::delete(&floe, "kept", request)
        .await
        .unwrap();
    let far: Vec<f32> = vec![50.0; DIM];
    upsert(
        &floe,
        "kept",
        vec![
            json!({"id": 1007, "vector": q, "attributes": {"cat": 7, "year": 2000}}),
            json!({"id": 2007, "vector": far, "attributes": {"cat": 7, "year": 2000}}),
        ],
    )
    .await;
    live.remove(&707);
    live.insert(1007, q.clone());
    live.insert(2007, far);
    for flushed in [false, true] {
        if flushed {
            floe.flush("kept").await.unwrap();
        }
        let got = query(&floe, "kept", filtered(&q)).await;
        let want = oracle("l2", &live, &q, 10, &|id| id % 100 == 7);
        assert_eq!(got.first(), Some(&1007), "flushed {flushed}: {got:?}");
        assert!(!got.contains(&707) && !got.contains(&2007), "{got:?}");
        assert!(
            recall(&got, &want) >= 0.9,
            "flushed {flushed}: {got:?} vs {want:?}"
        );
    }
}

/// The ids one query returns, and the phases `explain` reports for it.
async fn explained(floe: &Floe, name: &str, mut body: Value) -> (Vec<u64>, Vec<String>) {
    body["explain"] = json!(true);
    let request: QueryRequest = serde_json::from_value(body).unwrap();
    let response = floe_core::api::query(floe, name, request).await.unwrap();
    let ids = response
        .results
        .iter()
        .map(|r| match &r.id {
            floe_core::id::Id::U64(v) => *v,
            other => panic!("{other:?}"),
        })
        .collect();
    let explain = response.explain.expect("explain was asked for");
    (ids, explain.phases.iter().map(|p| p.name.clone()).collect())
}

/// Once a filter has passed over every row, its columns are sorted (off
/// the query path, and warm, their codes arranged in sorted order); later
/// new filters find their rows there: listed (and scored from the
/// arranged codes when one column's positions are exactly the rows) when
/// few, evaluated cluster by cluster when many, and checked by the filter
/// where the sorted columns only bound them. Searched exhaustively, every
/// such filter gives exactly the true top 10 of its matching rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_filters_found_in_sorted_columns_give_the_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    // Segments of 2,000 rows: over 50 matching rows of one, a filter is
    // not listed.
    settings.search.exact_filter_rows = 50;
    let floe = Floe::open(settings).await.unwrap();
    create(&floe, "sorted", "l2", 2000).await;
    let n = 6000u64;
    let vs = vectors(n as usize, 5);
    assert_eq!(load_and_index(&floe, "sorted", &vs, n).await, 3);
    // Reads see the indexes now (warm-up reads the newest manifest).
    floe.warm("sorted").await.unwrap();
    let live: BTreeMap<u64, Vec<f32>> = (0..n).map(|id| (id, vs[id as usize].clone())).collect();
    let exhaustive = |q: &[f32], filter: &str| json!({"vector": q, "top_k": 10, "filter": filter, "nprobe": 65536, "rerank": 10000});
    let q = vs[4321].clone();
    let (_, first) = explained(
        &floe,
        "sorted",
        exhaustive(&q, "cat == 1 and year == 1991 and id > 0"),
    )
    .await;
    assert_eq!(
        first.iter().filter(|p| *p == "filter (every row)").count(),
        3,
        "{first:?}"
    );
    // The sorting runs on blocking threads: wait for all three columns of
    // all three segments (a new filter each time: a listed one is kept).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 1.. {
        let filter = format!("cat == 2 and year == 1992 and id > {i}");
        let (_, seen) = explained(&floe, "sorted", exhaustive(&q, &filter)).await;
        if seen
            .iter()
            .filter(|p| *p == "filter (sorted columns)")
            .count()
            == 3
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never sorted: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm, each sorted column's codes are arranged in its order too
    // (after the sort, on the same thread): a filter found in one sorted
    // column then scores its rows from them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 1.. {
        let filter = format!("cat == {}", 20 + i % 50);
        let (_, seen) = explained(&floe, "sorted", exhaustive(&q, &filter)).await;
        if seen.iter().filter(|p| *p == "sorted codes").count() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "codes never arranged: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    type Keep = fn(u64) -> bool;
    let cases: Vec<(&str, Keep, &str)> = vec![
        ("cat == 7", |id| id % 100 == 7, "sorted codes"),
        (
            "cat >= 10 and cat < 11",
            |id| id % 100 == 10,
            "sorted codes",
        ),
        (
            "cat in [3, 5]",
            |id| matches!(id % 100, 3 | 5),
            "sorted codes",
        ),
        // Bounded by the rows of cat 4 or 11, then checked.
        (
            "cat == 4 or (year == 2001 and cat == 11)",
            |id| id % 100 == 4 || (id % 40 == 11 && id % 100 == 11),
            "filter (sorted columns)",
        ),
        (
            "cat == 9 and id < 3000",
            |id| id % 100 == 9 && id < 3000,
            "filter (sorted columns)",
        ),
        (
            "year > 2010",
            |id| 1990 + (id % 40) > 2010,
            "filter by cluster",
        ),
        (
            "cat < 30 or year == 1990",
            |id| id % 100 < 30 || id % 40 == 0,
            "filter by cluster",
        ),
        // Many rows, but only bounded: a pass over every row.
        (
            "year != 2000 and cat < 50",
            |id| id % 40 != 10 && id % 100 < 50,
            "filter (every row)",
        ),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for (filter, keep, way) in cases {
        let mut ways = Vec::new();
        for _ in 0..3 {
            let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let want = oracle("l2", &live, &q, 10, &|id| keep(id));
            let (got, seen) = explained(&floe, "sorted", exhaustive(&q, filter)).await;
            assert_eq!(got, want, "{filter}");
            ways.push(seen);
        }
        // Asked first: the way every segment went.
        assert_eq!(
            ways[0].iter().filter(|p| *p == way).count(),
            3,
            "{filter}: {:?}",
            ways[0]
        );
    }
    // The arranged codes are each row's own: re-ranking only as many as
    // are returned, the approximate order alone finds nearly the true
    // top 10 (codes paired with the wrong rows would find about half).
    // (A filter asked before scores its kept codes instead: each is new.)
    let mut overlap = 0;
    for i in 0..10 {
        let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let want = oracle("l2", &live, &q, 10, &|id| id % 100 == 7);
        let filter = format!("cat == 7 and cat < {}", 8 + i);
        let body = json!({"vector": q, "top_k": 10, "filter": filter, "rerank": 10});
        let (got, seen) = explained(&floe, "sorted", body).await;
        assert_eq!(
            seen.iter().filter(|p| *p == "sorted codes").count(),
            3,
            "{seen:?}"
        );
        overlap += got.iter().filter(|id| want.contains(id)).count();
    }
    assert!(overlap >= 90, "{overlap} of the true top 10s' 100 rows");
    // A row deleted since is not found through them.
    let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let before = oracle("l2", &live, &q, 10, &|id| id % 100 == 7);
    let request: DeleteRequest = serde_json::from_value(json!({ "ids": [before[0]] })).unwrap();
    floe_core::api::delete(&floe, "sorted", request)
        .await
        .unwrap();
    let gone = before[0];
    let want = oracle("l2", &live, &q, 10, &|id| id % 100 == 7 && id != gone);
    let (got, seen) = explained(&floe, "sorted", exhaustive(&q, "cat == 7 and cat < 99")).await;
    assert_eq!(got, want);
    assert!(seen.iter().any(|p| p == "sorted codes"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_search_reaches_its_recall_for_every_metric() {
    recall_for_every_metric("sq8").await;
}

/// The same with RaBitQ codes (a bit per dimension): the index files say
/// which codes they hold, and searches, filters and calibration use them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabitq_indexes_reach_their_recall_for_every_metric() {
    recall_for_every_metric("rabitq").await;
}

async fn recall_for_every_metric(codes: &str) {
    for metric in ["l2", "cosine", "ip"] {
        let dir = tempfile::tempdir().unwrap();
        let floe = embedded(dir.path()).await;
        let name = format!("r-{metric}");
        let index = json!({"seal_rows": 2000, "row_group_rows": 512, "codes": codes});
        create_with(&floe, &name, metric, index).await;
        let n = 6000u64;
        let vs = vectors(n as usize, 1);
        assert_eq!(load_and_index(&floe, &name, &vs, n).await, 3);
        let info = floe.describe(&name).await.unwrap();
        assert_eq!((info.stats.segments, info.stats.rows), (3, n));
        let live: BTreeMap<u64, Vec<f32>> =
            (0..n).map(|id| (id, vs[id as usize].clone())).collect();

        let mut rng = StdRng::seed_from_u64(7);
        let (mut auto, mut full) = (0.0, 0.0);
        let queries = 30;
        for _ in 0..queries {
            let base = &vs[rng.random_range(0..n as usize)];
            let q: Vec<f32> = base
                .iter()
                .map(|x| x + rng.random_range(-0.3f32..0.3))
                .collect();
            let want = oracle(metric, &live, &q, 10, &|_| true);
            auto += recall(
                &query(&floe, &name, json!({"vector": q, "top_k": 10})).await,
                &want,
            );
            let exhaustive = query(
                &floe,
                &name,
                json!({"vector": q, "top_k": 10, "nprobe": 65536, "rerank": 10000}),
            )
            .await;
            full += recall(&exhaustive, &want);
        }
        let (auto, full) = (auto / queries as f64, full / queries as f64);
        assert!(
            auto >= 0.9,
            "{codes} {metric}: recall@10 with the default knobs is {auto}"
        );
        assert!(
            full >= 0.999,
            "{codes} {metric}: probing everything must be exact, got {full}"
        );

        filter_recall(&floe, &name, metric, &live, &mut rng).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_superseded_and_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let floe = embedded(dir.path()).await;
    create(&floe, "c", "l2", 2000).await;
    let vs = vectors(3000, 2);
    for start in [0u64, 1000, 2000] {
        upsert(&floe, "c", rows(start..start + 1000, &vs)).await;
        floe.flush("c").await.unwrap();
    }
    // Delete 100 ids, overwrite 50 others, and flush: superseded copies and
    // tombstones now sit in older segments.
    let deleted: Vec<u64> = (0..3000).step_by(30).collect();
    let request: DeleteRequest = serde_json::from_value(json!({ "ids": deleted })).unwrap();
    floe_core::api::delete(&floe, "c", request).await.unwrap();
    let moved = vectors(3000, 3);
    upsert(&floe, "c", rows(1001..1051, &moved)).await;
    floe.flush("c").await.unwrap();
    // The oracle, in write order: deletes, then the overwrites (two of
    // which, 1020 and 1050, bring deleted ids back).
    let mut live: BTreeMap<u64, Vec<f32>> =
        (0..3000).map(|id| (id, vs[id as usize].clone())).collect();
    for id in &deleted {
        live.remove(id);
    }
    for id in 1001..1051 {
        live.insert(id, moved[id as usize].clone());
    }
    let n = live.len() as u64;
    assert_eq!(n, 2902);
    let before = floe.describe("c").await.unwrap().stats;
    assert_eq!(before.rows, n);
    assert_eq!((before.segment_rows, before.delete_files), (3050, 1));

    let report = floe.compact("c").await.unwrap();
    assert_eq!(
        (report.segments_in, report.rows_in, report.rows_out),
        (4, 3050, n)
    );
    assert_eq!(
        (
            report.sealed.len(),
            report.unsealed.len(),
            report.deletes_dropped
        ),
        (1, 1, 1)
    );
    let after = floe.describe("c").await.unwrap().stats;
    assert_eq!(
        (
            after.rows,
            after.segment_rows,
            after.segments,
            after.delete_files
        ),
        (n, n, 2, 0)
    );
    // Filter-only pages are ordered by id: the first 1000 live ids, once each.
    let page = query(
        &floe,
        "c",
        json!({"top_k": 1000, "filter": "cat >= 0", "include_attributes": false}),
    )
    .await;
    assert_eq!(page, live.keys().copied().take(1000).collect::<Vec<_>>());
    let q = moved[1010].clone();
    assert_eq!(
        query(&floe, "c", json!({"vector": q, "top_k": 1})).await,
        vec![1010],
        "the overwritten vector is the one kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compactors_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let settings = cloud_settings(dir.path());
    let a = Floe::open(settings.clone()).await.unwrap();
    let b = Floe::open(settings).await.unwrap();
    create(&a, "cc", "l2", 1500).await;
    let vs = vectors(4000, 4);
    for start in (0..4000u64).step_by(500) {
        upsert(&a, "cc", rows(start..start + 500, &vs)).await;
        a.flush("cc").await.unwrap();
    }
    let (ra, rb) = tokio::join!(a.compact("cc"), b.compact("cc"));
    let outcomes = [ra.is_ok(), rb.is_ok()];
    assert!(outcomes.iter().any(|ok| *ok), "{ra:?} {rb:?}");
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    floe_core::Error::Fenced { .. } | floe_core::Error::CommitConflict { .. }
                ),
                "{e}"
            );
        }
    }
    // Whatever interleaving: every row exactly once.
    for floe in [&a, &b] {
        let stats = floe.describe("cc").await.unwrap().stats;
        assert_eq!((stats.rows, stats.segment_rows), (4000, 4000), "{stats:?}");
    }
    // Compacting again finds everything in place.
    let again = b.compact("cc").await.unwrap();
    assert_eq!(again.rows_out, again.rows_in);
    assert_eq!(a.describe("cc").await.unwrap().stats.segment_rows, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_events_trigger_index_builds_and_gc_keeps_what_readers_need() {
    let dir = tempfile::tempdir().unwrap();
    let settings = cloud_settings(dir.path());
    let floe = Floe::open(settings.clone()).await.unwrap();
    create(&floe, "ev", "cosine", 1000).await;
    let vs = vectors(2000, 5);
    for start in [0u64, 1000] {
        upsert(&floe, "ev", rows(start..start + 1000, &vs)).await;
        floe.flush("ev").await.unwrap();
    }
    let report = floe.compact("ev").await.unwrap();
    assert_eq!(report.sealed.len(), 2);
    let prefix = settings
        .object_store
        .as_ref()
        .unwrap()
        .url
        .split('/')
        .skip(3)
        .collect::<Vec<_>>()
        .join("/");
    let incarnation = floe.describe("ev").await.unwrap().incarnation;
    for id in &report.sealed {
        // The notification S3 would send for the sealed file (URL-encoded key).
        let key = format!("{prefix}/collections/ev/{incarnation}/segments/{id}/sealed.parquet");
        let event = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-21T23:59:59.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "x"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "floe",
            "bucket": {"name": "floe-test", "ownerIdentity": {"principalId": "x"}, "arn": "arn:aws:s3:::floe-test"},
            "object": {"key": key.replace('/', "%2F"), "size": 1, "sequencer": "1"}}}]});
        let out = floe::indexer::handle(&floe, event).await.unwrap();
        assert_eq!(out["indexed"].as_array().unwrap().len(), 1, "{out}");
    }
    let stats = floe.describe("ev").await.unwrap().stats;
    assert_eq!(stats.indexed_segments, 2, "{stats:?}");
    assert_eq!(
        stats.indexed_rows,
        report.sealed.len() as u64 * 1000,
        "{stats:?}"
    );
    assert!(stats.index_bytes > 0, "{stats:?}");
    // A reader that opened the old manifest keeps working within the grace
    // period; garbage goes only when older than the grace.
    let q = vs[77].clone();
    let fresh = Floe::open(settings.clone()).await.unwrap();
    assert_eq!(
        fresh
            .gc("ev", Duration::from_secs(3600))
            .await
            .unwrap()
            .deleted,
        0
    );
    let removed = fresh.gc("ev", Duration::ZERO).await.unwrap().deleted;
    assert!(
        removed >= 4,
        "inputs, sealed files and old manifests go: {removed}"
    );
    let reader = Floe::open(settings).await.unwrap();
    assert_eq!(
        query(&reader, "ev", json!({"vector": q, "top_k": 1})).await,
        vec![77]
    );
    let info = reader.describe("ev").await.unwrap();
    assert_eq!((info.stats.rows, info.stats.segments), (2000, 2));
    // The schedule's safety net finds nothing left to index.
    assert!(reader.index_missing("ev").await.unwrap().is_empty());
}

/// Every id in the collection, through filter-only pages (ordered by id).
async fn all_ids(floe: &Floe, name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor: Option<Value> = None;
    loop {
        let mut body = json!({"top_k": 1000, "filter": "cat >= 0", "include_attributes": false});
        if let Some(c) = &cursor {
            body["cursor"] = c.clone();
        }
        let request: QueryRequest = serde_json::from_value(body).unwrap();
        let page = floe_core::api::query(floe, name, request).await.unwrap();
        out.extend(page.results.iter().map(|r| match &r.id {
            floe_core::id::Id::U64(v) => *v,
            other => panic!("{other:?}"),
        }));
        match page.next_cursor {
            Some(c) => cursor = Some(serde_json::to_value(c).unwrap()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_collections_are_indexed_at_default_settings() {
    let dir = tempfile::tempdir().unwrap();
    let floe = embedded(dir.path()).await;
    // No index settings at all: the defaults decide.
    let config = serde_json::from_value(json!({
        "name": "small", "dimension": DIM, "metric": "l2", "id_type": "u64",
        "attributes": [{"name": "cat", "type": "i64"}, {"name": "year", "type": "i64"}]
    }))
    .unwrap();
    floe.create_collection(config).await.unwrap();
    let vs = vectors(16_000, 11);
    // Flushes of 1000 rows: each far below the index threshold.
    for start in (0..12_000u64).step_by(1000) {
        upsert(&floe, "small", rows(start..start + 1000, &vs)).await;
        floe.flush("small").await.unwrap();
    }
    let report = floe
        .compact_if_due("small")
        .await
        .unwrap()
        .expect("12,000 unindexed rows are due");
    assert_eq!((report.segments_in, report.rows_out), (12, 12_000));
    assert_eq!(report.indexed.len(), 1, "{report:?}");
    assert!(report.sealed.is_empty() && report.unsealed.is_empty());
    let stats = floe.describe("small").await.unwrap().stats;
    assert_eq!(
        (stats.segments, stats.indexed_segments, stats.indexed_rows),
        (1, 1, 12_000)
    );
    assert!(floe.compact_if_due("small").await.unwrap().is_none());

    // Recall through the index, at the default recall target.
    let live: BTreeMap<u64, Vec<f32>> = (0..12_000)
        .map(|id| (id, vs[id as usize].clone()))
        .collect();
    let queries = vectors(30, 12);
    let mut total = 0.0;
    for q in &queries {
        let got = query(&floe, "small", json!({"vector": q, "top_k": 10})).await;
        total += recall(&got, &oracle("l2", &live, q, 10, &|_| true));
    }
    assert!(total / 30.0 >= 0.9, "recall {}", total / 30.0);

    // A few small flushes wait for company; four of them merge into one
    // small segment, still searched exactly.
    for start in (12_000..16_000u64).step_by(1000) {
        upsert(&floe, "small", rows(start..start + 1000, &vs)).await;
        floe.flush("small").await.unwrap();
        let due = floe.compact_if_due("small").await.unwrap();
        if start < 15_000 {
            assert!(due.is_none(), "{due:?}");
        } else {
            let r = due.expect("four small segments are due");
            assert_eq!(
                (r.segments_in, r.unsealed.len(), r.indexed.len()),
                (4, 1, 0)
            );
        }
    }
    assert_eq!(
        all_ids(&floe, "small").await,
        (0..16_000).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_purges_churn_from_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let floe = embedded(dir.path()).await;
    let config = serde_json::from_value(json!({
        "name": "churn", "dimension": DIM, "metric": "l2", "id_type": "u64",
        "attributes": [{"name": "cat", "type": "i64"}, {"name": "year", "type": "i64"}],
        "index": {"seal_rows": 1000, "index_min_rows": 100, "row_group_rows": 256}
    }))
    .unwrap();
    floe.create_collection(config).await.unwrap();
    let vs = vectors(3000, 21);
    assert_eq!(load_and_index(&floe, "churn", &vs, 3000).await, 3);
    let mut live: BTreeMap<u64, Vec<f32>> =
        (0..3000).map(|id| (id, vs[id as usize].clone())).collect();
    let delete = |ids: Vec<u64>| {
        let floe = Arc::clone(&floe);
        async move {
            let request: DeleteRequest = serde_json::from_value(json!({ "ids": ids })).unwrap();
            floe_core::api::delete(&floe, "churn", request)
                .await
                .unwrap();
            floe.flush("churn").await.unwrap();
        }
    };

    // Light churn: four delete files, too few dead rows to rewrite any
    // segment; the tombstones are merged into one file.
    for round in 0..4u64 {
        let ids: Vec<u64> = (0..10).map(|i| round * 700 + i * 7).collect();
        for id in &ids {
            live.remove(id);
        }
        delete(ids).await;
    }
    assert_eq!(floe.describe("churn").await.unwrap().stats.delete_files, 4);
    let report = floe.compact("churn").await.unwrap();
    assert_eq!(
        (
            report.purged,
            report.deletes_dropped,
            report.deletes_written
        ),
        (0, 4, 1),
        "{report:?}"
    );
    assert_eq!(
        all_ids(&floe, "churn").await,
        live.keys().copied().collect::<Vec<_>>()
    );

    // Heavy churn: a third of the rows overwritten, a tenth deleted, in
    // rounds; every sealed segment ends up more than a fifth dead.
    let mut rng = StdRng::seed_from_u64(5);
    let moved = vectors(3000, 22);
    for _ in 0..5 {
        let over: std::collections::BTreeSet<u64> =
            (0..200).map(|_| rng.random_range(0..3000)).collect();
        let rows: Vec<Value> = over
            .iter()
            .map(|id| json!({"id": id, "vector": moved[*id as usize], "attributes": {"cat": (id % 100) as i64, "year": 2000}}))
            .collect();
        upsert(&floe, "churn", rows).await;
        for id in &over {
            live.insert(*id, moved[*id as usize].clone());
        }
        let gone: Vec<u64> = (0..60)
            .map(|_| rng.random_range(0..3000))
            .collect::<std::collections::BTreeSet<u64>>()
            .into_iter()
            .collect();
        for id in &gone {
            live.remove(id);
        }
        delete(gone).await;
    }
    let before = floe.describe("churn").await.unwrap().stats;
    assert!(before.segment_rows > live.len() as u64 + 900, "{before:?}");
    let report = floe.compact("churn").await.unwrap();
    assert_eq!(report.purged, 3, "{report:?}");
    let after = floe.describe("churn").await.unwrap().stats;
    assert_eq!(
        (after.rows, after.segment_rows, after.delete_files),
        (live.len() as u64, live.len() as u64, 0),
        "storage converges to live data: {after:?}"
    );
    // No visible row lost or resurrected, and the overwritten vectors win.
    assert_eq!(
        all_ids(&floe, "churn").await,
        live.keys().copied().collect::<Vec<_>>()
    );
    // The rewritten segments' vectors came back from their index files
    // (their data files do not repeat them): each row is found by its own
    // vector and returns it exactly (sent and returned as base64 here, so
    // the bits are compared, not a decimal rendering).
    for (id, v) in live.iter().step_by(97) {
        let packed = floe_core::api::vectors::encode_base64(v);
        let request: QueryRequest = serde_json::from_value(json!({
            "vector": packed, "top_k": 1, "include_vector": true, "nprobe": 64,
            "vector_encoding": "base64"
        }))
        .unwrap();
        let response = floe_core::api::query(&floe, "churn", request)
            .await
            .unwrap();
        let hit = &response.results[0];
        assert_eq!(hit.id, floe_core::id::Id::U64(*id));
        assert_eq!(
            hit.vector,
            Some(floe_core::api::vectors::VectorOut::Base64(packed)),
            "id {id}"
        );
    }
    let mut total = 0.0;
    for q in vectors(20, 23).iter() {
        let got = query(&floe, "churn", json!({"vector": q, "top_k": 10})).await;
        total += recall(&got, &oracle("l2", &live, q, 10, &|_| true));
    }
    assert!(total / 20.0 >= 0.9, "recall {}", total / 20.0);
}
