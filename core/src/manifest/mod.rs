//! Manifests and the commit protocol.
//!
//! A manifest lists a collection's live segments (with their delete files and
//! stats), the log checkpoint (highest LSN whose effects are in segments) and
//! the epochs that fence zombie writers. Version `v` lives at
//! `manifests/<v:020>.json` and is written once, create-only. Committing is
//! "write version `current + 1` if absent"; of racing committers exactly one
//! wins each version, and the losers re-read and rebase their typed
//! [`Operation`] onto the winner's manifest (or report a conflict).
//!
//! The newest version is found by listing the manifests after a hint
//! (`latest-manifest`, rewritten every [`HINT_EVERY`] versions); the hint only
//! shortens the listing, it is never trusted on its own, so a stale or lost
//! hint costs one longer listing, nothing more.
//!
//! Versions are contiguous (version `v + 1` is only ever written by someone
//! who read `v`), so if `v + 1` does not exist, `v` is the newest. A
//! committer therefore starts from the newest manifest it knows without
//! listing again; if that was stale its create fails and it reloads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::Rng;
use serde::{Deserialize, Serialize};

mod head;

pub use head::{Head, MAX_OPENING_BYTES, Opening, remove_head};

use crate::catalog::AttributeDef;
use crate::error::{Error, Result};
use crate::storage::{CollectionPaths, get_bytes, get_json, put_create};

/// The newest manifest format this build reads. It writes format 1 unless
/// the manifest holds what format 1 readers would drop on their next
/// commit (added attributes, committed imports): then format 2, which
/// older builds refuse to read rather than rewrite without it.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// The hint is rewritten when the version is a multiple of this: a fresh
/// reader lists at most this many extra keys, and most commits save a PUT.
pub const HINT_EVERY: u64 = 8;

/// How long a version this process saw as the newest is taken as a base
/// without listing: far below GC's grace period, so that no version after
/// it can have been committed and deleted meanwhile.
const TRUST_SEEN: Duration = Duration::from_secs(60);

/// Who commits: each role has its own epoch so a flusher and a compactor do
/// not fence each other, while a zombie of either role is fenced by its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Flushes the log tail into segments and moves the checkpoint.
    Writer,
    /// Merges segments and builds indexes.
    Compactor,
}

/// The current epoch of each role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epochs {
    /// The flusher's epoch.
    pub writer: u64,
    /// The compactor's epoch.
    pub compactor: u64,
}

impl Epochs {
    fn get(&self, role: Role) -> u64 {
        match role {
            Role::Writer => self.writer,
            Role::Compactor => self.compactor,
        }
    }

    fn get_mut(&mut self, role: Role) -> &mut u64 {
        match role {
            Role::Writer => &mut self.writer,
            Role::Compactor => &mut self.compactor,
        }
    }
}

/// A committer's identity: its role and the epoch it claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The role claimed.
    pub role: Role,
    /// The epoch claimed.
    pub epoch: u64,
}

/// Tombstones `(id, lsn)`: each hides every version of `id` older than `lsn`,
/// in whichever segment it lives, so delete files belong to the collection,
/// not to one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteFile {
    /// Its key.
    pub path: String,
    /// Tombstones in it.
    pub rows: u64,
    /// Size of the file.
    pub size_bytes: u64,
    /// Smallest `_lsn` in it.
    pub min_lsn: u64,
    /// Largest `_lsn` in it.
    pub max_lsn: u64,
}

/// One immutable segment as the manifest knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Its id (a UUIDv7).
    pub id: String,
    /// Key of its data file.
    pub data_path: String,
    /// Rows in it.
    pub rows: u64,
    /// Size of the data file.
    pub size_bytes: u64,
    /// Smallest `_lsn` in it.
    pub min_lsn: u64,
    /// Largest `_lsn` in it.
    pub max_lsn: u64,
    /// Sealed segments are past the size threshold; they get an ANN index.
    #[serde(default)]
    pub sealed: bool,
    /// The segment's IVF index; its rows are then stored cluster by cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexFile>,
    /// Bytes at the end of the data file holding its footer and page index
    /// (0: unknown, a reader guesses).
    #[serde(default)]
    pub footer_bytes: u64,
    /// Every row was written at this LSN, and the data file has no `_lsn`
    /// column: a bulk import's segment, written before its rows had an LSN
    /// (they get the import marker's when a flush commits them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_lsn: Option<u64>,
}

impl SegmentEntry {
    /// Bytes of its rows at `dim` dimensions: its data file, plus the
    /// vectors an indexed segment keeps in its index file instead (not
    /// the index's codes and header). What sizes and seals it: the same
    /// before and after its index is built, so a segment merged unsealed
    /// does not turn due for a seal once indexed (counting the codes, a
    /// 1M x 128-d segment built whole was cut again at once, and 83% of
    /// its rows were searched exactly until that rewrite's build).
    pub fn row_bytes(&self, dim: usize) -> u64 {
        let vectors = if self.index.is_some() {
            self.rows.saturating_mul(4 * dim as u64)
        } else {
            0
        };
        self.size_bytes.saturating_add(vectors)
    }
}

/// A segment's ANN index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Its key.
    pub path: String,
    /// Size of the index file.
    pub size_bytes: u64,
    /// Its clusters.
    pub nlist: u32,
    /// Length of the index header (read first by a cold query).
    pub header_bytes: u64,
}

/// One version of a collection's state: its segments, delete files, checkpoint and role epochs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format this manifest is written in.
    pub format_version: u32,
    /// Its version: contiguous from 1 (0 is the implicit empty one).
    pub version: u64,
    /// Unique per commit attempt: lets a committer whose response was lost
    /// recognise its own manifest.
    pub commit_id: String,
    /// When it was committed.
    pub committed_at_ms: u64,
    /// The roles' epochs.
    pub epochs: Epochs,
    /// Every log record with LSN ≤ this is reflected in the segments.
    pub checkpoint_lsn: u64,
    /// The segments a read searches.
    pub segments: Vec<SegmentEntry>,
    /// The delete files a read applies.
    #[serde(default)]
    pub deletes: Vec<DeleteFile>,
    /// A one-line description of the operation that produced this version.
    pub operation: String,
    /// When recent checkpoints were committed, oldest first (see
    /// [`Manifest::flushed_before`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flushed: Vec<FlushMark>,
    /// Bulk imports committed, job id → LSN (the newest [`IMPORTS_KEPT`]):
    /// a job resumed after a crash learns here that a flush committed it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub imports: BTreeMap<String, u64>,
    /// Attributes added since the collection was created, in order: the
    /// collection's attributes are its catalog configuration's, then these
    /// (all nullable; rows written before have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_attributes: Vec<AttributeDef>,
}

/// A checkpoint and when it was committed: every record up to `lsn` was
/// in segments by `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushMark {
    /// The checkpoint.
    pub lsn: u64,
    /// When it was committed.
    pub at_ms: u64,
}

/// Flush marks closer together than this are merged (into the later one).
const FLUSH_MARK_EVERY_MS: u64 = 5_000;
/// Flush marks older than this are dropped, but for the newest of them.
pub const FLUSH_MARK_HORIZON_MS: u64 = 15 * 60 * 1000;

impl Manifest {
    /// The state before the first commit (version 0 is never written).
    pub fn empty() -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            version: 0,
            commit_id: String::new(),
            committed_at_ms: 0,
            epochs: Epochs::default(),
            checkpoint_lsn: 0,
            segments: Vec::new(),
            deletes: Vec::new(),
            operation: "empty".into(),
            flushed: Vec::new(),
            imports: BTreeMap::new(),
            added_attributes: Vec::new(),
        }
    }

    /// The newest checkpoint committed at or before `ms`: the log may drop
    /// records up to it once they are older than its dedupe window, in any
    /// process, whatever it remembers itself.
    pub fn flushed_before(&self, ms: u64) -> Option<u64> {
        self.flushed
            .iter()
            .filter(|m| m.at_ms <= ms)
            .map(|m| m.lsn)
            .max()
    }

    /// Records that the checkpoint moved to `lsn` at `now_ms`, keeping the
    /// list short: marks within [`FLUSH_MARK_EVERY_MS`] merge into the
    /// later one (which only delays a trim), and of the marks older than
    /// [`FLUSH_MARK_HORIZON_MS`] only the newest stays.
    fn mark_flushed(&mut self, lsn: u64, now_ms: u64) {
        if let Some(last) = self.flushed.last_mut()
            && now_ms.saturating_sub(last.at_ms) < FLUSH_MARK_EVERY_MS
        {
            *last = FlushMark { lsn, at_ms: now_ms };
        } else {
            self.flushed.push(FlushMark { lsn, at_ms: now_ms });
        }
        let horizon = now_ms.saturating_sub(FLUSH_MARK_HORIZON_MS);
        let old = self.flushed.iter().filter(|m| m.at_ms < horizon).count();
        if old > 1 {
            self.flushed.drain(..old - 1);
        }
    }

    /// The segment with this id, if listed.
    pub fn segment(&self, id: &str) -> Option<&SegmentEntry> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Rows in segments, before deletes are applied.
    pub fn total_rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }

    /// Bytes of every segment data file.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }
}

/// Committed imports a manifest remembers (the newest, by LSN).
pub const IMPORTS_KEPT: usize = 1000;

/// A bulk import's segments as a flush commits them: all their rows are
/// at the import marker's LSN (see [`SegmentEntry::rows_lsn`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSegments {
    /// The import job.
    pub job: String,
    /// Its marker's LSN.
    pub lsn: u64,
    /// Its segments.
    pub segments: Vec<SegmentEntry>,
}

/// A change to the manifest, re-applied to whatever manifest is newest.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Takes the role's next epoch; every later commit by an older epoch of
    /// that role is fenced.
    ClaimEpoch(Role),
    /// Adds what log records `(from_lsn, to_lsn]` became — a segment of
    /// upserted rows and a file of tombstones, either may be absent, and
    /// the segments of the bulk imports whose markers are among them — and
    /// moves the checkpoint from `from_lsn` to `to_lsn`.
    Flush {
        /// The checkpoint before.
        from_lsn: u64,
        /// The checkpoint after.
        to_lsn: u64,
        /// The segment of upserted rows.
        segment: Option<SegmentEntry>,
        /// The file of tombstones.
        delete_file: Option<DeleteFile>,
        /// The bulk imports whose markers are in the range.
        imported: Vec<ImportedSegments>,
        /// How many added attributes the flusher's rows have (see
        /// [`Manifest::added_attributes`]): a flush made with an older
        /// schema than the manifest's would drop values, so it is refused.
        schema: usize,
    },
    /// Swaps segments atomically (compaction, sealing, index builds). Rows
    /// keep their LSNs when merged, so tombstones keep applying to them.
    /// Only the compactor (one epoch at a time) replaces: it checked, by
    /// their contents, that no row outside the swap is hidden by a
    /// tombstone of `drop_deletes` but for those `add_deletes` carries
    /// (flushes meanwhile only add newer rows, which no old tombstone hides).
    Replace {
        /// Ids of the segments taken out.
        remove: Vec<String>,
        /// The segments put in.
        add: Vec<SegmentEntry>,
        /// Delete files to drop.
        drop_deletes: Vec<String>,
        /// Delete files put in (the tombstones still needed of those dropped).
        add_deletes: Vec<DeleteFile>,
        /// How many added attributes the new segments have (as for a flush).
        schema: usize,
    },
    /// Adds nullable attributes to the collection, after those it has.
    AddAttributes(Vec<AttributeDef>),
}

/// Why an operation cannot apply to a manifest.
enum Refusal {
    /// The manifest moved in a way the operation cannot rebase over.
    Conflict(String),
    /// Attributes were added since the committer read its rows.
    SchemaChanged,
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Conflict(reason)
    }
}

/// What applying an operation to a manifest gives.
enum Applied {
    Changed(Box<Manifest>),
    /// The operation's effect is already there (a rerun flush).
    AlreadyDone,
}

impl Operation {
    fn describe(&self) -> String {
        match self {
            Operation::ClaimEpoch(role) => format!("claim {role:?} epoch"),
            Operation::AddAttributes(attributes) => format!(
                "add attributes {}",
                attributes
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Operation::Flush {
                from_lsn, to_lsn, ..
            } => format!("flush lsn ({from_lsn}, {to_lsn}]"),
            Operation::Replace {
                remove,
                add,
                drop_deletes,
                add_deletes,
                ..
            } => format!(
                "replace {} segments by {}, {} delete files by {}",
                remove.len(),
                add.len(),
                drop_deletes.len(),
                add_deletes.len()
            ),
        }
    }

    /// Rebases the operation onto `base`, giving the next version's content.
    fn apply(&self, base: &Manifest) -> std::result::Result<Applied, Refusal> {
        let mut next = base.clone();
        match self {
            Operation::ClaimEpoch(role) => *next.epochs.get_mut(*role) += 1,
            Operation::AddAttributes(attributes) => {
                let mut added = 0;
                for attr in attributes {
                    match base.added_attributes.iter().find(|a| a.name == attr.name) {
                        // A retried or raced add of the same attribute.
                        Some(a) if a == attr => {}
                        Some(a) => {
                            return Err(Refusal::Conflict(format!(
                                "attribute {} was added as {:?} meanwhile",
                                a.name, a.ty
                            )));
                        }
                        None => {
                            next.added_attributes.push(attr.clone());
                            added += 1;
                        }
                    }
                }
                if added == 0 {
                    return Ok(Applied::AlreadyDone);
                }
            }
            Operation::Flush {
                from_lsn,
                to_lsn,
                segment,
                delete_file,
                imported,
                schema,
            } => {
                if base.checkpoint_lsn >= *to_lsn {
                    return Ok(Applied::AlreadyDone);
                }
                if base.added_attributes.len() != *schema {
                    return Err(Refusal::SchemaChanged);
                }
                if base.checkpoint_lsn != *from_lsn {
                    return Err(format!(
                        "flush starts at lsn {from_lsn} but the checkpoint is {}",
                        base.checkpoint_lsn
                    )
                    .into());
                }
                for segment in segment.iter() {
                    add_segment(&mut next, segment)?;
                }
                for import in imported {
                    // A second marker of one import (two runners raced)
                    // adds nothing: its rows are the first one's.
                    if next.imports.contains_key(&import.job) {
                        continue;
                    }
                    for segment in &import.segments {
                        add_segment(&mut next, segment)?;
                    }
                    next.imports.insert(import.job.clone(), import.lsn);
                }
                if next.imports.len() > IMPORTS_KEPT {
                    let mut by_lsn: Vec<(u64, String)> =
                        next.imports.iter().map(|(j, l)| (*l, j.clone())).collect();
                    by_lsn.sort_unstable();
                    for (_, job) in &by_lsn[..by_lsn.len() - IMPORTS_KEPT] {
                        next.imports.remove(job);
                    }
                }
                if let Some(file) = delete_file {
                    next.deletes.push(file.clone());
                }
                next.checkpoint_lsn = *to_lsn;
            }
            Operation::Replace {
                remove,
                add,
                drop_deletes,
                add_deletes,
                schema,
            } => {
                if !add.is_empty() && base.added_attributes.len() != *schema {
                    return Err(Refusal::SchemaChanged);
                }
                for id in remove {
                    if base.segment(id).is_none() {
                        return Err(format!("segment {id} is no longer live").into());
                    }
                }
                for path in drop_deletes {
                    if !base.deletes.iter().any(|d| &d.path == path) {
                        return Err(format!("delete file {path} is no longer live").into());
                    }
                }
                next.deletes.retain(|d| !drop_deletes.contains(&d.path));
                next.deletes.extend(add_deletes.iter().cloned());
                next.segments.retain(|s| !remove.contains(&s.id));
                for segment in add {
                    add_segment(&mut next, segment)?;
                }
            }
        }
        Ok(Applied::Changed(Box::new(next)))
    }
}

fn add_segment(
    manifest: &mut Manifest,
    segment: &SegmentEntry,
) -> std::result::Result<(), Refusal> {
    if manifest.segment(&segment.id).is_some() {
        return Err(format!("segment {} is already live", segment.id).into());
    }
    manifest.segments.push(segment.clone());
    Ok(())
}

/// The result of a successful commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// This manifest is now the newest; it is the one we wrote.
    New(Manifest),
    /// The operation was already reflected in this (newest) manifest.
    AlreadyApplied(Manifest),
}

impl Committed {
    /// The manifest after the commit.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Committed::New(m) | Committed::AlreadyApplied(m) => m,
        }
    }
}

/// How hard a committer retries.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// How many versions a committer may lose before giving up.
    pub max_attempts: u32,
    /// Upper bound of the random pause after a lost race.
    pub max_backoff: Duration,
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            max_attempts: 200,
            max_backoff: Duration::from_millis(50),
        }
    }
}

/// Reads and commits one collection's manifests.
#[derive(Debug)]
pub struct ManifestStore {
    store: Arc<dyn ObjectStore>,
    paths: CollectionPaths,
    name: String,
    incarnation: String,
    options: CommitOptions,
    heads: head::HeadWriter,
    /// Newest version this process has seen; a listing lower bound like the hint.
    seen: AtomicU64,
    /// The newest manifest this store has read or written: the base of the
    /// next commit (a stale base only costs a failed create and a reload).
    newest: Mutex<Option<Manifest>>,
    /// When `seen` was last known to be the newest version. Past
    /// [`TRUST_SEEN`], GC may have deleted versions after it, so neither
    /// a HEAD of the next version nor a commit on top of it proves anything.
    confirmed: Mutex<Option<std::time::Instant>>,
}

impl ManifestStore {
    /// The manifests of one incarnation of `collection`, with default retries.
    pub fn new(store: Arc<dyn ObjectStore>, collection: &str, incarnation: &str) -> Self {
        Self::with_options(store, collection, incarnation, CommitOptions::default())
    }

    /// The manifests of one incarnation of `collection`, with these retries.
    pub fn with_options(
        store: Arc<dyn ObjectStore>,
        collection: &str,
        incarnation: &str,
        options: CommitOptions,
    ) -> Self {
        Self {
            store,
            paths: CollectionPaths::new(collection, incarnation),
            name: collection.to_string(),
            incarnation: incarnation.to_string(),
            options,
            heads: head::HeadWriter::default(),
            seen: AtomicU64::new(0),
            newest: Mutex::new(None),
            confirmed: Mutex::new(None),
        }
    }

    /// Reads one version.
    pub async fn read(&self, version: u64) -> Result<Manifest> {
        let path = self.paths.manifest(version);
        let manifest: Manifest = get_json(self.store.as_ref(), &path).await?;
        if manifest.version != version {
            return Err(Error::corrupt(
                path.to_string(),
                format!("holds version {}", manifest.version),
            ));
        }
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(Error::corrupt(
                path.to_string(),
                format!(
                    "format version {} is newer than this build",
                    manifest.format_version
                ),
            ));
        }
        self.seen.fetch_max(version, Ordering::Relaxed);
        Ok(manifest)
    }

    /// The newest committed manifest, or [`Manifest::empty`] before the first commit.
    pub async fn latest(&self) -> Result<Manifest> {
        let known = self
            .newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let manifest = match self.latest_version().await? {
            0 => Manifest::empty(),
            // Manifests are immutable: the one already read is still right.
            v if known.as_ref().is_some_and(|m| m.version == v) => {
                known.unwrap_or_else(Manifest::empty)
            }
            v => self.read(v).await?,
        };
        self.remember(&manifest);
        Ok(manifest)
    }

    /// Writes the collection's head for `manifest` (committed, and the
    /// newest this process knows). If a newer version exists once it is
    /// written, its committer may have written its head before this one
    /// landed: the newest is written again. Best effort: a head that is not
    /// written only makes fresh readers list the manifests, or serve an
    /// older manifest until their first check.
    pub(crate) async fn publish_head(&self, mut manifest: Manifest) {
        for _ in 0..4 {
            if let Err(e) = self
                .heads
                .write(&self.store, &self.name, &self.incarnation, &manifest)
                .await
            {
                tracing::warn!(collection = %self.name, error = %e, "collection head not written");
                return;
            }
            let next = self.paths.manifest(manifest.version + 1);
            let newer = match self.store.head(&next).await {
                Err(object_store::Error::NotFound { .. }) => return,
                Ok(_) => self.latest().await,
                Err(e) => Err(Error::store("head", &next, e)),
            };
            match newer {
                Ok(newer) => manifest = newer,
                Err(e) => {
                    tracing::warn!(collection = %self.name, error = %e, "collection head may lag");
                    return;
                }
            }
        }
        tracing::warn!(collection = %self.name, "collection head may lag: the manifest kept moving");
    }

    fn remember(&self, manifest: &Manifest) {
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        if newest.as_ref().is_none_or(|m| m.version < manifest.version) {
            *newest = Some(manifest.clone());
        }
    }

    /// Notes that `seen` was just found to be the newest version.
    fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// Whether `seen` was the newest version recently enough to build on.
    fn seen_is_recent(&self) -> bool {
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < TRUST_SEEN)
    }

    /// The base for a commit: the newest manifest known here if it was
    /// known recently, else a listing.
    async fn commit_base(&self) -> Result<Manifest> {
        let known = self
            .newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match known {
            Some(manifest) if self.seen_is_recent() => Ok(manifest),
            _ => self.latest().await,
        }
    }

    /// The newest committed version (0 if none). Once this process has seen
    /// a version `v`, a HEAD of `v + 1` settles it; otherwise the versions
    /// after the hint (or `v`) are listed.
    pub async fn latest_version(&self) -> Result<u64> {
        // Versions are contiguous: if `seen + 1` does not exist, `seen` is
        // the newest, and one HEAD (cheaper than a LIST) proves it.
        let seen = self.seen.load(Ordering::Relaxed);
        if seen > 0 && self.seen_is_recent() {
            let next = self.paths.manifest(seen + 1);
            match self.store.head(&next).await {
                Err(object_store::Error::NotFound { .. }) => {
                    self.confirm();
                    return Ok(seen);
                }
                Ok(_) => {}
                Err(e) => return Err(Error::store("head", next, e)),
            }
        }
        // The hint only helps a process that has seen nothing yet.
        let floor = if seen > 0 {
            seen
        } else {
            self.read_hint().await
        };
        let newest = self.list_versions_after(floor).await?.into_iter().max();
        let version = match newest {
            Some(v) => v,
            // A version this process read exists: manifests are never
            // rewritten and the newest is never deleted.
            None if floor == 0 || floor == seen => floor,
            // Nothing after the hint: the hinted version is the newest, if it exists.
            None => match self.store.head(&self.paths.manifest(floor)).await {
                Ok(_) => floor,
                Err(object_store::Error::NotFound { .. }) => self
                    .list_versions_after(0)
                    .await?
                    .into_iter()
                    .max()
                    .unwrap_or(0),
                Err(e) => return Err(Error::store("head", self.paths.manifest(floor), e)),
            },
        };
        self.seen.fetch_max(version, Ordering::Relaxed);
        self.confirm();
        Ok(version)
    }

    /// Every committed version, ascending.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        let mut versions = self.list_versions_after(0).await?;
        versions.sort_unstable();
        Ok(versions)
    }

    async fn list_versions_after(&self, after: u64) -> Result<Vec<u64>> {
        let dir = self.paths.manifests_dir();
        let listing = if after == 0 {
            self.store.list(Some(&dir))
        } else {
            self.store
                .list_with_offset(Some(&dir), &self.paths.manifest(after))
        };
        let metas: Vec<_> = listing
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &dir, e))?;
        Ok(metas
            .iter()
            .filter_map(|m| CollectionPaths::manifest_version(&m.location))
            .filter(|v| *v > after)
            .collect())
    }

    async fn read_hint(&self) -> u64 {
        let path = self.paths.latest_manifest_hint();
        match get_bytes(self.store.as_ref(), &path).await {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    async fn write_hint(&self, version: u64) {
        let path = self.paths.latest_manifest_hint();
        let payload = PutPayload::from(version.to_string().into_bytes());
        if let Err(e) = self.store.put(&path, payload).await {
            tracing::debug!(%path, error = %e, "manifest hint not updated");
        }
    }

    /// Takes the next epoch of `role` and returns the fence to commit with.
    pub async fn claim(&self, role: Role) -> Result<(Fence, Manifest)> {
        let committed = self.commit(None, &Operation::ClaimEpoch(role)).await?;
        let manifest = committed.manifest().clone();
        let fence = Fence {
            role,
            epoch: manifest.epochs.get(role),
        };
        Ok((fence, manifest))
    }

    /// Commits `op` on top of the newest manifest, rebasing over whatever
    /// other committers wrote in between. With a `fence`, fails with
    /// [`Error::Fenced`] once a newer epoch of the same role has been claimed.
    ///
    /// If this returns an object-store error the outcome may be unknown (the
    /// write may have landed); operations are designed so that a rerun is
    /// safe (a flush that landed is reported as already applied).
    pub async fn commit(&self, fence: Option<Fence>, op: &Operation) -> Result<Committed> {
        let mut base = self.commit_base().await?;
        // Whether `base` was just listed (rather than remembered).
        let mut fresh = false;
        for attempt in 0..self.options.max_attempts {
            if let Some(fence) = fence {
                let current = base.epochs.get(fence.role);
                if current > fence.epoch {
                    return Err(Error::Fenced {
                        ours: fence.epoch,
                        current,
                    });
                }
            }
            let mut next = match op.apply(&base) {
                Ok(Applied::Changed(next)) => *next,
                // Judged on a possibly stale base: confirm on the newest one.
                Ok(Applied::AlreadyDone) | Err(_) if !fresh => {
                    base = self.latest().await?;
                    fresh = true;
                    continue;
                }
                Ok(Applied::AlreadyDone) => return Ok(Committed::AlreadyApplied(base)),
                Err(Refusal::Conflict(reason)) => {
                    return Err(Error::CommitConflict {
                        version: base.version + 1,
                        reason,
                    });
                }
                Err(Refusal::SchemaChanged) => return Err(Error::SchemaChanged),
            };
            next.format_version = if next.added_attributes.is_empty() && next.imports.is_empty() {
                1
            } else {
                MANIFEST_FORMAT_VERSION
            };
            next.version = base.version + 1;
            next.commit_id = uuid::Uuid::new_v4().to_string();
            next.committed_at_ms = crate::clock::now_ms();
            if next.checkpoint_lsn > base.checkpoint_lsn {
                next.mark_flushed(next.checkpoint_lsn, next.committed_at_ms);
            }
            next.operation = op.describe();
            let body = serde_json::to_vec(&next).map_err(|e| Error::corrupt("manifest", e))?;
            let path = self.paths.manifest(next.version);

            let written = put_create(self.store.as_ref(), &path, Bytes::from(body)).await;
            // Whatever the put said, the object at `path` decides: a lost
            // response may hide our success, and a 409 may hide nobody's.
            let landed = match written {
                Ok(true) => Some(next.clone()),
                Ok(false) | Err(_) => match self.read(next.version).await {
                    Ok(m) => Some(m),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e),
                },
            };
            match landed {
                Some(m) if m.commit_id == next.commit_id => {
                    self.seen.fetch_max(m.version, Ordering::Relaxed);
                    self.confirm();
                    self.remember(&m);
                    if m.version % HINT_EVERY == 0 {
                        self.write_hint(m.version).await;
                    }
                    self.publish_head(m.clone()).await;
                    return Ok(Committed::New(m));
                }
                Some(winner) => {
                    tracing::debug!(
                        version = winner.version,
                        attempt,
                        "lost manifest commit race"
                    );
                    base = self.latest().await?;
                }
                None => {
                    written?;
                    // Create refused but nothing is there (S3 409 on concurrent
                    // conditional writes): try the same version again.
                }
            }
            self.backoff(attempt).await;
        }
        Err(Error::CommitConflict {
            version: base.version + 1,
            reason: format!("gave up after {} attempts", self.options.max_attempts),
        })
    }

    async fn backoff(&self, attempt: u32) {
        let max = self.options.max_backoff.as_micros() as u64;
        if max == 0 {
            return;
        }
        let cap = max.min(1_000u64.saturating_mul(1 << attempt.min(16)));
        let pause = rand::rng().random_range(0..=cap);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn flush_marks_say_what_was_flushed_when_and_stay_few() {
        let mut m = Manifest::empty();
        let t0 = 1_000_000_000;
        m.mark_flushed(10, t0);
        m.mark_flushed(20, t0 + 1_000); // merged into one, at the later time
        assert_eq!(
            m.flushed,
            vec![FlushMark {
                lsn: 20,
                at_ms: t0 + 1_000
            }]
        );
        assert_eq!(
            m.flushed_before(t0),
            None,
            "lsn 10 is not known alone any more"
        );
        assert_eq!(m.flushed_before(t0 + 1_000), Some(20));
        m.mark_flushed(30, t0 + 10_000);
        assert_eq!(m.flushed_before(t0 + 9_999), Some(20));
        assert_eq!(m.flushed_before(t0 + 10_000), Some(30));
        // A day of flushes every 6 s keeps the marks of the horizon only.
        for i in 0..14_400u64 {
            m.mark_flushed(100 + i, t0 + 20_000 + i * 6_000);
        }
        let now = t0 + 20_000 + 14_399 * 6_000;
        assert!(
            m.flushed.len() <= (FLUSH_MARK_HORIZON_MS / 5_000) as usize + 2,
            "{}",
            m.flushed.len()
        );
        assert!(m.flushed_before(now - 120_000).is_some());
        assert_eq!(m.flushed_before(now), Some(100 + 14_399));
    }

    fn segment(id: &str, min_lsn: u64, max_lsn: u64) -> SegmentEntry {
        SegmentEntry {
            id: id.into(),
            data_path: format!("segments/{id}/data.parquet"),
            rows: max_lsn - min_lsn + 1,
            size_bytes: 100,
            min_lsn,
            max_lsn,
            sealed: false,
            index: None,
            footer_bytes: 0,
            rows_lsn: None,
        }
    }

    fn flush(from: u64, to: u64, id: &str) -> Operation {
        Operation::Flush {
            from_lsn: from,
            to_lsn: to,
            segment: Some(segment(id, from + 1, to)),
            delete_file: None,
            imported: vec![],
            schema: 0,
        }
    }

    #[tokio::test]
    async fn flush_rebases_and_reruns_are_idempotent() {
        let ms = ManifestStore::new(Arc::new(InMemory::new()), "c", "i");
        assert_eq!(ms.latest().await.unwrap().version, 0);
        let c1 = ms.commit(None, &flush(0, 10, "s1")).await.unwrap();
        assert!(matches!(c1, Committed::New(ref m) if m.version == 1 && m.checkpoint_lsn == 10));
        // A rerun of the same flush (crash after commit) does nothing.
        let again = ms.commit(None, &flush(0, 10, "s1")).await.unwrap();
        assert!(matches!(again, Committed::AlreadyApplied(ref m) if m.version == 1));
        // A flush that skips part of the log is a conflict.
        let err = ms.commit(None, &flush(11, 20, "s2")).await.unwrap_err();
        assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
        let m = ms.commit(None, &flush(10, 20, "s2")).await.unwrap();
        assert_eq!(m.manifest().segments.len(), 2);
        assert_eq!(ms.versions().await.unwrap(), vec![1, 2]);
    }

    #[tokio::test]
    async fn an_import_is_committed_once_and_schema_changes_fence_flushes() {
        let ms = ManifestStore::new(Arc::new(InMemory::new()), "c", "i");
        let import = |to: u64| Operation::Flush {
            from_lsn: to - 1,
            to_lsn: to,
            segment: None,
            delete_file: None,
            imported: vec![ImportedSegments {
                job: "j.n".into(),
                lsn: to,
                segments: vec![segment("j-n-00000", to, to)],
            }],
            schema: 0,
        };
        ms.commit(None, &flush(0, 1, "s1")).await.unwrap();
        let m = ms.commit(None, &import(2)).await.unwrap();
        assert_eq!(m.manifest().imports.get("j.n"), Some(&2));
        // A second marker of the same import (two runners) adds nothing.
        let m = ms.commit(None, &import(3)).await.unwrap();
        assert_eq!(m.manifest().segments.len(), 2);
        assert_eq!(m.manifest().checkpoint_lsn, 3);
        // Attributes added: a flush made with the old list is refused.
        let add = Operation::AddAttributes(vec![AttributeDef {
            name: "tag".into(),
            ty: crate::catalog::AttributeType::String,
        }]);
        ms.commit(None, &add).await.unwrap();
        assert!(matches!(
            ms.commit(None, &add).await.unwrap(),
            Committed::AlreadyApplied(_)
        ));
        let err = ms.commit(None, &flush(3, 4, "s2")).await.unwrap_err();
        assert!(matches!(err, Error::SchemaChanged), "{err}");
        let ok = Operation::Flush {
            from_lsn: 3,
            to_lsn: 4,
            segment: Some(segment("s2", 4, 4)),
            delete_file: None,
            imported: vec![],
            schema: 1,
        };
        assert_eq!(
            ms.commit(None, &ok)
                .await
                .unwrap()
                .manifest()
                .checkpoint_lsn,
            4
        );
    }

    #[tokio::test]
    async fn zombies_are_fenced_per_role() {
        let ms = ManifestStore::new(Arc::new(InMemory::new()), "c", "i");
        let (old, _) = ms.claim(Role::Writer).await.unwrap();
        let (new, _) = ms.claim(Role::Writer).await.unwrap();
        let (compactor, _) = ms.claim(Role::Compactor).await.unwrap();
        assert_eq!((old.epoch, new.epoch, compactor.epoch), (1, 2, 1));
        let err = ms.commit(Some(old), &flush(0, 5, "z")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Fenced {
                    ours: 1,
                    current: 2
                }
            ),
            "{err}"
        );
        ms.commit(Some(new), &flush(0, 5, "a")).await.unwrap();
        // The compactor's epoch is independent of the writer's.
        let replace = Operation::Replace {
            remove: vec!["a".into()],
            add: vec![segment("b", 1, 5)],
            drop_deletes: vec![],
            add_deletes: vec![],
            schema: 0,
        };
        let m = ms.commit(Some(compactor), &replace).await.unwrap();
        assert_eq!(m.manifest().segments[0].id, "b");
    }

    #[tokio::test]
    async fn replace_conflicts_when_a_removed_segment_is_gone() {
        let ms = ManifestStore::new(Arc::new(InMemory::new()), "c", "i");
        ms.commit(None, &flush(0, 5, "a")).await.unwrap();
        let replace = |id: &str| Operation::Replace {
            remove: vec!["a".into()],
            add: vec![segment(id, 1, 5)],
            drop_deletes: vec![],
            add_deletes: vec![],
            schema: 0,
        };
        ms.commit(None, &replace("b")).await.unwrap();
        // A second compactor that also merged "a" must not add its copy.
        let err = ms.commit(None, &replace("c")).await.unwrap_err();
        assert!(err.to_string().contains("no longer live"), "{err}");
    }

    #[tokio::test]
    async fn stale_or_missing_hint_never_hides_newer_versions() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ms = ManifestStore::new(Arc::clone(&store), "c", "i");
        for i in 0..3 {
            ms.commit(None, &flush(i * 10, i * 10 + 10, &format!("s{i}")))
                .await
                .unwrap();
        }
        let paths = CollectionPaths::new("c", "i");
        // A stale hint, a garbage hint, no hint: a fresh reader still finds v3.
        for hint in [Some("1"), Some("not a number"), Some("999"), None] {
            match hint {
                Some(h) => {
                    store
                        .put(&paths.latest_manifest_hint(), h.as_bytes().to_vec().into())
                        .await
                        .unwrap();
                }
                None => store.delete(&paths.latest_manifest_hint()).await.unwrap(),
            }
            let fresh = ManifestStore::new(Arc::clone(&store), "c", "i");
            assert_eq!(fresh.latest().await.unwrap().version, 3, "hint {hint:?}");
        }
    }
}
