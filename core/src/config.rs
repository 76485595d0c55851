//! Settings: a serde struct with `validate()`, loaded from a JSON file
//! (`FLOE_CONFIG`) and/or `FLOE_*` environment variables passed in by the
//! binaries. With nothing set, Floe runs embedded under `./floe-data`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::CacheSettings;
use crate::error::{Error, Result};
use crate::log::JetStreamConfig;
use crate::storage::ObjectStoreConfig;

/// Floe's settings: a JSON file (`FLOE_CONFIG`) and `FLOE_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Embedded mode keeps objects in `<data_dir>/objects` and the log in
    /// `<data_dir>/log` unless `object_store` / `nats` say otherwise.
    pub data_dir: PathBuf,
    /// Address `floe serve` listens on.
    pub listen: String,
    /// Where the files go; `<data_dir>/objects` when unset.
    pub object_store: Option<ObjectStoreConfig>,
    /// The log on NATS JetStream; the embedded file log when unset.
    pub nats: Option<JetStreamConfig>,
    /// When the log tail is flushed.
    pub flush: FlushSettings,
    /// Limits on requests.
    pub limits: Limits,
    /// The read cache (memory and local disk).
    pub cache: CacheSettings,
    /// API keys.
    pub auth: AuthSettings,
    /// The HTTP server of `floe serve`: timeouts, connections, CORS, TLS.
    pub http: HttpSettings,
    /// How searches of indexed segments work.
    pub search: SearchSettings,
}

/// How searches of indexed segments work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    /// A filter matching at most this many rows of an indexed segment
    /// scores just those rows from their codes; one matching more probes
    /// clusters, widening until enough candidates pass.
    pub exact_filter_rows: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            exact_filter_rows: crate::index::EXACT_FILTER_ROWS,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("floe-data"),
            listen: "127.0.0.1:7700".into(),
            object_store: None,
            nats: None,
            flush: FlushSettings::default(),
            limits: Limits::default(),
            cache: CacheSettings::default(),
            auth: AuthSettings::default(),
            http: HttpSettings::default(),
            search: SearchSettings::default(),
        }
    }
}

/// A secret setting: kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// API keys (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The admin key. When set, every request but the health checks needs
    /// a key; when unset, keys are off.
    pub admin_key: Option<Secret>,
    /// Serve without keys on an address other than loopback (or on
    /// Lambda). Off: such a server refuses to start.
    pub allow_unauthenticated: bool,
    /// How long a process trusts a key record it read (seconds): the
    /// longest a revoked key keeps working.
    pub key_cache_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_key: None,
            allow_unauthenticated: false,
            key_cache_secs: 10,
        }
    }
}

/// The admin key's least length.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// The HTTP server of `floe serve` (on Lambda, API Gateway does this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A client has this long to send its request line and headers (and
    /// TLS handshake) before the connection is closed (seconds).
    pub header_timeout_secs: u64,
    /// A client has this long to send a request's body: 408 after (seconds).
    pub body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// A PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 1024,
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpSettings {
    /// The header timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// The body timeout as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }
}

/// When the background indexer flushes the log tail into a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlushSettings {
    /// Flush once this many rows are unflushed…
    pub max_rows: usize,
    /// …or this many bytes of log records…
    pub max_bytes: usize,
    /// …or the oldest unflushed record is this old (seconds).
    pub max_age_secs: u64,
    /// How often the background indexer looks (milliseconds).
    pub poll_interval_ms: u64,
}

impl Default for FlushSettings {
    fn default() -> Self {
        Self {
            max_rows: 50_000,
            max_bytes: 64 * 1024 * 1024,
            max_age_secs: 10,
            poll_interval_ms: 500,
        }
    }
}

impl FlushSettings {
    /// The age threshold as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    /// How often the background indexer checks.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// Limits on requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body.
    pub max_request_bytes: usize,
    /// Largest `top_k` a query may ask for.
    pub max_top_k: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 32 * 1024 * 1024,
            max_top_k: 1024,
        }
    }
}

impl Settings {
    /// Checks every setting, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if let Some(store) = &self.object_store {
            store.validate()?;
        }
        if let Some(nats) = &self.nats {
            nats.validate()?;
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:7700", self.listen),
            ));
        }
        if self.flush.max_rows == 0 || self.flush.max_bytes == 0 {
            return Err(Error::invalid(
                "flush",
                "max_rows and max_bytes must be positive",
            ));
        }
        if self.flush.poll_interval_ms == 0 {
            return Err(Error::invalid("flush.poll_interval_ms", "must be positive"));
        }
        self.cache.validate()?;
        if !(1..=100_000).contains(&self.limits.max_top_k) {
            return Err(Error::invalid(
                "limits.max_top_k",
                "must be between 1 and 100000",
            ));
        }
        if self.limits.max_request_bytes < 1024 {
            return Err(Error::invalid(
                "limits.max_request_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(key) = &self.auth.admin_key
            && (key.expose().len() < MIN_ADMIN_KEY_LEN
                || !key.expose().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Error::invalid(
                "auth.admin_key",
                format!(
                    "must be at least {MIN_ADMIN_KEY_LEN} printable ASCII characters without spaces"
                ),
            ));
        }
        if self.http.header_timeout_secs == 0 || self.http.body_timeout_secs == 0 {
            return Err(Error::invalid(
                "http",
                "header_timeout_secs and body_timeout_secs must be positive",
            ));
        }
        if self.search.exact_filter_rows > 10_000_000 {
            return Err(Error::invalid(
                "search.exact_filter_rows",
                "must be at most 10000000",
            ));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(Error::invalid(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        for (i, origin) in self.http.cors_origins.iter().enumerate() {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.parse::<axum::http::HeaderValue>().is_ok()
                && !origin.trim_end_matches('/').contains(['?', '#'])
                && origin.matches('/').count() == 2;
            if !ok {
                return Err(Error::invalid(
                    format!("http.cors_origins[{i}]"),
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(Error::invalid(
                "http.tls_cert",
                "tls_cert and tls_key go together",
            ));
        }
        Ok(())
    }

    /// Refuses to serve an open API where others can reach it: without an
    /// admin key, only a loopback `listen` address (`floe serve`) is
    /// allowed, and never Lambda (`listen` `None`: behind API Gateway),
    /// unless `auth.allow_unauthenticated` says so.
    pub fn check_exposure(&self, listen: Option<std::net::SocketAddr>) -> Result<()> {
        if self.auth.admin_key.is_some() || self.auth.allow_unauthenticated {
            return Ok(());
        }
        match listen {
            Some(addr) if addr.ip().is_loopback() => Ok(()),
            Some(addr) => Err(Error::invalid(
                "listen",
                format!(
                    "{addr} is reachable from other machines and no admin key is set: set FLOE_ADMIN_KEY, listen on 127.0.0.1, or set FLOE_ALLOW_UNAUTHENTICATED=true to serve an open API on purpose"
                ),
            )),
            None => Err(Error::invalid(
                "auth.admin_key",
                "a function behind API Gateway needs FLOE_ADMIN_KEY (or FLOE_ALLOW_UNAUTHENTICATED=true to serve an open API on purpose)",
            )),
        }
    }

    /// The object store to use: configured, or `<data_dir>/objects`.
    pub fn object_store_config(&self) -> ObjectStoreConfig {
        self.object_store
            .clone()
            .unwrap_or_else(|| ObjectStoreConfig {
                url: format!(
                    "file://{}",
                    absolute(&self.data_dir.join("objects")).display()
                ),
                ..Default::default()
            })
    }

    /// Where the embedded log lives.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// Settings from `FLOE_CONFIG` (a JSON file) overlaid by the other
    /// `FLOE_*` variables in `env`.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Settings> {
        let mut s = match env.get("FLOE_CONFIG") {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                serde_json::from_str(&text)
                    .map_err(|e| Error::invalid("FLOE_CONFIG", format!("{path}: {e}")))?
            }
            None => Settings::default(),
        };
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let num = |k: &str| -> Result<Option<u64>> {
            get(k)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        Error::invalid(k, format!("{v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            get(k)
                .map(|v| match v.as_str() {
                    "1" | "true" | "yes" => Ok(true),
                    "0" | "false" | "no" => Ok(false),
                    _ => Err(Error::invalid(k, format!("{v:?} is not true or false"))),
                })
                .transpose()
        };
        if let Some(v) = get("FLOE_DATA_DIR") {
            s.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("FLOE_LISTEN") {
            s.listen = v;
        }
        if let Some(url) = get("FLOE_STORE_URL") {
            s.object_store = Some(ObjectStoreConfig {
                url,
                ..s.object_store.unwrap_or_default()
            });
        }
        if let Some(store) = s.object_store.as_mut() {
            store.endpoint = get("FLOE_S3_ENDPOINT").or(store.endpoint.take());
            store.region = get("FLOE_S3_REGION").or(store.region.take());
            store.allow_http = flag("FLOE_S3_ALLOW_HTTP")?.unwrap_or(store.allow_http);
        }
        if let Some(url) = get("FLOE_NATS_URL") {
            s.nats = Some(JetStreamConfig {
                url,
                ..s.nats.unwrap_or_default()
            });
        }
        if let Some(nats) = s.nats.as_mut() {
            nats.credentials_file = get("FLOE_NATS_CREDENTIALS").or(nats.credentials_file.take());
            nats.token = get("FLOE_NATS_TOKEN").or(nats.token.take());
            nats.user = get("FLOE_NATS_USER").or(nats.user.take());
            nats.password = get("FLOE_NATS_PASSWORD").or(nats.password.take());
            if let Some(v) = get("FLOE_NATS_STREAM_PREFIX") {
                nats.stream_prefix = v;
            }
            if let Some(v) = get("FLOE_NATS_SUBJECT_PREFIX") {
                nats.subject_prefix = v;
            }
            if let Some(v) = num("FLOE_NATS_REPLICAS")? {
                nats.replicas = v as usize;
            }
            if let Some(v) = num("FLOE_NATS_TIMEOUT_MS")? {
                nats.timeout_ms = v;
            }
        }
        if let Some(v) = num("FLOE_FLUSH_MAX_ROWS")? {
            s.flush.max_rows = v as usize;
        }
        if let Some(v) = num("FLOE_FLUSH_MAX_BYTES")? {
            s.flush.max_bytes = v as usize;
        }
        if let Some(v) = num("FLOE_FLUSH_MAX_AGE_SECS")? {
            s.flush.max_age_secs = v;
        }
        if let Some(v) = num("FLOE_FLUSH_POLL_MS")? {
            s.flush.poll_interval_ms = v;
        }
        if let Some(v) = num("FLOE_MAX_REQUEST_BYTES")? {
            s.limits.max_request_bytes = v as usize;
        }
        if let Some(v) = num("FLOE_CACHE_MEMORY_MB")? {
            s.cache.memory_mb = v as usize;
        }
        if let Some(v) = num("FLOE_CACHE_DISK_MB")? {
            s.cache.disk_mb = v as usize;
        }
        if let Some(v) = get("FLOE_CACHE_DIR") {
            s.cache.disk_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = num("FLOE_CACHE_BLOCK_KIB")? {
            s.cache.block_kib = v as usize;
        }
        if let Some(v) = num("FLOE_CACHE_DECODED_MB")? {
            s.cache.decoded_mb = v as usize;
        }
        if let Some(v) = flag("FLOE_CACHE_AUTO_WARM")? {
            s.cache.auto_warm = v;
        }
        if let Some(v) = num("FLOE_EXACT_FILTER_ROWS")? {
            s.search.exact_filter_rows = v as usize;
        }
        if let Some(v) = num("FLOE_MAX_TOP_K")? {
            s.limits.max_top_k = v as usize;
        }
        if let Some(v) = get("FLOE_ADMIN_KEY") {
            s.auth.admin_key = Some(Secret(v));
        }
        if let Some(v) = flag("FLOE_ALLOW_UNAUTHENTICATED")? {
            s.auth.allow_unauthenticated = v;
        }
        if let Some(v) = num("FLOE_KEY_CACHE_SECS")? {
            s.auth.key_cache_secs = v;
        }
        if let Some(v) = num("FLOE_HEADER_TIMEOUT_SECS")? {
            s.http.header_timeout_secs = v;
        }
        if let Some(v) = num("FLOE_BODY_TIMEOUT_SECS")? {
            s.http.body_timeout_secs = v;
        }
        if let Some(v) = num("FLOE_MAX_CONNECTIONS")? {
            s.http.max_connections = v as usize;
        }
        if let Some(v) = get("FLOE_CORS_ORIGINS") {
            s.http.cors_origins = v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(v) = get("FLOE_TLS_CERT") {
            s.http.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = get("FLOE_TLS_KEY") {
            s.http.tls_key = Some(PathBuf::from(v));
        }
        s.validate()?;
        Ok(s)
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_environment_is_embedded() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        assert!(s.object_store_config().url.starts_with("file:///"));
        assert!(s.nats.is_none());
    }

    #[test]
    fn environment_selects_s3_and_nats() {
        let s = Settings::from_env(&env(&[
            ("FLOE_STORE_URL", "s3://b/p"),
            ("FLOE_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("FLOE_S3_ALLOW_HTTP", "true"),
            ("FLOE_NATS_URL", "nats://127.0.0.1:4222"),
            ("FLOE_NATS_REPLICAS", "3"),
            ("FLOE_FLUSH_MAX_ROWS", "10"),
        ]))
        .unwrap();
        let store = s.object_store.unwrap();
        assert_eq!((store.url.as_str(), store.allow_http), ("s3://b/p", true));
        assert_eq!(s.nats.unwrap().replicas, 3);
        assert_eq!(s.flush.max_rows, 10);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("FLOE_FLUSH_MAX_ROWS", "many"),
            ("FLOE_S3_ALLOW_HTTP", "perhaps"),
            ("FLOE_LISTEN", "here"),
            ("FLOE_STORE_URL", "ftp://x"),
        ] {
            let mut e = env(&[(k, v)]);
            if k == "FLOE_S3_ALLOW_HTTP" {
                e.insert("FLOE_STORE_URL".into(), "s3://b".into());
            }
            let err = Settings::from_env(&e).unwrap_err().to_string();
            let name = k.trim_start_matches("FLOE_").to_lowercase();
            assert!(
                err.contains(k) || err.contains(&name) || err.contains("object_store.url"),
                "{k}: {err}"
            );
        }
    }
}
