//! The write path: a checked upsert or delete becomes one log record; the
//! LSN the log acknowledges is the write token.

use std::sync::Arc;

use super::Floe;
use super::read::Needs;
use super::read::scan_matches;
use super::request::{Consistency, Delete, DeleteTarget, Upsert, WriteAck};
use super::state::Collection;
use crate::cache::ReadStats;
use crate::catalog::CollectionConfig;
use crate::error::Result;
use crate::id::{self, Id};
use crate::log::LogRecord;

impl Floe {
    /// Appends rows to the collection's log; `check` builds them from the
    /// request, checked against the collection's configuration.
    pub async fn upsert(
        &self,
        name: &str,
        check: impl FnOnce(&CollectionConfig) -> Result<Upsert>,
    ) -> Result<WriteAck> {
        let c = self.collection(name).await?;
        let request = check(&c.config)?;
        append(
            &c,
            LogRecord::Upsert(request.rows),
            request.request_id.as_deref(),
        )
        .await
    }

    /// Appends a delete of the given ids, or of every row the filter
    /// matches as of the log's last LSN, as one record.
    /// `check` builds it from the request, checked against the collection's
    /// configuration.
    pub async fn delete(
        &self,
        name: &str,
        check: impl FnOnce(&CollectionConfig) -> Result<Delete>,
    ) -> Result<WriteAck> {
        let c = self.collection(name).await?;
        let request = check(&c.config)?;
        let ids = match request.target {
            DeleteTarget::Ids(ids) => ids,
            DeleteTarget::Filter(filter) => {
                // Resolve the filter against everything acknowledged so far,
                // then delete those ids in one record.
                let stats = Arc::new(ReadStats::default());
                let needs = Needs {
                    columns: true,
                    probe: None,
                };
                let snap = self
                    .snapshot(&c, Consistency::Strong, needs, &stats)
                    .await?;
                let matches = scan_matches(&snap, Some(&filter))?;
                if matches.is_empty() {
                    return Ok(WriteAck {
                        lsn: snap.lsn,
                        rows: 0,
                        duplicate: false,
                    });
                }
                let ids: Vec<Id> = matches.into_iter().map(|(id, _, _)| id).collect();
                id::ids_to_array(&c.config, &ids, "ids")?
            }
        };
        append(&c, LogRecord::Delete(ids), request.request_id.as_deref()).await
    }
}

async fn append(c: &Collection, record: LogRecord, request_id: Option<&str>) -> Result<WriteAck> {
    let rows = record.num_rows();
    let payload = record.encode()?;
    let ack = c.log.append(payload, request_id).await?;
    Ok(WriteAck {
        lsn: ack.lsn,
        rows,
        duplicate: ack.duplicate,
    })
}
