//! Object storage: opening a store from configuration, the collection file
//! layout, and (feature `testkit`) the wrappers that count requests and
//! inject faults.
//!
//! Everything else in Floe sees only `Arc<dyn ObjectStore>`; immutable files
//! are written with create-only puts ([`put_create`]).

#[cfg(any(test, feature = "testkit"))]
mod counting;
#[cfg(any(test, feature = "testkit"))]
mod faulty;
mod layout;
mod metered;

// Test decorators: built for tests and the bench (feature `testkit`), not
// into the function binaries.
#[cfg(any(test, feature = "testkit"))]
pub use counting::{CountingStore, Request, RequestStats, sequential_round_trips};
#[cfg(any(test, feature = "testkit"))]
pub use faulty::{FaultConfig, FaultyStore, Hold, OpFilter};
pub use layout::{
    CollectionFile, CollectionKey, CollectionPaths, api_key, api_keys_root, catalog_entry,
    catalog_entry_name, catalog_root, collection_head, drop_marker, drop_markers, export_part,
    export_root, parse_drop_marker, parse_key,
};

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where Floe keeps its files. `url` is one of `s3://bucket[/prefix]`,
/// `file:///absolute/dir` (or a plain path) and `memory://`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket[/prefix]`, `file:///dir` (or a plain path) or `memory://`.
    pub url: String,
    /// S3 API endpoint for emulators and S3-compatible servers; AWS when unset.
    pub endpoint: Option<String>,
    /// S3 region; from the environment when unset.
    pub region: Option<String>,
    /// S3 credentials; from the environment (Lambda's role) when unset.
    pub access_key_id: Option<String>,
    /// S3 credentials; from the environment (Lambda's role) when unset.
    pub secret_access_key: Option<String>,
    /// Allow plain-HTTP endpoints (emulators on loopback).
    pub allow_http: bool,
}

impl ObjectStoreConfig {
    /// Checks the URL.
    pub fn validate(&self) -> Result<()> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<Location> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(Error::invalid("object_store.url", "must not be empty"));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Location::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid("object_store.url", "s3 url has no bucket"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(path) => path,
            None if url.contains("://") => {
                return Err(Error::invalid(
                    "object_store.url",
                    format!("unsupported scheme in {url:?}; use s3://, file:// or memory://"),
                ));
            }
            None => url,
        };
        Ok(Location::Dir(std::path::PathBuf::from(dir)))
    }
}

enum Location {
    Memory,
    Dir(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Opens the configured store, rooted at the configured prefix, its
/// requests reported to the metrics.
pub fn open_object_store(config: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>> {
    let store: Arc<dyn ObjectStore> = match config.parse()? {
        Location::Memory => Arc::new(InMemory::new()),
        Location::Dir(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| Error::store("open", dir.display(), e))?;
            Arc::new(store)
        }
        Location::S3 { bucket, prefix } => {
            // Credentials and region come from the environment (Lambda's role,
            // AWS_* variables) unless the configuration names them.
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &config.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            builder = builder.with_allow_http(config.allow_http);
            let store = builder
                .build()
                .map_err(|e| Error::store("open", format!("s3://{bucket}"), e))?;
            if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(PrefixStore::new(store, prefix.as_str()))
            }
        }
    };
    Ok(Arc::new(metered::MeteredStore::new(store)))
}

/// The trait's default `get_ranges` (nearby ranges coalesced), with each
/// GET sent through `store`'s own `get_opts`: for wrappers that must see
/// every request even when their inner store overrides `get_ranges`.
pub(crate) async fn coalesced_get_ranges(
    store: &dyn ObjectStore,
    location: &Path,
    ranges: &[std::ops::Range<u64>],
) -> object_store::Result<Vec<Bytes>> {
    object_store::coalesce_ranges(
        ranges,
        |range| async move {
            let options = object_store::GetOptions {
                range: Some(range.into()),
                ..Default::default()
            };
            store.get_opts(location, options).await?.bytes().await
        },
        object_store::OBJECT_STORE_COALESCE_DEFAULT,
    )
    .await
}

/// Writes an immutable object: succeeds only if nothing exists at `path`.
/// Returns `Ok(false)` when the object already existed.
pub async fn put_create(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<bool> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(Error::store("put", path, e)),
    }
}

/// Files larger than this are written as multipart uploads: S3 refuses a
/// single PUT over 5 GB, and parts go up in parallel.
pub const MULTIPART_THRESHOLD: usize = 64 << 20;
/// Size of each part of a multipart upload (S3 wants at least 5 MiB).
pub const PART_BYTES: usize = 16 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 8;

/// Writes a new immutable file (segment, index, delete file: their keys
/// embed a fresh id). Up to [`MULTIPART_THRESHOLD`] it is one create-only
/// PUT (`false`: the key exists); above, a multipart upload of
/// [`PART_BYTES`] parts, which object stores cannot make create-only —
/// the fresh id is what keeps it from replacing anything.
pub async fn put_file(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<bool> {
    put_file_in_parts(store, path, bytes, MULTIPART_THRESHOLD, PART_BYTES).await
}

/// [`put_file`] with a given threshold and part size.
pub async fn put_file_in_parts(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
    threshold: usize,
    part_bytes: usize,
) -> Result<bool> {
    if bytes.len() <= threshold {
        return put_create(store, path, bytes).await;
    }
    let fail = |e| Error::store("multipart put", path, e);
    let upload = store
        .put_multipart_opts(path, Default::default())
        .await
        .map_err(fail)?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, part_bytes.max(1));
    let mut at = 0;
    while at < bytes.len() {
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(fail(e));
        }
        let end = (at + part_bytes.max(1)).min(bytes.len());
        writer.put(bytes.slice(at..end));
        at = end;
    }
    writer.finish().await.map_err(fail)?;
    Ok(true)
}

/// Reads a JSON object (a catalog entry, a manifest, a job record); one
/// that does not parse is corrupt.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<T> {
    let bytes = get_bytes(store, path).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path.to_string(), e))
}

/// Reads a whole object.
pub async fn get_bytes(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    let result = store
        .get(path)
        .await
        .map_err(|e| Error::store("get", path, e))?;
    result
        .bytes()
        .await
        .map_err(|e| Error::store("get", path, e))
}
