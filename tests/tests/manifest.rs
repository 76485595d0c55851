//! The manifest commit protocol against every store, including racing
//! committers on the S3 API server and injected failures mid-commit.

use std::collections::BTreeSet;
use std::sync::Arc;

use floe_core::Error;
use floe_core::manifest::{Committed, ManifestStore, Operation, Role, SegmentEntry};
use floe_core::storage::{FaultConfig, FaultyStore, OpFilter};
use floe_tests::TestStore;
use object_store::ObjectStore;

fn segment(id: &str) -> SegmentEntry {
    SegmentEntry {
        id: id.into(),
        data_path: format!("segments/{id}/data.parquet"),
        rows: 1,
        size_bytes: 1,
        min_lsn: 1,
        max_lsn: 1,
        sealed: false,
        index: None,
        footer_bytes: 0,
        rows_lsn: None,
    }
}

fn add(id: &str) -> Operation {
    Operation::Replace {
        remove: vec![],
        add: vec![segment(id)],
        drop_deletes: vec![],
        add_deletes: vec![],
        schema: 0,
    }
}

fn flush(from: u64, to: u64, id: &str) -> Operation {
    Operation::Flush {
        from_lsn: from,
        to_lsn: to,
        segment: Some(segment(id)),
        delete_file: None,
        imported: vec![],
        schema: 0,
    }
}

/// Every version from 1 to the newest exists, parses, and (for add-only
/// histories) holds its predecessor's segments plus exactly one more.
async fn assert_add_only_chain(store: Arc<dyn ObjectStore>, collection: &str) -> Vec<String> {
    let ms = ManifestStore::new(store, collection, "i");
    let versions = ms.versions().await.unwrap();
    let newest = ms.latest_version().await.unwrap();
    assert_eq!(
        versions,
        (1..=newest).collect::<Vec<_>>(),
        "versions must be contiguous"
    );
    let mut previous: BTreeSet<String> = BTreeSet::new();
    for v in versions {
        let m = ms.read(v).await.unwrap();
        let ids: BTreeSet<String> = m.segments.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids.len(), m.segments.len(), "v{v} lists a segment twice");
        assert!(previous.is_subset(&ids), "v{v} lost a segment");
        assert_eq!(
            ids.len(),
            previous.len() + 1,
            "v{v} must add exactly one segment"
        );
        previous = ids;
    }
    previous.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_committers_lose_nothing_and_never_share_a_version() {
    const COMMITTERS: usize = 16;
    const EACH: usize = 6;
    for t in TestStore::all() {
        let tasks: Vec<_> = (0..COMMITTERS)
            .map(|c| {
                // Separate ManifestStores: separate processes share nothing.
                let ms = ManifestStore::new(Arc::clone(&t.store), "race", "i");
                tokio::spawn(async move {
                    let mut versions = Vec::new();
                    for i in 0..EACH {
                        match ms.commit(None, &add(&format!("s{c}-{i}"))).await.unwrap() {
                            Committed::New(m) => versions.push(m.version),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    versions
                })
            })
            .collect();
        let mut versions = BTreeSet::new();
        for task in tasks {
            for v in task.await.unwrap() {
                assert!(
                    versions.insert(v),
                    "{}: version {v} reported by two committers",
                    t.name
                );
            }
        }
        assert_eq!(versions.len(), COMMITTERS * EACH, "{}", t.name);
        let ids = assert_add_only_chain(Arc::clone(&t.store), "race").await;
        assert_eq!(
            ids.len(),
            COMMITTERS * EACH,
            "{}: a committed segment was lost",
            t.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_flushes_of_the_same_range_apply_once() {
    for t in TestStore::all() {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let ms = ManifestStore::new(Arc::clone(&t.store), "flush", "i");
                tokio::spawn(async move {
                    ms.commit(None, &flush(0, 10, &format!("f{i}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            if let Committed::New(_) = task.await.unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 1, "{}", t.name);
        let m = ManifestStore::new(Arc::clone(&t.store), "flush", "i")
            .latest()
            .await
            .unwrap();
        assert_eq!(
            (m.version, m.checkpoint_lsn, m.segments.len()),
            (1, 10, 1),
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn a_failed_put_leaves_no_visible_manifest() {
    for t in TestStore::all() {
        let faulty = Arc::new(FaultyStore::new(
            Arc::clone(&t.store),
            FaultConfig::default(),
        ));
        let ms = ManifestStore::new(faulty.clone(), "fail", "i");
        ms.commit(None, &add("a")).await.unwrap();
        faulty.set_config(FaultConfig {
            ops: OpFilter::PUTS,
            fail_every: Some(1),
            ..Default::default()
        });
        let err = ms.commit(None, &add("b")).await.unwrap_err();
        assert!(
            matches!(err, Error::ObjectStore { .. }),
            "{}: {err}",
            t.name
        );
        faulty.set_config(FaultConfig::default());
        let fresh = ManifestStore::new(Arc::clone(&t.store), "fail", "i");
        let latest = fresh.latest().await.unwrap();
        assert_eq!(
            (latest.version, latest.segments.len()),
            (1, 1),
            "{}",
            t.name
        );
        ms.commit(None, &add("b")).await.unwrap();
        assert_add_only_chain(Arc::clone(&t.store), "fail").await;
    }
}

#[tokio::test]
async fn a_lost_response_is_recognised_as_our_commit() {
    for t in TestStore::all() {
        let faulty = Arc::new(FaultyStore::new(
            Arc::clone(&t.store),
            FaultConfig {
                ops: OpFilter::PUTS,
                fail_every: Some(1),
                fail_after_request: true,
                max_failures: Some(1),
                ..Default::default()
            },
        ));
        let ms = ManifestStore::new(faulty.clone(), "lost", "i");
        let committed = ms.commit(None, &add("a")).await.unwrap();
        assert!(
            matches!(committed, Committed::New(ref m) if m.version == 1),
            "{}: {committed:?}",
            t.name
        );
        assert_eq!(faulty.failures(), 1, "{}", t.name);
        assert_add_only_chain(Arc::clone(&t.store), "lost").await;
    }
}

#[tokio::test]
async fn an_unknown_outcome_is_settled_by_rerunning_the_flush() {
    for t in TestStore::all() {
        // The manifest put lands but its response is lost, and reading it
        // back fails too: the committer cannot know, and says so.
        let faulty = Arc::new(FaultyStore::new(
            Arc::clone(&t.store),
            FaultConfig {
                ops: OpFilter::PUTS | OpFilter::GETS,
                fail_every: Some(1),
                fail_after_request: true,
                ..Default::default()
            },
        ));
        let ms = ManifestStore::new(faulty.clone(), "unknown", "i");
        let op = flush(0, 7, "seg");
        let err = ms.commit(None, &op).await.unwrap_err();
        assert!(
            matches!(err, Error::ObjectStore { .. }),
            "{}: {err}",
            t.name
        );
        // A rerun (the indexer restarted) finds the flush applied: no second
        // segment, no second version.
        faulty.set_config(FaultConfig::default());
        let again = ms.commit(None, &op).await.unwrap();
        assert!(
            matches!(again, Committed::AlreadyApplied(ref m) if m.version == 1),
            "{}: {again:?}",
            t.name
        );
        let m = ManifestStore::new(Arc::clone(&t.store), "unknown", "i")
            .latest()
            .await
            .unwrap();
        assert_eq!(
            (m.version, m.segments.len(), m.checkpoint_lsn),
            (1, 1, 7),
            "{}",
            t.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_random_faults_never_lose_or_duplicate_a_commit() {
    for seed in [1u64, 2, 3] {
        for t in [TestStore::memory(), TestStore::s3()] {
            let faulty = Arc::new(FaultyStore::new(
                Arc::clone(&t.store),
                FaultConfig {
                    seed,
                    fail_probability: 0.2,
                    ..Default::default()
                },
            ));
            let tasks: Vec<_> = (0..4)
                .map(|c| {
                    let ms = ManifestStore::new(faulty.clone(), "chaos", "i");
                    tokio::spawn(async move {
                        for i in 0..8 {
                            let op = add(&format!("c{c}-{i}"));
                            // Retry until the commit is known to have landed:
                            // an error may hide a landed commit, which the
                            // retry then sees as "already live".
                            let mut tries = 0;
                            loop {
                                tries += 1;
                                assert!(tries < 100, "commit never settled");
                                match ms.commit(None, &op).await {
                                    Ok(_) => break,
                                    Err(Error::CommitConflict { reason, .. })
                                        if reason.contains("already live") =>
                                    {
                                        break;
                                    }
                                    Err(_) => continue,
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            assert!(
                faulty.failures() > 0,
                "seed {seed}: no faults were injected"
            );
            let ids = assert_add_only_chain(Arc::clone(&t.store), "chaos").await;
            assert_eq!(ids.len(), 32, "{} seed {seed}", t.name);
        }
    }
}

#[tokio::test]
async fn a_zombie_writer_is_fenced_on_s3() {
    let t = TestStore::s3();
    let zombie = ManifestStore::new(Arc::clone(&t.store), "fence", "i");
    let (old, _) = zombie.claim(Role::Writer).await.unwrap();
    let successor = ManifestStore::new(Arc::clone(&t.store), "fence", "i");
    let (new, _) = successor.claim(Role::Writer).await.unwrap();
    let err = zombie
        .commit(Some(old), &flush(0, 3, "z"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    successor
        .commit(Some(new), &flush(0, 3, "s"))
        .await
        .unwrap();
    let m = successor.latest().await.unwrap();
    assert_eq!(
        m.segments.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["s"]
    );
}

#[tokio::test]
async fn an_uncontended_commit_costs_one_put_and_its_head_one_more() {
    for t in TestStore::all() {
        let counting = Arc::new(floe_core::storage::CountingStore::new(Arc::clone(&t.store)));
        let ms = ManifestStore::new(counting.clone(), "cost", "i");
        ms.commit(None, &add("first")).await.unwrap();
        for i in 2..=7 {
            let before = counting.stats();
            ms.commit(None, &add(&format!("s{i}"))).await.unwrap();
            let used = counting.stats().since(&before);
            // The manifest's PUT, then the collection head's PUT and the
            // HEAD that checks no newer version exists.
            assert_eq!(
                (used.puts, used.gets, used.lists, used.heads),
                (2, 0, 0, 1),
                "{} v{i}: {used:?}",
                t.name
            );
        }
        // Every HINT_EVERY-th version also refreshes the hint.
        let before = counting.stats();
        ms.commit(None, &add("s8")).await.unwrap();
        assert_eq!(counting.stats().since(&before).puts, 3, "{}", t.name);
    }
}

#[tokio::test]
async fn a_committer_with_a_stale_base_reloads_and_rebases() {
    for t in TestStore::all() {
        let a = ManifestStore::new(Arc::clone(&t.store), "stale", "i");
        let b = ManifestStore::new(Arc::clone(&t.store), "stale", "i");
        a.commit(None, &flush(0, 5, "a1")).await.unwrap();
        b.commit(None, &flush(5, 9, "b1")).await.unwrap();
        // `a` still believes v1 (checkpoint 5) is the newest: its flush of
        // (9, 12] is refused there, confirmed against v2, and lands as v3.
        let m = a.commit(None, &flush(9, 12, "a2")).await.unwrap();
        assert!(
            matches!(m, Committed::New(ref m) if m.version == 3 && m.checkpoint_lsn == 12),
            "{}: {m:?}",
            t.name
        );
        // And a stale rerun of b's flush is recognised as applied.
        let again = a.commit(None, &flush(5, 9, "b1")).await.unwrap();
        assert!(matches!(again, Committed::AlreadyApplied(_)), "{}", t.name);
    }
}

#[tokio::test]
async fn finding_the_newest_costs_one_head_once_a_version_is_known() {
    for t in TestStore::all() {
        let counting = Arc::new(floe_core::storage::CountingStore::new(Arc::clone(&t.store)));
        let writer = ManifestStore::new(Arc::clone(&t.store), "newest", "i");
        for i in 0..3 {
            writer.commit(None, &add(&format!("s{i}"))).await.unwrap();
        }
        let reader = ManifestStore::new(counting.clone(), "newest", "i");
        assert_eq!(reader.latest().await.unwrap().version, 3);
        let before = counting.stats();
        assert_eq!(reader.latest_version().await.unwrap(), 3);
        let used = counting.stats().since(&before);
        assert_eq!(
            (used.requests(), used.heads),
            (1, 1),
            "{}: one HEAD of the next version: {used:?}",
            t.name
        );
        writer.commit(None, &add("s3")).await.unwrap();
        let before = counting.stats();
        assert_eq!(reader.latest().await.unwrap().version, 4);
        let used = counting.stats().since(&before);
        assert_eq!(
            (used.heads, used.lists, used.gets),
            (1, 1, 1),
            "{}: head, list, read the new version: {used:?}",
            t.name
        );
    }
}
