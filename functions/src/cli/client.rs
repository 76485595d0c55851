//! The CLI's side of the HTTP API: JSON requests to a Floe server, retried
//! when that is safe, and errors that carry the server's kind and field.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A request Floe refused or could not answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// The server answered with an error.
    #[error("{status} {kind}: {message}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's error kind (`bad_request`, `not_found` …).
        kind: String,
        /// The request field a bad input names.
        field: Option<String>,
        /// What the server said.
        message: String,
    },
    /// No answer: the connection failed or timed out after every retry.
    #[error("no answer from {url}: {message}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            ApiError::Unreachable { .. } => None,
        }
    }
}

/// Whether a call may be sent again after its answer was lost.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads and writes with a request id: sending twice does no harm.
    Safe,
    /// A delete: safe to repeat, and a 404 after a retry means the first
    /// attempt did it.
    SafeGone,
    /// Only when nothing was sent (the connection failed); no read
    /// timeout, since the request may run long (an export).
    IfUnsent,
}

/// A Floe server.
pub(super) struct Server {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retries: u32,
}

impl Server {
    /// The server at `url` (e.g. `http://127.0.0.1:7700`), with an API key.
    pub(super) fn new(url: &str, api_key: Option<String>) -> anyhow::Result<Server> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("floe-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Server {
            http,
            url: url.trim_end_matches('/').to_string(),
            api_key,
            retries: 4,
        })
    }

    /// Sends a request and returns the JSON answer.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, ApiError> {
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.url));
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if retry == Retry::IfUnsent {
                request = request.timeout(Duration::from_secs(24 * 3600));
            }
            let safe = matches!(retry, Retry::Safe | Retry::SafeGone);
            let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(5)));
            match request.send().await {
                Err(e) => {
                    let unsent = e.is_connect();
                    if attempt < self.retries && (unsent || safe) {
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    return Err(ApiError::Unreachable {
                        url: self.url.clone(),
                        message: e.to_string(),
                    });
                }
                Ok(response) => {
                    let status = response.status();
                    let retryable = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if retryable && safe && attempt < self.retries {
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    let text = response.text().await.unwrap_or_default();
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok(value);
                    }
                    if status == StatusCode::NOT_FOUND && retry == Retry::SafeGone && attempt > 0 {
                        return Ok(Value::Null);
                    }
                    return Err(refusal(status, &value, &text));
                }
            }
        }
    }

    /// GET.
    pub(super) async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None, Retry::Safe).await
    }

    /// POST of a body that is safe to send twice.
    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(body), Retry::Safe).await
    }
}

fn refusal(status: StatusCode, body: &Value, text: &str) -> ApiError {
    let error = &body["error"];
    let message = error["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| body["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text.chars().take(500).collect()
            }
        });
    ApiError::Refused {
        status: status.as_u16(),
        kind: error["kind"].as_str().unwrap_or("error").to_string(),
        field: error["field"].as_str().map(str::to_string),
        message,
    }
}

/// `/v1/collections/{name}`, the name escaped for a path.
pub(super) fn collection_path(name: &str) -> String {
    format!("/v1/collections/{}", escape(name))
}

/// A path segment, percent-encoded.
pub(super) fn escape(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
