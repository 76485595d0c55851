//! Export: every visible row of one consistent snapshot, written as Parquet
//! files (`id`, `vector`, the attributes: what `floe import` reads) under
//! `exports/<prefix>/` in the collection's object store.

use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::ArrowWriter;
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
use crate::storage::{export_part, export_root, put_file};

/// Rows fetched and encoded at a time.
const CHUNK_ROWS: usize = 8192;

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
        let root = export_root(prefix);
        let existing = self
            .object_store()
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        if !existing.objects.is_empty() || !existing.common_prefixes.is_empty() {
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
        Ok(ExportReport {
            lsn: snap.lsn,
            rows: files.iter().map(|f| f.rows).sum(),
            files,
        })
    }
}

/// The export's files, each written to the store once full.
struct Parts<'a> {
    floe: &'a Floe,
    config: &'a CollectionConfig,
    names: Vec<String>,
    prefix: &'a str,
    rows_per_file: usize,
    writer: Option<ArrowWriter<Vec<u8>>>,
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
            self.writer()?.write(&batch)?;
            self.rows_in_file += end - start;
            start = end;
            if self.rows_in_file == self.rows_per_file {
                self.flush_file().await?;
            }
        }
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<Vec<u8>>> {
        if self.writer.is_none() {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            self.writer = Some(ArrowWriter::try_new(
                Vec::new(),
                upsert_schema(self.config),
                Some(props),
            )?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::internal("export", "no writer"))
    }

    async fn flush_file(&mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let bytes = Bytes::from(writer.into_inner()?);
        let path = export_part(self.prefix, self.files.len());
        if !put_file(self.floe.object_store().as_ref(), &path, bytes.clone()).await? {
            return Err(Error::ObjectExists {
                path: path.to_string(),
            });
        }
        self.files.push(ExportedFile {
            path: path.to_string(),
            rows: self.rows_in_file as u64,
            bytes: bytes.len() as u64,
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
