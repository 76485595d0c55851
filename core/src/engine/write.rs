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
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field};

use super::read::{Needs, Snapshot, scan_matches, visible_rows};
use super::request::{Condition, Consistency, Delete, DeleteTarget, Patch, Row, Upsert, WriteAck};
use super::state::Collection;
use crate::cache::ReadStats;
use crate::catalog::CollectionConfig;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::id::{self, Id};
use crate::log::{AppendOptions, LogRecord, RequestKey, digest};
use crate::segment::upsert_schema;

/// How often a delete by filter (or a conditional write) re-evaluates
/// against the newest state when writes keep landing between its read and
/// its append.
const READ_THEN_WRITE_ATTEMPTS: usize = 16;

impl Floe {
    /// Appends rows to the collection's log; `check` builds them from the
    /// request, checked against the collection's configuration.
    pub async fn upsert(
        &self,
        name: &str,
        check: impl Fn(&CollectionConfig) -> Result<Upsert>,
    ) -> Result<WriteAck> {
        let since = now_ms();
        let c = self.collection(name).await?;
        let (c, request) = self.check_on_newest(c, check).await?;
        let record = LogRecord::Upsert(request.rows);
        if request.conditions.is_empty() {
            let write = &Write::record(&record, request.request_id.as_deref())?;
            return self
                .on_current_since(c, since, |c| async move { write.append(&c).await })
                .await;
        }
        let payload = record.encode()?;
        let conditions = &request.conditions;
        let key = match request.request_id.as_deref() {
            Some(id) => Some(RequestKey {
                id,
                digest: digest(&[
                    b"conditional record",
                    &request_content(&record)?,
                    &serde_json::to_vec(conditions).unwrap_or_default(),
                ]),
            }),
            None => None,
        };
        let (payload, rows) = (&payload, record.num_rows());
        self.on_current_since(c, since, |c| async move {
            self.append_if(&c, payload, rows, key, conditions).await
        })
        .await
    }

    /// Appends a delete of the given ids, or of every row the filter
    /// matches as of the delete's own LSN, as one record.
    /// `check` builds it from the request, checked against the collection's
    /// configuration.
    pub async fn delete(
        &self,
        name: &str,
        check: impl Fn(&CollectionConfig) -> Result<Delete>,
    ) -> Result<WriteAck> {
        let since = now_ms();
        let c = self.collection(name).await?;
        let (c, request) = self.check_on_newest(c, check).await?;
        let request_id = request.request_id.as_deref();
        match request.target {
            DeleteTarget::Ids(ids) => {
                let write = &Write::record(&LogRecord::Delete(ids), request_id)?;
                self.on_current_since(c, since, |c| async move { write.append(&c).await })
                    .await
            }
            DeleteTarget::Filter { filter, text } => {
                let key = request_id.map(|id| RequestKey {
                    id,
                    digest: digest(&[b"delete filter", text.as_bytes()]),
                });
                let filter = &filter;
                self.on_current_since(c, since, |c| async move {
                    self.delete_matching(&c, filter, key).await
                })
                .await
            }
        }
    }

    /// Runs a write on `c` (on its upgrade if it finds attributes added),
    /// or, if `c` turns out to be dropped, once more on the name's new
    /// incarnation when `reopen` lets the write (started at `since_ms`) go
    /// on there.
    async fn on_current_since<T, F, Fut>(
        &self,
        c: Arc<Collection>,
        since_ms: u64,
        write: F,
    ) -> Result<T>
    where
        F: Fn(Arc<Collection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match self.on_newest_schema(Arc::clone(&c), &write).await {
            Err(Error::CollectionNotFound(_)) => {
                let fresh = self.reopen(&c, since_ms).await?;
                self.on_newest_schema(fresh, &write).await
            }
            other => other,
        }
    }

    /// Appends `payload` only if every condition holds as of the append.
    async fn append_if(
        &self,
        c: &Collection,
        payload: &Bytes,
        rows: usize,
        key: Option<RequestKey<'_>>,
        conditions: &[Condition],
    ) -> Result<WriteAck> {
        let mut rw = ReadThenWrite::new(key, "conditional write", None, rows);
        loop {
            let snap = rw.read(self, c).await?;
            let step = match check_conditions(&snap.visibility(), conditions) {
                Err(failed) => Step::Refuse(failed),
                Ok(()) => Step::Append(payload.clone(), rows),
            };
            if let Some(done) = rw.write(c, snap.lsn, step).await {
                return done;
            }
        }
    }

    /// Sets attributes of existing rows, keeping their vectors and the
    /// attributes the patch does not name, as one upsert record written
    /// right after the rows it read. `check` builds it from the request,
    /// checked against the collection's configuration.
    pub async fn patch(
        &self,
        name: &str,
        check: impl Fn(&CollectionConfig) -> Result<Patch>,
    ) -> Result<WriteAck> {
        let since = now_ms();
        let c = self.collection(name).await?;
        let (c, patch) = self.check_on_newest(c, check).await?;
        let patch = &patch;
        let key = patch.request_id.as_deref().map(|id| RequestKey {
            id,
            digest: patch.digest,
        });
        self.on_current_since(c, since, |c| async move {
            self.patch_rows(&c, patch, key).await
        })
        .await
    }

    async fn patch_rows(
        &self,
        c: &Collection,
        patch: &Patch,
        key: Option<RequestKey<'_>>,
    ) -> Result<WriteAck> {
        let names: Vec<String> = c.config.attributes.iter().map(|a| a.name.clone()).collect();
        let mut rw = ReadThenWrite::new(key, "patch", None, patch.ids.len());
        loop {
            let snap = rw.read(self, c).await?;
            let step = match check_conditions(&snap.visibility(), &patch.conditions) {
                Err(failed) => Step::Refuse(failed),
                Ok(()) => {
                    let current = visible_rows(&snap, &patch.ids, &names).await?;
                    match current.iter().position(Option::is_none) {
                        Some(i) => Step::Refuse(Error::RowNotFound {
                            field: format!("rows[{i}].id"),
                            message: format!("no row with id {}", patch.ids[i]),
                        }),
                        None => {
                            let found: Vec<Row> = current.into_iter().flatten().collect();
                            let record =
                                LogRecord::Upsert(patched_batch(&c.config, &found, patch)?);
                            Step::Append(record.encode()?, record.num_rows())
                        }
                    }
                }
            };
            if let Some(done) = rw.write(c, snap.lsn, step).await {
                return done;
            }
        }
    }

    /// Evaluates the filter against everything acknowledged so far and
    /// appends the matching ids only if nothing was written since: a row
    /// re-upserted in between with attributes that no longer match is
    /// never deleted.
    async fn delete_matching(
        &self,
        c: &Collection,
        filter: &Filter,
        key: Option<RequestKey<'_>>,
    ) -> Result<WriteAck> {
        let mut rw = ReadThenWrite::new(key, "delete by filter", Some(filter), 0);
        loop {
            let snap = rw.read(self, c).await?;
            let matches = scan_matches(&snap, Some(filter))?;
            let step = if matches.is_empty() && key.is_none() {
                Step::Answer(WriteAck {
                    lsn: snap.lsn,
                    rows: 0,
                    duplicate: false,
                })
            } else {
                // With a request id, even an empty delete is recorded, so
                // that a retry is answered the same way.
                let ids: Vec<Id> = matches.into_iter().map(|(id, _, _)| id).collect();
                let record = LogRecord::Delete(id::ids_to_array(&c.config, &ids, "ids")?);
                Step::Append(record.encode()?, record.num_rows())
            };
            if let Some(done) = rw.write(c, snap.lsn, step).await {
                return done;
            }
        }
    }
}

/// The loop of writes that depend on what is there: read a strong
/// snapshot, decide, and append right after what was read; the log
/// refuses if anything landed since, and the loop reads again.
struct ReadThenWrite<'k> {
    key: Option<RequestKey<'k>>,
    what: &'static str,
    /// The filter the read evaluates (its columns are loaded).
    filter: Option<&'k Filter>,
    /// The rows the request writes: what an answer to its retry says.
    rows: usize,
    attempts: usize,
    last_moved: Option<u64>,
}

impl<'k> ReadThenWrite<'k> {
    fn new(
        key: Option<RequestKey<'k>>,
        what: &'static str,
        filter: Option<&'k Filter>,
        rows: usize,
    ) -> Self {
        Self {
            key,
            what,
            filter,
            rows,
            attempts: 0,
            last_moved: None,
        }
    }

    /// The next snapshot to decide on, or an error once writes kept
    /// landing in between too often.
    async fn read(&mut self, floe: &Floe, c: &Collection) -> Result<Snapshot> {
        if self.attempts == READ_THEN_WRITE_ATTEMPTS {
            return Err(Error::log(
                "read then write",
                format!(
                    "{}: writes kept arriving while it read (last at lsn {}); retry",
                    self.what,
                    self.last_moved.unwrap_or_default()
                ),
            ));
        }
        self.attempts += 1;
        let stats = Arc::new(ReadStats::default());
        let needs = Needs {
            filter: self.filter,
            probe: None,
            lazy_keys: false,
        };
        floe.snapshot(c, Consistency::Strong, needs, &stats).await
    }

    /// Carries out the decision taken on the snapshot at `read_lsn`; `None`
    /// when the log moved on meanwhile (read again).
    async fn write(
        &mut self,
        c: &Collection,
        read_lsn: u64,
        step: Step,
    ) -> Option<Result<WriteAck>> {
        let (payload, rows) = match step {
            Step::Append(payload, rows) => (payload, rows),
            Step::Answer(ack) => return Some(Ok(ack)),
            Step::Refuse(refusal) => {
                // A retry of a write that landed no longer finds what it
                // expected: answer it as the first time.
                if let Some(key) = self.key {
                    match Write::already_written(c, key, self.rows).await {
                        Ok(Some(ack)) => return Some(Ok(ack)),
                        Ok(None) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
                return Some(Err(refusal));
            }
        };
        let write = Write {
            payload,
            rows,
            options: AppendOptions {
                request: self.key,
                expected_last: Some(read_lsn),
            },
        };
        match write.append(c).await {
            Err(Error::LogMoved { expected }) => {
                self.last_moved = Some(expected);
                None
            }
            other => Some(other),
        }
    }
}

/// What a read-then-write does after its read.
enum Step {
    /// Append this record (encoded, and its row count).
    Append(Bytes, usize),
    /// Nothing to write: answer this.
    Answer(WriteAck),
    /// Refuse the request.
    Refuse(Error),
}

/// `Err` naming the first condition that does not hold.
fn check_conditions(
    visibility: &crate::mvcc::Visibility<'_>,
    conditions: &[Condition],
) -> Result<()> {
    for k in conditions {
        let current = visibility.version_of(&k.id).unwrap_or(0);
        if current != k.version {
            let now = match current {
                0 => "no row with this id is visible".to_string(),
                v => format!("the visible row is at version {v}"),
            };
            return Err(Error::ConditionFailed {
                field: k.field.clone(),
                message: format!("id {}: expected version {}, {now}", k.id, k.version),
            });
        }
    }
    Ok(())
}

/// Rows (read with their vectors and every attribute) as an upsert batch.
pub(crate) fn rows_batch(config: &CollectionConfig, rows: &[Row]) -> Result<RecordBatch> {
    let ids: Vec<Id> = rows.iter().map(|r| r.id.clone()).collect();
    let ids = if ids.is_empty() {
        arrow::array::new_empty_array(upsert_schema(config).field(0).data_type())
    } else {
        id::ids_to_array(config, &ids, "rows")?
    };
    let dim = config.dimension as usize;
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for row in rows {
        match &row.vector {
            Some(v) if v.len() == dim => flat.extend_from_slice(v),
            _ => {
                return Err(Error::internal(
                    "rows batch",
                    format!("row {} was read without its vector", row.id),
                ));
            }
        }
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(flat)), None)?;
    let mut columns: Vec<ArrayRef> = vec![ids, Arc::new(vectors)];
    let schema = upsert_schema(config);
    for def in &config.attributes {
        let ty = schema.field(columns.len()).data_type();
        // A row written before the attribute was added has none: null.
        let values: Vec<ArrayRef> = rows
            .iter()
            .map(|row| {
                row.attributes
                    .iter()
                    .flatten()
                    .find(|x| x.name == def.name && x.value.data_type() == ty)
                    .map_or_else(
                        || arrow::array::new_null_array(ty, 1),
                        |x| Arc::clone(&x.value),
                    )
            })
            .collect();
        let column = if values.is_empty() {
            arrow::array::new_empty_array(ty)
        } else {
            let refs: Vec<&dyn Array> = values.iter().map(|v| v.as_ref()).collect();
            arrow::compute::concat(&refs)?
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(upsert_schema(config), columns)?)
}

/// What identifies a request's record for its digest: its bytes without
/// the attribute columns no row sets. A process that knows an attribute
/// another does not (it was just added) encodes the same request with one
/// more, all-null, column: a retry sent to either is the same request.
fn request_content(record: &LogRecord) -> Result<Bytes> {
    match record {
        LogRecord::Upsert(batch) => {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| i < 2 || batch.column(i).null_count() < batch.num_rows())
                .collect();
            LogRecord::Upsert(batch.project(&keep)?).encode()
        }
        other => other.encode(),
    }
}

/// The patched rows as an upsert batch: each row's vector and attributes,
/// with the patch's values where it sets one.
fn patched_batch(config: &CollectionConfig, rows: &[Row], patch: &Patch) -> Result<RecordBatch> {
    let current = rows_batch(config, rows)?;
    let mut columns: Vec<ArrayRef> = current.columns()[..2].to_vec();
    // A patch checked against fewer attributes (added ones come last)
    // keeps the current values of the rest.
    for a in 0..config.attributes.len() {
        let Some((values, set)) = patch.values.get(a) else {
            columns.push(Arc::clone(current.column(2 + a)));
            continue;
        };
        let now = current.column(2 + a);
        // Source 0 is the patch's column, source 1 the current values.
        let picks: Vec<(usize, usize)> = set
            .iter()
            .enumerate()
            .map(|(r, set)| if *set { (0, r) } else { (1, r) })
            .collect();
        columns.push(arrow::compute::interleave(
            &[values.as_ref(), now.as_ref()],
            &picks,
        )?);
    }
    Ok(RecordBatch::try_new(upsert_schema(config), columns)?)
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
        let request = match request_id {
            Some(id) => Some(RequestKey {
                id,
                digest: digest(&[b"record", &request_content(record)?]),
            }),
            None => None,
        };
        Ok(Write {
            payload,
            rows: record.num_rows(),
            options: AppendOptions::request(request),
        })
    }

    /// The acknowledgement of an earlier append of this request, if the
    /// log still remembers it.
    /// (`rows`: the request's, which the same request id and digest make
    /// the first write's too).
    async fn already_written(
        c: &Collection,
        key: RequestKey<'_>,
        rows: usize,
    ) -> Result<Option<WriteAck>> {
        let log = c.log().await?;
        Ok(log.find_request(key).await?.map(|appended| WriteAck {
            lsn: appended.lsn,
            rows,
            duplicate: true,
        }))
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
