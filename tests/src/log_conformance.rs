//! The behaviour every `Log` implementation must have. Each check takes a
//! [`LogFixture`] that can hand out fresh providers over the same storage, so
//! durability across a reopen is part of the suite.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use floe_core::Error;
use floe_core::log::{AppendOptions, Log, LogId, LogProvider, RequestKey};

/// Opens providers over one backing store (a nats-server, a directory).
#[async_trait::async_trait]
pub trait LogFixture: Send + Sync {
    /// A new provider; earlier ones must have been dropped by the caller.
    async fn provider(&self) -> Arc<dyn LogProvider>;
}

/// The log of collection `name`'s first incarnation.
pub fn id(name: &str) -> LogId<'_> {
    LogId {
        collection: name,
        incarnation: "0192a3b4c5d6e7f8a9b0c1d2e3f4a5b6",
    }
}

/// Dedupe on request id `id` with a digest of `payload`.
pub fn req<'a>(id: &'a str, payload: &[u8]) -> AppendOptions<'a> {
    AppendOptions::request(Some(RequestKey {
        id,
        digest: floe_core::log::digest(&[payload]),
    }))
}

/// No dedupe, no condition.
pub fn plain() -> AppendOptions<'static> {
    AppendOptions::default()
}

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("record-{i}-{}", "x".repeat(i % 7)))
}

async fn open(fixture: &dyn LogFixture, collection: &str) -> (Arc<dyn LogProvider>, Arc<dyn Log>) {
    let provider = fixture.provider().await;
    let log = provider.create(id(collection)).await.expect("create log");
    (provider, log)
}

pub async fn appends_get_increasing_lsns_and_read_back(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c1").await;
    assert_eq!(log.last_lsn().await.unwrap(), 0);
    assert_eq!(log.read(1, 10).await.unwrap(), vec![]);
    let mut payloads = vec![Bytes::new(), Bytes::from(vec![0u8, 255, 1, 254])];
    payloads.extend((0..20).map(payload));
    for (i, p) in payloads.iter().enumerate() {
        let ack = log.append(p.clone(), plain()).await.unwrap();
        assert_eq!(ack.lsn, i as u64 + 1);
        assert!(!ack.duplicate);
    }
    assert_eq!(log.last_lsn().await.unwrap(), payloads.len() as u64);
    assert_eq!(log.first_lsn().await.unwrap(), 1);
    let all = log.read(1, 1000).await.unwrap();
    let got: Vec<_> = all.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(got, payloads);
    assert!(all.iter().enumerate().all(|(i, e)| e.lsn == i as u64 + 1));
}

pub async fn reads_page_and_stop_at_the_end(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c2").await;
    for i in 0..30 {
        log.append(payload(i), plain()).await.unwrap();
    }
    let page = log.read(11, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.lsn).collect::<Vec<_>>(),
        vec![11, 12, 13, 14, 15]
    );
    assert_eq!(page[0].payload, payload(10));
    assert_eq!(log.read(31, 5).await.unwrap(), vec![]);
    assert_eq!(
        log.read(0, 1).await.unwrap()[0].lsn,
        1,
        "lsn 0 reads from the start"
    );
    let range = log.read_range(7, 25).await.unwrap();
    assert_eq!(range.len(), 19);
    assert_eq!((range[0].lsn, range[18].lsn), (7, 25));
    // read_range pages past the 1024-record page size too
    for i in 30..1100 {
        log.append(payload(i), plain()).await.unwrap();
    }
    let long = log.read_range(1, 1100).await.unwrap();
    assert_eq!(long.len(), 1100);
    assert!(long.windows(2).all(|w| w[1].lsn == w[0].lsn + 1));
}

/// Pages of big records stop at a size as well as a count: 80 MB of
/// records come back whole, in several pages, none of them refused.
pub async fn big_records_read_back_in_pages(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c-big").await;
    let size = (log.max_record_bytes() - 4096).min(6 << 20);
    let count = (80usize << 20).div_ceil(size) as u64;
    for i in 0..count {
        let mut body = vec![(i % 251) as u8; size];
        body[..8].copy_from_slice(&i.to_le_bytes());
        log.append(Bytes::from(body), plain()).await.unwrap();
    }
    let first = log.read(1, 512).await.unwrap();
    assert!(!first.is_empty() && first.len() as u64 <= count);
    let all = log.read_range(1, count).await.unwrap();
    assert_eq!(all.len() as u64, count);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.lsn, i as u64 + 1);
        assert_eq!(e.payload.len(), size);
        assert_eq!(e.payload[..8], (i as u64).to_le_bytes());
    }
}

pub async fn request_ids_make_retries_idempotent(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c3").await;
    let first = log
        .append(payload(1), req("req-a", &payload(1)))
        .await
        .unwrap();
    let retry = log
        .append(payload(1), req("req-a", &payload(1)))
        .await
        .unwrap();
    assert_eq!(retry.lsn, first.lsn);
    assert!(retry.duplicate && !first.duplicate);
    let other = log
        .append(payload(2), req("req-b", &payload(2)))
        .await
        .unwrap();
    assert_eq!(other.lsn, first.lsn + 1);
    assert!(!other.duplicate);
    assert_eq!(
        log.read(1, 10).await.unwrap().len(),
        2,
        "the retry wrote nothing"
    );
}

pub async fn oversized_records_are_rejected_and_nothing_is_written(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c4").await;
    let max = log.max_record_bytes();
    assert!(
        max >= 1024 * 1024,
        "a log must take 1 MiB records, allows {max}"
    );
    let err = log
        .append(Bytes::from(vec![7u8; max + 1]), req("big", b"big"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RecordTooLarge { size, .. } if size == max + 1),
        "{err}"
    );
    assert_eq!(log.last_lsn().await.unwrap(), 0);
    let big = Bytes::from(vec![7u8; max]);
    let ack = log.append(big.clone(), req("big", b"big")).await.unwrap();
    assert_eq!(ack.lsn, 1);
    assert_eq!(log.read(1, 1).await.unwrap()[0].payload, big);
}

pub async fn trim_drops_old_records_only(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c5").await;
    for i in 0..10 {
        log.append(payload(i), plain()).await.unwrap();
    }
    log.trim(4).await.unwrap();
    assert_eq!(log.first_lsn().await.unwrap(), 5);
    assert_eq!(log.last_lsn().await.unwrap(), 10);
    let err = log.read(2, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LsnTrimmed {
                requested: 2,
                first: 5
            }
        ),
        "{err}"
    );
    let rest = log.read(5, 100).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.lsn).collect::<Vec<_>>(),
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(rest[0].payload, payload(4));
    // Trimming past the end clamps: the next record still gets the next LSN.
    log.trim(1000).await.unwrap();
    assert_eq!(log.last_lsn().await.unwrap(), 10);
    assert_eq!(log.first_lsn().await.unwrap(), 11);
    assert!(matches!(
        log.read(10, 1).await,
        Err(Error::LsnTrimmed { .. })
    ));
    assert_eq!(log.read(11, 1).await.unwrap(), vec![]);
    assert_eq!(log.append(payload(11), plain()).await.unwrap().lsn, 11);
    assert_eq!(log.read(11, 5).await.unwrap()[0].payload, payload(11));
}

pub async fn records_and_dedupe_survive_a_reopen(fixture: &dyn LogFixture) {
    {
        let (_p, log) = open(fixture, "c6").await;
        for i in 0..25 {
            log.append(payload(i), req(&format!("r{i}"), &payload(i)))
                .await
                .unwrap();
        }
        log.trim(5).await.unwrap();
    }
    let (_p, log) = open(fixture, "c6").await;
    assert_eq!(log.last_lsn().await.unwrap(), 25);
    assert_eq!(log.first_lsn().await.unwrap(), 6);
    let rest = log.read(6, 100).await.unwrap();
    assert_eq!(rest.len(), 20);
    assert_eq!(rest[19].payload, payload(24));
    let retry = log
        .append(payload(24), req("r24", &payload(24)))
        .await
        .unwrap();
    assert_eq!((retry.lsn, retry.duplicate), (25, true));
    assert_eq!(log.append(payload(25), plain()).await.unwrap().lsn, 26);
}

pub async fn concurrent_appends_get_distinct_contiguous_lsns(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c7").await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lsns = Vec::new();
                for i in 0..40 {
                    let ack = log
                        .append(Bytes::from(format!("{t}/{i}")), plain())
                        .await
                        .unwrap();
                    lsns.push(ack.lsn);
                }
                lsns
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for task in tasks {
        for lsn in task.await.unwrap() {
            assert!(all.insert(lsn), "lsn {lsn} handed out twice");
        }
    }
    assert_eq!(all, (1..=320).collect::<BTreeSet<u64>>());
    let records = log.read_range(1, 320).await.unwrap();
    let payloads: BTreeSet<_> = records.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(
        payloads.len(),
        320,
        "every acknowledged record is stored once"
    );
}

pub async fn collections_are_isolated_and_deletable(fixture: &dyn LogFixture) {
    let provider = fixture.provider().await;
    let a = provider.create(id("ca")).await.unwrap();
    let b = provider.create(id("cb")).await.unwrap();
    a.append(payload(1), plain()).await.unwrap();
    a.append(payload(2), plain()).await.unwrap();
    assert_eq!(b.append(payload(3), plain()).await.unwrap().lsn, 1);
    assert_eq!(b.read(1, 10).await.unwrap()[0].payload, payload(3));
    let listed = provider.list().await.unwrap();
    for name in ["ca", "cb"] {
        let want = (name.to_string(), id(name).incarnation.to_string());
        assert!(listed.contains(&want), "{want:?} not in {listed:?}");
    }
    drop(b);
    provider.delete(id("ca")).await.unwrap();
    provider.delete(id("ca")).await.unwrap(); // deleting twice is fine
    // A handle opened before the delete can no longer write…
    let err = a.append(payload(4), plain()).await.unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{err}");
    // …and opening never brings a deleted log back.
    let err = provider.open(id("ca")).await.unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{err}");
    let err = provider.open(id("never")).await.unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{err}");
    // Another incarnation of the same name is another, empty log.
    let next = LogId {
        collection: "ca",
        incarnation: "0192a3b4c5d6e7f8a9b0c1d2e3f4a5b7",
    };
    let a2 = provider.create(next).await.unwrap();
    assert_eq!(a2.last_lsn().await.unwrap(), 0);
    let b = provider.open(id("cb")).await.unwrap();
    assert_eq!(b.last_lsn().await.unwrap(), 1);
    provider.delete(next).await.unwrap();
}

pub async fn a_request_id_reused_for_another_body_is_refused(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c8").await;
    let first = log
        .append(payload(1), req("same", &payload(1)))
        .await
        .unwrap();
    let err = log
        .append(payload(2), req("same", &payload(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RequestIdReused { .. }), "{err}");
    let retry = log
        .append(payload(1), req("same", &payload(1)))
        .await
        .unwrap();
    assert_eq!((retry.lsn, retry.duplicate), (first.lsn, true));
    assert_eq!(log.last_lsn().await.unwrap(), 1, "nothing else was written");
}

pub async fn conditional_appends_land_right_after_what_was_read(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c9").await;
    let at = |expected| AppendOptions {
        request: None,
        expected_last: Some(expected),
    };
    assert_eq!(log.append(payload(1), at(0)).await.unwrap().lsn, 1);
    log.append(payload(2), plain()).await.unwrap();
    let err = log.append(payload(3), at(1)).await.unwrap_err();
    assert!(matches!(err, Error::LogMoved { expected: 1, .. }), "{err}");
    assert_eq!(log.last_lsn().await.unwrap(), 2, "nothing was written");
    assert_eq!(log.append(payload(3), at(2)).await.unwrap().lsn, 3);
}

/// An earlier append of a request id is found without writing, within the
/// dedupe window; another digest under the id is refused.
pub async fn earlier_requests_are_found_without_writing(fixture: &dyn LogFixture) {
    let (_p, log) = open(fixture, "c10").await;
    let key = |id, body: &[u8]| RequestKey {
        id,
        digest: floe_core::log::digest(&[body]),
    };
    assert_eq!(
        log.find_request(key("rq-1", b"a")).await.unwrap(),
        None,
        "empty log"
    );
    log.append(payload(1), plain()).await.unwrap();
    let first = log
        .append(payload(2), AppendOptions::request(Some(key("rq-1", b"a"))))
        .await
        .unwrap();
    log.append(payload(3), plain()).await.unwrap();
    let found = log.find_request(key("rq-1", b"a")).await.unwrap();
    assert_eq!(found.map(|f| (f.lsn, f.duplicate)), Some((first.lsn, true)));
    assert_eq!(log.find_request(key("rq-2", b"a")).await.unwrap(), None);
    let err = log.find_request(key("rq-1", b"b")).await.unwrap_err();
    assert!(matches!(err, Error::RequestIdReused { .. }), "{err}");
    assert_eq!(log.last_lsn().await.unwrap(), 3, "finding writes nothing");
}
