//! The log on NATS JetStream: one stream per collection incarnation
//! (`<prefix>_<name>_<incarnation>` on subject `<prefix>.<name>.<incarnation>`),
//! file storage; the stream sequence is the LSN, `Nats-Msg-Id` gives
//! idempotent retries and a `Floe-Digest` header lets a retry be told from
//! a reuse of its id.
//!
//! Every request is bounded by the configured timeout, and fails at once
//! while the client is disconnected: a write or a strong read gets a 503
//! in milliseconds when NATS is down, not after the client's own timeouts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{
    AppendOptions, Appended, Log, LogEntry, LogId, LogProvider, Lsn, RequestKey, check_not_trimmed,
};
use crate::error::{Error, Result};

/// Room kept for headers (`Nats-Msg-Id`, `Nats-Expected-Stream`) inside the
/// server's `max_payload`, which bounds headers and payload together.
/// Bytes of records one fetch returns at most (unless twice the largest
/// record is more).
const FETCH_MAX_BYTES: usize = 64 << 20;
const HEADER_ALLOWANCE: usize = 1024;

/// The header holding a request's digest next to its `Nats-Msg-Id`.
const DIGEST_HEADER: &str = "Floe-Digest";

/// How to reach NATS JetStream and name the streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Comma-separated server URLs, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Streams are named `<stream_prefix>_<collection>`.
    pub stream_prefix: String,
    /// Records are published on `<subject_prefix>.<collection>`.
    pub subject_prefix: String,
    /// Stream replicas: 3 in production clusters, 1 on a single server.
    pub replicas: usize,
    /// How long a request id is remembered for idempotent retries.
    #[serde(with = "secs")]
    pub duplicate_window: Duration,
    /// The longest any one request to NATS may take before it fails (as
    /// retryable); while disconnected, requests fail at once.
    pub timeout_ms: u64,
    /// Path of a NATS credentials (`.creds`) file.
    pub credentials_file: Option<String>,
    /// User name and password authentication.
    pub user: Option<String>,
    /// User name and password authentication.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream_prefix: "FLOE".into(),
            subject_prefix: "floe".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            timeout_ms: 3_000,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl JetStreamConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.url.trim().is_empty() {
            return Err(Error::invalid("log.url", "must not be empty"));
        }
        for url in self.url.split(',') {
            url.trim()
                .parse::<ServerAddr>()
                .map_err(|e| Error::invalid("log.url", format!("{url:?}: {e}")))?;
        }
        let token_ok = |s: &str, field: &str| {
            let valid = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if valid {
                Ok(())
            } else {
                Err(Error::invalid(
                    field,
                    "must be non-empty and use only A-Z, a-z, 0-9, '_' and '-'",
                ))
            }
        };
        token_ok(&self.stream_prefix, "log.stream_prefix")?;
        token_ok(&self.subject_prefix, "log.subject_prefix")?;
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::invalid("log.replicas", "must be between 1 and 5"));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(Error::invalid(
                "log.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        // The manifest remembers when checkpoints were flushed for 15
        // minutes; the log keeps records that long at most for dedupe.
        if self.duplicate_window.is_zero()
            || self.duplicate_window.as_millis()
                > u128::from(crate::manifest::FLUSH_MARK_HORIZON_MS)
        {
            return Err(Error::invalid(
                "log.duplicate_window",
                "must be between 1 and 900 seconds",
            ));
        }
        Ok(())
    }
}

/// A connection to JetStream that opens collection logs.
#[derive(Debug, Clone)]
pub struct JetStreamLogs {
    nats: Nats,
    config: JetStreamConfig,
    open: Arc<Mutex<HashMap<String, Arc<JetStreamLog>>>>,
}

/// The client and its JetStream context, with the fail-fast rule.
#[derive(Debug, Clone)]
struct Nats {
    client: async_nats::Client,
    context: jetstream::Context,
    timeout: Duration,
}

impl Nats {
    /// Waits up to `limit` for the client to be connected.
    async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.client.connection_state() == async_nats::connection::State::Connected {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The largest record the server takes: its `max_payload` less room
    /// for headers (NATS' default 1 MiB until the first connection).
    fn max_record_bytes(&self) -> usize {
        let max_payload = match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        max_payload.saturating_sub(HEADER_ALLOWANCE)
    }

    /// Runs one request: at once `Unavailable` while disconnected (after
    /// having been connected), and within the timeout otherwise — a client
    /// still making its first connection gets that long for it.
    async fn call<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        use async_nats::connection::State;
        match self.client.connection_state() {
            State::Connected => {}
            State::Disconnected => return Err(Error::log(op, "not connected to NATS")),
            State::Pending => {
                if !self.wait_connected(self.timeout).await {
                    return Err(Error::log(op, "cannot reach NATS"));
                }
            }
        }
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| Error::log(op, format!("no answer from NATS within {:?}", self.timeout)))?
    }
}

/// A JetStream error about a stream that does not exist means the
/// collection incarnation was dropped.
fn stream_error(
    op: &'static str,
    stream: &str,
    collection: &str,
    e: impl std::fmt::Display,
) -> Error {
    let message = e.to_string();
    if message.contains("stream not found") {
        Error::CollectionNotFound(collection.to_string())
    } else {
        Error::log(op, format!("{stream}: {message}"))
    }
}

impl JetStreamLogs {
    /// Connects to the server. A server that cannot be reached does not
    /// fail this: the client keeps connecting in the background, so that
    /// a process started during a NATS outage still serves `eventual`
    /// reads, and its writes succeed once NATS is back.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        config.validate()?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut options = async_nats::ConnectOptions::new()
            .name("floe")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(timeout));
        if let Some(path) = &config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| Error::invalid("log.credentials_file", e))?;
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let addrs: Vec<ServerAddr> = config
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::invalid("log.url", e))?;
        let client = options
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .map_err(|e| Error::log("connect", e))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(timeout);
        let nats = Nats {
            client,
            context,
            timeout,
        };
        if !nats.wait_connected(timeout).await {
            tracing::warn!(url = %config.url, "NATS is not reachable yet; writes and strong reads fail until it is");
        }
        Ok(Self {
            nats,
            config,
            open: Arc::default(),
        })
    }

    fn stream_name(&self, id: LogId<'_>) -> String {
        format!(
            "{}_{}_{}",
            self.config.stream_prefix, id.collection, id.incarnation
        )
    }

    fn subject(&self, id: LogId<'_>) -> String {
        format!(
            "{}.{}.{}",
            self.config.subject_prefix, id.collection, id.incarnation
        )
    }

    fn handle(&self, id: LogId<'_>, stream: stream::Stream) -> Arc<dyn Log> {
        let log = Arc::new(JetStreamLog {
            nats: self.nats.clone(),
            stream,
            name: self.stream_name(id),
            collection: id.collection.to_string(),
            subject: self.subject(id),
            duplicate_window: self.config.duplicate_window,
        });
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let log = open.entry(self.stream_name(id)).or_insert(log);
        Arc::clone(log) as Arc<dyn Log>
    }

    fn cached(&self, id: LogId<'_>) -> Option<Arc<dyn Log>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.stream_name(id))
            .map(|log| Arc::clone(log) as Arc<dyn Log>)
    }
}

#[async_trait]
impl LogProvider for JetStreamLogs {
    async fn create(&self, id: LogId<'_>) -> Result<Arc<dyn Log>> {
        if let Some(log) = self.cached(id) {
            return Ok(log);
        }
        let name = self.stream_name(id);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![self.subject(id)],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            duplicate_window: self.config.duplicate_window,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        };
        let context = &self.nats.context;
        let stream = self
            .nats
            .call("create stream", async {
                match context.get_or_create_stream(config).await {
                    Ok(stream) => Ok(stream),
                    // Another process may have created it between our get and create.
                    Err(create_error) => context.get_stream(&name).await.map_err(|_| {
                        Error::log("create stream", format!("{name}: {create_error}"))
                    }),
                }
            })
            .await?;
        Ok(self.handle(id, stream))
    }

    async fn open(&self, id: LogId<'_>) -> Result<Arc<dyn Log>> {
        if let Some(log) = self.cached(id) {
            return Ok(log);
        }
        let name = self.stream_name(id);
        let context = &self.nats.context;
        let stream = self
            .nats
            .call("open stream", async {
                context.get_stream(&name).await.map_err(|e| match e.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Error::CollectionNotFound(id.collection.to_string())
                    }
                    _ => Error::log("open stream", format!("{name}: {e}")),
                })
            })
            .await?;
        Ok(self.handle(id, stream))
    }

    async fn delete(&self, id: LogId<'_>) -> Result<()> {
        let name = self.stream_name(id);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        let context = &self.nats.context;
        self.nats
            .call("delete stream", async {
                match context.delete_stream(&name).await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(js)
                            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(Error::log("delete stream", format!("{name}: {e}"))),
                }
            })
            .await
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        let prefix = format!("{}_", self.config.stream_prefix);
        let context = &self.nats.context;
        let streams: Vec<stream::Info> = self
            .nats
            .call("list streams", async {
                context
                    .streams()
                    .try_collect()
                    .await
                    .map_err(|e| Error::log("list streams", e))
            })
            .await?;
        // Only this deployment's streams: another's may share the stream
        // prefix's beginning (`FLOE` and `FLOE_STAGING`), never the subjects.
        Ok(streams
            .iter()
            .filter_map(|info| {
                let (collection, incarnation) =
                    info.config.name.strip_prefix(&prefix)?.rsplit_once('_')?;
                crate::catalog::validate_collection_name(collection).ok()?;
                let id = LogId {
                    collection,
                    incarnation,
                };
                (info.config.name == self.stream_name(id)
                    && info.config.subjects == [self.subject(id)])
                .then(|| (collection.to_string(), incarnation.to_string()))
            })
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        let context = &self.nats.context;
        self.nats
            .call("ping", async {
                context
                    .query_account()
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::log("ping", e))
            })
            .await
    }
}

#[derive(Debug)]
struct JetStreamLog {
    nats: Nats,
    stream: stream::Stream,
    name: String,
    collection: String,
    subject: String,
    duplicate_window: Duration,
}

impl JetStreamLog {
    async fn state(&self) -> Result<stream::State> {
        let info = self
            .nats
            .call("stream info", async {
                self.stream
                    .get_info()
                    .await
                    .map_err(|e| stream_error("stream info", &self.name, &self.collection, e))
            })
            .await?;
        Ok(info.state)
    }

    /// An ephemeral, unacknowledged consumer from `deliver_policy` on (the
    /// server removes it after it has been idle for a while);
    /// `headers_only` leaves the payloads out.
    async fn ephemeral_consumer(
        &self,
        deliver_policy: consumer::DeliverPolicy,
        headers_only: bool,
    ) -> Result<consumer::Consumer<consumer::pull::Config>> {
        self.stream
            .create_consumer(consumer::pull::Config {
                deliver_policy,
                ack_policy: consumer::AckPolicy::None,
                headers_only,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error("create consumer", &self.name, &self.collection, e))
    }

    /// The consumer's next messages, at most `max`; none at the end.
    async fn next_messages(
        &self,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        max: usize,
        op: &'static str,
    ) -> Result<Vec<jetstream::Message>> {
        let mut messages = consumer
            .fetch()
            .max_messages(max)
            // Big records (a 2 MB upsert) make a page of hundreds of them
            // too slow for one request's deadline: pages stop at a size
            // too, above the largest record.
            .max_bytes(FETCH_MAX_BYTES.max(2 * self.max_record_bytes()))
            .messages()
            .await
            .map_err(|e| Error::log(op, e))?;
        let mut out = Vec::new();
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => out.push(message),
                // The server ends a page that reached its byte limit with
                // this status; the page is what came before it.
                Err(e) if !out.is_empty() && e.to_string().contains("Exceeds MaxBytes") => break,
                Err(e) => return Err(Error::log(op, e)),
            }
        }
        Ok(out)
    }

    /// Removes an ephemeral consumer now rather than when it idles out.
    async fn drop_consumer(&self, consumer: &consumer::Consumer<consumer::pull::Config>) {
        let _ = self
            .stream
            .delete_consumer(consumer.cached_info().name.as_str())
            .await;
    }

    /// Up to `max_records` records from `from` on, through an ephemeral consumer.
    async fn fetch(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>> {
        let max_records = max_records.max(1);
        let start = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        };
        let consumer = self.ephemeral_consumer(start, false).await?;
        let mut entries = Vec::new();
        while entries.len() < max_records {
            let batch = self
                .next_messages(&consumer, max_records - entries.len(), "fetch")
                .await?;
            if batch.is_empty() {
                break;
            }
            for message in batch {
                let info = message.info().map_err(|e| Error::log("fetch", e))?;
                entries.push(LogEntry {
                    lsn: info.stream_sequence,
                    payload: message.payload.clone(),
                });
            }
        }
        self.drop_consumer(&consumer).await;
        Ok(entries)
    }

    /// Whether the record at `lsn` (the first write of a request id) had
    /// this digest; a record already trimmed cannot tell and is taken as
    /// the same.
    async fn same_request(&self, lsn: Lsn, digest: u64) -> Result<bool> {
        let stored = self
            .nats
            .call("check duplicate", async {
                match self.stream.direct_get(lsn).await {
                    Ok(message) => Ok(message
                        .headers
                        .get(DIGEST_HEADER)
                        .map(|v| v.as_str().to_string())),
                    Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
                    Err(e) => Err(stream_error(
                        "check duplicate",
                        &self.name,
                        &self.collection,
                        e,
                    )),
                }
            })
            .await?;
        Ok(stored.is_none_or(|d| d == format!("{digest:016x}")))
    }
}

#[async_trait]
impl Log for JetStreamLog {
    async fn append(&self, payload: Bytes, options: AppendOptions<'_>) -> Result<Appended> {
        let max = self.nats.max_record_bytes();
        if payload.len() > max {
            return Err(Error::RecordTooLarge {
                size: payload.len(),
                max,
            });
        }
        let mut headers = HeaderMap::new();
        // Refuse to land in any other stream that might claim the subject.
        headers.insert("Nats-Expected-Stream", self.name.as_str());
        if let Some(request) = options.request {
            headers.insert("Nats-Msg-Id", request.id);
            headers.insert(DIGEST_HEADER, format!("{:016x}", request.digest).as_str());
        }
        if let Some(expected) = options.expected_last {
            headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
        }
        let publish_error = |e: jetstream::context::PublishError| match e.kind() {
            jetstream::context::PublishErrorKind::StreamNotFound => {
                Error::CollectionNotFound(self.collection.clone())
            }
            jetstream::context::PublishErrorKind::WrongLastSequence => Error::LogMoved {
                expected: options.expected_last.unwrap_or_default(),
            },
            _ => Error::log("publish", format!("{}: {e}", self.name)),
        };
        let context = &self.nats.context;
        let published = self
            .nats
            .call("publish", async {
                context
                    .publish_with_headers(self.subject.clone(), headers, payload)
                    .await
                    .map_err(publish_error)?
                    .await
                    .map_err(publish_error)
            })
            .await;
        let ack = match published {
            // A publish in flight while the stream is deleted gets no ack:
            // say so as what it is.
            Err(e @ Error::Log { .. }) => match self.state().await {
                Err(gone @ Error::CollectionNotFound(_)) => return Err(gone),
                _ => return Err(e),
            },
            other => other?,
        };
        if ack.duplicate
            && let Some(request) = options.request
            && !self.same_request(ack.sequence, request.digest).await?
        {
            return Err(Error::RequestIdReused {
                request_id: request.id.to_string(),
            });
        }
        Ok(Appended {
            lsn: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn find_request(&self, request: RequestKey<'_>) -> Result<Option<Appended>> {
        // JetStream checks an append's expected last sequence before its
        // message id, and has no lookup of its dedupe table: read the
        // headers of the window's messages instead (a rare path).
        let last = self.state().await?.last_sequence;
        if last == 0 {
            return Ok(None);
        }
        // A margin for clocks apart: reading a little more costs little.
        let since = async_nats::datetime::now() - self.duplicate_window - Duration::from_secs(60);
        let start = consumer::DeliverPolicy::ByStartTime { start_time: since };
        // Each request to NATS within the timeout, as for every other call.
        let consumer = self
            .nats
            .call("find request", self.ephemeral_consumer(start, true))
            .await?;
        let mut found = None;
        'scan: loop {
            let batch = self
                .nats
                .call(
                    "find request",
                    self.next_messages(&consumer, 1000, "find request"),
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            for message in batch {
                let info = message.info().map_err(|e| Error::log("find request", e))?;
                let sequence = info.stream_sequence;
                let headers = message.headers.as_ref();
                if headers
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .is_some_and(|v| v.as_str() == request.id)
                {
                    let digest = headers
                        .and_then(|h| h.get(DIGEST_HEADER))
                        .map(|v| v.as_str().to_string());
                    found = Some((sequence, digest));
                    break 'scan;
                }
                if sequence >= last {
                    break 'scan;
                }
            }
        }
        self.drop_consumer(&consumer).await;
        match found {
            None => Ok(None),
            Some((_, Some(d))) if d != format!("{:016x}", request.digest) => {
                Err(Error::RequestIdReused {
                    request_id: request.id.to_string(),
                })
            }
            Some((lsn, _)) => Ok(Some(Appended {
                lsn,
                duplicate: true,
            })),
        }
    }

    async fn read(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>> {
        let from = from.max(1);
        let entries = self
            .nats
            .call("read", self.fetch(from, max_records))
            .await?;
        // Records are contiguous unless trimmed: a gap at the start (or an
        // empty answer) may mean `from` is gone.
        if entries.first().is_none_or(|e| e.lsn > from) {
            let state = self.state().await?;
            check_not_trimmed(from, state.first_sequence.max(1), state.last_sequence)?;
        }
        Ok(entries)
    }

    async fn last_lsn(&self) -> Result<Lsn> {
        Ok(self.state().await?.last_sequence)
    }

    async fn first_lsn(&self) -> Result<Lsn> {
        let state = self.state().await?;
        Ok(if state.messages == 0 {
            state.last_sequence + 1
        } else {
            state.first_sequence
        })
    }

    async fn trim(&self, through: Lsn) -> Result<()> {
        // Purging past the last sequence would move the stream's next
        // sequence forward; never do that.
        let through = through.min(self.state().await?.last_sequence);
        if through == 0 {
            return Ok(());
        }
        self.nats
            .call("purge", async {
                self.stream
                    .purge()
                    .sequence(through + 1)
                    .await
                    .map_err(|e| stream_error("purge", &self.name, &self.collection, e))
            })
            .await?;
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        self.nats.max_record_bytes()
    }

    fn duplicate_window(&self) -> Duration {
        self.duplicate_window
    }
}
