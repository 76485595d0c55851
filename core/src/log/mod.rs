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
pub use record::LogRecord;

use std::fmt::Debug;
use std::sync::Arc;

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

/// One collection's log.
#[async_trait]
pub trait Log: Send + Sync + Debug {
    /// Appends one record durably and returns its LSN. With a `request_id`, a
    /// retry within the dedupe window is not written again.
    async fn append(&self, payload: Bytes, request_id: Option<&str>) -> Result<Appended>;

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

/// Opens (creating if needed) and deletes the logs of collections.
#[async_trait]
pub trait LogProvider: Send + Sync + Debug {
    /// `collection` must be a validated collection name.
    async fn open(&self, collection: &str) -> Result<Arc<dyn Log>>;

    /// Removes the collection's log and all its records.
    async fn delete(&self, collection: &str) -> Result<()>;
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
