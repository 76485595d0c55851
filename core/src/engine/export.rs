//! Export: every visible row of one consistent snapshot, written as Parquet
//! files (`id`, `vector`, the attributes: what `floe import` reads) under
//! `exports/<prefix>/` in the collection's object store, then
//! `export.json` (the report) last: an export without it is unfinished.
//! Parts stream to the store as multipart uploads, a row group (32 MiB of
//! vectors) at a time, so memory stays bounded whatever the file size; one
//! export runs at a time per process.

use std::sync::Arc;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::Floe;
use super::read::{Needs, Snapshot, rows_at, scan_matches};
use super::request::{Consistency, Row};
use super::write::rows_batch;
use crate::cache::ReadStats;
use crate::catalog::CollectionConfig;
use crate::error::{Error, Result};
use crate::log::Lsn;
use crate::segment::upsert_schema;
use crate::storage::{export_part, export_root, put_create};

/// Rows fetched and encoded at a time.
const CHUNK_ROWS: usize = 8192;
/// Bytes of vectors per Parquet row group: what the writer buffers before
/// it encodes, so its rows shrink as the dimension grows.
const ROW_GROUP_VECTOR_BYTES: usize = 32 << 20;

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The log position the rows reflect: every write up to it, nothing after.
    pub lsn: Lsn,
    /// Rows written.
    pub rows: u64,
    /// The files, in order.
    pub files: Vec<ExportedFile>,
}

/// One file of an export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// Its key in the object store.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

impl Floe {
    /// Writes every row visible at one snapshot (`consistency`) to Parquet
    /// files of at most `rows_per_file` rows under `exports/<prefix>/`,
    /// which must hold nothing yet (checked by the API: `prefix` is a
    /// relative path of plain segments).
    pub async fn export(
        &self,
        name: &str,
        prefix: &str,
        consistency: Consistency,
        rows_per_file: usize,
    ) -> Result<ExportReport> {
        let since = crate::clock::now_ms();
        let mut c = self.collection(name).await?;
        let _turn = self
            .exports
            .acquire()
            .await
            .map_err(|e| Error::internal("export", e))?;
        let root = export_root(prefix);
        // Claim the prefix first, create-only: of two exports to one
        // prefix, one stops here and neither writes over the other.
        let existing = self
            .object_store()
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        let claim = object_store::path::Path::from(format!("{root}/_claim.json"));
        let started = serde_json::json!({"collection": name, "started_at_ms": since});
        if !existing.objects.is_empty()
            || !existing.common_prefixes.is_empty()
            || !put_create(
                self.object_store().as_ref(),
                &claim,
                Bytes::from(started.to_string()),
            )
            .await?
        {
            return Err(Error::ObjectExists {
                path: format!("{root}/ (export to a new prefix)"),
            });
        }
        let stats = Arc::new(ReadStats::default());
        let snap = self
            .snapshot_current(&mut c, since, consistency, Needs::default(), &stats)
            .await?;
        // Visible rows in id order, so files read in order are sorted too.
        let mut places = scan_matches(&snap, None)?;
        places.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let places: Vec<(usize, usize)> = places.into_iter().map(|(_, s, r)| (s, r)).collect();
        let mut out = Parts::new(self, &c.config, prefix, rows_per_file.max(1));
        for chunk in places.chunks(CHUNK_ROWS) {
            out.write(&snap, chunk).await?;
        }
        let files = out.finish().await?;
        let report = ExportReport {
            lsn: snap.lsn,
            rows: files.iter().map(|f| f.rows).sum(),
            files,
        };
        let marker = object_store::path::Path::from(format!("{root}/export.json"));
        let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::internal("export", e))?;
        if !put_create(self.object_store().as_ref(), &marker, Bytes::from(body)).await? {
            return Err(Error::ObjectExists {
                path: marker.to_string(),
            });
        }
        Ok(report)
    }
}

/// The export's files, each written to the store once full.
struct Parts<'a> {
    floe: &'a Floe,
    config: &'a CollectionConfig,
    names: Vec<String>,
    prefix: &'a str,
    rows_per_file: usize,
    writer: Option<AsyncArrowWriter<BufWriter>>,
    rows_in_file: usize,
    files: Vec<ExportedFile>,
}

impl<'a> Parts<'a> {
    fn new(
        floe: &'a Floe,
        config: &'a CollectionConfig,
        prefix: &'a str,
        rows_per_file: usize,
    ) -> Self {
        Self {
            floe,
            config,
            names: config.attributes.iter().map(|a| a.name.clone()).collect(),
            prefix,
            rows_per_file,
            writer: None,
            rows_in_file: 0,
            files: Vec::new(),
        }
    }

    async fn write(&mut self, snap: &Snapshot, places: &[(usize, usize)]) -> Result<()> {
        let rows: Vec<Row> = rows_at(snap, places, &self.names).await?;
        let mut start = 0;
        while start < rows.len() {
            let room = self.rows_per_file - self.rows_in_file;
            let end = (start + room).min(rows.len());
            let batch = rows_batch(self.config, &rows[start..end])?;
            let part = export_part(self.prefix, self.files.len());
            self.writer()?
                .write(&batch)
                .await
                .map_err(|e| write_error(&part, e))?;
            self.rows_in_file += end - start;
            start = end;
            if self.rows_in_file == self.rows_per_file {
                self.flush_file().await?;
            }
        }
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut AsyncArrowWriter<BufWriter>> {
        if self.writer.is_none() {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(
                    (ROW_GROUP_VECTOR_BYTES / (self.config.dimension as usize * 4)).max(1024),
                ))
                .build();
            let path = export_part(self.prefix, self.files.len());
            let sink = BufWriter::new(Arc::clone(self.floe.object_store()), path);
            self.writer = Some(AsyncArrowWriter::try_new(
                sink,
                upsert_schema(self.config),
                Some(props),
            )?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::internal("export", "no writer"))
    }

    async fn flush_file(&mut self) -> Result<()> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        // `finish` writes the footer and completes the upload.
        let path = export_part(self.prefix, self.files.len());
        writer.finish().await.map_err(|e| write_error(&path, e))?;
        let bytes = writer.bytes_written();
        self.files.push(ExportedFile {
            path: path.to_string(),
            rows: self.rows_in_file as u64,
            bytes: bytes as u64,
        });
        self.rows_in_file = 0;
        Ok(())
    }

    /// Writes the last file (an empty collection gets one file of no rows,
    /// so an export always has its schema).
    async fn finish(mut self) -> Result<Vec<ExportedFile>> {
        if self.writer.is_some() || self.files.is_empty() {
            self.writer()?;
            self.flush_file().await?;
        }
        Ok(self.files)
    }
}

/// A failed part write as what it is: the object store's error (retryable
/// or not) when the upload failed, a Parquet error otherwise.
pub(crate) fn write_error(
    path: &object_store::path::Path,
    e: parquet::errors::ParquetError,
) -> Error {
    use parquet::errors::ParquetError;
    match e {
        ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => match io.into_inner().map(|i| i.downcast::<object_store::Error>()) {
                Some(Ok(store)) => Error::store("put", path, *store),
                Some(Err(other)) => Error::io(path, std::io::Error::other(other)),
                None => Error::io(path, std::io::Error::other("write failed")),
            },
            Err(other) => Error::Parquet(ParquetError::External(other)),
        },
        other => Error::Parquet(other),
    }
}
