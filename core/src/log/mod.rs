//! The write-ahead log: one log per collection, whose positions (LSNs) are
//! the global order of that collection's writes.
//!
//! [`Log`] is byte-level and has two implementations that pass one
//! conformance suite (`tests/`): NATS JetStream ([`JetStreamLogs`]) and a
//! file-backed log for embedded mode ([`FileLogs`]). What the bytes mean is
//! [`LogRecord`]'s business.

mod file;
mod jetstream;
mod record;

pub use file::{FileLogOptions, FileLogs};
pub use jetstream::{JetStreamConfig, JetStreamLogs};
pub use record::{ImportMarker, LogRecord};

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// A log sequence number. The first record of a log has LSN 1; 0 means "none".
pub type Lsn = u64;

/// A record as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position in the log.
    pub lsn: Lsn,
    /// Its bytes (a [`LogRecord`] encoded).
    pub payload: Bytes,
}

/// The acknowledgement of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's position in the log: the write token.
    pub lsn: Lsn,
    /// The request id had been seen within the dedupe window: nothing new
    /// was written and `lsn` is the first write's.
    pub duplicate: bool,
}

/// A client's request id and a digest of what the request asked for: a
/// retry (same id, same digest) within the dedupe window is answered with
/// the first write's LSN; the same id with another digest is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey<'a> {
    /// The client's request id.
    pub id: &'a str,
    /// A digest of the request's content ([`digest`]).
    pub digest: u64,
}

/// How to append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOptions<'a> {
    /// Dedupe retries of this request.
    pub request: Option<RequestKey<'a>>,
    /// Append only if the log's last LSN is this one (else
    /// `Error::LogMoved`): the record then lands right after what its
    /// author read.
    pub expected_last: Option<Lsn>,
}

impl<'a> AppendOptions<'a> {
    /// Options deduping on `request`, if any.
    pub fn request(request: Option<RequestKey<'a>>) -> Self {
        Self {
            request,
            expected_last: None,
        }
    }
}

/// A stable 64-bit digest of a request's content (the first 8 bytes of
/// its SHA-256): the same in every process and build.
pub fn digest(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let out = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_le_bytes(first)
}

/// One collection's log.
#[async_trait]
pub trait Log: Send + Sync + Debug {
    /// Appends one record durably and returns its LSN. With a request key,
    /// a retry within the dedupe window is not written again and the same
    /// id with another digest fails with `Error::RequestIdReused`; with
    /// `expected_last`, nothing is written unless the log ends there.
    /// Once the log was deleted, appends fail with
    /// `Error::CollectionNotFound`, also through handles opened before.
    async fn append(&self, payload: Bytes, options: AppendOptions<'_>) -> Result<Appended>;

    /// The earlier append of this request, if one is remembered within the
    /// dedupe window (the same id with another digest fails with
    /// `Error::RequestIdReused`). Writes nothing: what a conditional write
    /// whose condition no longer holds asks, since the write may be its
    /// own earlier attempt.
    async fn find_request(&self, request: RequestKey<'_>) -> Result<Option<Appended>>;

    /// Up to `max_records` records with LSN ≥ `from`, ascending. Fails with
    /// `Error::LsnTrimmed` if `from` was trimmed away.
    async fn read(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>>;

    /// The LSN of the newest record ever appended (0 if none), trimmed or not.
    async fn last_lsn(&self) -> Result<Lsn>;

    /// The oldest LSN still readable (`last_lsn + 1` when all was trimmed).
    async fn first_lsn(&self) -> Result<Lsn>;

    /// Drops every record with LSN ≤ `through` (clamped to the last LSN).
    async fn trim(&self, through: Lsn) -> Result<()>;

    /// The largest payload `append` accepts.
    fn max_record_bytes(&self) -> usize;

    /// How long a request id is remembered. Records must stay in the log
    /// at least this long (see the flusher's trims) for a restarted
    /// process to remember them.
    fn duplicate_window(&self) -> Duration;

    /// All records in `from..=to`, read in pages.
    async fn read_range(&self, from: Lsn, to: Lsn) -> Result<Vec<LogEntry>> {
        let mut cursor = LogCursor::new(self, from, to);
        let mut out = Vec::new();
        while let Some(page) = cursor.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

/// Records read from the log per request.
const PAGE: usize = 512;

/// Reads a log forward, page by page: the one paging loop, used by reads
/// (the log tail) and flushes (the range to flush).
#[derive(Debug)]
pub(crate) struct LogCursor<'a, L: Log + ?Sized> {
    log: &'a L,
    next: Lsn,
    end: Lsn,
}

impl<'a, L: Log + ?Sized> LogCursor<'a, L> {
    /// Records with LSN in `from..=end`.
    pub(crate) fn new(log: &'a L, from: Lsn, end: Lsn) -> Self {
        LogCursor {
            log,
            next: from.max(1),
            end,
        }
    }

    /// The next page, ascending; `None` once past `end` or the log's end.
    /// Fails with `Error::LsnTrimmed` when the next LSN was trimmed away.
    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<LogEntry>>> {
        if self.next > self.end {
            return Ok(None);
        }
        let page = self.log.read(self.next, PAGE).await?;
        let Some(last) = page.last().map(|e| e.lsn) else {
            return Ok(None);
        };
        self.next = last + 1;
        let end = self.end;
        Ok(Some(page.into_iter().filter(|e| e.lsn <= end).collect()))
    }
}

/// Which log: one per incarnation of a collection (see `catalog`), so a
/// name dropped and created again never shares a log with its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogId<'a> {
    /// A validated collection name.
    pub collection: &'a str,
    /// The incarnation the catalog minted.
    pub incarnation: &'a str,
}

/// Creates, opens and deletes the logs of collections.
#[async_trait]
pub trait LogProvider: Send + Sync + Debug {
    /// Creates the log if it does not exist, and opens it.
    async fn create(&self, id: LogId<'_>) -> Result<Arc<dyn Log>>;

    /// Opens a log that exists: `Error::CollectionNotFound` if it does not
    /// (never created, or deleted), so that a process holding a dropped
    /// incarnation can never bring its log back.
    async fn open(&self, id: LogId<'_>) -> Result<Arc<dyn Log>>;

    /// Removes the log and all its records; appends through handles that
    /// are open fail from then on.
    async fn delete(&self, id: LogId<'_>) -> Result<()>;

    /// `(collection, incarnation)` of every log there is: the orphan sweep
    /// compares them with the catalog.
    async fn list(&self) -> Result<Vec<(String, String)>>;

    /// Whether the log service answers (readiness).
    async fn ping(&self) -> Result<()>;
}

/// The LSN check shared by implementations: `from` is trimmed when it lies
/// below the first retained record but not past the end of the log.
pub(crate) fn check_not_trimmed(from: Lsn, first: Lsn, last: Lsn) -> Result<()> {
    if from < first && from <= last {
        return Err(crate::Error::LsnTrimmed {
            requested: from,
            first,
        });
    }
    Ok(())
}
