//! The write path: a checked upsert or delete becomes one log record; the
//! LSN the log acknowledges is the write token.
//!
//! A request id travels with a digest of the request, so a retry is
//! answered with the first write's LSN and a different request reusing
//! the id is refused. A write that finds its collection incarnation
//! dropped goes to the name's new incarnation if that one existed before
//! the write began and has the configuration the request was checked
//! against, and is refused (404) otherwise: a write racing a drop vanishes
//! with the collection.

use std::sync::Arc;

use bytes::Bytes;

use super::Floe;
use super::read::Needs;
use super::read::scan_matches;
use super::request::{Consistency, Delete, DeleteTarget, Upsert, WriteAck};
use super::state::Collection;
use crate::cache::ReadStats;
use crate::catalog::CollectionConfig;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::id::{self, Id};
use crate::log::{AppendOptions, LogRecord, RequestKey, digest};

/// How often a delete by filter re-evaluates its filter when writes keep
/// landing between its read and its append.
const FILTER_DELETE_ATTEMPTS: usize = 16;

impl Floe {
    /// Appends rows to the collection's log; `check` builds them from the
    /// request, checked against the collection's configuration.
    pub async fn upsert(
        &self,
        name: &str,
        check: impl FnOnce(&CollectionConfig) -> Result<Upsert>,
    ) -> Result<WriteAck> {
        let since = now_ms();
        let c = self.collection(name).await?;
        let request = check(&c.config)?;
        let record = LogRecord::Upsert(request.rows);
        let write = Write::record(&record, request.request_id.as_deref())?;
        self.append_current(&c, since, &write).await
    }

    /// Appends a delete of the given ids, or of every row the filter
    /// matches as of the delete's own LSN, as one record.
    /// `check` builds it from the request, checked against the collection's
    /// configuration.
    pub async fn delete(
        &self,
        name: &str,
        check: impl FnOnce(&CollectionConfig) -> Result<Delete>,
    ) -> Result<WriteAck> {
        let since = now_ms();
        let mut c = self.collection(name).await?;
        let request = check(&c.config)?;
        let request_id = request.request_id.as_deref();
        match request.target {
            DeleteTarget::Ids(ids) => {
                let write = Write::record(&LogRecord::Delete(ids), request_id)?;
                self.append_current(&c, since, &write).await
            }
            DeleteTarget::Filter { filter, text } => {
                let key = request_id.map(|id| RequestKey {
                    id,
                    digest: digest(&[b"delete filter", text.as_bytes()]),
                });
                match self.delete_matching(&c, &filter, key).await {
                    Err(Error::CollectionNotFound(_)) => {
                        c = self.reopen(&c, since).await?;
                        self.delete_matching(&c, &filter, key).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Appends to `c`'s log, or, if `c` turns out to be dropped, to the
    /// name's new incarnation when `reopen` lets the write (started at
    /// `since_ms`) go on there.
    async fn append_current(
        &self,
        c: &Collection,
        since_ms: u64,
        write: &Write<'_>,
    ) -> Result<WriteAck> {
        match write.append(c).await {
            Err(Error::CollectionNotFound(_)) => {
                let fresh = self.reopen(c, since_ms).await?;
                write.append(&fresh).await
            }
            other => other,
        }
    }

    /// Evaluates the filter against everything acknowledged so far and
    /// appends the matching ids only if nothing was written since: a row
    /// re-upserted in between with attributes that no longer match is
    /// never deleted. Retries while writes keep landing in between.
    async fn delete_matching(
        &self,
        c: &Collection,
        filter: &Filter,
        key: Option<RequestKey<'_>>,
    ) -> Result<WriteAck> {
        let mut last_moved = None;
        for _ in 0..FILTER_DELETE_ATTEMPTS {
            let stats = Arc::new(ReadStats::default());
            let needs = Needs {
                columns: true,
                probe: None,
            };
            let snap = self.snapshot(c, Consistency::Strong, needs, &stats).await?;
            let matches = scan_matches(&snap, Some(filter))?;
            if matches.is_empty() && key.is_none() {
                return Ok(WriteAck {
                    lsn: snap.lsn,
                    rows: 0,
                    duplicate: false,
                });
            }
            // With a request id, even an empty delete is recorded, so that
            // a retry is answered the same way.
            let ids: Vec<Id> = matches.into_iter().map(|(id, _, _)| id).collect();
            let record = LogRecord::Delete(id::ids_to_array(&c.config, &ids, "ids")?);
            let write = Write {
                payload: record.encode()?,
                rows: record.num_rows(),
                options: AppendOptions {
                    request: key,
                    expected_last: Some(snap.lsn),
                },
            };
            match write.append(c).await {
                Err(Error::LogMoved { expected }) => last_moved = Some(expected),
                other => return other,
            }
        }
        let expected = last_moved.unwrap_or_default();
        Err(Error::log(
            "delete by filter",
            format!(
                "writes kept arriving while the filter was evaluated (last at lsn {expected}); retry"
            ),
        ))
    }
}

/// One record, encoded, and how to append it.
struct Write<'a> {
    payload: Bytes,
    rows: usize,
    options: AppendOptions<'a>,
}

impl<'a> Write<'a> {
    /// `record`, deduplicated on `request_id` by a digest of its bytes
    /// (which carry its kind: an upsert and a delete never match).
    fn record(record: &LogRecord, request_id: Option<&'a str>) -> Result<Self> {
        let payload = record.encode()?;
        let request = request_id.map(|id| RequestKey {
            id,
            digest: digest(&[b"record", &payload]),
        });
        Ok(Write {
            payload,
            rows: record.num_rows(),
            options: AppendOptions::request(request),
        })
    }

    async fn append(&self, c: &Collection) -> Result<WriteAck> {
        let log = c.log().await?;
        let started = std::time::Instant::now();
        let ack = log.append(self.payload.clone(), self.options).await;
        crate::telemetry::log_append(started.elapsed(), ack.is_ok());
        let ack = ack?;
        Ok(WriteAck {
            lsn: ack.lsn,
            rows: self.rows,
            duplicate: ack.duplicate,
        })
    }
}
