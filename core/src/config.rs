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
        }
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
        Ok(())
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
        if let Some(v) = num("FLOE_MAX_TOP_K")? {
            s.limits.max_top_k = v as usize;
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
