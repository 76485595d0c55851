//! A collection's head: the newest manifest together with what opening its
//! indexed segments reads (each index header and data-file footer), in one
//! object whose key only the collection's name decides
//! (`heads/<name>`). A fresh process reads it beside the catalog entry, in
//! the same round trip, and its first data requests are then a query's
//! own: the clusters' codes, then the candidates' rows.
//!
//! The head is a copy, rewritten after every commit; manifests stay the
//! truth. A reader takes it only when it names the incarnation the catalog
//! does. A head can lag (a committer that crashed before writing it): a
//! process serves that manifest until its next check (a second at most,
//! as for any remembered manifest), and a strong read adds the log's newer
//! records to it as always. Racing committers cannot leave an older head
//! behind a newer one: each checks, after writing, that no newer version
//! exists, and writes again if one does.
//!
//! Layout: `FLOEHEAD`, a format number (u32 LE), the length of a JSON
//! document (u32 LE), the document ([`HeadDoc`]), then the openings' bytes
//! back to back in the order the document lists them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Manifest, SegmentEntry};
use crate::error::{Error, Result};
use crate::storage::{collection_head, get_bytes};

const MAGIC: &[u8; 8] = b"FLOEHEAD";
const FORMAT: u32 = 1;
/// Most bytes of openings a head holds: segments past this are opened
/// with a read of their own (a head is rewritten on every commit).
pub const MAX_OPENING_BYTES: u64 = 8 << 20;

/// What opening an indexed segment reads: its index header and the end of
/// its data file (footer and page index).
#[derive(Debug, Clone)]
pub struct Opening {
    /// The first `header_bytes` of the index file.
    pub header: Bytes,
    /// The last `footer_bytes` of the data file.
    pub footer: Bytes,
}

impl Opening {
    /// Where an opening's bytes are, for segments that have one.
    fn ranges(
        s: &SegmentEntry,
    ) -> Option<(Path, std::ops::Range<u64>, Path, std::ops::Range<u64>)> {
        let index = s.index.as_ref()?;
        if s.footer_bytes == 0 || s.footer_bytes > s.size_bytes || index.header_bytes == 0 {
            return None;
        }
        Some((
            Path::from(index.path.as_str()),
            0..index.header_bytes.min(index.size_bytes),
            Path::from(s.data_path.as_str()),
            s.size_bytes - s.footer_bytes..s.size_bytes,
        ))
    }
}

/// A head as read: the manifest and the openings it carries, by segment id.
#[derive(Debug, Clone)]
pub struct Head {
    /// The incarnation whose manifest it holds.
    pub incarnation: String,
    /// A committed manifest: the newest when it was written.
    pub manifest: Manifest,
    /// Openings of the manifest's indexed segments, by segment id (the
    /// first ones up to [`MAX_OPENING_BYTES`]).
    pub openings: HashMap<String, Opening>,
}

#[derive(Serialize, Deserialize)]
struct HeadDoc {
    incarnation: String,
    manifest: Manifest,
    /// (segment id, header bytes, footer bytes), in the order of the bytes.
    openings: Vec<(String, u64, u64)>,
}

impl Head {
    /// The head of collection `name`, if there is one that can be read
    /// (a missing or unreadable head is not an error: the manifests are
    /// listed instead).
    pub async fn read(store: &dyn ObjectStore, name: &str) -> Option<Head> {
        let path = collection_head(name);
        let bytes = match get_bytes(store, &path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if !e.is_not_found() {
                    tracing::debug!(%path, error = %e, "collection head not read");
                }
                return None;
            }
        };
        match Head::decode(bytes) {
            Ok(head) => Some(head),
            Err(e) => {
                tracing::warn!(%path, error = %e, "collection head ignored");
                None
            }
        }
    }

    fn decode(bytes: Bytes) -> Result<Head> {
        let bad = |what: &str| Error::corrupt("collection head", what.to_string());
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(8) != FORMAT {
            return Err(bad("unknown format"));
        }
        let doc_end = 16usize
            .checked_add(word(12) as usize)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| bad("too short"))?;
        let doc: HeadDoc =
            serde_json::from_slice(&bytes[16..doc_end]).map_err(|e| bad(&e.to_string()))?;
        if doc.manifest.format_version > super::MANIFEST_FORMAT_VERSION {
            return Err(bad("manifest format newer than this build"));
        }
        let mut at = doc_end;
        let mut openings = HashMap::new();
        for (id, header, footer) in doc.openings {
            let (header, footer) = (header as usize, footer as usize);
            let end = at
                .checked_add(header)
                .and_then(|e| e.checked_add(footer))
                .filter(|end| *end <= bytes.len())
                .ok_or_else(|| bad("openings past the end"))?;
            openings.insert(
                id,
                Opening {
                    header: bytes.slice(at..at + header),
                    footer: bytes.slice(at + header..end),
                },
            );
            at = end;
        }
        Ok(Head {
            incarnation: doc.incarnation,
            manifest: doc.manifest,
            openings,
        })
    }

    fn encode(
        incarnation: &str,
        manifest: &Manifest,
        openings: &[(String, Opening)],
    ) -> Result<Bytes> {
        let doc = HeadDoc {
            incarnation: incarnation.to_string(),
            manifest: manifest.clone(),
            openings: openings
                .iter()
                .map(|(id, o)| (id.clone(), o.header.len() as u64, o.footer.len() as u64))
                .collect(),
        };
        let json = serde_json::to_vec(&doc).map_err(|e| Error::corrupt("collection head", e))?;
        let len = u32::try_from(json.len())
            .map_err(|_| Error::internal("collection head", "manifest too large"))?;
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        out.put_u32_le(FORMAT);
        out.put_u32_le(len);
        out.put_slice(&json);
        for (_, o) in openings {
            out.put_slice(&o.header);
            out.put_slice(&o.footer);
        }
        Ok(out.freeze())
    }
}

/// Writes a collection's heads; keeps the openings it read, so that a
/// segment's header and footer are read once per process.
#[derive(Debug, Default)]
pub(super) struct HeadWriter {
    openings: std::sync::Mutex<HashMap<String, Opening>>,
}

impl HeadWriter {
    /// Writes the head of `manifest` (best effort: a head that is not
    /// written only makes the next fresh reader list the manifests).
    pub(super) async fn write(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        incarnation: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        let mut chosen = Vec::new();
        let mut missing = Vec::new();
        let mut total = 0u64;
        {
            let known = self.openings.lock().unwrap_or_else(|p| p.into_inner());
            for s in &manifest.segments {
                let Some((index, header, data, footer)) = Opening::ranges(s) else {
                    continue;
                };
                let len = (header.end - header.start) + (footer.end - footer.start);
                if total + len > MAX_OPENING_BYTES {
                    continue;
                }
                total += len;
                match known.get(&s.id) {
                    Some(o) => chosen.push((s.id.clone(), Some(o.clone()))),
                    None => {
                        missing.push((s.id.clone(), index, header, data, footer));
                        chosen.push((s.id.clone(), None));
                    }
                }
            }
        }
        let read = futures::future::try_join_all(missing.into_iter().map(
            |(id, index, header, data, footer)| async move {
                let (header, footer) = futures::try_join!(
                    async {
                        store
                            .get_range(&index, header)
                            .await
                            .map_err(|e| Error::store("get", &index, e))
                    },
                    async {
                        store
                            .get_range(&data, footer)
                            .await
                            .map_err(|e| Error::store("get", &data, e))
                    },
                )?;
                Ok::<_, Error>((id, Opening { header, footer }))
            },
        ))
        .await?;
        let read: HashMap<String, Opening> = read.into_iter().collect();
        let openings: Vec<(String, Opening)> = chosen
            .into_iter()
            .filter_map(|(id, o)| {
                let o = o.or_else(|| read.get(&id).cloned())?;
                Some((id, o))
            })
            .collect();
        {
            // Keep only what the current manifest lists.
            let mut known = self.openings.lock().unwrap_or_else(|p| p.into_inner());
            known.retain(|id, _| manifest.segment(id).is_some());
            for (id, o) in &openings {
                known.insert(id.clone(), o.clone());
            }
        }
        let body = Head::encode(incarnation, manifest, &openings)?;
        let path = collection_head(name);
        store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| Error::store("put", &path, e))?;
        Ok(())
    }
}

/// Deletes the head of `name` if it is `incarnation`'s (a dropped one).
pub async fn remove_head(store: &dyn ObjectStore, name: &str, incarnation: &str) -> Result<()> {
    let Some(head) = Head::read(store, name).await else {
        return Ok(());
    };
    if head.incarnation != incarnation {
        return Ok(());
    }
    let path = collection_head(name);
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store("delete", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_and_damage_is_refused() {
        let mut manifest = Manifest::empty();
        manifest.version = 7;
        let openings = vec![
            (
                "a".to_string(),
                Opening {
                    header: Bytes::from_static(b"header-a"),
                    footer: Bytes::from_static(b"foot-a"),
                },
            ),
            (
                "b".to_string(),
                Opening {
                    header: Bytes::from_static(b"hb"),
                    footer: Bytes::from_static(b""),
                },
            ),
        ];
        let bytes = Head::encode("inc", &manifest, &openings).unwrap();
        let head = Head::decode(bytes.clone()).unwrap();
        assert_eq!(head.incarnation, "inc");
        assert_eq!(head.manifest.version, 7);
        assert_eq!(head.openings["a"].header.as_ref(), b"header-a");
        assert_eq!(head.openings["a"].footer.as_ref(), b"foot-a");
        assert_eq!(head.openings["b"].header.as_ref(), b"hb");
        assert!(Head::decode(bytes.slice(..bytes.len() - 1)).is_err());
        assert!(Head::decode(bytes.slice(..20)).is_err());
        assert!(Head::decode(Bytes::from_static(b"FLOEHEADxxxxxxxxxxxx")).is_err());
    }
}
