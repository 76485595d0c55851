//! Collections: their immutable configuration and incarnation (catalog
//! entries, created put-if-absent) and the validation of names, dimensions
//! and attributes.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{catalog_entry, catalog_entry_name, catalog_root, get_json, put_create};

/// Longest collection or attribute name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest vector dimension.
pub const MAX_DIMENSION: u32 = 16_384;
/// Most attributes a collection may have.
pub const MAX_ATTRIBUTES: usize = 256;
/// Column names the segment format uses itself.
pub const RESERVED_NAMES: [&str; 3] = ["id", "vector", "_lsn"];

/// How distance between vectors is measured; smaller is closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Squared Euclidean distance.
    L2,
    /// 1 − cosine similarity.
    Cosine,
    /// Negative inner product, so that smaller is closer for every metric.
    Ip,
}

/// The type of a collection's row ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    /// Unsigned 64-bit integers.
    U64,
    /// Strings of 1 to 256 bytes.
    String,
}

/// The type of an attribute column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    /// true or false.
    Bool,
    /// A signed 64-bit integer.
    I64,
    /// A 64-bit float.
    F64,
    /// A UTF-8 string.
    String,
    /// A list of strings (tags).
    StringList,
}

/// A typed attribute column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeDef {
    /// Its name (not `id`, `vector` or `_lsn`).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: AttributeType,
}

/// How segments grow and get indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexParams {
    /// A segment whose data file reaches this many bytes is sealed: it is
    /// merged no further (only rewritten alone once enough of it is dead)
    /// and its index is built by its own build, fired by its creation.
    pub seal_bytes: u64,
    /// A segment of this many rows is sealed too, whatever its size (unset:
    /// bytes alone decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal_rows: Option<u64>,
    /// A segment with at least this many rows gets an IVF index as soon as
    /// the compactor reaches it; smaller ones (and the log tail) are
    /// searched exactly. Sealed segments are always indexed.
    pub index_min_rows: u64,
    /// Rows per Parquet row group in segment files.
    pub row_group_rows: u32,
    /// The codes index builds write (unset: SQ8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codes: Option<CodeKind>,
}

/// How an index codes each row for its first, approximate pass. SQ8 is
/// the default: measured head to head (docs/benchmarks.md, issue 14) the
/// two reached the same recall; SQ8 was as fast or faster warm and read
/// fewer bytes cold, RaBitQ's index and cache footprint were smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeKind {
    /// 8 bits per dimension (SQ8).
    #[default]
    Sq8,
    /// One bit per dimension of the rotated residual, plus 8 bytes (RaBitQ).
    Rabitq,
}

/// Default [`IndexParams::seal_bytes`]: about a million 128-d vectors, and
/// an index build that fits an indexer function with room to spare.
pub const DEFAULT_SEAL_BYTES: u64 = 512 * 1024 * 1024;
/// Default [`IndexParams::index_min_rows`]: below it an exact scan costs
/// about what probing an index does.
pub const DEFAULT_INDEX_MIN_ROWS: u64 = 10_000;

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            seal_bytes: DEFAULT_SEAL_BYTES,
            seal_rows: None,
            index_min_rows: DEFAULT_INDEX_MIN_ROWS,
            row_group_rows: 8_192,
            codes: None,
        }
    }
}

impl IndexParams {
    /// Rows a sealed segment holds, for rows of `bytes_per_row` bytes.
    pub fn seal_at_rows(&self, bytes_per_row: f64) -> u64 {
        let by_bytes = (self.seal_bytes as f64 / bytes_per_row.max(1.0)).floor() as u64;
        by_bytes.min(self.seal_rows.unwrap_or(u64::MAX)).max(1)
    }
}

/// A collection's configuration, fixed at creation (in its catalog entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// The collection's name: `[a-z0-9_-]`, at most 64 bytes.
    pub name: String,
    /// Vector length.
    pub dimension: u32,
    /// How distance is measured.
    pub metric: Metric,
    /// The type of row ids.
    pub id_type: IdType,
    /// Typed attribute columns.
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
    /// Sealing and row-group sizes.
    #[serde(default)]
    pub index: IndexParams,
}

impl CollectionConfig {
    /// Checks the name, dimension and attributes.
    pub fn validate(&self) -> Result<()> {
        validate_collection_name(&self.name)?;
        if self.dimension == 0 || self.dimension > MAX_DIMENSION {
            return Err(Error::invalid(
                "dimension",
                format!(
                    "must be between 1 and {MAX_DIMENSION}, got {}",
                    self.dimension
                ),
            ));
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(Error::invalid(
                "attributes",
                format!(
                    "at most {MAX_ATTRIBUTES} attributes, got {}",
                    self.attributes.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, attr) in self.attributes.iter().enumerate() {
            validate_attribute_name(&attr.name)
                .map_err(|message| Error::invalid(format!("attributes[{i}].name"), message))?;
            if !seen.insert(attr.name.as_str()) {
                return Err(Error::invalid(
                    format!("attributes[{i}].name"),
                    format!("duplicate attribute {:?}", attr.name),
                ));
            }
        }
        if self.index.seal_bytes == 0 {
            return Err(Error::invalid("index.seal_bytes", "must be at least 1"));
        }
        if self.index.seal_rows == Some(0) {
            return Err(Error::invalid("index.seal_rows", "must be at least 1"));
        }
        if self.index.index_min_rows == 0 {
            return Err(Error::invalid("index.index_min_rows", "must be at least 1"));
        }
        if self.index.row_group_rows == 0 {
            return Err(Error::invalid("index.row_group_rows", "must be at least 1"));
        }
        Ok(())
    }

    /// The attribute named `name`, if any.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// Collection names become object-store prefixes and JetStream stream names,
/// so they are restricted to what is safe in both: `[a-z0-9_-]`, starting with
/// a letter or digit, at most 64 bytes.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let fail = |message: &str| Err(Error::invalid("name", format!("{message}: {name:?}")));
    if name.is_empty() {
        return fail("collection name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("collection name is longer than 64 bytes");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return fail("collection name must start with a lower-case letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return fail("collection name may only contain a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

fn validate_attribute_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("attribute name must be 1 to 64 bytes: {name:?}"));
    }
    if RESERVED_NAMES.contains(&name) || name.starts_with('_') {
        return Err(format!("attribute name {name:?} is reserved"));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "attribute name must match [A-Za-z][A-Za-z0-9_]*: {name:?}"
        ));
    }
    Ok(())
}

/// A collection as the catalog holds it (`catalog/<name>.json`): its
/// configuration and the incarnation its log and files belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Minted by each create (a UUIDv7 without dashes): a name dropped and
    /// created again gets a new one, and with it a new log and file prefix.
    pub incarnation: String,
    /// When this incarnation was created.
    pub created_at_ms: u64,
    /// Its configuration.
    pub config: CollectionConfig,
}

impl CatalogEntry {
    /// A new incarnation of `config`.
    pub fn mint(config: CollectionConfig) -> Self {
        Self {
            incarnation: uuid::Uuid::now_v7().simple().to_string(),
            created_at_ms: crate::clock::now_ms(),
            config,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// When an incarnation was minted (its UUIDv7 timestamp), `None` if it is not one.
pub fn incarnation_time_ms(incarnation: &str) -> Option<u64> {
    let uuid = uuid::Uuid::try_parse(incarnation).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

/// Reads, creates and removes catalog entries in the object store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
}

impl Catalog {
    /// A catalog over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Writes `entry` if the name is free (put-if-absent). Otherwise
    /// returns the entry that is there (`Ok((existing, false))`) when its
    /// configuration is the same, so that a retried create succeeds; a
    /// different configuration under the same name is a conflict.
    pub async fn create(&self, entry: &CatalogEntry) -> Result<(CatalogEntry, bool)> {
        entry.config.validate()?;
        let path = catalog_entry(entry.name());
        let body =
            serde_json::to_vec_pretty(entry).map_err(|e| Error::corrupt("catalog entry", e))?;
        if put_create(self.store.as_ref(), &path, Bytes::from(body)).await? {
            return Ok((entry.clone(), true));
        }
        let existing = self.get(entry.name()).await?;
        if existing.config == entry.config {
            Ok((existing, false))
        } else {
            Err(Error::CollectionExists {
                name: entry.name().to_string(),
            })
        }
    }

    /// The collection's entry.
    pub async fn get(&self, name: &str) -> Result<CatalogEntry> {
        validate_collection_name(name)?;
        let path = catalog_entry(name);
        match get_json(self.store.as_ref(), &path).await {
            Err(e) if e.is_not_found() => Err(Error::CollectionNotFound(name.to_string())),
            other => other,
        }
    }

    /// Removes the entry: from then on the name is free and the
    /// incarnation's log and files belong to nobody.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let path = catalog_entry(name);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("delete", path, e)),
        }
    }

    /// Names of all collections, sorted: one listing of the catalog.
    pub async fn list(&self) -> Result<Vec<String>> {
        let root = catalog_root();
        let listing = self
            .store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        let mut names: Vec<String> = listing
            .objects
            .iter()
            .filter_map(|o| catalog_entry_name(&o.location).map(str::to_string))
            .filter(|name| validate_collection_name(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Pings the store (readiness): one HEAD, whose "not found" is an
    /// answer too; a listing would grow with the number of collections.
    pub async fn ping(&self) -> Result<()> {
        let path = catalog_root();
        match self.store.head(&path).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("head", path, e)),
        }
    }
}

#[cfg(test)]
impl CollectionConfig {
    /// Collection `t` of 2-d L2 vectors with u64 ids and `attributes`
    /// (for unit tests).
    pub(crate) fn for_tests(attributes: &[(&str, AttributeType)]) -> CollectionConfig {
        CollectionConfig {
            name: "t".into(),
            dimension: 2,
            metric: Metric::L2,
            id_type: IdType::U64,
            attributes: attributes
                .iter()
                .map(|(name, ty)| AttributeDef {
                    name: name.to_string(),
                    ty: *ty,
                })
                .collect(),
            index: IndexParams::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CollectionConfig {
        CollectionConfig {
            name: "docs".into(),
            dimension: 4,
            metric: Metric::Cosine,
            id_type: IdType::U64,
            attributes: vec![AttributeDef {
                name: "tags".into(),
                ty: AttributeType::StringList,
            }],
            index: IndexParams::default(),
        }
    }

    #[test]
    fn names_are_validated() {
        for good in ["a", "docs", "my-coll_2", "0abc", &"x".repeat(64)] {
            assert!(validate_collection_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "-x",
            "_x",
            "a/b",
            "..",
            "a.b",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let err = validate_collection_name(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid name:"), "{bad}: {err}");
        }
    }

    #[test]
    fn configs_are_validated_naming_the_field() {
        let mut c = config();
        c.dimension = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("invalid dimension")
        );
        let mut c = config();
        c.attributes.push(c.attributes[0].clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("attributes[1].name")
        );
        for reserved in ["id", "vector", "_lsn", "_x", "1a", "a-b"] {
            let mut c = config();
            c.attributes[0].name = reserved.into();
            assert!(c.validate().is_err(), "{reserved}");
        }
    }

    #[test]
    fn config_json_shape() {
        let json = r#"{"name":"docs","dimension":4,"metric":"cosine","id_type":"u64",
            "attributes":[{"name":"tags","type":"string_list"}]}"#;
        let parsed: CollectionConfig = serde_json::from_str(json).unwrap();
        assert_eq!(parsed, config());
        let unknown = r#"{"name":"d","dimension":4,"metric":"l2","id_type":"u64","dims":3}"#;
        assert!(serde_json::from_str::<CollectionConfig>(unknown).is_err());
    }
}
