//! What the engine is asked and what it answers, in checked, typed form.
//! The API's wire layer (`api::wire`) builds the requests from JSON and
//! turns the answers back into JSON; the engine never sees JSON.

use arrow::array::{ArrayRef, RecordBatch};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheFootprint, QueryStats};
use crate::catalog::CollectionConfig;
use crate::filter::Filter;
use crate::id::Id;
use crate::index::SearchKnobs;
use crate::log::Lsn;
use crate::vector::QueryVector;

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

/// A checked query.
#[derive(Debug, Clone)]
pub struct Query {
    /// `None`: a filter-only query (a scan in id order, paginated).
    pub(crate) vector: Option<QueryVector>,
    pub(crate) top_k: usize,
    pub(crate) filter: Option<Filter>,
    /// Attributes to return, by name (checked against the collection).
    pub(crate) attributes: Vec<String>,
    pub(crate) include_vector: bool,
    pub(crate) consistency: Consistency,
    /// Filter-only queries: return ids after this one.
    pub(crate) cursor: Option<Id>,
    pub(crate) knobs: SearchKnobs,
    pub(crate) explain: bool,
}

/// Checked upserted rows: a batch in the collection's upsert schema.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub(crate) rows: RecordBatch,
    pub(crate) request_id: Option<String>,
    /// Written only if every one of these holds when the write lands.
    pub(crate) conditions: Vec<Condition>,
}

/// A checked patch: new values for some attributes of existing rows,
/// which keep their vectors and every attribute the patch does not name.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The rows, by id (unique).
    pub(crate) ids: Vec<Id>,
    /// Per attribute of the collection, in order: the values the patch
    /// sets, and per row whether it sets one (null included).
    pub(crate) values: Vec<(ArrayRef, Vec<bool>)>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) request_id: Option<String>,
    /// A digest of the request as sent: what a retry is compared by.
    pub(crate) digest: u64,
}

/// A conditional write's expectation about one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// Where the request said it (`rows[3].if_version`).
    #[serde(skip)]
    pub(crate) field: String,
    /// The row's id.
    pub(crate) id: Id,
    /// The version (LSN) the visible row must have; 0: no row with the id
    /// may be visible.
    pub(crate) version: Lsn,
}

/// What a checked delete hides.
#[derive(Debug, Clone)]
pub(crate) enum DeleteTarget {
    /// These ids (an id column of the collection's id type).
    Ids(ArrayRef),
    /// Every row the filter matches as of the delete's own LSN.
    Filter {
        /// The parsed filter.
        filter: Filter,
        /// Its text, as sent (what a retry is compared by).
        text: String,
    },
}

/// A checked delete.
#[derive(Debug, Clone)]
pub struct Delete {
    pub(crate) target: DeleteTarget,
    pub(crate) request_id: Option<String>,
}

/// The acknowledgement of a write: `lsn` is the write token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriteAck {
    /// The write's LSN: pass it as `at_least_lsn` to read your write.
    pub lsn: Lsn,
    /// Rows upserted or deleted.
    pub rows: usize,
    /// The request id had been seen: nothing was written again.
    #[serde(default)]
    pub duplicate: bool,
}

/// One attribute of a returned row: its column, sliced to the row.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// The attribute's name.
    pub name: String,
    /// One element.
    pub value: ArrayRef,
}

/// A row a read returns.
#[derive(Debug, Clone)]
pub struct Row {
    /// The row's id.
    pub id: Id,
    /// The LSN of the write that produced this version of the row: what a
    /// conditional write (`if_version`) compares with.
    pub version: Lsn,
    /// Distance to the query vector (vector queries).
    pub distance: Option<f32>,
    /// The requested attributes (`None` when none were asked for).
    pub attributes: Option<Vec<Attribute>>,
    /// The vector, when asked for.
    pub vector: Option<Vec<f32>>,
}

/// What a query found.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Closest first (vector queries) or in id order (scans).
    pub rows: Vec<Row>,
    /// Filter-only queries: the cursor of the next page.
    pub next_cursor: Option<Id>,
    /// The log position the results reflect.
    pub lsn: Lsn,
    /// What the query cost, when asked.
    pub explain: Option<QueryStats>,
}

/// A collection's configuration and statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    /// Its configuration.
    #[serde(flatten)]
    pub config: CollectionConfig,
    /// Which incarnation of the name this is: a drop and a create with the
    /// same name make a new one.
    pub incarnation: String,
    /// What it holds now.
    pub stats: CollectionStats,
}

/// What a collection holds.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionStats {
    /// Live rows (newest version not deleted), as of the log's last LSN.
    pub rows: u64,
    /// Segments in the newest manifest.
    pub segments: usize,
    /// Rows stored in segments, superseded versions included.
    pub segment_rows: u64,
    /// Bytes of segment data files.
    pub segment_bytes: u64,
    /// Segments served by an ANN index.
    pub indexed_segments: usize,
    /// Rows stored in indexed segments, superseded versions included.
    pub indexed_rows: u64,
    /// Bytes of index files.
    pub index_bytes: u64,
    /// Indexed segments this process has warmed (`POST …/warm`, or behind
    /// the first vector query that opened them with `cache.auto_warm`).
    pub warm_segments: usize,
    /// Delete files in the newest manifest.
    pub delete_files: usize,
    /// The newest manifest's version.
    pub manifest_version: u64,
    /// The newest LSN in the log.
    pub log_lsn: Lsn,
    /// Every write with LSN ≤ this is in segments.
    pub checkpoint_lsn: Lsn,
    /// Log records after the checkpoint.
    pub unflushed_records: u64,
    /// Rows those records upsert.
    pub unflushed_rows: u64,
}

/// What `POST /v1/collections/{name}/warm` loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarmReport {
    /// Indexed segments whose header, keys and codes are now cached.
    pub indexed_segments: usize,
    /// Other segments and delete files, now in memory.
    pub other_files: usize,
    /// What warming cost.
    pub stats: QueryStats,
    /// What the cache holds after.
    pub cache: CacheFootprint,
}

/// What a flush did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlushReport {
    /// Every write with LSN at most this is in segments now.
    pub checkpoint_lsn: Lsn,
    /// Segments written.
    pub segments_written: usize,
    /// Upserted rows written to segments.
    pub rows_flushed: u64,
    /// Deletes written to delete files.
    pub deletes_flushed: u64,
}
