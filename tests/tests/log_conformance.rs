//! The log conformance suite, run against a real `nats-server -js` and the
//! embedded file log.

use std::sync::Arc;

use floe_core::log::{FileLogOptions, FileLogs, JetStreamConfig, LogProvider};
use floe_tests::log_conformance::{self as suite, LogFixture, id, plain};
use floe_tests::{jetstream_config, jetstream_logs};

struct JetStream(JetStreamConfig);

#[async_trait::async_trait]
impl LogFixture for JetStream {
    async fn provider(&self) -> Arc<dyn LogProvider> {
        // A new connection each time: "reopen" is a new client process.
        Arc::new(jetstream_logs(&self.0).await)
    }
}

struct Files(tempfile::TempDir);

#[async_trait::async_trait]
impl LogFixture for Files {
    async fn provider(&self) -> Arc<dyn LogProvider> {
        Arc::new(FileLogs::new(self.0.path(), FileLogOptions::default()))
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::JetStream(super::jetstream_config());
                    super::suite::$case(&fixture).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::Files(tempfile::tempdir().unwrap());
                    super::suite::$case(&fixture).await;
                }
            )*
        }
    };
}

conformance!(
    appends_get_increasing_lsns_and_read_back,
    reads_page_and_stop_at_the_end,
    big_records_read_back_in_pages,
    request_ids_make_retries_idempotent,
    oversized_records_are_rejected_and_nothing_is_written,
    trim_drops_old_records_only,
    records_and_dedupe_survive_a_reopen,
    concurrent_appends_get_distinct_contiguous_lsns,
    collections_are_isolated_and_deletable,
    a_request_id_reused_for_another_body_is_refused,
    conditional_appends_land_right_after_what_was_read,
    earlier_requests_are_found_without_writing,
);

/// Small files force rolling and trimming across file boundaries.
#[tokio::test]
async fn file_log_rolls_and_trims_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileLogOptions {
        file_bytes: 300,
        ..Default::default()
    };
    let logs = FileLogs::new(dir.path(), options.clone());
    let log = logs.create(id("c")).await.unwrap();
    for i in 0..50u8 {
        log.append(bytes::Bytes::from(vec![i; 40]), plain())
            .await
            .unwrap();
    }
    let files = || {
        std::fs::read_dir(dir.path().join("c").join(id("c").incarnation))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count()
    };
    let before = files();
    assert!(before > 5, "expected many files, got {before}");
    log.trim(30).await.unwrap();
    assert!(files() < before, "trim deletes whole files");
    drop(log);
    drop(logs);
    let logs = FileLogs::new(dir.path(), options);
    let log = logs.create(id("c")).await.unwrap();
    assert_eq!(log.first_lsn().await.unwrap(), 31);
    let rest = log.read(31, 100).await.unwrap();
    assert_eq!(rest.len(), 20);
    assert_eq!(rest[0].payload[0], 30);
    log.trim(50).await.unwrap();
    assert_eq!(files(), 1, "only a fresh active file is left");
    assert_eq!(
        log.append(bytes::Bytes::from_static(b"z"), plain())
            .await
            .unwrap()
            .lsn,
        51
    );
}

/// Many processes opening one collection's stream at once all get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_one_jetstream_log_all_succeed() {
    let config = floe_tests::jetstream_config();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move {
                let logs = jetstream_logs(&config).await;
                let log = logs.create(id("shared")).await.unwrap();
                log.append(bytes::Bytes::from_static(b"x"), plain())
                    .await
                    .unwrap()
                    .lsn
            })
        })
        .collect();
    let mut lsns = Vec::new();
    for task in tasks {
        lsns.push(task.await.unwrap());
    }
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=8).collect::<Vec<u64>>());
}

/// Concurrent opens of one collection inside one process share one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_one_file_log_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(FileLogs::new(dir.path(), FileLogOptions::default()));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let logs = Arc::clone(&logs);
            tokio::spawn(async move { logs.create(id("shared")).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every open succeeds");
    }
}
