//! The log on NATS JetStream: one stream per collection, file storage; the
//! stream sequence is the LSN, `Nats-Msg-Id` gives idempotent retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Appended, Log, LogEntry, LogProvider, Lsn, check_not_trimmed};
use crate::error::{Error, Result};

/// Room kept for headers (`Nats-Msg-Id`, `Nats-Expected-Stream`) inside the
/// server's `max_payload`, which bounds headers and payload together.
const HEADER_ALLOWANCE: usize = 1024;

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
        if self.duplicate_window.is_zero() {
            return Err(Error::invalid(
                "log.duplicate_window",
                "must be at least one second",
            ));
        }
        Ok(())
    }
}

/// A connection to JetStream that opens collection logs.
#[derive(Debug, Clone)]
pub struct JetStreamLogs {
    context: jetstream::Context,
    config: JetStreamConfig,
    max_record_bytes: usize,
    open: Arc<Mutex<HashMap<String, Arc<JetStreamLog>>>>,
}

impl JetStreamLogs {
    /// Connects to the server.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        config.validate()?;
        let mut options = async_nats::ConnectOptions::new()
            .name("floe")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)));
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
            .connect(addrs)
            .await
            .map_err(|e| Error::log("connect", e))?;
        let max_payload = client.server_info().max_payload;
        let context = jetstream::new(client);
        Ok(Self {
            context,
            config,
            max_record_bytes: max_payload.saturating_sub(HEADER_ALLOWANCE),
            open: Arc::default(),
        })
    }

    fn stream_name(&self, collection: &str) -> String {
        format!("{}_{collection}", self.config.stream_prefix)
    }

    fn subject(&self, collection: &str) -> String {
        format!("{}.{collection}", self.config.subject_prefix)
    }
}

#[async_trait]
impl LogProvider for JetStreamLogs {
    async fn open(&self, collection: &str) -> Result<Arc<dyn Log>> {
        if let Some(log) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
        {
            return Ok(Arc::clone(log) as Arc<dyn Log>);
        }
        let name = self.stream_name(collection);
        let subject = self.subject(collection);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            duplicate_window: self.config.duplicate_window,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        };
        let stream = match self.context.get_or_create_stream(config).await {
            Ok(stream) => stream,
            // Another process may have created it between our get and create.
            Err(create_error) => self
                .context
                .get_stream(&name)
                .await
                .map_err(|_| Error::log("create stream", format!("{name}: {create_error}")))?,
        };
        let log = Arc::new(JetStreamLog {
            context: self.context.clone(),
            stream,
            name,
            subject,
            max_record_bytes: self.max_record_bytes,
        });
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let log = open.entry(collection.to_string()).or_insert(log);
        Ok(Arc::clone(log) as Arc<dyn Log>)
    }

    async fn delete(&self, collection: &str) -> Result<()> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(collection);
        let name = self.stream_name(collection);
        match self.context.delete_stream(&name).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::log("delete stream", format!("{name}: {e}"))),
        }
    }
}

#[derive(Debug)]
struct JetStreamLog {
    context: jetstream::Context,
    stream: stream::Stream,
    name: String,
    subject: String,
    max_record_bytes: usize,
}

impl JetStreamLog {
    async fn state(&self) -> Result<stream::State> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| Error::log("stream info", format!("{}: {e}", self.name)))?;
        Ok(info.state)
    }
}

#[async_trait]
impl Log for JetStreamLog {
    async fn append(&self, payload: Bytes, request_id: Option<&str>) -> Result<Appended> {
        if payload.len() > self.max_record_bytes {
            return Err(Error::RecordTooLarge {
                size: payload.len(),
                max: self.max_record_bytes,
            });
        }
        let mut headers = HeaderMap::new();
        // Refuse to land in any other stream that might claim the subject.
        headers.insert("Nats-Expected-Stream", self.name.as_str());
        if let Some(id) = request_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .context
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| Error::log("publish", e))?
            .await
            .map_err(|e| Error::log("publish ack", e))?;
        Ok(Appended {
            lsn: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn read(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>> {
        let from = from.max(1);
        let max_records = max_records.max(1);
        // An ephemeral, unacknowledged consumer starting at `from`; the server
        // removes it after it has been idle for a while.
        let consumer = self
            .stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::log("create consumer", format!("{}: {e}", self.name)))?;
        let mut entries = Vec::new();
        while entries.len() < max_records {
            let batch: Vec<_> = consumer
                .fetch()
                .max_messages(max_records - entries.len())
                .messages()
                .await
                .map_err(|e| Error::log("fetch", e))?
                .try_collect()
                .await
                .map_err(|e| Error::log("fetch", e))?;
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
        let _ = self
            .stream
            .delete_consumer(consumer.cached_info().name.as_str())
            .await;
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
        self.stream
            .purge()
            .sequence(through + 1)
            .await
            .map_err(|e| Error::log("purge", format!("{}: {e}", self.name)))?;
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
}
