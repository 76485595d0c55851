//! Floe servers for end-to-end tests, in both modes, and a JSON client.

use std::sync::Arc;

use floe_core::config::FlushSettings;
use floe_core::{Floe, Settings};
use serde_json::Value;

use crate::{jetstream_config, s3_config};

/// A running in-process Floe HTTP server.
pub struct TestServer {
    pub mode: &'static str,
    pub url: String,
    pub floe: Arc<Floe>,
    pub client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Settings with the background indexer effectively off (tests flush
/// explicitly), unless a test starts it.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        flush: FlushSettings {
            max_age_secs: 3600,
            ..Default::default()
        },
        ..Default::default()
    }
}

impl TestServer {
    /// Embedded: local directory and file log.
    pub async fn embedded() -> TestServer {
        Self::with("embedded", |_| {}).await
    }

    /// S3 API server and nats-server from the local stack.
    pub async fn cloud() -> TestServer {
        Self::with("cloud", |_| {}).await
    }

    /// A server in `mode` ("embedded" or "cloud") with its test settings
    /// changed by `edit`.
    pub async fn with(mode: &'static str, edit: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(dir.path());
        if mode == "cloud" {
            settings.object_store = Some(s3_config());
            settings.nats = Some(jetstream_config());
        }
        edit(&mut settings);
        Self::start(mode, settings, dir).await
    }

    pub async fn start(
        mode: &'static str,
        settings: Settings,
        dir: tempfile::TempDir,
    ) -> TestServer {
        let floe = Floe::open(settings).await.expect("open floe");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = floe::serve::start(Arc::clone(&floe), "127.0.0.1:0", false, async {
            let _ = stopped.await;
        })
        .await
        .expect("start server");
        let scheme = if server.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}", server.addr);
        TestServer {
            mode,
            client: Client::new(&url),
            url,
            floe,
            stop: Some(stop),
            _dir: dir,
        }
    }
}

/// A small JSON-over-HTTP client: every call returns (status, body).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// The same client sending `Authorization: Bearer <key>`.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    /// The same client over another `reqwest` client (TLS settings, say).
    pub fn with_http(&self, http: reqwest::Client) -> Self {
        Self {
            http,
            ..self.clone()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Posts raw bytes (for malformed and oversized bodies).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.post_typed(path, "application/json", body).await
    }

    /// Posts raw bytes with the given content type.
    pub async fn post_typed(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// Posts and insists on 200, returning the body.
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, response) = self.post(path, body).await;
        assert_eq!(status, 200, "POST {path} {body}: {response}");
        response
    }
}

/// Runs each scenario `fn(TestServer)` as two tests, `embedded::<name>` and
/// `cloud::<name>`.
#[macro_export]
macro_rules! both_modes {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(floe_tests::server::TestServer::embedded().await).await;
                }
            )*
        }
        mod cloud {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(floe_tests::server::TestServer::cloud().await).await;
                }
            )*
        }
    };
}
