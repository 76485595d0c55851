//! The JSON shapes of the API, shared by the HTTP layer and [`crate::db`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{AttributeDef, CollectionConfig, IdType, IndexParams, Metric};
use crate::error::{Error, Result};
use crate::log::Lsn;
use crate::rows::{ColumnsIn, Id, RowIn};

/// Body of `PUT /v1/collections/{name}` (the name comes from the path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub dimension: u32,
    pub metric: Metric,
    #[serde(default = "default_id_type")]
    pub id_type: IdType,
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
    #[serde(default)]
    pub index: IndexParams,
}

fn default_id_type() -> IdType {
    IdType::U64
}

impl CreateCollection {
    pub fn into_config(self, name: &str) -> CollectionConfig {
        CollectionConfig {
            name: name.to_string(),
            dimension: self.dimension,
            metric: self.metric,
            id_type: self.id_type,
            attributes: self.attributes,
            index: self.index,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    #[serde(flatten)]
    pub config: CollectionConfig,
    pub stats: CollectionStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionStats {
    /// Live rows (newest version not deleted), as of the log's last LSN.
    pub rows: u64,
    pub segments: usize,
    /// Rows stored in segments, superseded versions included.
    pub segment_rows: u64,
    pub segment_bytes: u64,
    pub delete_files: usize,
    pub manifest_version: u64,
    /// The newest LSN in the log.
    pub log_lsn: Lsn,
    /// Every write with LSN ≤ this is in segments.
    pub checkpoint_lsn: Lsn,
    pub unflushed_records: u64,
    pub unflushed_rows: u64,
}

/// Body of `POST …/upsert`: `rows` or `columns`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    pub rows: Option<Vec<RowIn>>,
    pub columns: Option<ColumnsIn>,
    pub request_id: Option<String>,
}

/// Body of `POST …/delete`: `ids` or `filter`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub ids: Option<Vec<Id>>,
    pub filter: Option<String>,
    pub request_id: Option<String>,
}

/// The acknowledgement of a write: `lsn` is the write token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriteAck {
    pub lsn: Lsn,
    pub rows: usize,
    /// The request id had been seen: nothing was written again.
    #[serde(default)]
    pub duplicate: bool,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the query started.
    Strong,
    /// Sees at least the write whose token is this LSN.
    AtLeast(Lsn),
    /// Sees only what is in segments (cheapest).
    Eventual,
}

impl Consistency {
    pub fn parse(value: Option<&Value>) -> Result<Consistency> {
        match value {
            None | Some(Value::Null) => Ok(Consistency::Strong),
            Some(Value::String(s)) if s == "strong" => Ok(Consistency::Strong),
            Some(Value::String(s)) if s == "eventual" => Ok(Consistency::Eventual),
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("at_least_lsn") => {
                match o["at_least_lsn"].as_u64() {
                    Some(n) => Ok(Consistency::AtLeast(n)),
                    None => Err(Error::invalid(
                        "consistency.at_least_lsn",
                        "must be a non-negative integer",
                    )),
                }
            }
            Some(other) => Err(Error::invalid(
                "consistency",
                format!(
                    "expected \"strong\", \"eventual\" or {{\"at_least_lsn\": N}}, got {other}"
                ),
            )),
        }
    }
}

/// Body of `POST …/query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub vector: Option<Vec<f64>>,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    pub filter: Option<String>,
    /// `true` (default: all), `false`, or a list of attribute names.
    pub include_attributes: Option<Value>,
    #[serde(default)]
    pub include_vector: bool,
    pub consistency: Option<Value>,
    /// For filter-only queries: the `next_cursor` of the previous page.
    pub cursor: Option<Id>,
    /// Indexed segments: clusters to probe (default: from `recall_target`).
    pub nprobe: Option<usize>,
    /// Indexed segments: candidates re-ranked at full precision.
    pub rerank: Option<usize>,
    /// Indexed segments: the calibrated recall@10 to reach (default 0.95).
    pub recall_target: Option<f32>,
    /// Return what the query cost: object-store requests, bytes, cache hits
    /// per tier, round trips, time per phase.
    #[serde(default)]
    pub explain: bool,
}

fn default_top_k() -> usize {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowOut {
    pub id: Id,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub distance: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attributes: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResponse {
    pub results: Vec<RowOut>,
    /// Filter-only queries: pass back as `cursor` for the next page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_cursor: Option<Id>,
    /// The log position the results reflect.
    pub lsn: Lsn,
    /// With `"explain": true`: what the query cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub explain: Option<crate::cache::QueryStats>,
}

/// What `POST /v1/collections/{name}/warm` loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarmReport {
    /// Indexed segments whose header, keys and codes are now cached.
    pub indexed_segments: usize,
    /// Other segments and delete files, now in memory.
    pub other_files: usize,
    pub stats: crate::cache::QueryStats,
    pub cache: crate::cache::CacheFootprint,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlushReport {
    pub checkpoint_lsn: Lsn,
    pub segments_written: usize,
    pub rows_flushed: u64,
    pub deletes_flushed: u64,
}

/// Checks a client request id: it becomes a NATS header value.
pub fn check_request_id(id: Option<&str>) -> Result<()> {
    if let Some(id) = id
        && (id.is_empty() || id.len() > 128 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)))
    {
        return Err(Error::invalid(
            "request_id",
            "must be 1 to 128 visible ASCII characters without spaces",
        ));
    }
    Ok(())
}
