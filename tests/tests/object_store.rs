//! The object-store behaviour Floe relies on, checked against every backend:
//! in-memory, a local directory and the S3 API server.

use std::sync::Arc;

use bytes::Bytes;
use floe_core::storage::{CountingStore, get_bytes, put_create, put_file_in_parts};
use floe_tests::TestStore;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

#[tokio::test]
async fn create_only_puts_never_overwrite() {
    for t in TestStore::all() {
        let path = Path::from("immutable/a");
        assert!(
            put_create(t.store.as_ref(), &path, Bytes::from("first"))
                .await
                .unwrap(),
            "{}",
            t.name
        );
        assert!(
            !put_create(t.store.as_ref(), &path, Bytes::from("second"))
                .await
                .unwrap(),
            "{}",
            t.name
        );
        assert_eq!(
            get_bytes(t.store.as_ref(), &path).await.unwrap(),
            Bytes::from("first"),
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn concurrent_creates_have_exactly_one_winner() {
    for t in TestStore::all() {
        for round in 0..5 {
            let path = Path::from(format!("race/{round}"));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let store = Arc::clone(&t.store);
                    let path = path.clone();
                    tokio::spawn(async move {
                        put_create(store.as_ref(), &path, Bytes::from(format!("w{i}"))).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (i, task) in tasks.into_iter().enumerate() {
                if task.await.unwrap().unwrap() {
                    winners.push(i);
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{} round {round}: winners {winners:?}",
                t.name
            );
            let body = get_bytes(t.store.as_ref(), &path).await.unwrap();
            assert_eq!(body, Bytes::from(format!("w{}", winners[0])), "{}", t.name);
        }
    }
}

#[tokio::test]
async fn ranged_and_suffix_reads_fetch_only_what_is_asked() {
    for t in TestStore::all() {
        let counting = CountingStore::new(Arc::clone(&t.store));
        let path = Path::from("ranges/blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        counting.put(&path, data.clone().into()).await.unwrap();
        let before = counting.stats();
        let got = counting.get_range(&path, 1000..1100).await.unwrap();
        assert_eq!(&got[..], &data[1000..1100], "{}", t.name);
        let suffix = counting
            .get_opts(
                &path,
                GetOptions {
                    range: Some(GetRange::Suffix(10)),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&suffix[..], &data[data.len() - 10..], "{}", t.name);
        let ranges = counting
            .get_ranges(&path, &[0..5, 50_000..50_010])
            .await
            .unwrap();
        assert_eq!(&ranges[1][..], &data[50_000..50_010], "{}", t.name);
        let used = counting.stats().since(&before);
        assert_eq!(used.gets, 3, "{}: {used:?}", t.name);
        assert_eq!(used.bytes_read, 100 + 10 + 50_010, "{}: {used:?}", t.name);
    }
}

#[tokio::test]
async fn listing_with_offset_returns_only_later_keys() {
    for t in TestStore::all() {
        for i in 0..12 {
            let path = Path::from(format!("list/{i:020}.json"));
            t.store.put(&path, Bytes::from("x").into()).await.unwrap();
        }
        t.store
            .put(&Path::from("list-other/x"), Bytes::from("x").into())
            .await
            .unwrap();
        let prefix = Path::from("list");
        let after: Vec<_> = t
            .store
            .list_with_offset(Some(&prefix), &Path::from(format!("list/{:020}.json", 8)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        let mut after = after;
        after.sort();
        let want: Vec<_> = (9..12).map(|i| format!("list/{i:020}.json")).collect();
        assert_eq!(after, want, "{}", t.name);
        let all: Vec<_> = t.store.list(Some(&prefix)).try_collect().await.unwrap();
        assert_eq!(
            all.len(),
            12,
            "{}: prefix listing must not include list-other/",
            t.name
        );
    }
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    for t in TestStore::all() {
        let err = get_bytes(t.store.as_ref(), &Path::from("nope/none"))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{}: {err}", t.name);
        assert_eq!(err.kind(), floe_core::ErrorKind::NotFound);
    }
}

#[tokio::test]
async fn files_bigger_than_a_part_go_up_in_parts_and_read_back_whole() {
    // 12 MiB and a bit in 5 MiB parts (S3's smallest): three parts.
    let bytes: Bytes = (0..12 * 1024 * 1024 + 4321)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    for t in TestStore::all() {
        let path = Path::from("big/segment.parquet");
        let part = 5 * 1024 * 1024;
        assert!(
            put_file_in_parts(t.store.as_ref(), &path, bytes.clone(), part, part)
                .await
                .unwrap(),
            "{}",
            t.name
        );
        assert_eq!(
            get_bytes(t.store.as_ref(), &path).await.unwrap(),
            bytes,
            "{}",
            t.name
        );
        if t.name == "s3" {
            // An S3 multipart object's ETag says how many parts made it.
            let meta = t.store.head(&path).await.unwrap();
            assert!(
                meta.e_tag
                    .as_deref()
                    .unwrap_or("")
                    .trim_matches('"')
                    .ends_with("-3"),
                "{:?}",
                meta.e_tag
            );
        }
        // At or below the threshold: one create-only PUT.
        let small = Path::from("big/small");
        assert!(
            put_file_in_parts(t.store.as_ref(), &small, Bytes::from("x"), part, part)
                .await
                .unwrap()
        );
        assert!(
            !put_file_in_parts(t.store.as_ref(), &small, Bytes::from("y"), part, part)
                .await
                .unwrap(),
            "{}",
            t.name
        );
    }
}
