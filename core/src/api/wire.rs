//! The API's JSON shapes, and their conversion to and from the engine's
//! checked requests and typed results. Every field a user sends is checked
//! here, against the collection's configuration, with errors that name it;
//! the engine never sees JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::rows::{self, ColumnsIn, PatchRowIn, RowIn};
use super::vectors::{VectorEncoding, VectorIn, VectorOut};
use crate::cache::QueryStats;
use crate::catalog::{AttributeDef, CollectionConfig, IdType, IndexParams, Metric};
use crate::config::Limits;
use crate::engine::{
    Condition, Consistency, Delete, DeleteTarget, Patch, Query, QueryResult, Row, Upsert,
};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::id::{self, Id};
use crate::index::SearchKnobs;
use crate::log::Lsn;
use crate::vector::QueryVector;

/// Body of `PUT /v1/collections/{name}` (the name comes from the path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// Vector length, 1 to 16384.
    pub dimension: u32,
    /// How distance is measured.
    pub metric: Metric,
    /// `u64` (default) or `string` ids.
    #[serde(default = "default_id_type")]
    pub id_type: IdType,
    /// Typed attribute columns.
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
    /// Sealing and row-group sizes.
    #[serde(default)]
    pub index: IndexParams,
}

fn default_id_type() -> IdType {
    IdType::U64
}

impl CreateCollection {
    /// The collection's configuration, named by the path.
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

/// Body of `POST …/upsert`: `rows` or `columns`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// Row-wise: `[{id, vector, attributes}]`.
    pub rows: Option<Vec<RowIn>>,
    /// Columnar: `{ids, vectors, attributes}`.
    pub columns: Option<ColumnsIn>,
    /// An idempotency key: a retry with it is not written twice.
    pub request_id: Option<String>,
}

impl UpsertRequest {
    /// Checks every field against the collection and builds its rows.
    pub fn check(&self, config: &CollectionConfig) -> Result<Upsert> {
        check_request_id(self.request_id.as_deref())?;
        let rows = match (&self.rows, &self.columns) {
            (Some(rows), None) => rows::rows_to_batch(config, rows)?,
            (None, Some(columns)) => rows::columns_to_batch(config, columns)?,
            _ => {
                return Err(Error::invalid(
                    "rows",
                    "send exactly one of \"rows\" and \"columns\"",
                ));
            }
        };
        let conditions = self.conditions()?;
        Ok(Upsert {
            rows,
            request_id: self.request_id.clone(),
            conditions,
        })
    }

    /// The rows' `if_version`s, as conditions naming where they were said.
    fn conditions(&self) -> Result<Vec<Condition>> {
        let mut out = Vec::new();
        if let Some(rows) = &self.rows {
            for (i, row) in rows.iter().enumerate() {
                if let Some(version) = row.if_version {
                    out.push(Condition {
                        field: format!("rows[{i}].if_version"),
                        id: row.id.clone(),
                        version,
                    });
                }
            }
        }
        if let Some(columns) = &self.columns
            && let Some(versions) = &columns.if_versions
        {
            if versions.len() != columns.ids.len() {
                return Err(Error::invalid(
                    "columns.if_versions",
                    format!(
                        "has {} entries for {} ids",
                        versions.len(),
                        columns.ids.len()
                    ),
                ));
            }
            for (i, (version, id)) in versions.iter().zip(&columns.ids).enumerate() {
                if let Some(version) = version {
                    out.push(Condition {
                        field: format!("columns.if_versions[{i}]"),
                        id: id.clone(),
                        version: *version,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Body of `POST …/patch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// `[{id, attributes, if_version?}]`.
    pub rows: Vec<PatchRowIn>,
    /// An idempotency key: a retry with it is not written twice.
    pub request_id: Option<String>,
}

impl PatchRequest {
    /// Checks every field against the collection.
    pub fn check(&self, config: &CollectionConfig) -> Result<Patch> {
        check_request_id(self.request_id.as_deref())?;
        let values = rows::patch_values(config, &self.rows)?;
        let conditions = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                row.if_version.map(|version| Condition {
                    field: format!("rows[{i}].if_version"),
                    id: row.id.clone(),
                    version,
                })
            })
            .collect();
        let digest = crate::log::digest(&[
            b"patch",
            &serde_json::to_vec(&self.rows).unwrap_or_default(),
        ]);
        Ok(Patch {
            ids: self.rows.iter().map(|r| r.id.clone()).collect(),
            values,
            conditions,
            request_id: self.request_id.clone(),
            digest,
        })
    }
}

/// Body of `POST …/export`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// Where under `exports/` in the object store the files go: plain
    /// path segments (`films/2026-11-30`); nothing may be there yet.
    pub prefix: String,
    /// Which snapshot: `"strong"` (default), `"eventual"` or
    /// `{"at_least_lsn": N}`.
    pub consistency: Option<Value>,
    /// Rows per file (default 1,000,000).
    pub rows_per_file: Option<usize>,
}

/// The most rows one export file holds.
pub const MAX_EXPORT_ROWS_PER_FILE: usize = 10_000_000;

impl ExportRequest {
    /// The checked prefix, consistency and file size.
    pub fn check(&self) -> Result<(String, Consistency, usize)> {
        let prefix = self.prefix.trim_matches('/');
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-=".contains(&b))
        };
        if prefix.is_empty() || prefix.len() > 256 || !prefix.split('/').all(plain) {
            return Err(Error::invalid(
                "prefix",
                "1 to 256 characters of path segments made of letters, digits and . _ - =",
            ));
        }
        let rows = self.rows_per_file.unwrap_or(1_000_000);
        if !(1..=MAX_EXPORT_ROWS_PER_FILE).contains(&rows) {
            return Err(Error::invalid(
                "rows_per_file",
                format!("must be between 1 and {MAX_EXPORT_ROWS_PER_FILE}"),
            ));
        }
        Ok((
            prefix.to_string(),
            consistency_in_body(self.consistency.as_ref())?,
            rows,
        ))
    }
}

/// Body of `POST …/delete`: `ids` or `filter`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The ids to delete.
    pub ids: Option<Vec<Id>>,
    /// Delete every row this filter matches.
    pub filter: Option<String>,
    /// An idempotency key: a retry with it is not written twice.
    pub request_id: Option<String>,
}

impl DeleteRequest {
    /// Checks every field against the collection.
    pub fn check(&self, config: &CollectionConfig) -> Result<Delete> {
        check_request_id(self.request_id.as_deref())?;
        let target = match (&self.ids, &self.filter) {
            (Some(ids), None) => DeleteTarget::Ids(id::ids_to_array(config, ids, "ids")?),
            (None, Some(text)) => DeleteTarget::Filter {
                filter: Filter::parse(text, config)?,
                text: text.clone(),
            },
            _ => {
                return Err(Error::invalid(
                    "ids",
                    "send exactly one of \"ids\" and \"filter\"",
                ));
            }
        };
        Ok(Delete {
            target,
            request_id: self.request_id.clone(),
        })
    }
}

/// Body of `POST …/query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The query vector (numbers, or base64 of little-endian `f32`s);
    /// absent for a filter-only query (a scan in id order).
    pub vector: Option<VectorIn>,
    /// How many rows to return (default 10).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// A filter expression over attributes and `id`.
    pub filter: Option<String>,
    /// `true` (default: all), `false`, or a list of attribute names.
    pub include_attributes: Option<Value>,
    /// Return each row's vector too.
    #[serde(default)]
    pub include_vector: bool,
    /// How returned vectors are written: `"json"` (default) or `"base64"`.
    #[serde(default)]
    pub vector_encoding: VectorEncoding,
    /// `"strong"` (default), `"eventual"` or `{"at_least_lsn": N}`.
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

impl QueryRequest {
    /// Checks every field against the collection and the server's limits.
    pub fn check(&self, config: &CollectionConfig, limits: &Limits) -> Result<Query> {
        let consistency = consistency_in_body(self.consistency.as_ref())?;
        if self.vector.is_none() && self.filter.is_none() {
            return Err(Error::invalid(
                "vector",
                "send a \"vector\" to search, a \"filter\" to scan, or both",
            ));
        }
        let max_k = limits.max_top_k;
        if self.top_k == 0 || self.top_k > max_k {
            return Err(Error::invalid(
                "top_k",
                format!("must be between 1 and {max_k}, got {}", self.top_k),
            ));
        }
        let filter = self
            .filter
            .as_deref()
            .map(|f| Filter::parse(f, config))
            .transpose()?;
        let attributes = attribute_selection(config, self.include_attributes.as_ref())?;
        let vector = match &self.vector {
            Some(v) => {
                if self.cursor.is_some() {
                    return Err(Error::invalid(
                        "cursor",
                        "only filter-only queries (without a vector) are paginated",
                    ));
                }
                Some(query_vector(config, v)?)
            }
            None => None,
        };
        if let Some(cursor) = &self.cursor {
            cursor.check(config.id_type, "cursor")?;
        }
        let knobs = self.search_knobs()?;
        Ok(Query {
            vector,
            top_k: self.top_k,
            filter,
            attributes,
            include_vector: self.include_vector,
            consistency,
            cursor: self.cursor.clone(),
            knobs,
            explain: self.explain,
        })
    }

    /// The index search knobs the query asks for.
    fn search_knobs(&self) -> Result<SearchKnobs> {
        let mut knobs = SearchKnobs::default();
        if let Some(n) = self.nprobe {
            if !(1..=65_536).contains(&n) {
                return Err(Error::invalid("nprobe", "must be between 1 and 65536"));
            }
            knobs.nprobe = Some(n);
        }
        if let Some(r) = self.rerank {
            if !(1..=10_000).contains(&r) {
                return Err(Error::invalid("rerank", "must be between 1 and 10000"));
            }
            knobs.rerank = Some(r);
        }
        if let Some(t) = self.recall_target {
            if !(t > 0.0 && t <= 1.0) {
                return Err(Error::invalid("recall_target", "must be in (0, 1]"));
            }
            knobs.recall_target = t;
        }
        Ok(knobs)
    }
}

/// A query vector: the collection's dimension, finite 32-bit components.
fn query_vector(config: &CollectionConfig, v: &VectorIn) -> Result<QueryVector> {
    let values = v.decode(config.dimension as usize, "vector")?;
    Ok(QueryVector::new(values, config.metric))
}

/// Which attributes a response carries: all by default.
fn attribute_selection(config: &CollectionConfig, include: Option<&Value>) -> Result<Vec<String>> {
    let all = || config.attributes.iter().map(|a| a.name.clone()).collect();
    match include {
        None | Some(Value::Bool(true)) => Ok(all()),
        Some(Value::Bool(false)) => Ok(Vec::new()),
        Some(Value::Array(names)) => names
            .iter()
            .enumerate()
            .map(|(i, n)| match n.as_str() {
                Some(name) if config.attribute(name).is_some() => Ok(name.to_string()),
                _ => Err(Error::invalid(
                    format!("include_attributes[{i}]"),
                    format!("unknown attribute {n}"),
                )),
            })
            .collect(),
        Some(other) => Err(Error::invalid(
            "include_attributes",
            format!("expected true, false or a list of names, got {other}"),
        )),
    }
}

/// The consistency level, from either form a request carries it in: a
/// level name (`strong`, `eventual`) and/or a write token (`at_least_lsn`,
/// which wins). Absent: strong.
pub fn consistency(level: Option<&str>, at_least_lsn: Option<u64>) -> Result<Consistency> {
    match (level, at_least_lsn) {
        (_, Some(lsn)) => Ok(Consistency::AtLeast(lsn)),
        (None | Some("strong"), None) => Ok(Consistency::Strong),
        (Some("eventual"), None) => Ok(Consistency::Eventual),
        (Some(other), None) => Err(Error::invalid(
            "consistency",
            format!("expected \"strong\", \"eventual\" or {{\"at_least_lsn\": N}}, got {other:?}"),
        )),
    }
}

/// The body form: `"strong"`, `"eventual"` or `{"at_least_lsn": N}`.
fn consistency_in_body(value: Option<&Value>) -> Result<Consistency> {
    match value {
        None | Some(Value::Null) => consistency(None, None),
        Some(Value::String(s)) => consistency(Some(s), None),
        Some(Value::Object(o)) if o.len() == 1 && o.contains_key("at_least_lsn") => {
            match o["at_least_lsn"].as_u64() {
                Some(n) => consistency(None, Some(n)),
                None => Err(Error::invalid(
                    "consistency.at_least_lsn",
                    "must be a non-negative integer",
                )),
            }
        }
        Some(other) => Err(Error::invalid(
            "consistency",
            format!("expected \"strong\", \"eventual\" or {{\"at_least_lsn\": N}}, got {other}"),
        )),
    }
}

/// Checks a client request id: it becomes a NATS header value.
fn check_request_id(id: Option<&str>) -> Result<()> {
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

/// A returned row as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowOut {
    /// The row's id.
    pub id: Id,
    /// The LSN of the write that produced this version of the row.
    pub version: Lsn,
    /// Its distance to the query vector (vector queries).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub distance: Option<f32>,
    /// The requested attributes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attributes: Option<Map<String, Value>>,
    /// The vector, when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vector: Option<VectorOut>,
}

impl RowOut {
    /// The row as JSON, its vector (if any) in `encoding`.
    pub fn new(row: Row, encoding: VectorEncoding) -> RowOut {
        RowOut {
            id: row.id,
            version: row.version,
            distance: row.distance,
            attributes: row.attributes.map(|attributes| {
                attributes
                    .into_iter()
                    .map(|a| (a.name, rows::value_at(a.value.as_ref(), 0)))
                    .collect()
            }),
            vector: row.vector.map(|v| VectorOut::new(v, encoding)),
        }
    }
}

/// Body of a query's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResponse {
    /// The rows, closest first (vector queries) or in id order (scans).
    pub results: Vec<RowOut>,
    /// Filter-only queries: pass back as `cursor` for the next page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_cursor: Option<Id>,
    /// The log position the results reflect.
    pub lsn: Lsn,
    /// With `"explain": true`: what the query cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub explain: Option<QueryStats>,
}

impl QueryResponse {
    /// The answer, vectors (if any) in `encoding`.
    pub fn new(r: QueryResult, encoding: VectorEncoding) -> QueryResponse {
        QueryResponse {
            results: r
                .rows
                .into_iter()
                .map(|row| RowOut::new(row, encoding))
                .collect(),
            next_cursor: r.next_cursor,
            lsn: r.lsn,
            explain: r.explain,
        }
    }
}
