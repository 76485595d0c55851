//! The one error type of `floe-core`, and the few kinds callers act on.

use std::fmt;

/// What a caller can do about an error; the HTTP layer maps these to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is wrong; retrying the same request will fail again (HTTP 400).
    BadRequest,
    /// No credentials, or credentials that are not valid (HTTP 401).
    Unauthenticated,
    /// Valid credentials that do not allow this (HTTP 403).
    Forbidden,
    /// The named thing does not exist (HTTP 404).
    NotFound,
    /// The request clashes with the current state (HTTP 409).
    Conflict,
    /// A dependency (object store, log) failed or timed out; retry later (HTTP 503).
    Unavailable,
    /// A bug or corrupt data (HTTP 500).
    Internal,
}

/// Every error of `floe-core`, with context; [`Error::kind`] says what a
/// caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the variants' fields are named by their messages
pub enum Error {
    /// A request or setting is wrong: `field` names it (`rows[3].vector`).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },

    /// The request carries no valid API key.
    #[error("{0}")]
    Unauthenticated(String),

    /// The request's API key does not allow this.
    #[error("{0}")]
    Forbidden(String),

    /// No API key with this id.
    #[error("API key {0:?} not found")]
    KeyNotFound(String),

    /// No collection of this name.
    #[error("collection {0:?} not found")]
    CollectionNotFound(String),

    /// No import job with this id.
    #[error("import {0:?} not found")]
    ImportNotFound(String),

    /// Attributes were added to the collection since this process read its
    /// configuration: the operation is redone with the new one.
    #[error("the collection's attributes changed; retry")]
    SchemaChanged,

    /// An import job with this id exists with another source or options.
    #[error("import {job:?} exists with other options: {detail}")]
    ImportExists { job: String, detail: String },

    /// A create with another configuration than the existing collection's.
    #[error("collection {name:?} already exists with a different configuration")]
    CollectionExists { name: String },

    /// A manifest commit lost to a concurrent one it cannot rebase over.
    #[error("commit of manifest version {version} conflicts: {reason}")]
    CommitConflict { version: u64, reason: String },

    /// A conditional write whose condition does not hold: `field` names it
    /// (`rows[3].if_version`).
    #[error("condition {field} failed: {message}")]
    ConditionFailed { field: String, message: String },

    /// A row a request names does not exist (`field` names where).
    #[error("{message}")]
    RowNotFound { field: String, message: String },

    /// A create-only write found the object there.
    #[error("object {path} already exists")]
    ObjectExists { path: String },

    /// A newer writer or compactor claimed the role.
    #[error("fenced: writer epoch {ours} is older than the manifest's epoch {current}")]
    Fenced { ours: u64, current: u64 },

    /// A write too large for one log record.
    #[error("log record of {size} bytes exceeds the log's limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },

    /// A request id seen within the dedupe window, sent with another body.
    #[error(
        "request_id {request_id:?} was already used for a different request (within the dedupe window): use a new request_id for a new request"
    )]
    RequestIdReused { request_id: String },

    /// A conditional append found records after the expected last LSN.
    #[error("the log moved past lsn {expected} before the append")]
    LogMoved { expected: u64 },

    /// A log read before the log's first record (trimmed after a flush).
    #[error("log position {requested} was trimmed; the log now starts at {first}")]
    LsnTrimmed { requested: u64, first: u64 },

    /// An object-store request failed.
    #[error("object store {op} {path}: {source}")]
    ObjectStore {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// A log request failed.
    #[error("log {op}: {message}")]
    Log { op: &'static str, message: String },

    /// A stored file or record is damaged (bad magic, short read, a
    /// column missing from a segment).
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },

    /// An invariant of Floe's own code broke: a bug, not bad data.
    #[error("internal error in {what}: {detail}")]
    Internal { what: String, detail: String },

    /// The local cache (memory or disk tier) failed: a full or unwritable
    /// disk, say. Retrying, or another instance, can succeed.
    #[error("cache {op}: {message}")]
    Cache { op: &'static str, message: String },

    /// Local file i/o failed (the embedded log, a data directory).
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Encoding or decoding a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// An Arrow operation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// One failure handed to every waiter of a shared (coalesced) fetch.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

/// `floe-core`'s result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::RecordTooLarge { .. } => ErrorKind::BadRequest,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::CollectionNotFound(_)
            | Error::KeyNotFound(_)
            | Error::ImportNotFound(_)
            | Error::RowNotFound { .. } => ErrorKind::NotFound,
            Error::CollectionExists { .. }
            | Error::ImportExists { .. }
            | Error::SchemaChanged
            | Error::CommitConflict { .. }
            | Error::Fenced { .. }
            | Error::ObjectExists { .. }
            | Error::ConditionFailed { .. }
            | Error::RequestIdReused { .. }
            | Error::LogMoved { .. }
            | Error::LsnTrimmed { .. } => ErrorKind::Conflict,
            Error::ObjectStore { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            },
            Error::Log { .. } | Error::Io { .. } | Error::Cache { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. }
            | Error::Internal { .. }
            | Error::Parquet(_)
            | Error::Arrow(_) => ErrorKind::Internal,
            Error::Shared(inner) => inner.kind(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn store(
        op: &'static str,
        path: impl fmt::Display,
        source: object_store::Error,
    ) -> Self {
        Error::ObjectStore {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn log(op: &'static str, message: impl fmt::Display) -> Self {
        Error::Log {
            op,
            message: message.to_string(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn internal(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Error::Internal {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn cache(op: &'static str, message: impl fmt::Display) -> Self {
        Error::Cache {
            op,
            message: message.to_string(),
        }
    }

    pub(crate) fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// True when the object did not exist (a NotFound from the object store).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Shared(inner) => inner.is_not_found(),
            other => matches!(
                other,
                Error::ObjectStore {
                    source: object_store::Error::NotFound { .. },
                    ..
                }
            ),
        }
    }
}
