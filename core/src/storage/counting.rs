//! A store wrapper that counts requests and bytes, so tests and benchmarks can
//! state what an operation costs in object-store traffic, not only its result.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A snapshot of the counters. `gets` counts ranged reads too; `heads` are
/// metadata-only gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// GET requests (whole or ranged).
    pub gets: u64,
    /// HEAD requests.
    pub heads: u64,
    /// PUT requests.
    pub puts: u64,
    /// LIST requests.
    pub lists: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// COPY requests.
    pub copies: u64,
    /// Bytes GETs returned.
    pub bytes_read: u64,
    /// Bytes PUTs sent.
    pub bytes_written: u64,
}

impl RequestStats {
    /// Requests of every kind.
    pub fn requests(&self) -> u64 {
        self.gets + self.heads + self.puts + self.lists + self.deletes + self.copies
    }

    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        RequestStats {
            gets: self.gets - earlier.gets,
            heads: self.heads - earlier.heads,
            puts: self.puts - earlier.puts,
            lists: self.lists - earlier.lists,
            deletes: self.deletes - earlier.deletes,
            copies: self.copies - earlier.copies,
            bytes_read: self.bytes_read - earlier.bytes_read,
            bytes_written: self.bytes_written - earlier.bytes_written,
        }
    }
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    copies: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    log: Mutex<Vec<Request>>,
}

/// One GET or HEAD as sent: which object, and when it was in flight.
#[derive(Debug, Clone)]
pub struct Request {
    /// A HEAD rather than a GET.
    pub head: bool,
    /// The object's key.
    pub path: String,
    /// When it was sent.
    pub started: Instant,
    /// When it answered.
    pub ended: Instant,
}

/// How many requests of `log` ran one after another: the longest chain in
/// which each starts after the previous one ended. Requests in flight
/// together count once, so this is the number of sequential round trips.
pub fn sequential_round_trips<'a>(log: impl IntoIterator<Item = &'a Request>) -> usize {
    let mut by_end: Vec<&Request> = log.into_iter().collect();
    by_end.sort_by_key(|r| r.ended);
    // Greedy by earliest end picks the most pairwise-disjoint intervals.
    let mut chain = 0;
    let mut free_from: Option<Instant> = None;
    for r in by_end {
        if free_from.is_none_or(|t| r.started >= t) {
            chain += 1;
            free_from = Some(r.ended);
        }
    }
    chain
}

/// Counts every request that reaches the inner store. Ranged multi-reads are
/// split by the default `get_ranges` into the individual (coalesced) GETs,
/// and each of those is counted.
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
}

impl CountingStore {
    /// Counts the requests to `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> RequestStats {
        let c = &self.counters;
        RequestStats {
            gets: c.gets.load(Ordering::Relaxed),
            heads: c.heads.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            copies: c.copies.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Every GET and HEAD sent so far, in the order they finished.
    pub fn requests(&self) -> Vec<Request> {
        self.counters
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the request log (the counters keep counting).
    pub fn clear_requests(&self) {
        self.counters
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn note(&self, head: bool, path: &Path, started: Instant) {
        self.counters
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Request {
                head,
                path: path.to_string(),
                started,
                ended: Instant::now(),
            });
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish()
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Self::add(&self.counters.puts, 1);
        Self::add(
            &self.counters.bytes_written,
            payload.content_length() as u64,
        );
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Counted as one put; parts are not broken out.
        Self::add(&self.counters.puts, 1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let started = Instant::now();
        if options.head {
            Self::add(&self.counters.heads, 1);
            let result = self.inner.get_opts(location, options).await;
            self.note(true, location, started);
            return result;
        }
        Self::add(&self.counters.gets, 1);
        let result = self.inner.get_opts(location, options).await;
        self.note(false, location, started);
        let result = result?;
        Self::add(
            &self.counters.bytes_read,
            result.range.end - result.range.start,
        );
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        // Through `self`, so every GET actually sent is counted (the inner
        // store may override `get_ranges`).
        super::coalesced_get_ranges(self, location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counters = Arc::clone(&self.counters);
        let counted = locations
            .inspect(move |_| Self::add(&counters.deletes, 1))
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        Self::add(&self.counters.lists, 1);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        Self::add(&self.counters.lists, 1);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Self::add(&self.counters.lists, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        Self::add(&self.counters.copies, 1);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn counts_requests_and_bytes() {
        let store = CountingStore::new(Arc::new(InMemory::new()));
        let path = Path::from("a/b");
        store
            .put(&path, PutPayload::from(vec![7u8; 1000]))
            .await
            .unwrap();
        store.get_range(&path, 10..110).await.unwrap();
        // Ranges closer than the coalescing gap (1 MiB) become one GET.
        let ranges = [0..10, 900..1000];
        store.get_ranges(&path, &ranges).await.unwrap();
        store.head(&path).await.unwrap();
        let s = store.stats();
        assert_eq!(s.puts, 1);
        assert_eq!(s.bytes_written, 1000);
        assert_eq!(s.heads, 1);
        assert_eq!(s.gets, 2, "{s:?}");
        assert_eq!(s.bytes_read, 100 + 1000, "{s:?}");
        assert_eq!(store.requests().len(), 3);
        assert_eq!(sequential_round_trips(&store.requests()), 3);
    }

    #[test]
    fn overlapping_requests_are_one_round_trip() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let r = |from: u64, to: u64| Request {
            head: false,
            path: String::new(),
            started: at(from),
            ended: at(to),
        };
        // Two waves of parallel requests, then one straggler after them.
        let log = [
            r(0, 40),
            r(1, 45),
            r(2, 38),
            r(50, 90),
            r(52, 95),
            r(100, 140),
        ];
        assert_eq!(sequential_round_trips(&log), 3);
        assert_eq!(sequential_round_trips(&log[..3]), 1);
        assert_eq!(sequential_round_trips(&[]), 0);
    }
}
