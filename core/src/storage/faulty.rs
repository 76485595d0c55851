//! A store wrapper that fails or delays requests, deterministically from a
//! seed, so failure tests replay exactly and benchmarks can model S3 latency.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Which requests a [`FaultConfig`] applies to: a set, combined with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpFilter(u8);

impl OpFilter {
    /// GET (whole or ranged) and HEAD.
    pub const GETS: OpFilter = OpFilter(1);
    /// PUT (and multipart uploads).
    pub const PUTS: OpFilter = OpFilter(2);
    /// LIST.
    pub const LISTS: OpFilter = OpFilter(4);
    /// DELETE.
    pub const DELETES: OpFilter = OpFilter(8);
    /// COPY.
    pub const COPIES: OpFilter = OpFilter(16);
    /// Every kind.
    pub const ALL: OpFilter = OpFilter(31);

    fn matches(self, op: Op) -> bool {
        let bit = match op {
            Op::Get => Self::GETS,
            Op::Put => Self::PUTS,
            Op::List => Self::LISTS,
            Op::Delete => Self::DELETES,
            Op::Copy => Self::COPIES,
        };
        self.0 & bit.0 != 0
    }
}

impl Default for OpFilter {
    fn default() -> Self {
        Self::ALL
    }
}

impl std::ops::BitOr for OpFilter {
    type Output = OpFilter;

    fn bitor(self, rhs: OpFilter) -> OpFilter {
        OpFilter(self.0 | rhs.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    List,
    Delete,
    Copy,
}

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Seeds the random choices (failure draws, latency jitter).
    pub seed: u64,
    /// Which requests are affected.
    pub ops: OpFilter,
    /// Every Nth matching request fails (1 = all of them).
    pub fail_every: Option<u64>,
    /// Each matching request fails with this probability.
    pub fail_probability: f64,
    /// Fail *after* the inner store carried the request out, as when the
    /// response is lost: the client sees an error although the write landed.
    pub fail_after_request: bool,
    /// Stop injecting failures after this many.
    pub max_failures: Option<u64>,
    /// Latency added to each matching request, uniform in `[min, max]`.
    pub latency: Option<(Duration, Duration)>,
}

struct State {
    config: FaultConfig,
    rng: SmallRng,
    matched: u64,
    failures: u64,
    /// The next request of these kinds on a path containing the string is
    /// held until released.
    hold: Option<(OpFilter, String, Arc<HoldState>)>,
}

/// A request stopped in flight until the test releases it (see
/// [`FaultyStore::hold_next`]): to show what does, or does not, wait on it.
#[derive(Clone)]
pub struct Hold(Arc<HoldState>);

#[derive(Default)]
struct HoldState {
    held: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Hold {
    /// Returns once a matching request is being held.
    pub async fn held(&self) {
        self.0.held.notified().await;
    }

    /// Lets the held request (or, if none yet, the next one) go on.
    pub fn release(&self) {
        self.0.release.notify_one();
    }
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    None,
    Before,
    After,
}

/// An object store that delays, fails or holds requests to another, as configured.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl FaultyStore {
    /// Wraps `inner`, injecting what `config` says.
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        let state = State {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            matched: 0,
            failures: 0,
            hold: None,
        };
        Self {
            inner,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Replaces the configuration and restarts the counters and the RNG.
    pub fn set_config(&self, config: FaultConfig) {
        let mut state = self.lock();
        state.rng = SmallRng::seed_from_u64(config.seed);
        state.config = config;
        state.matched = 0;
        state.failures = 0;
    }

    /// Holds the next request of kind `ops` on a path containing
    /// `path_contains` until [`Hold::release`].
    pub fn hold_next(&self, ops: OpFilter, path_contains: &str) -> Hold {
        let state = Arc::new(HoldState::default());
        self.lock().hold = Some((ops, path_contains.to_string(), Arc::clone(&state)));
        Hold(state)
    }

    fn take_hold(&self, op: Op, path: &Path) -> Option<Arc<HoldState>> {
        let mut state = self.lock();
        let matches = state
            .hold
            .as_ref()
            .is_some_and(|(ops, part, _)| ops.matches(op) && path.as_ref().contains(part.as_str()));
        if matches {
            state.hold.take().map(|(_, _, hold)| hold)
        } else {
            None
        }
    }

    /// Failures injected since the last `set_config`.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters invalid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn decide(&self, op: Op) -> (Duration, Failure) {
        let mut state = self.lock();
        let State {
            config,
            rng,
            matched,
            failures,
            ..
        } = &mut *state;
        if !config.ops.matches(op) {
            return (Duration::ZERO, Failure::None);
        }
        *matched += 1;
        let delay = match config.latency {
            Some((min, max)) if max > min => rng.random_range(min..=max),
            Some((min, _)) => min,
            None => Duration::ZERO,
        };
        let by_count = config
            .fail_every
            .is_some_and(|n| n > 0 && *matched % n == 0);
        let by_chance =
            config.fail_probability > 0.0 && rng.random_bool(config.fail_probability.min(1.0));
        let budget_left = config.max_failures.is_none_or(|max| *failures < max);
        let failure = if (by_count || by_chance) && budget_left {
            *failures += 1;
            if config.fail_after_request {
                Failure::After
            } else {
                Failure::Before
            }
        } else {
            Failure::None
        };
        (delay, failure)
    }

    fn injected(path: &Path) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected fault on {path}").into(),
        }
    }

    /// Runs one request with the decided delay and failure.
    async fn run<T>(
        &self,
        op: Op,
        path: &Path,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let (delay, failure) = self.decide(op);
        if let Some(hold) = self.take_hold(op, path) {
            hold.held.notify_one();
            hold.release.notified().await;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match failure {
            Failure::Before => Err(Self::injected(path)),
            Failure::After => {
                let _ = request.await;
                Err(Self::injected(path))
            }
            Failure::None => request.await,
        }
    }

    fn run_stream<T: Send + 'static>(
        &self,
        op: Op,
        path: Path,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let (delay, failure) = self.decide(op);
        let hold = self.take_hold(op, &path);
        let outcome = match failure {
            Failure::None => Ok(stream),
            Failure::Before | Failure::After => Err(Self::injected(&path)),
        };
        futures::stream::once(async move {
            if let Some(hold) = hold {
                hold.held.notify_one();
                hold.release.notified().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match outcome {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.run(
            Op::Put,
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.run(
            Op::Put,
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.run(Op::Get, location, self.inner.get_opts(location, options))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.delete_stream(locations);
        self.run_stream(Op::Delete, Path::from("<delete>"), inner)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        self.run_stream(Op::List, path, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        self.run_stream(Op::List, path, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let path = prefix.cloned().unwrap_or_default();
        self.run(Op::List, &path, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.run(Op::Copy, to, self.inner.copy_opts(from, to, options))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    async fn outcomes(seed: u64) -> Vec<bool> {
        let store = FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultConfig {
                seed,
                fail_probability: 0.5,
                ..Default::default()
            },
        );
        let mut out = Vec::new();
        for i in 0..32 {
            let path = Path::from(format!("k{i}"));
            out.push(
                store
                    .put(&path, PutPayload::from_static(b"x"))
                    .await
                    .is_ok(),
            );
        }
        out
    }

    #[tokio::test]
    async fn same_seed_same_faults() {
        let a = outcomes(7).await;
        assert_eq!(a, outcomes(7).await);
        assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok));
    }

    #[tokio::test]
    async fn fail_every_nth_and_fail_after_request() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultyStore::new(
            Arc::clone(&inner),
            FaultConfig {
                ops: OpFilter::PUTS,
                fail_every: Some(2),
                fail_after_request: true,
                ..Default::default()
            },
        );
        let a = Path::from("a");
        let b = Path::from("b");
        assert!(store.put(&a, PutPayload::from_static(b"1")).await.is_ok());
        // The second put fails for the caller but landed in the inner store.
        assert!(store.put(&b, PutPayload::from_static(b"2")).await.is_err());
        assert!(inner.head(&b).await.is_ok());
        // Gets are not matched by the filter.
        assert!(store.get(&b).await.is_ok());
        assert_eq!(store.failures(), 1);
    }
}
