//! Floe's library: the write-ahead log, object storage and manifests, the
//! segment format and the collection catalog. The function binaries in
//! `functions/` are thin adapters over this crate.

mod error;

pub mod catalog;
pub mod log;
pub mod manifest;
pub mod segment;
pub mod storage;

pub use error::{Error, ErrorKind, Result};
