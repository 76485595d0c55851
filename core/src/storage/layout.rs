//! Where a collection's files live under the store root.
//!
//! ```text
//! catalog/<name>.json                                  the collection: config + incarnation
//! dropping/<name>/<incarnation>                        a drop decided and not yet finished
//! keys/<id>.json                                       an API key: its grant and secret's hash
//! collections/<name>/<inc>/manifests/<v:020>.json      one per version, never rewritten
//! collections/<name>/<inc>/latest-manifest             hint only: never trusted for correctness
//! collections/<name>/<inc>/segments/<id>/...           immutable data files
//! collections/<name>/<inc>/deletes/<id>.parquet        tombstones (id, _lsn)
//! heads/<name>                                         copy of the newest manifest with its segments' headers
//! exports/<prefix>/part-<n:05>.parquet                 a collection's rows as exported (never read back by Floe)
//! ```
//!
//! A collection's files live under its **incarnation** (a UUIDv7 minted by
//! each create), so a name dropped and created again never shares a file,
//! a manifest version or a log with its predecessor: a writer that still
//! holds the old incarnation can only write where nobody reads. The
//! catalog entries sit in one flat directory so that one listing names
//! exactly the collections that exist.
//!
//! [`CollectionPaths`] builds every key and [`parse_key`] reads them back
//! (S3 events, listings): the one place that knows the layout.

use object_store::path::Path;

const ROOT: &str = "collections";
const CATALOG: &str = "catalog";
const DROPPING: &str = "dropping";
const KEYS: &str = "keys";
const EXPORTS: &str = "exports";
const HEADS: &str = "heads";

/// The head of collection `name` (see `manifest::head`): keyed by the name
/// alone, so that a fresh process can read it beside the catalog entry.
pub fn collection_head(name: &str) -> Path {
    Path::from(format!("{HEADS}/{name}"))
}

/// Where an export under `prefix` (checked: see `api::wire`) writes.
pub fn export_root(prefix: &str) -> Path {
    Path::from(format!("{EXPORTS}/{prefix}"))
}

/// Part `n` of the export under `prefix`.
pub fn export_part(prefix: &str, n: usize) -> Path {
    Path::from(format!("{EXPORTS}/{prefix}/part-{n:05}.parquet"))
}

/// The stored record of API key `id`.
pub fn api_key(id: &str) -> Path {
    Path::from(format!("{KEYS}/{id}.json"))
}

/// Where the API keys' records are.
pub fn api_keys_root() -> Path {
    Path::from(KEYS)
}

/// The catalog entry of collection `name`.
pub fn catalog_entry(name: &str) -> Path {
    Path::from(format!("{CATALOG}/{name}.json"))
}

/// The marker of a drop of `name`'s `incarnation` under way: written
/// before the catalog entry goes, deleted once the log and files are gone,
/// so that a drop that was interrupted is finished by the next one.
pub fn drop_marker(name: &str, incarnation: &str) -> Path {
    Path::from(format!("{DROPPING}/{name}/{incarnation}"))
}

/// `(name, incarnation)` of a listed drop marker, `None` for other keys.
pub fn parse_drop_marker(path: &Path) -> Option<(String, String)> {
    let mut parts = path.parts();
    if parts.next()?.as_ref() != DROPPING {
        return None;
    }
    let name = parts.next()?.as_ref().to_string();
    let incarnation = parts.next()?.as_ref().to_string();
    parts.next().is_none().then_some((name, incarnation))
}

/// Where drop markers are (of one name, or of all with `None`).
pub fn drop_markers(name: Option<&str>) -> Path {
    match name {
        Some(name) => Path::from(format!("{DROPPING}/{name}")),
        None => Path::from(DROPPING),
    }
}

/// Where the catalog entries are.
pub fn catalog_root() -> Path {
    Path::from(CATALOG)
}

/// The collection name of a listed catalog entry, `None` for other keys.
pub fn catalog_entry_name(path: &Path) -> Option<&str> {
    path.filename()?.strip_suffix(".json")
}

/// Builds the keys of one incarnation of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionPaths {
    /// `<name>/<incarnation>`
    dir: String,
}

impl CollectionPaths {
    /// `name` must already be validated (see `catalog::validate_collection_name`)
    /// and `incarnation` be one the catalog minted.
    pub fn new(name: &str, incarnation: &str) -> Self {
        Self {
            dir: format!("{name}/{incarnation}"),
        }
    }

    /// Where every collection's directory is.
    pub fn collections_root() -> Path {
        Path::from(ROOT)
    }

    /// The directory of every incarnation of collection `name`.
    pub fn name_root(name: &str) -> Path {
        Path::from(format!("{ROOT}/{name}"))
    }

    /// This incarnation's directory.
    pub fn root(&self) -> Path {
        Path::from(format!("{ROOT}/{}", self.dir))
    }

    /// The directory of its manifests.
    pub fn manifests_dir(&self) -> Path {
        Path::from(format!("{ROOT}/{}/manifests", self.dir))
    }

    /// Zero-padded so that listing order is version order.
    pub fn manifest(&self, version: u64) -> Path {
        Path::from(format!("{ROOT}/{}/manifests/{version:020}.json", self.dir))
    }

    /// Parses a manifest version out of a listed path, `None` for other files.
    pub fn manifest_version(path: &Path) -> Option<u64> {
        manifest_file_version(path.filename()?)
    }

    /// The hint naming a recent manifest version.
    pub fn latest_manifest_hint(&self) -> Path {
        Path::from(format!("{ROOT}/{}/latest-manifest", self.dir))
    }

    /// A segment's directory.
    pub fn segment_dir(&self, segment_id: &str) -> Path {
        Path::from(format!("{ROOT}/{}/segments/{segment_id}", self.dir))
    }

    /// An unsealed or indexed segment's data file.
    pub fn segment_data(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/data.parquet",
            self.dir
        ))
    }

    /// A sealed segment's data before its index exists; its creation event
    /// triggers the index build.
    pub fn segment_sealed(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/sealed.parquet",
            self.dir
        ))
    }

    /// An indexed segment's IVF index file.
    pub fn segment_index(&self, segment_id: &str) -> Path {
        Path::from(format!(
            "{ROOT}/{}/segments/{segment_id}/index.ivf",
            self.dir
        ))
    }

    /// The directory of bulk import jobs.
    pub fn imports_dir(&self) -> Path {
        Path::from(format!("{ROOT}/{}/imports", self.dir))
    }

    /// One file of bulk import `job` (`job.json`, `status.json`, `ended`,
    /// `part-<k>.parquet` and `part-<k>.json`); `job` is validated.
    pub fn import_file(&self, job: &str, file: &str) -> Path {
        Path::from(format!("{ROOT}/{}/imports/{job}/{file}", self.dir))
    }

    /// A file of tombstones `(id, _lsn)` written by a flush.
    pub fn delete_file(&self, file_id: &str) -> Path {
        Path::from(format!("{ROOT}/{}/deletes/{file_id}.parquet", self.dir))
    }

    /// Whether `path` is an immutable data file (segment data, index,
    /// tombstones) rather than configuration or a manifest.
    pub fn is_data_file(path: &str) -> bool {
        matches!(
            parse_key(path).map(|k| k.file),
            Some(
                CollectionFile::SegmentData(_)
                    | CollectionFile::SealedData(_)
                    | CollectionFile::SegmentIndex(_)
                    | CollectionFile::DeleteFile(_)
            )
        )
    }
}

/// A key of a collection's file, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionKey {
    /// The collection's name.
    pub collection: String,
    /// The incarnation the file belongs to.
    pub incarnation: String,
    /// Which of its files.
    pub file: CollectionFile,
}

/// Which of a collection's files a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionFile {
    /// `manifests/<v:020>.json`
    Manifest(u64),
    /// `latest-manifest`
    ManifestHint,
    /// `segments/<id>/data.parquet`
    SegmentData(String),
    /// `segments/<id>/sealed.parquet`: its creation triggers the index build.
    SealedData(String),
    /// `segments/<id>/index.ivf`
    SegmentIndex(String),
    /// `deletes/<id>.parquet`
    DeleteFile(String),
    /// `imports/<job>/job.json`: its creation starts the import.
    ImportJob(String),
    /// `imports/<job>/<file>`: the rest of an import's files.
    Import {
        /// The job.
        job: String,
        /// The file's name.
        file: String,
    },
    /// Anything else under the collection's directory.
    Other,
}

/// Reads a key back: `[<prefix>/]collections/<name>/<incarnation>/<file>`
/// (a store prefix, as in S3 event keys, is skipped). `None` for keys
/// outside any collection or with an invalid collection name.
pub fn parse_key(key: &str) -> Option<CollectionKey> {
    let parts: Vec<&str> = key.split('/').collect();
    let at = parts.iter().rposition(|p| *p == ROOT)?;
    let (name, incarnation, rest) = match &parts[at + 1..] {
        [name, incarnation, rest @ ..] if !incarnation.is_empty() => (*name, *incarnation, rest),
        _ => return None,
    };
    crate::catalog::validate_collection_name(name).ok()?;
    let file = match rest {
        ["latest-manifest"] => CollectionFile::ManifestHint,
        ["manifests", file] => match manifest_file_version(file) {
            Some(v) => CollectionFile::Manifest(v),
            None => CollectionFile::Other,
        },
        ["segments", id, "data.parquet"] => CollectionFile::SegmentData(id.to_string()),
        ["segments", id, "sealed.parquet"] => CollectionFile::SealedData(id.to_string()),
        ["segments", id, "index.ivf"] => CollectionFile::SegmentIndex(id.to_string()),
        ["imports", job, "job.json"] => CollectionFile::ImportJob(job.to_string()),
        ["imports", job, file] => CollectionFile::Import {
            job: job.to_string(),
            file: file.to_string(),
        },
        ["deletes", file] => match file.strip_suffix(".parquet") {
            Some(id) if !id.is_empty() => CollectionFile::DeleteFile(id.to_string()),
            _ => CollectionFile::Other,
        },
        _ => CollectionFile::Other,
    };
    Some(CollectionKey {
        collection: name.to_string(),
        incarnation: incarnation.to_string(),
        file,
    })
}

/// `<v:020>.json` → `v`.
fn manifest_file_version(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_round_trip_and_sort_by_version() {
        let paths = CollectionPaths::new("docs", "i1");
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

    #[test]
    fn every_built_key_parses_back() {
        let paths = CollectionPaths::new("docs", "i1");
        let cases = [
            (paths.manifest(7), CollectionFile::Manifest(7)),
            (paths.latest_manifest_hint(), CollectionFile::ManifestHint),
            (
                paths.segment_data("s1"),
                CollectionFile::SegmentData("s1".into()),
            ),
            (
                paths.segment_sealed("s1"),
                CollectionFile::SealedData("s1".into()),
            ),
            (
                paths.segment_index("s1"),
                CollectionFile::SegmentIndex("s1".into()),
            ),
            (
                paths.delete_file("d1"),
                CollectionFile::DeleteFile("d1".into()),
            ),
        ];
        for (path, file) in cases {
            let want = CollectionKey {
                collection: "docs".into(),
                incarnation: "i1".into(),
                file,
            };
            assert_eq!(parse_key(path.as_ref()), Some(want.clone()), "{path}");
            // S3 event keys carry the store's prefix.
            assert_eq!(parse_key(&format!("pre/fix/{path}")), Some(want), "{path}");
        }
        assert_eq!(parse_key("elsewhere/x"), None);
        assert_eq!(
            parse_drop_marker(&drop_marker("docs", "i1")),
            Some(("docs".into(), "i1".into()))
        );
        assert_eq!(parse_drop_marker(&catalog_entry("docs")), None);
        assert_eq!(parse_key("collections/Bad Name/i1/latest-manifest"), None);
        assert_eq!(parse_key("collections/docs"), None);
        assert_eq!(
            parse_key("collections/docs/i1/manifests/1.json").map(|k| k.file),
            Some(CollectionFile::Other)
        );
    }
}
