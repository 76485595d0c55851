//! Floe's library: the write-ahead log, object storage and manifests, the
//! segment format, the collection catalog, the write and read paths, and the
//! HTTP API. The function binaries in `functions/` are thin adapters over
//! this crate.

mod error;

pub mod api;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod db;
pub mod filter;
pub mod index;
pub mod kernels;
pub mod log;
pub mod manifest;
pub mod rows;
pub mod search;
pub mod segment;
pub mod storage;
pub mod types;

pub use config::Settings;
pub use db::Floe;
pub use error::{Error, ErrorKind, Result};
