//! Segments: immutable Parquet files of rows `(id, vector, _lsn, attributes…)`.
//!
//! Written from Arrow record batches with a create-only put; read back by
//! one reader ([`ParquetFile`]) over the read seam ([`RangeSource`]): column
//! projection and row selection fetch the footer and the byte ranges of the
//! pages a read needs, never the whole file.

mod reader;
mod schema;
mod source;
mod writer;

pub use reader::{ParquetFile, read_whole, row_ranges};
pub(crate) use schema::attribute_data_type;
pub use schema::{
    COL_ID, COL_LSN, COL_VECTOR, check_batch, conform, delete_schema, indexed_data_schema,
    segment_schema, upsert_schema, with_lsn,
};
pub use source::{RangeSource, StoreSource};
pub use writer::{
    SegmentFile, SegmentWriteOptions, encode_batches, encode_segment, upload_segment,
    write_segment, writer_properties,
};

/// A fresh segment id: time-ordered (UUIDv7), so listings sort by creation.
pub fn new_segment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
