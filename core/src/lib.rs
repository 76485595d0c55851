//! Floe's library: the write-ahead log, object storage and manifests, the
//! segment format, the collection catalog, the engine (write and read
//! paths, maintenance), and the HTTP API. The function binaries in
//! `functions/` are thin adapters over this crate.
//!
//! A query walks `api` (JSON → a checked `Query`) → `engine::read`
//! (snapshot, search, materialise) → `mvcc` / `index` / `segment` →
//! `cache` → the object store.

mod error;

pub mod api;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod engine;
mod filter;
pub mod id;
pub mod import;
mod index;
pub mod log;
pub mod manifest;
mod mvcc;
pub mod segment;
pub mod storage;
pub mod telemetry;
pub mod vector;

pub use config::Settings;
pub use engine::Floe;
pub use error::{Error, ErrorKind, Result};
