//! Turning hits into rows: the vectors and attributes of rows of indexed
//! segments are fetched in one wave; rows in memory are sliced.

use arrow::array::{Array, AsArray, Float32Array, RecordBatch};

use super::{Snapshot, Source};
use crate::engine::request::{Attribute, Row};
use crate::error::{Error, Result};
use crate::id::id_at;
use crate::mvcc::{Visibility, id_and_lsn};
use crate::segment::{COL_ID, COL_LSN, COL_VECTOR};

/// Rows of an indexed source fetched for re-ranking and output.
#[derive(Default)]
pub(super) struct Fetched {
    /// Sorted row numbers.
    pub rows: Vec<u32>,
    pub vectors: Vec<Vec<f32>>,
    /// Requested attributes of `rows` (and their keys when read here).
    pub attributes: Option<RecordBatch>,
    /// `id` and `_lsn` of `rows`, for a source whose keys are not in memory.
    pub keys: Option<RecordBatch>,
}

impl Fetched {
    pub(super) fn position(&self, row: usize) -> Option<usize> {
        self.rows.binary_search(&(row as u32)).ok()
    }

    /// The rows that are visible, for a source whose keys were read with
    /// its rows (`None`: the source's keys were in memory, the rows were
    /// checked when they were chosen). Such a segment hides no other row
    /// set's rows, so a row of it is visible unless its id has a newer
    /// event (see `hides_nothing`).
    pub(super) fn visible_rows(&self, visibility: &Visibility<'_>) -> Result<Option<Vec<u32>>> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let (ids, lsns) = id_and_lsn(keys)?;
        Ok(Some(
            self.rows
                .iter()
                .enumerate()
                .filter(|(p, _)| {
                    visibility
                        .newest(ids, *p)
                        .is_none_or(|(lsn, _)| lsn < lsns.value(*p))
                })
                .map(|(_, row)| *row)
                .collect(),
        ))
    }

    /// The `id` and `_lsn` of the row at `position`, when read here.
    fn key(&self, position: usize) -> Option<(crate::id::Id, u64)> {
        let keys = self.keys.as_ref()?;
        let (ids, lsns) = id_and_lsn(keys).ok()?;
        Some((id_at(ids, position), lsns.value(position)))
    }
}

/// Per source, the rows wanted from it (indexed sources only).
pub(super) fn rows_by_source(
    snap: &Snapshot,
    rows: impl IntoIterator<Item = (usize, usize)>,
) -> Vec<Option<Vec<u32>>> {
    let mut out: Vec<Option<Vec<u32>>> = snap
        .sources
        .iter()
        .map(|s| matches!(s, Source::Indexed { .. }).then(Vec::new))
        .collect();
    for (source, row) in rows {
        if let Some(Some(list)) = out.get_mut(source) {
            list.push(row as u32);
        }
    }
    out
}

/// Fetches, in one wave, the vectors (when `vectors`) and the `attributes`
/// of the wanted rows of indexed sources.
pub(super) async fn fetch_rows(
    snap: &Snapshot,
    wanted: &[Option<Vec<u32>>],
    attributes: &[String],
    vectors: bool,
) -> Result<Vec<Option<Fetched>>> {
    let work = snap
        .sources
        .iter()
        .zip(wanted)
        .map(|(source, rows)| async move {
            let (Source::Indexed { segment, keys, .. }, Some(rows)) = (source, rows) else {
                return Ok::<_, Error>(None);
            };
            let mut rows = rows.clone();
            rows.sort_unstable();
            rows.dedup();
            let read_vectors = async {
                if !vectors || rows.is_empty() {
                    return Ok(Vec::new());
                }
                segment.read_vectors(&snap.source, &rows).await
            };
            let read_attributes = async {
                if rows.is_empty() {
                    return Ok(None);
                }
                let mut names: Vec<&str> = Vec::new();
                if keys.is_none() {
                    names.push(COL_ID);
                    // A bulk import's file may have no `_lsn` (its rows are
                    // all at `rows_lsn`).
                    if segment.data.schema().field_with_name(COL_LSN).is_ok() {
                        names.push(COL_LSN);
                    }
                }
                // Attributes added after the segment was written are null.
                names.extend(
                    attributes
                        .iter()
                        .map(String::as_str)
                        .filter(|n| segment.data.schema().field_with_name(n).is_ok()),
                );
                if names.is_empty() {
                    return Ok(None);
                }
                Ok::<_, Error>(Some(
                    segment.data.read_rows(&snap.source, &names, &rows).await?,
                ))
            };
            let (vectors, read) = futures::try_join!(read_vectors, read_attributes)?;
            let keys = match (&read, keys) {
                (Some(batch), None) => Some(segment.keys_of(batch)?),
                _ => None,
            };
            Ok(Some(Fetched {
                rows,
                vectors,
                attributes: read,
                keys,
            }))
        });
    snap.stats
        .phase("rows", futures::future::try_join_all(work))
        .await
}

/// Row `row` of source `source`, with what was fetched for it.
pub(super) fn materialize(
    snap: &Snapshot,
    fetched: &[Option<Fetched>],
    source: usize,
    row: usize,
    distance: Option<f32>,
    attributes: &[String],
    include_vector: bool,
) -> Result<Row> {
    let s = &snap.sources[source];
    let fetched = fetched.get(source).and_then(Option::as_ref);
    let position = fetched.and_then(|f| f.position(row));
    let (id, version) = match (s.keys(), fetched.zip(position).and_then(|(f, p)| f.key(p))) {
        (Some(keys), _) => (
            id_at(keys.column(0).as_ref(), row),
            id_and_lsn(keys).map_or(0, |(_, lsns)| lsns.value(row)),
        ),
        (None, Some(key)) => key,
        (None, None) => {
            return Err(Error::internal(
                "query",
                format!("the key of row {row} of source {source} was not read"),
            ));
        }
    };
    // Where the attributes are: in memory, or among the fetched rows.
    let attribute_rows = match (s, fetched.and_then(|f| f.attributes.as_ref())) {
        (Source::Rows(batch), _) => Some((batch.as_ref(), row)),
        (Source::Indexed { .. }, Some(batch)) => position.map(|p| (batch, p)),
        (Source::Indexed { .. }, None) => None,
    };
    // An attribute added after the row's segment was written is null
    // (its file has no column for it: nothing was fetched for it).
    let attrs = (!attributes.is_empty()).then(|| {
        attributes
            .iter()
            .map(|name| Attribute {
                name: name.clone(),
                value: attribute_rows
                    .and_then(|(batch, at)| batch.column_by_name(name).map(|c| c.slice(at, 1)))
                    .unwrap_or_else(|| {
                        arrow::array::new_null_array(&arrow::datatypes::DataType::Null, 1)
                    }),
            })
            .collect()
    });
    let vector = include_vector.then(|| match s {
        Source::Rows(batch) => batch
            .column_by_name(COL_VECTOR)
            .and_then(|c| c.as_fixed_size_list_opt())
            .map(|list| {
                let v = list.value(row);
                v.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|f| f.values().to_vec())
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        Source::Indexed { .. } => fetched
            .zip(position)
            .and_then(|(f, p)| f.vectors.get(p).cloned())
            .unwrap_or_default(),
    });
    Ok(Row {
        id,
        version,
        distance,
        attributes: attrs,
        vector,
    })
}
