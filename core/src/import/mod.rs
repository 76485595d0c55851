//! Rows from files: Parquet, NumPy (`.npy` vectors and ids) and JSON Lines,
//! on a local disk or in S3, read in batches and checked row by row against
//! a collection ([`check`]). The CLI's `floe import` sends the good rows
//! over HTTP; a bad row is reported with its file, row and field.

mod check;
pub mod job;
pub mod npy;

pub use check::{Checked, Columns, RowError, check_batch, drop_repeated_ids};

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::api::rows::{RowIn, rows_to_batch};
use crate::catalog::CollectionConfig;
use crate::error::{Error, Result};
use crate::segment::{ParquetFile, RangeSource, StoreSource};
use crate::storage::{ObjectStoreConfig, open_object_store};

/// How a file's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet: an id column, a vector column (lists of floats) and
    /// attribute columns by name.
    Parquet,
    /// A 2-D `.npy` array of vectors; ids from a 1-D `.npy` beside it or
    /// counted from an offset.
    Npy,
    /// One JSON object per line: `{"id", "vector", "attributes"}`.
    JsonLines,
}

impl Format {
    /// The format a file name's extension says, if any.
    pub fn of(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(Format::Parquet)
        } else if lower.ends_with(".npy") {
            Some(Format::Npy)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(Format::JsonLines)
        } else {
            None
        }
    }
}

/// One file to read.
#[derive(Debug, Clone)]
pub struct ImportFile {
    /// As the user named it (`s3://bucket/key` or a local path).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// How it is written.
    pub format: Format,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

/// How to read files into rows.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Which columns hold ids and vectors.
    pub columns: Columns,
    /// Rows per batch read.
    pub batch_rows: usize,
    /// `.npy` vectors: the 1-D `.npy` of their ids, row for row.
    pub npy_ids: Option<ImportFile>,
    /// `.npy` vectors without an ids file: the first row's id.
    pub id_offset: u64,
}

/// The files `spec` names: a local path or `s3://bucket/key`, whose last
/// segment may hold `*` wildcards (`s3://b/exports/*.parquet`). S3 access
/// uses `s3` (endpoint, region, credentials) with the bucket from `spec`.
/// `format` overrides what the extension says.
pub async fn resolve(
    spec: &str,
    s3: &ObjectStoreConfig,
    format: Option<Format>,
) -> Result<Vec<ImportFile>> {
    let (store, dir, pattern): (Arc<dyn ObjectStore>, Path, String) =
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() {
                return Err(Error::invalid(
                    "file",
                    format!("{spec}: expected s3://bucket/key"),
                ));
            }
            let config = ObjectStoreConfig {
                url: format!("s3://{bucket}"),
                ..s3.clone()
            };
            let store = open_object_store(&config)?;
            let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
            (store, Path::from(dir), name.to_string())
        } else {
            let full = std::path::absolute(spec).map_err(|e| Error::io(spec, e))?;
            let name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = full.parent().unwrap_or(std::path::Path::new("/"));
            let dir = Path::from_filesystem_path(dir)
                .map_err(|e| Error::invalid("file", format!("{spec}: {e}")))?;
            (Arc::new(LocalFileSystem::new()), dir, name)
        };
    matching(store, dir, pattern, spec, format).await
}

/// The files of the object store `store` that `key` names (a key relative
/// to the store's root, whose last segment may hold `*` wildcards): what a
/// server-side import reads. `..` and empty segments are refused.
pub async fn resolve_in(
    store: Arc<dyn ObjectStore>,
    key: &str,
    format: Option<Format>,
) -> Result<Vec<ImportFile>> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(Error::invalid(
            "source",
            format!("{key:?}: expected a key relative to the store, like uploads/part-*.parquet"),
        ));
    }
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    matching(store, Path::from(dir), name.to_string(), key, format).await
}

/// The files in `dir` of `store` whose names match `pattern` (`*`
/// wildcards), sorted, as `spec` names them.
async fn matching(
    store: Arc<dyn ObjectStore>,
    dir: Path,
    pattern: String,
    spec: &str,
    format: Option<Format>,
) -> Result<Vec<ImportFile>> {
    let matches: Vec<(Path, u64)> = if pattern.contains('*') {
        let listed: Vec<_> = store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| Error::store("list", &dir, e))?
            .objects;
        let mut found: Vec<(Path, u64)> = listed
            .into_iter()
            .filter(|m| m.location.filename().is_some_and(|n| glob(&pattern, n)))
            .map(|m| (m.location, m.size))
            .collect();
        found.sort();
        found
    } else {
        let path = dir.clone().join(pattern.as_str());
        let meta = store.head(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                Error::invalid("file", format!("{spec}: no such file"))
            }
            // The store failing is not the file's fault: retryable.
            other => Error::store("head", &path, other),
        })?;
        vec![(path, meta.size)]
    };
    if matches.is_empty() {
        return Err(Error::invalid("file", format!("{spec}: no file matches")));
    }
    let prefix = spec.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    matches
        .into_iter()
        .map(|(path, size)| {
            let file_name = path.filename().unwrap_or_default().to_string();
            let name = if pattern.contains('*') {
                format!("{prefix}/{file_name}")
            } else {
                spec.to_string()
            };
            let format = format.or_else(|| Format::of(&file_name)).ok_or_else(|| {
                Error::invalid(
                    "format",
                    format!(
                        "{name}: say the format (parquet, npy or jsonl); the extension does not"
                    ),
                )
            })?;
            Ok(ImportFile {
                name,
                size,
                format,
                store: Arc::clone(&store),
                path,
            })
        })
        .collect()
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = &parts[..] else {
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl ImportFile {
    /// Its key in its object store.
    pub fn key(&self) -> &str {
        self.path.as_ref()
    }

    /// The whole file.
    pub async fn bytes(&self) -> Result<bytes::Bytes> {
        crate::storage::get_bytes(self.store.as_ref(), &self.path).await
    }

    /// A collection that fits the file's rows, guessed from its first rows:
    /// dimension, id type and attributes (Parquet: columns of bool, integer,
    /// float, string or list-of-string types; JSON Lines: the first row's
    /// attribute values; NumPy: none).
    pub async fn infer_collection(
        &self,
        name: &str,
        metric: crate::catalog::Metric,
        columns: &Columns,
    ) -> Result<CollectionConfig> {
        use crate::catalog::{AttributeDef, AttributeType, IdType, IndexParams};
        let (dimension, id_type, attributes) = match self.format {
            Format::Npy => {
                let h = self.read_npy_header().await?;
                (h.cols as u32, IdType::U64, Vec::new())
            }
            Format::Parquet => {
                let source: Arc<dyn RangeSource> = Arc::new(StoreSource(Arc::clone(&self.store)));
                let parquet = ParquetFile::open(&source, self.path.clone(), self.size, 0)
                    .await
                    .map_err(|e| self.unreadable(e))?;
                let first = parquet
                    .batches(&source, 16)?
                    .next()
                    .await
                    .transpose()?
                    .ok_or_else(|| Error::invalid(self.name.as_str(), "the file has no rows"))?;
                let schema = first.schema();
                let vectors = first.column_by_name(&columns.vector).ok_or_else(|| {
                    Error::invalid(
                        self.name.as_str(),
                        format!("no column {:?}", columns.vector),
                    )
                })?;
                let dimension = match vectors.data_type() {
                    DataType::FixedSizeList(_, n) => *n as u32,
                    _ => {
                        use arrow::array::Array;
                        let lists = arrow::compute::cast(
                            vectors,
                            &DataType::LargeList(Arc::new(Field::new(
                                "item",
                                DataType::Float32,
                                true,
                            ))),
                        )
                        .map_err(|e| Error::invalid(columns.vector.as_str(), e))?;
                        let lists = arrow::array::AsArray::as_list::<i64>(&lists);
                        (!lists.is_empty() && lists.is_valid(0))
                            .then(|| lists.value(0).len() as u32)
                            .ok_or_else(|| {
                                Error::invalid(
                                    columns.vector.as_str(),
                                    "the first vector is missing",
                                )
                            })?
                    }
                };
                let id_type = match schema.field_with_name(&columns.id).map(|f| f.data_type()) {
                    Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => IdType::String,
                    _ => IdType::U64,
                };
                let attributes = schema
                    .fields()
                    .iter()
                    .filter(|f| f.name() != &columns.id && f.name() != &columns.vector)
                    .filter_map(|f| {
                        let ty = match f.data_type() {
                            DataType::Boolean => AttributeType::Bool,
                            t if t.is_integer() => AttributeType::I64,
                            t if t.is_floating() => AttributeType::F64,
                            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                                AttributeType::String
                            }
                            DataType::List(item) | DataType::LargeList(item)
                                if matches!(
                                    item.data_type(),
                                    DataType::Utf8 | DataType::LargeUtf8
                                ) =>
                            {
                                AttributeType::StringList
                            }
                            _ => return None,
                        };
                        Some(AttributeDef {
                            name: f.name().clone(),
                            ty,
                        })
                    })
                    .collect();
                (dimension, id_type, attributes)
            }
            Format::JsonLines => {
                let (_, line) = lines(self.clone())
                    .next()
                    .await
                    .transpose()?
                    .ok_or_else(|| Error::invalid(self.name.as_str(), "the file has no rows"))?;
                let row: RowIn = serde_json::from_slice(&line)
                    .map_err(|e| Error::invalid(self.name.as_str(), format!("line 1: {e}")))?;
                let dimension = match &row.vector {
                    crate::api::vectors::VectorIn::Numbers(v) => v.len() as u32,
                    crate::api::vectors::VectorIn::Base64(t) => {
                        use base64::Engine;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(t)
                            .map_err(|e| Error::invalid("vector", format!("line 1: {e}")))?;
                        (bytes.len() / 4) as u32
                    }
                };
                let id_type = match row.id {
                    crate::id::Id::Str(_) => IdType::String,
                    crate::id::Id::U64(_) => IdType::U64,
                };
                let mut attributes: Vec<AttributeDef> = row
                    .attributes
                    .iter()
                    .filter_map(|(name, value)| {
                        use serde_json::Value;
                        let ty = match value {
                            Value::Bool(_) => AttributeType::Bool,
                            Value::Number(n) if n.is_i64() || n.is_u64() => AttributeType::I64,
                            Value::Number(_) => AttributeType::F64,
                            Value::String(_) => AttributeType::String,
                            Value::Array(_) => AttributeType::StringList,
                            _ => return None,
                        };
                        Some(AttributeDef {
                            name: name.clone(),
                            ty,
                        })
                    })
                    .collect();
                attributes.sort_by(|a, b| a.name.cmp(&b.name));
                (dimension, id_type, attributes)
            }
        };
        let config = CollectionConfig {
            name: name.to_string(),
            dimension,
            metric,
            id_type,
            attributes,
            index: IndexParams::default(),
        };
        config.validate()?;
        Ok(config)
    }

    fn unreadable(&self, e: impl std::fmt::Display) -> Error {
        Error::invalid(self.name.as_str(), format!("cannot read: {e}"))
    }

    /// A read that failed: the store's failure as it is (retryable), a
    /// missing or malformed file as bad input naming it.
    fn read_failed(&self, e: Error) -> Error {
        if e.kind() == crate::error::ErrorKind::Unavailable {
            e
        } else {
            self.unreadable(e)
        }
    }

    /// [`ImportFile::read_failed`] of an object-store error.
    fn store_failed(&self, e: object_store::Error) -> Error {
        self.read_failed(Error::store("get", &self.path, e))
    }

    /// The file's rows in batches, each checked against `config`.
    pub async fn batches(
        &self,
        config: &CollectionConfig,
        options: &ReadOptions,
    ) -> Result<BoxStream<'static, Result<Checked>>> {
        match self.format {
            Format::Parquet => self.parquet(config, options).await,
            Format::Npy => self.npy(config, options).await,
            Format::JsonLines => Ok(self.json_lines(config, options)),
        }
    }

    async fn parquet(
        &self,
        config: &CollectionConfig,
        options: &ReadOptions,
    ) -> Result<BoxStream<'static, Result<Checked>>> {
        let source: Arc<dyn RangeSource> = Arc::new(StoreSource(Arc::clone(&self.store)));
        let parquet = ParquetFile::open(&source, self.path.clone(), self.size, 0)
            .await
            .map_err(|e| self.read_failed(e))?;
        let stream = parquet
            .batches(&source, options.batch_rows)
            .map_err(|e| self.read_failed(e))?;
        let (config, columns, file) = (config.clone(), options.columns.clone(), self.clone());
        let mut next_row = 0u64;
        Ok(stream
            .map(move |batch| {
                let batch = batch.map_err(|e| file.read_failed(e))?;
                let first = next_row;
                next_row += batch.num_rows() as u64;
                check_batch(&config, &columns, first, &batch)
            })
            .boxed())
    }

    async fn read_npy_header(&self) -> Result<npy::Header> {
        let prefix = self
            .store
            .get_range(&self.path, 0..self.size.min(65_536))
            .await
            .map_err(|e| self.store_failed(e))?;
        npy::parse_header(&prefix, self.size, &self.name)
    }

    async fn npy(
        &self,
        config: &CollectionConfig,
        options: &ReadOptions,
    ) -> Result<BoxStream<'static, Result<Checked>>> {
        let vectors = self.read_npy_header().await?;
        if vectors.cols != config.dimension as usize
            || matches!(
                vectors.dtype,
                npy::Dtype::I32 | npy::Dtype::I64 | npy::Dtype::U32 | npy::Dtype::U64
            )
        {
            return Err(Error::invalid(
                self.name.as_str(),
                format!(
                    "vectors must be a 2-D float array of {} columns (the collection's dimension)",
                    config.dimension
                ),
            ));
        }
        let ids = match &options.npy_ids {
            Some(file) => {
                let h = file.read_npy_header().await?;
                if h.cols != 1 || matches!(h.dtype, npy::Dtype::F32 | npy::Dtype::F64) {
                    return Err(Error::invalid(
                        file.name.as_str(),
                        "ids must be a 1-D array of integers",
                    ));
                }
                if h.rows != vectors.rows {
                    return Err(Error::invalid(
                        file.name.as_str(),
                        format!("{} ids for {} vectors", h.rows, vectors.rows),
                    ));
                }
                Some((file.clone(), h))
            }
            None => None,
        };
        let step = options.batch_rows.max(1) as u64;
        let starts = (0..vectors.rows.div_ceil(step)).map(move |b| b * step);
        let (config, columns, file, offset) = (
            config.clone(),
            options.columns.clone(),
            self.clone(),
            options.id_offset,
        );
        Ok(stream::iter(starts)
            .then(move |start| {
                let (config, columns, file, ids, vectors) = (
                    config.clone(),
                    columns.clone(),
                    file.clone(),
                    ids.clone(),
                    vectors.clone(),
                );
                async move {
                    let end = (start + step).min(vectors.rows);
                    let bytes = file
                        .store
                        .get_range(&file.path, vectors.byte_range(start, end))
                        .await
                        .map_err(|e| file.store_failed(e))?;
                    let values = npy::to_f32(vectors.dtype, &bytes);
                    let id_values: Vec<i64> = match &ids {
                        Some((ids_file, h)) => {
                            let bytes = ids_file
                                .store
                                .get_range(&ids_file.path, h.byte_range(start, end))
                                .await
                                .map_err(|e| ids_file.store_failed(e))?;
                            // Out-of-range ids become -1, which the check rejects.
                            npy::to_i128(h.dtype, &bytes)
                                .into_iter()
                                .map(|v| i64::try_from(v).unwrap_or(-1))
                                .collect()
                        }
                        None => (start..end)
                            .map(|r| i64::try_from(r + offset).unwrap_or(-1))
                            .collect(),
                    };
                    let item = Arc::new(Field::new("item", DataType::Float32, false));
                    let dim = vectors.cols as i32;
                    let vector_column: ArrayRef = Arc::new(FixedSizeListArray::try_new(
                        Arc::clone(&item),
                        dim,
                        Arc::new(Float32Array::from(values)),
                        None,
                    )?);
                    let id_column: ArrayRef = Arc::new(Int64Array::from(id_values));
                    let schema = Schema::new(vec![
                        Field::new(&columns.id, DataType::Int64, false),
                        Field::new(&columns.vector, DataType::FixedSizeList(item, dim), false),
                    ]);
                    let batch =
                        RecordBatch::try_new(Arc::new(schema), vec![id_column, vector_column])?;
                    check_batch(&config, &columns, start, &batch)
                }
            })
            .boxed())
    }

    fn json_lines(
        &self,
        config: &CollectionConfig,
        options: &ReadOptions,
    ) -> BoxStream<'static, Result<Checked>> {
        let (config, file, batch_rows) = (config.clone(), self.clone(), options.batch_rows.max(1));
        lines(file.clone())
            .chunks(batch_rows)
            .map(move |chunk| {
                let chunk: Vec<(u64, Vec<u8>)> = chunk.into_iter().collect::<Result<_>>()?;
                json_rows(&config, &chunk)
            })
            .boxed()
    }
}

/// The longest JSON Lines row: a 16,384-d vector of long decimals and
/// attributes fit well within it.
const MAX_LINE_BYTES: usize = 64 << 20;

/// Lines of a JSON Lines file, numbered from 0, blank ones skipped.
fn lines(file: ImportFile) -> BoxStream<'static, Result<(u64, Vec<u8>)>> {
    let name = file.name.clone();
    let bytes = stream::once(async move {
        let got = file
            .store
            .get(&file.path)
            .await
            .map_err(|e| file.store_failed(e))?;
        let file2 = file.clone();
        Ok::<_, Error>(got.into_stream().map_err(move |e| file2.store_failed(e)))
    })
    .try_flatten();
    let mut pending: Vec<u8> = Vec::new();
    // Bytes of `pending` already searched for a newline.
    let mut scanned = 0usize;
    let mut line_no = 0u64;
    bytes
        .map(Some)
        .chain(stream::once(async { None }))
        .flat_map(move |chunk| {
            let mut out = Vec::new();
            match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    let mut start = 0;
                    while let Some(at) = pending[scanned..].iter().position(|b| *b == b'\n') {
                        let end = scanned + at;
                        out.push((line_no, pending[start..end].to_vec()));
                        line_no += 1;
                        start = end + 1;
                        scanned = start;
                    }
                    pending.drain(..start);
                    scanned = pending.len();
                    if pending.len() > MAX_LINE_BYTES {
                        return stream::iter(vec![Err(Error::invalid(
                            name.as_str(),
                            format!(
                                "line {} is longer than {MAX_LINE_BYTES} bytes: not JSON Lines?",
                                line_no + 1
                            ),
                        ))]);
                    }
                }
                Some(Err(e)) => return stream::iter(vec![Err(e)]),
                None => {
                    if !pending.is_empty() {
                        out.push((line_no, std::mem::take(&mut pending)));
                    }
                }
            }
            stream::iter(
                out.into_iter()
                    .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
                    .map(Ok)
                    .collect::<Vec<_>>(),
            )
        })
        .boxed()
}

/// Checks JSON Lines rows one by one (so each error names its line) and
/// builds one batch of the good ones.
fn json_rows(config: &CollectionConfig, lines: &[(u64, Vec<u8>)]) -> Result<Checked> {
    let mut good = Vec::with_capacity(lines.len());
    let mut rows = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (line, text) in lines {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let parsed: std::result::Result<RowIn, _> = serde_path_to_error::deserialize(de);
        let row = match parsed {
            Ok(row) => row,
            Err(e) => {
                errors.push(RowError {
                    row: *line,
                    field: match e.path().to_string() {
                        p if p == "." => "line".into(),
                        p => p,
                    },
                    message: format!("not a valid row: {}", e.into_inner()),
                });
                continue;
            }
        };
        if row.if_version.is_some() {
            errors.push(RowError {
                row: *line,
                field: "if_version".into(),
                message: "conditions are not part of an import; drop the field".into(),
            });
            continue;
        }
        if let Some(first) = seen.get(&row.id) {
            errors.push(RowError {
                row: *line,
                field: "id".into(),
                message: check::duplicate_message(&row.id, *first, true),
            });
            continue;
        }
        match rows_to_batch(config, std::slice::from_ref(&row)) {
            Ok(_) => {
                seen.insert(row.id.clone(), *line);
                good.push(row);
                rows.push(*line);
            }
            Err(Error::Invalid { field, message }) => errors.push(RowError {
                row: *line,
                field: field.strip_prefix("rows[0].").unwrap_or(&field).to_string(),
                message,
            }),
            Err(other) => return Err(other),
        }
    }
    let batch = if good.is_empty() {
        RecordBatch::new_empty(crate::segment::upsert_schema(config))
    } else {
        rows_to_batch(config, &good)?
    };
    Ok(Checked {
        batch,
        rows,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("*.parquet", "part-0.parquet"));
        assert!(!glob("*.parquet", "part-0.parquet.tmp"));
        assert!(glob("part-*-of-*.npy", "part-1-of-4.npy"));
        assert!(!glob("part-*.npy", "other-1.npy"));
        assert!(glob("exact.jsonl", "exact.jsonl"));
        assert!(!glob("a*a", "a"));
    }
}
