//! A local stand-in for the AWS Lambda service, enough to run Floe's real
//! `bootstrap` artifacts the way Lambda does:
//!
//! * [`Function`] starts one execution environment: the function's process,
//!   with Lambda's environment variables, talking to its own loopback
//!   [Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
//!   (`invocation/next`, `…/response`, `…/error`, `init/error`). Its init
//!   duration is measured as Lambda reports it: from process start to the
//!   runtime's first `next` call.
//! * [`ApiGateway`] is an HTTP API in front of the functions: requests in,
//!   payload-format-2.0 events out, routed by the `HttpApi` events of
//!   `infra/template.yaml`, responses back as HTTP.
//!
//! The AWS Runtime Interface Emulator is a Go binary from GitHub releases
//! (not reachable here) and `cargo lambda watch` rebuilds and runs the
//! sources rather than the zipped artifact, so this runs what is deployed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

const RUNTIME_PREFIX: &str = "/2018-06-01/runtime";

/// What one invocation came back with.
#[derive(Debug)]
pub enum Outcome {
    /// The function's response payload.
    Ok(Value),
    /// The function reported an error (`…/error`): its error document.
    Error(Value),
}

struct Pending {
    payload: Value,
    reply: oneshot::Sender<Outcome>,
}

struct RuntimeState {
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    started: Instant,
    init: watch::Sender<InitState>,
    arn: String,
    timeout: Duration,
}

/// Where the function's initialisation stands.
#[derive(Debug, Clone, PartialEq)]
pub enum InitState {
    Running,
    /// The runtime asked for its first event after this long.
    Done(Duration),
    /// The runtime reported an init error (`init/error`).
    Failed(String),
}

/// How to start one function.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// The `bootstrap` executable to run.
    pub bootstrap: PathBuf,
    /// A program (and its arguments) to run `bootstrap` with, such as
    /// `qemu-aarch64 -L /usr/aarch64-linux-gnu` for another architecture's
    /// artifact; empty to run it directly.
    pub launcher: Vec<String>,
    /// The function's configured environment (its `FLOE_*` settings and
    /// credentials); nothing else of the caller's environment is passed on.
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub timeout: Duration,
}

/// One running execution environment of a function.
pub struct Function {
    pub name: String,
    invoke: mpsc::Sender<Pending>,
    init: watch::Receiver<InitState>,
    child: tokio::process::Child,
    log: PathBuf,
    _runtime: tokio::task::JoinHandle<()>,
}

impl Function {
    /// Starts the runtime API and the function's process (a cold start).
    /// Its output goes to `<log_dir>/<name>.log`.
    pub async fn start(spec: FunctionSpec, log_dir: &Path) -> std::io::Result<Function> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (invoke, queue) = mpsc::channel(16);
        let (init_tx, init) = watch::channel(InitState::Running);
        let state = Arc::new(RuntimeState {
            queue: tokio::sync::Mutex::new(queue),
            in_flight: Mutex::new(HashMap::new()),
            started: Instant::now(),
            init: init_tx,
            arn: format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{}",
                spec.name
            ),
            timeout: spec.timeout,
        });
        let app = axum::Router::new()
            .route(&format!("{RUNTIME_PREFIX}/invocation/next"), get(next))
            .route(
                &format!("{RUNTIME_PREFIX}/invocation/{{id}}/response"),
                post(respond),
            )
            .route(
                &format!("{RUNTIME_PREFIX}/invocation/{{id}}/error"),
                post(fail),
            )
            .route(&format!("{RUNTIME_PREFIX}/init/error"), post(init_error))
            .with_state(Arc::clone(&state));
        let runtime = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        // The process runs in the artifact's directory, as in /var/task.
        let bootstrap = std::fs::canonicalize(&spec.bootstrap)?;
        let log = log_dir.join(format!("{}.log", spec.name));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let task_root = bootstrap
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut command = match spec.launcher.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(&bootstrap);
                c
            }
            None => tokio::process::Command::new(&bootstrap),
        };
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            )
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("LAMBDA_TASK_ROOT", &task_root)
            .env("_HANDLER", "bootstrap")
            .env("TZ", ":UTC")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&task_root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command.spawn()?;
        Ok(Function {
            name: spec.name,
            invoke,
            init,
            child,
            log,
            _runtime: runtime,
        })
    }

    /// Waits for the runtime's first `next` call: Lambda's init duration.
    /// Fails if the runtime reports an init error, the process exits first
    /// (what Lambda reports as `Runtime.ExitError`), or `limit` passes.
    pub async fn init_duration(&mut self, limit: Duration) -> Result<Duration, String> {
        let Function { init, child, .. } = self;
        let waited = tokio::time::timeout(limit, async {
            loop {
                match &*init.borrow_and_update() {
                    InitState::Done(d) => return Ok(*d),
                    InitState::Failed(e) => return Err(format!("init error: {e}")),
                    InitState::Running => {}
                }
                tokio::select! {
                    changed = init.changed() => {
                        if changed.is_err() {
                            return Err("runtime API stopped".to_string());
                        }
                    }
                    status = child.wait() => {
                        return Err(format!("the process exited during init: {status:?}"));
                    }
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r.map_err(|e| format!("{}: {e}; log: {}", self.name, self.output())),
            Err(_) => Err(format!(
                "{}: not ready after {limit:?}; log: {}",
                self.name,
                self.output()
            )),
        }
    }

    /// Invokes the function synchronously (`RequestResponse`).
    pub async fn invoke(&self, payload: Value) -> Result<Outcome, String> {
        let (reply, outcome) = oneshot::channel();
        self.invoke
            .send(Pending { payload, reply })
            .await
            .map_err(|_| format!("{}: runtime API stopped", self.name))?;
        match tokio::time::timeout(Duration::from_secs(120), outcome).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(_)) => Err(format!("{}: invocation dropped", self.name)),
            Err(_) => Err(format!(
                "{}: no response in 120 s; log: {}",
                self.name,
                self.output()
            )),
        }
    }

    /// Invokes the function and takes a reported error as a failure, with
    /// the event and the function's log in the message.
    pub async fn invoke_ok(&self, event: Value) -> Result<Value, String> {
        match self.invoke(event.clone()).await? {
            Outcome::Ok(v) => Ok(v),
            Outcome::Error(e) => Err(format!(
                "{} failed on {event}: {e}\n{}",
                self.name,
                self.output()
            )),
        }
    }

    /// The process's peak resident memory so far (Linux `VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The process's exit status, waiting up to 5 s for it to end.
    pub async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Everything the function printed so far (its CloudWatch log stream).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn next(State(s): State<Arc<RuntimeState>>) -> Response {
    s.init.send_if_modified(|state| {
        if *state == InitState::Running {
            *state = InitState::Done(s.started.elapsed());
            true
        } else {
            false
        }
    });
    let pending = s.queue.lock().await.recv().await;
    let Some(Pending { payload, reply }) = pending else {
        return StatusCode::GONE.into_response();
    };
    let id = uuid::Uuid::new_v4().to_string();
    let deadline = std::time::SystemTime::now() + s.timeout;
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if let Ok(mut in_flight) = s.in_flight.lock() {
        in_flight.insert(id.clone(), reply);
    }
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", s.arn.clone());
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    (headers, payload.to_string()).into_response()
}

fn finish(s: &RuntimeState, id: &str, outcome: Outcome) -> StatusCode {
    let reply = s.in_flight.lock().ok().and_then(|mut m| m.remove(id));
    match reply {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_string(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

async fn respond(
    State(s): State<Arc<RuntimeState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&s, &id, Outcome::Ok(json_or_string(&body)))
}

async fn fail(
    State(s): State<Arc<RuntimeState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&s, &id, Outcome::Error(json_or_string(&body)))
}

async fn init_error(State(s): State<Arc<RuntimeState>>, body: Bytes) -> StatusCode {
    let _ = s
        .init
        .send(InitState::Failed(String::from_utf8_lossy(&body).into()));
    StatusCode::ACCEPTED
}

// ---- API Gateway (HTTP API) ----------------------------------------------

/// One `HttpApi` event of the template: a method and path (with `{param}`
/// segments) routed to a function (by its logical id in the template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub function: String,
    pub method: String,
    pub path: String,
}

impl Route {
    /// The path parameters, if `path` matches this route's template.
    fn matches(&self, method: &Method, path: &str) -> Option<Vec<(String, String)>> {
        if !self.method.eq_ignore_ascii_case(method.as_str()) {
            return None;
        }
        let want: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if want.len() != got.len() {
            return None;
        }
        let mut params = Vec::new();
        for (w, g) in want.iter().zip(&got) {
            match w.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !g.is_empty() => params.push((name.to_string(), percent_decode(g))),
                Some(_) => return None,
                None if w == g => {}
                None => return None,
            }
        }
        Some(params)
    }
}

/// The `HttpApi` events of a SAM template, by function. The template is
/// read as text: its events are one flow mapping per line
/// (`Properties: {ApiId: !Ref HttpApi, Method: POST, Path: "/v1/…"}`) under
/// the function's logical id, the shape `infra/template.yaml` keeps.
pub fn template_routes(template: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut resource = String::new();
    for line in template.lines() {
        // A resource is a key indented by exactly two spaces.
        if let Some(key) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' '))
            .and_then(|l| l.strip_suffix(':'))
        {
            resource = key.to_string();
            continue;
        }
        let Some(props) = line
            .trim()
            .strip_prefix("Properties: {ApiId: !Ref HttpApi,")
        else {
            continue;
        };
        let field = |name: &str| {
            props.split(',').find_map(|part| {
                part.trim()
                    .trim_end_matches('}')
                    .strip_prefix(name)
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(method), Some(path)) = (field("Method:"), field("Path:")) {
            routes.push(Route {
                function: resource.clone(),
                method,
                path,
            });
        }
    }
    routes
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

struct GatewayState {
    routes: Vec<Route>,
    functions: HashMap<String, Arc<Function>>,
}

/// An HTTP API on loopback in front of running functions.
pub struct ApiGateway {
    pub url: String,
    _server: tokio::task::JoinHandle<()>,
}

impl ApiGateway {
    /// Serves `routes`, each invoking the function of that logical id.
    pub async fn start(
        routes: Vec<Route>,
        functions: HashMap<String, Arc<Function>>,
    ) -> std::io::Result<ApiGateway> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let state = Arc::new(GatewayState { routes, functions });
        let app = axum::Router::new().fallback(gateway).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ApiGateway {
            url: format!("http://{addr}"),
            _server: server,
        })
    }
}

fn api_message(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn gateway(
    State(s): State<Arc<GatewayState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some((route, params)) = s
        .routes
        .iter()
        .find_map(|r| r.matches(&method, path).map(|p| (r, p)))
    else {
        return api_message(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(function) = s.functions.get(&route.function) else {
        return api_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let event = http_api_event(route, &params, &method, &uri, &headers, &body);
    match function.invoke(event).await {
        Ok(Outcome::Ok(response)) => http_response(&response),
        // API Gateway hides function errors behind a 500.
        Ok(Outcome::Error(_)) | Err(_) => {
            api_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// The payload-format-2.0 event API Gateway's HTTP API sends.
fn http_api_event(
    route: &Route,
    params: &[(String, String)],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Value {
    let mut joined: HashMap<String, String> = HashMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split("; ").map(str::to_string));
            continue;
        }
        joined
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let query = uri.query().unwrap_or("");
    let mut query_params: HashMap<String, String> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query_params
            .entry(percent_decode(k))
            .and_modify(|e| {
                e.push(',');
                e.push_str(&percent_decode(v));
            })
            .or_insert_with(|| percent_decode(v));
    }
    let route_key = format!("{} {}", route.method, route.path);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": now,
        },
        "isBase64Encoded": !body.is_empty(),
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query_params.is_empty() {
        event["queryStringParameters"] = json!(query_params);
    }
    if !params.is_empty() {
        let p: HashMap<_, _> = params.iter().cloned().collect();
        event["pathParameters"] = json!(p);
    }
    if !body.is_empty() {
        // Like API Gateway for a body it does not know to be text.
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    }
    event
}

/// The HTTP response a function's payload-format-2.0 response stands for.
fn http_response(response: &Value) -> Response {
    let status = response["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = response["body"].as_str().unwrap_or("");
    let body = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let mut out = Response::new(axum::body::Body::from(body));
    *out.status_mut() = status;
    if let Some(headers) = response["headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(n), Some(Ok(v))) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                out.headers_mut().insert(n, v);
            }
        }
    }
    out
}

// ---- Floe's functions on the local stack ---------------------------------

/// The template's functions: logical id and binary (the artifact's name).
pub const FUNCTIONS: [(&str, &str); 3] = [
    ("IngestFunction", "floe-ingest"),
    ("QueryFunction", "floe-query"),
    ("IndexerFunction", "floe-indexer"),
];

/// The artifacts of one architecture, as `infra/build.sh` leaves them
/// (`target/lambda/<arch>`), and how to run them on this machine.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub dir: PathBuf,
    pub launcher: Vec<String>,
}

impl Artifacts {
    /// `<FLOE_TEST_LAMBDA_DIR>/<arch>`, run as `FLOE_TEST_LAMBDA_RUN_<ARCH>`
    /// says: `native`, or a launcher command line (`qemu-aarch64 -L …`).
    pub fn from_env(arch: &str) -> Artifacts {
        let root = crate::required_env("FLOE_TEST_LAMBDA_DIR");
        let run = crate::required_env(&format!("FLOE_TEST_LAMBDA_RUN_{}", arch.to_uppercase()));
        let launcher = match run.as_str() {
            "native" => Vec::new(),
            other => other.split_whitespace().map(str::to_string).collect(),
        };
        Artifacts {
            dir: Path::new(&root).join(arch),
            launcher,
        }
    }

    /// The `bootstrap` `infra/build.sh` extracted from `binary`'s zip.
    pub fn bootstrap(&self, binary: &str) -> PathBuf {
        self.dir.join(binary).join("unzipped").join("bootstrap")
    }
}

/// Where the functions keep their data: an S3 API server and nats-server.
#[derive(Debug, Clone)]
pub struct Backends {
    pub s3_endpoint: String,
    pub bucket: String,
    /// The data prefix in the bucket (the template's `DataPrefix`).
    pub prefix: String,
    pub nats_url: String,
    /// Stream and subject prefix, unique per run.
    pub streams: String,
    /// The query function's disk cache tier (`FLOE_CACHE_DISK_MB`).
    pub query_cache_disk_mb: u64,
}

/// The admin key the emulated functions are configured with.
pub const TEST_ADMIN_KEY: &str = "lambda-test-admin-key-0001";

impl Backends {
    /// The environment the template gives the function `logical_id`, with
    /// its `/tmp` under `tmp`.
    pub fn function_env(&self, logical_id: &str, tmp: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            (
                "FLOE_STORE_URL",
                format!("s3://{}/{}", self.bucket, self.prefix),
            ),
            ("FLOE_S3_ENDPOINT", self.s3_endpoint.clone()),
            ("FLOE_S3_ALLOW_HTTP", "true".into()),
            ("FLOE_NATS_URL", self.nats_url.clone()),
            ("FLOE_NATS_REPLICAS", "1".into()),
            ("FLOE_NATS_STREAM_PREFIX", self.streams.to_uppercase()),
            ("FLOE_NATS_SUBJECT_PREFIX", self.streams.clone()),
            ("FLOE_DATA_DIR", tmp.join("floe").display().to_string()),
            ("FLOE_CACHE_MEMORY_MB", "256".into()),
            ("FLOE_CACHE_DISK_MB", "0".into()),
            // The template resolves the admin key from Secrets Manager.
            ("FLOE_ADMIN_KEY", TEST_ADMIN_KEY.into()),
            ("FLOE_KEY_CACHE_SECS", "1".into()),
            // Lambda hands a function its role's credentials this way.
            ("AWS_ACCESS_KEY_ID", "floe-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "floe-test".into()),
            ("AWS_SESSION_TOKEN", "floe-test-session".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if logical_id == "QueryFunction" {
            env.push((
                "FLOE_CACHE_DIR".into(),
                tmp.join("floe-cache").display().to_string(),
            ));
            env.push((
                "FLOE_CACHE_DISK_MB".into(),
                self.query_cache_disk_mb.to_string(),
            ));
        }
        env
    }

    /// Starts the function `logical_id` from `<artifacts>/<binary>/unzipped/bootstrap`
    /// (what `infra/build.sh` extracts from the zip) and waits for its init.
    pub async fn start(
        &self,
        logical_id: &str,
        artifacts: &Artifacts,
        dir: &Path,
    ) -> Result<(Function, Duration), String> {
        let binary = FUNCTIONS
            .iter()
            .find(|(id, _)| *id == logical_id)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("no function {logical_id}"))?;
        let bootstrap = artifacts.bootstrap(binary);
        if !bootstrap.is_file() {
            return Err(format!(
                "{} is missing: build the artifacts with infra/build.sh",
                bootstrap.display()
            ));
        }
        let tmp = dir.join(format!("{logical_id}-{}", uuid::Uuid::new_v4().simple()));
        let spec = FunctionSpec {
            name: binary.to_string(),
            env: self.function_env(logical_id, &tmp),
            bootstrap,
            launcher: artifacts.launcher.clone(),
            memory_mb: 1024,
            timeout: Duration::from_secs(60),
        };
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut function = Function::start(spec, &tmp)
            .await
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let init = function.init_duration(Duration::from_secs(30)).await?;
        Ok((function, init))
    }
}
