//! A bulk import job as it is asked for and as it reports itself: the
//! request (`POST /v1/collections/{name}/imports`), kept as the job's
//! `job.json`, and the status its runner keeps in `status.json`.

use serde::{Deserialize, Serialize};

use super::{Columns, Format, RowError};
use crate::error::{Error, Result};

/// Bad rows a job reports one by one; beyond them it counts.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// What to import and how: the body of `POST …/imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The files: a key in the store (`uploads/part-*.parquet`) or an
    /// `s3://` URL inside the store's bucket and prefix; the last segment
    /// may hold `*` wildcards.
    pub source: String,
    /// `parquet`, `npy` or `jsonl`; by default the extension says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The id column (Parquet) or field (JSON Lines); default `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    /// The vector column; default `vector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_column: Option<String>,
    /// `.npy` vectors: the key of a 1-D `.npy` of their ids (one file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<String>,
    /// `.npy` vectors without `ids`: the first row's id (then counting up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_offset: Option<u64>,
    /// Import the good rows even if some are bad (they are reported).
    #[serde(default)]
    pub skip_bad_rows: bool,
    /// Skip file columns that are not attributes instead of refusing.
    #[serde(default)]
    pub ignore_unknown_columns: bool,
    /// The job's id: a retry with the same id (and the same request) is
    /// answered with the job, never started twice. Minted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl ImportRequest {
    /// Checks what can be checked without reading files: the job id and
    /// the format's name.
    pub fn check(&self) -> Result<()> {
        if let Some(id) = &self.job_id {
            check_job_id(id)?;
        }
        self.format()?;
        if self.source.trim().is_empty() {
            return Err(Error::invalid("source", "name the files to import"));
        }
        for (field, value) in [
            ("id_column", &self.id_column),
            ("vector_column", &self.vector_column),
        ] {
            if value.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(Error::invalid(field, "must not be empty"));
            }
        }
        if self.ids.is_some() && self.id_offset.is_some() {
            return Err(Error::invalid(
                "id_offset",
                "give ids or id_offset, not both",
            ));
        }
        Ok(())
    }

    /// The format asked for, if any.
    pub fn format(&self) -> Result<Option<Format>> {
        match self.format.as_deref() {
            None => Ok(None),
            Some("parquet") => Ok(Some(Format::Parquet)),
            Some("npy") => Ok(Some(Format::Npy)),
            Some("jsonl") => Ok(Some(Format::JsonLines)),
            Some(other) => Err(Error::invalid(
                "format",
                format!("{other:?}: expected parquet, npy or jsonl"),
            )),
        }
    }

    /// The columns holding ids and vectors.
    pub fn columns(&self) -> Columns {
        let default = Columns::default();
        Columns {
            id: self.id_column.clone().unwrap_or(default.id),
            vector: self.vector_column.clone().unwrap_or(default.vector),
            ignore_unknown: self.ignore_unknown_columns,
        }
    }
}

/// Job ids are short and safe in a key: letters, digits, `-` and `_`.
pub fn check_job_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(
            "job_id",
            "1 to 64 characters of letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// A new job id: time-ordered, so listings sort by creation.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    /// Accepted; no runner has started it yet.
    Queued,
    /// Reading and checking the files, writing segments.
    Running,
    /// Segments written; its marker is going into the log and a flush is
    /// putting them in the manifest.
    Committing,
    /// Its rows are visible (from `lsn` on).
    Done,
    /// Nothing was imported (`error` says why).
    Failed,
}

impl ImportState {
    /// Whether the job has ended.
    pub fn ended(self) -> bool {
        matches!(self, ImportState::Done | ImportState::Failed)
    }
}

/// A bad row of an import, with its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRowError {
    /// The file, as the source named it.
    pub file: String,
    /// The row's number in the file, from 0 (JSON Lines: the line's).
    pub row: u64,
    /// The column or field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ImportRowError {
    /// `error` of a row of `file`.
    pub fn new(file: &str, error: RowError) -> Self {
        Self {
            file: file.to_string(),
            row: error.row,
            field: error.field,
            message: error.message,
        }
    }
}

/// What `GET …/imports/{job_id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStatus {
    /// The job.
    pub job_id: String,
    /// Where it is.
    pub state: ImportState,
    /// The request's source.
    pub source: String,
    /// Files the source names (0 until the runner lists them).
    pub files: u64,
    /// Files read to the end.
    pub files_done: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Good rows written to segments (imported once the job is done).
    pub rows_imported: u64,
    /// Bad rows.
    pub rows_rejected: u64,
    /// The first bad rows.
    pub errors: Vec<ImportRowError>,
    /// Segments written.
    pub segments: u64,
    /// The import's LSN once committed: its rows' version, and a token for
    /// `at_least_lsn` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The log's last LSN before the job appended its marker: a resumed
    /// job looks for its marker after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_before: Option<u64>,
    /// When it was accepted (ms since the epoch).
    pub created_at_ms: u64,
    /// When the runner last wrote this (its heartbeat).
    pub updated_at_ms: u64,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

impl ImportStatus {
    /// A job just accepted.
    pub fn queued(job_id: &str, source: &str, now_ms: u64) -> Self {
        Self {
            job_id: job_id.to_string(),
            state: ImportState::Queued,
            source: source.to_string(),
            files: 0,
            files_done: 0,
            rows_read: 0,
            rows_imported: 0,
            rows_rejected: 0,
            errors: Vec::new(),
            segments: 0,
            lsn: None,
            error: None,
            log_before: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            finished_at_ms: None,
        }
    }

    /// Counts bad rows, keeping the first [`MAX_REPORTED_ERRORS`].
    pub fn reject(&mut self, file: &str, errors: Vec<RowError>) {
        self.rows_rejected += errors.len() as u64;
        let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(
            errors
                .into_iter()
                .take(room)
                .map(|e| ImportRowError::new(file, e)),
        );
    }
}

/// The job as stored (`job.json`): the request, with its id minted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    /// The job's id.
    pub job_id: String,
    /// Unique to this job: a job id used again once the first job's
    /// records are gone names other files and another import.
    pub nonce: String,
    /// What was asked.
    pub request: ImportRequest,
    /// When it was accepted.
    pub created_at_ms: u64,
}

impl ImportJob {
    /// Identifies this import in the log and the manifest.
    pub fn key(&self) -> String {
        format!("{}.{}", self.job_id, self.nonce)
    }

    /// The name of its part `k`'s data file, as run `run` writes it.
    pub fn part_file(&self, k: usize, run: u32) -> String {
        format!("part-{}-{k:05}-{run}.parquet", self.nonce)
    }

    /// The segment id of its part `k`.
    pub fn part_segment(&self, k: usize) -> String {
        format!("{}-{}-{k:05}", self.job_id, self.nonce)
    }
}

/// The files a job reads, fixed when it first lists them (`files.json`):
/// a resumed job reads exactly these, or fails if one changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFiles {
    /// Keys in the store and sizes, in reading order.
    pub files: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<ImportRequest> {
        let r: ImportRequest =
            serde_json::from_value(json).map_err(|e| Error::invalid("body", e))?;
        r.check()?;
        Ok(r)
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = request(serde_json::json!({"source": "uploads/*.parquet"})).unwrap();
        assert_eq!(ok.columns().id, "id");
        for (body, field) in [
            (
                serde_json::json!({"source": "a", "job_id": "a/b"}),
                "job_id",
            ),
            (serde_json::json!({"source": "a", "job_id": ""}), "job_id"),
            (
                serde_json::json!({"source": "a", "format": "csv"}),
                "format",
            ),
            (serde_json::json!({"source": " "}), "source"),
            (
                serde_json::json!({"source": "a", "id_column": ""}),
                "id_column",
            ),
            (
                serde_json::json!({"source": "a.npy", "ids": "i.npy", "id_offset": 3}),
                "id_offset",
            ),
            (serde_json::json!({"source": "a", "bogus": 1}), "body"),
        ] {
            match request(body.clone()) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_keeps_the_first_errors_and_counts_the_rest() {
        let mut s = ImportStatus::queued("j", "src", 1);
        let errors = |n: u64| {
            (0..n)
                .map(|row| RowError {
                    row,
                    field: "vector".into(),
                    message: "NaN".into(),
                })
                .collect::<Vec<_>>()
        };
        s.reject("a.parquet", errors(15));
        s.reject("b.parquet", errors(15));
        assert_eq!(s.rows_rejected, 30);
        assert_eq!(s.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(s.errors[15].file, "b.parquet");
        assert!(ImportState::Done.ended() && !ImportState::Committing.ended());
    }
}
