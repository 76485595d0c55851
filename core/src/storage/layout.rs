//! Where a collection's files live under the store root.
//!
//! ```text
//! collections/<name>/collection.json          immutable config
//! collections/<name>/manifests/<v:020>.json   one per version, never rewritten
//! collections/<name>/latest-manifest          hint only: never trusted for correctness
//! collections/<name>/segments/<id>/...        immutable data files
//! collections/<name>/deletes/<id>.parquet      tombstones (id, _lsn)
//! ```

use object_store::path::Path;

const ROOT: &str = "collections";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionPaths {
    name: String,
}

impl CollectionPaths {
    /// `name` must already be validated (see `catalog::validate_collection_name`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }

    pub fn collections_root() -> Path {
        Path::from(ROOT)
    }

    pub fn root(&self) -> Path {
        Path::from(format!("{ROOT}/{}", self.name))
    }

    pub fn config(&self) -> Path {
        Path::from(format!("{ROOT}/{}/collection.json", self.name))
    }

    pub fn manifests_dir(&self) -> Path {
        Path::from(format!("{ROOT}/{}/manifests", self.name))
    }

    /// Zero-padded so that listing order is version order.
    pub fn manifest(&self, version: u64) -> Path {
        Path::from(format!("{ROOT}/{}/manifests/{version:020}.json", self.name))
    }

    /// Parses a manifest version out of a listed path, `None` for other files.
    pub fn manifest_version(path: &Path) -> Option<u64> {
        let file = path.filename()?;
        let digits = file.strip_suffix(".json")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    pub fn latest_manifest_hint(&self) -> Path {
        Path::from(format!("{ROOT}/{}/latest-manifest", self.name))
    }

    pub fn segment_dir(&self, segment_id: &str) -> Path {
        Path::from(format!("{ROOT}/{}/segments/{segment_id}", self.name))
    }

    pub fn segment_data(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/data.parquet",
            self.name
        ))
    }

    /// A sealed segment's data before its index exists; its creation event
    /// triggers the index build.
    pub fn segment_sealed(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/sealed.parquet",
            self.name
        ))
    }

    pub fn segment_index(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/index.ivf",
            self.name
        ))
    }

    /// A file of tombstones `(id, _lsn)` written by a flush.
    pub fn delete_file(&self, file_id: &str) -> Path {
        Path::from(format!("{ROOT}/{}/deletes/{file_id}.parquet", self.name))
    }

    /// Whether `path` is an immutable data file (segment data, index,
    /// tombstones) rather than configuration or a manifest.
    pub fn is_data_file(path: &str) -> bool {
        path.contains("/segments/") || path.contains("/deletes/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_round_trip_and_sort_by_version() {
        let paths = CollectionPaths::new("docs");
        let p9 = paths.manifest(9);
        let p10 = paths.manifest(10);
        assert_eq!(CollectionPaths::manifest_version(&p9), Some(9));
        assert_eq!(CollectionPaths::manifest_version(&p10), Some(10));
        assert!(p9.as_ref() < p10.as_ref());
        assert_eq!(
            CollectionPaths::manifest_version(&paths.latest_manifest_hint()),
            None
        );
        assert_eq!(
            CollectionPaths::manifest_version(&Path::from("x/12.json")),
            None
        );
    }
}
