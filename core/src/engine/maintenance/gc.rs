//! Garbage collection: files no manifest needs, after a grace period —
//! but for the files of import jobs still running (their segments are in
//! no manifest yet), and the records of ended ones for a week.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::engine::Floe;
use crate::engine::state::Collection;
use crate::error::{Error, Result};
use crate::storage::{CollectionFile, parse_key};

/// How long the records of an ended import job (its request and status)
/// are kept.
const IMPORT_RECORDS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Unreferenced files are deleted only when older than this.
pub const GC_GRACE: Duration = Duration::from_secs(600);

/// What a garbage collection deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Objects deleted.
    pub deleted: usize,
}

impl Floe {
    /// Deletes files no manifest needs: objects the newest manifest does not
    /// reference, and older manifests, once they are older than `grace` (a
    /// query still reading an older manifest finishes well within it).
    pub async fn gc(&self, name: &str, grace: Duration) -> Result<GcReport> {
        self.on_current(name, |c| async move { self.gc_collection(&c, grace).await })
            .await
    }

    async fn gc_collection(&self, c: &Collection, grace: Duration) -> Result<GcReport> {
        let paths = &c.paths;
        let root = paths.root();
        // List first, then read the manifest: a file listed here that a
        // commit made live meanwhile is in that manifest.
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
        let manifest = c.manifests.latest().await?;
        let mut keep: HashSet<String> = HashSet::new();
        keep.insert(paths.latest_manifest_hint().to_string());
        keep.insert(paths.manifest(manifest.version).to_string());
        for s in &manifest.segments {
            keep.insert(s.data_path.clone());
            if let Some(i) = &s.index {
                keep.insert(i.path.clone());
            }
        }
        for d in &manifest.deletes {
            keep.insert(d.path.clone());
        }
        let now = chrono::Utc::now();
        let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let records_cutoff =
            now - chrono::Duration::from_std(IMPORT_RECORDS_KEPT).unwrap_or(chrono::Duration::MAX);
        // Import jobs that ended, and when: a running job's files are all
        // kept; an ended one's parts once it ended `grace` ago (a run that
        // raced its end may still be committing them), its records for
        // a week (its status is read).
        let mut ended: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for m in &listed {
            if let Some(CollectionFile::Import { job, file }) =
                parse_key(m.location.as_ref()).map(|k| k.file)
                && file == "ended"
            {
                ended.insert(job, m.last_modified);
            }
        }
        let doomed: Vec<object_store::path::Path> = listed
            .into_iter()
            .filter(|m| {
                if keep.contains(m.location.as_ref()) || m.last_modified >= cutoff {
                    return false;
                }
                let (job, record) = match parse_key(m.location.as_ref()).map(|k| k.file) {
                    Some(CollectionFile::ImportJob(job)) => (job, true),
                    Some(CollectionFile::Import { job, file }) => {
                        // Run claims stay as long as the records: a runner
                        // that wakes up late must still see it was replaced.
                        let record =
                            file == "status.json" || file == "ended" || file.starts_with("run-");
                        (job, record)
                    }
                    _ => return true,
                };
                match ended.get(&job) {
                    None => false,
                    Some(at) if record => *at < records_cutoff,
                    Some(at) => *at < cutoff,
                }
            })
            .map(|m| m.location)
            .collect();
        // A job's `ended` last: a collection stopped half-way keeps it, and
        // with it the knowledge that the rest may go.
        let mut doomed = doomed;
        doomed.sort_by_key(|p| p.filename() == Some("ended"));
        if !doomed.is_empty() {
            // A head that lagged (its committer died before writing it) may
            // name files about to go: the kept manifest's head first.
            c.manifests.publish_head(manifest.clone()).await;
        }
        for path in &doomed {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete", path, e)),
            }
        }
        Ok(GcReport {
            deleted: doomed.len(),
        })
    }
}
