//! Segments: immutable Parquet files of rows `(id, vector, _lsn, attributes…)`.
//!
//! Written from Arrow record batches with a create-only put; read back with
//! column projection and row selection through the async Parquet reader over
//! `object_store`, so a read fetches the footer and the byte ranges of the
//! pages it needs, never the whole file.

mod reader;
mod schema;
mod writer;

pub(crate) use reader::unwrap_external;
pub use reader::{ObjectReader, RowFilter, SegmentReader};
pub use schema::{COL_ID, COL_LSN, COL_VECTOR, check_batch, segment_schema};
pub use writer::{SegmentFile, SegmentWriteOptions, encode_segment, write_segment};

/// A fresh segment id: time-ordered (UUIDv7), so listings sort by creation.
pub fn new_segment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
