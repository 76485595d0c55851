//! Garbage collection: files no manifest needs, after a grace period.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::engine::Floe;
use crate::engine::state::Collection;
use crate::error::{Error, Result};

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
        let manifest = c.manifests.latest().await?;
        let paths = &c.paths;
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
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let root = paths.root();
        let doomed: Vec<object_store::path::Path> = self
            .store
            .list(Some(&root))
            .try_filter(|m| {
                futures::future::ready(
                    !keep.contains(m.location.as_ref()) && m.last_modified < cutoff,
                )
            })
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::store("list", &root, e))?;
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
