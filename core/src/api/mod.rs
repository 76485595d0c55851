//! The HTTP API (`/v1`, JSON), one axum `Router` served both by `floe serve`
//! and by the Lambda functions through `lambda_http`.
//!
//! A handler reads the body ([`wire`] shapes), checks it against the
//! collection into an engine request, calls the engine, and turns the
//! answer back into JSON; [`error`] maps failures to status codes.

mod error;
pub mod rows;
pub mod vectors;
pub mod wire;

pub use error::ApiError;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRef, MatchedPath, Path, Query, RawPathParams, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::auth::{Grant, Keys, Need, Role};
use crate::engine::{Floe, WriteAck};
use crate::error::{Error, Result};
use vectors::VectorEncoding;
use wire::{
    CreateCollection, DeleteRequest, ExportRequest, PatchRequest, QueryRequest, QueryResponse,
    RowOut, UpsertRequest,
};

/// The OpenAPI description, kept in `docs/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// The longest request target (path and query) accepted: 414 beyond it.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) accepted: 431 beyond them.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// What the handlers share: the engine and the key check.
#[derive(Clone)]
struct App {
    floe: Arc<Floe>,
    keys: Arc<Keys>,
}

impl FromRef<App> for Arc<Floe> {
    fn from_ref(app: &App) -> Arc<Floe> {
        Arc::clone(&app.floe)
    }
}

/// What a route needs of the caller's key (see [`Need`]); the collection
/// is the route's `{name}`.
#[derive(Debug, Clone, Copy)]
enum Access {
    Collection(Role),
    Any(Role),
    Everything(Role),
}

/// The `/v1` API over `floe`, plus `/healthz` (liveness), `/readyz`
/// (readiness: the log and the object store answer), `/openapi.json`
/// and `/metrics` (Prometheus, where that recorder is installed).
///
/// With an admin key configured every route but the health checks and
/// the OpenAPI description needs `Authorization: Bearer <key>` with the
/// role its [`Access`] names.
pub fn router(floe: Arc<Floe>) -> Router {
    let keys = Arc::new(Keys::new(
        Arc::clone(floe.object_store()),
        &floe.settings().auth,
    ));
    let cors = cors_layer(&floe.settings().http.cors_origins);
    let auth = &floe.settings().auth;
    let loopback_only = auth.admin_key.is_none() && !auth.allow_unauthenticated;
    let app = App { floe, keys };
    let guard = |access: Access, route: MethodRouter<App>| {
        route.route_layer(axum::middleware::from_fn_with_state(
            (Arc::clone(&app.keys), access),
            authorize,
        ))
    };
    use Access::{Any, Collection, Everything};
    use Role::{Admin, Read, Write};
    let router = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        )
        .route("/metrics", guard(Everything(Read), get(metrics_text)))
        .route("/v1/collections", guard(Any(Read), get(list_collections)))
        .route(
            "/v1/collections/{name}",
            guard(Collection(Read), get(describe)).merge(guard(
                Collection(Admin),
                put(create).delete(drop_collection),
            )),
        )
        .route(
            "/v1/collections/{name}/upsert",
            guard(Collection(Write), post(upsert_route)),
        )
        .route(
            "/v1/collections/{name}/patch",
            guard(Collection(Write), post(patch_route)),
        )
        .route(
            "/v1/collections/{name}/export",
            guard(Collection(Write), post(export_route)),
        )
        .route(
            "/v1/collections/{name}/attributes",
            guard(Collection(Admin), post(add_attributes)),
        )
        .route(
            "/v1/collections/{name}/imports",
            guard(Collection(Write), post(start_import)),
        )
        .route(
            "/v1/collections/{name}/imports/{job_id}",
            guard(Collection(Read), get(import_status)),
        )
        .route(
            "/v1/collections/{name}/delete",
            guard(Collection(Write), post(delete_route)),
        )
        .route(
            "/v1/collections/{name}/query",
            guard(Collection(Read), post(query_route)),
        )
        .route(
            "/v1/collections/{name}/flush",
            guard(Collection(Write), post(flush)),
        )
        .route(
            "/v1/collections/{name}/warm",
            guard(Collection(Read), post(warm)),
        )
        .route(
            "/v1/collections/{name}/rows/{id}",
            guard(Collection(Read), get(get_row)),
        )
        .route(
            "/v1/keys",
            guard(Everything(Admin), get(list_keys).post(create_key)),
        )
        .route(
            "/v1/keys/{id}",
            guard(Everything(Admin), routing::delete(revoke_key)),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no such route".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                "method not allowed on this route".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            loopback_only,
            request_limits,
        ))
        .layer(axum::middleware::from_fn(record_metrics));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(
                            DefaultOnResponse::new()
                                .level(tracing::Level::INFO)
                                .latency_unit(tower_http::LatencyUnit::Micros),
                        ),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(app)
}

/// Browsers may call the API from these origins (none when empty: no
/// CORS headers, so a page elsewhere can neither preflight nor read).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    let request_id = HeaderName::from_static("x-request-id");
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                request_id.clone(),
            ])
            .expose_headers([request_id])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Checks the caller's key against what the route needs, and hands the
/// key's grant to the handler (listing filters by it).
async fn authorize(
    State((keys, access)): State<(Arc<Keys>, Access)>,
    params: RawPathParams,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let grant = match keys.authenticate(authorization).await {
        Ok(grant) => grant,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let name = params
        .iter()
        .find(|(k, _)| *k == "name")
        .map_or("", |(_, v)| v);
    let need = match access {
        Access::Collection(role) => Need::Collection(role, name),
        Access::Any(role) => Need::Any(role),
        Access::Everything(role) => Need::Everything(role),
    };
    if let Err(e) = grant.allow(need) {
        return ApiError::from(e).into_response();
    }
    request.extensions_mut().insert(grant);
    next.run(request).await
}

/// Counts every answer by route template (not by collection: a label per
/// collection would grow without bound), method and status.
async fn record_metrics(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let response = next.run(request).await;
    crate::telemetry::http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn metrics_text() -> Response {
    match crate::telemetry::render_prometheus() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "this process exports no Prometheus metrics (on Lambda they go to CloudWatch as EMF)"
                .into(),
        )
        .into_response(),
    }
}

/// The span of one request: the access log line (`on_response`) carries
/// its method, path and request id (the client's `x-request-id`, or a new
/// UUID, echoed on the response).
fn request_span(request: &axum::http::Request<Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    )
}

/// Refuses an oversized request target or header block with the JSON error
/// shape before any handler runs. (The HTTP server's own, far larger
/// limits still answer without a body.)
async fn request_limits(
    State(loopback_only): State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if loopback_only && !addressed_to_loopback(request.headers()) {
        // Without keys this server trusts whoever reaches it, which is only
        // this machine, unless a web page re-points its own name at
        // 127.0.0.1 (DNS rebinding): such requests name that page's host.
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            Some("host".into()),
            "this server has no API keys and answers only requests addressed to localhost, 127.0.0.1 or [::1]: set FLOE_ADMIN_KEY to serve other names".into(),
        )
        .into_response();
    }
    let uri = request.uri().to_string().len();
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "too_large",
            Some("uri".into()),
            format!("the request target is {uri} bytes, at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too_large",
            Some("headers".into()),
            format!("the headers are {headers} bytes, at most {MAX_HEADER_BYTES} are accepted"),
        )
        .into_response();
    }
    if has_body(request.headers()) && !is_json(request.headers()) {
        // Browsers send text/plain and form bodies cross-site without a
        // CORS preflight: refusing them keeps a web page from writing to
        // a local Floe.
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            Some("content-type".into()),
            "request bodies must be JSON: send Content-Type: application/json".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether the `Host` header names this machine's loopback (or is absent,
/// as HTTP/1.0 allows).
fn addressed_to_loopback(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [::1]:7700
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

/// Whether the request says it carries a body.
fn has_body(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `application/json` (with parameters, such as a charset) or `…+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Readiness: 200 when the log and the object store both answer, 503
/// (saying which failed) otherwise.
async fn ready(State(floe): State<Arc<Floe>>) -> Response {
    let (log, store) = floe.ready().await;
    let status = |r: &Result<()>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(e.to_string()),
    };
    let body = json!({
        "status": if log.is_ok() && store.is_ok() { "ready" } else { "unavailable" },
        "log": status(&log),
        "object_store": status(&store),
    });
    if log.is_ok() && store.is_ok() {
        Json(body).into_response()
    } else {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }
}

// ---- the operations, as the handlers (and embedders) run them -------------

/// Checks an upsert body against the collection and appends it.
pub async fn upsert(floe: &Floe, name: &str, request: UpsertRequest) -> Result<WriteAck> {
    floe.upsert(name, |config| request.check(config)).await
}

/// Checks a patch body against the collection and appends the patched rows.
pub async fn patch(floe: &Floe, name: &str, request: PatchRequest) -> Result<WriteAck> {
    floe.patch(name, |config| request.check(config)).await
}

/// Checks a delete body against the collection and appends it.
pub async fn delete(floe: &Floe, name: &str, request: DeleteRequest) -> Result<WriteAck> {
    floe.delete(name, |config| request.check(config)).await
}

/// Checks a query body against the collection and runs it.
pub async fn query(floe: &Floe, name: &str, request: QueryRequest) -> Result<QueryResponse> {
    let limits = &floe.settings().limits;
    let encoding = request.vector_encoding;
    let result = floe
        .query(name, |config| request.check(config, limits))
        .await?;
    Ok(QueryResponse::new(result, encoding))
}

// ---- handlers -------------------------------------------------------------

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Reads the body within the configured limit and parses it, naming the
/// JSON path of a bad field.
async fn parse_body<T: DeserializeOwned>(floe: &Floe, body: Body) -> ApiResult<T> {
    let limit = floe.settings().limits.max_request_bytes;
    let timeout = floe.settings().http.body_timeout();
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await;
    let bytes: Bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                Some("body".into()),
                format!("request body is larger than {limit} bytes"),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                Some("body".into()),
                format!("the request body did not arrive within {timeout:?}"),
            ));
        }
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::from(Error::Invalid {
            field,
            message: e.into_inner().to_string(),
        })
    })
}

async fn list_collections(
    State(floe): State<Arc<Floe>>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<Response> {
    let mut names = floe.list_collections().await?;
    // A key limited to some collections sees only those.
    names.retain(|name| grant.covers(name));
    Ok(Json(json!({ "collections": names })).into_response())
}

async fn create(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: CreateCollection = parse_body(&floe, body).await?;
    let (config, created) = floe.create_collection(request.into_config(&name)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(config)).into_response())
}

async fn describe(State(floe): State<Arc<Floe>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(floe.describe(&name).await?).into_response())
}

async fn drop_collection(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    floe.drop_collection(&name).await?;
    Ok(Json(json!({ "deleted": name })).into_response())
}

async fn upsert_route(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: UpsertRequest = parse_body(&floe, body).await?;
    Ok(Json(upsert(&floe, &name, request).await?).into_response())
}

async fn patch_route(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: PatchRequest = parse_body(&floe, body).await?;
    Ok(Json(patch(&floe, &name, request).await?).into_response())
}

async fn export_route(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: ExportRequest = parse_body(&floe, body).await?;
    let (prefix, consistency, rows_per_file) = request.check()?;
    let report = floe
        .export(&name, &prefix, consistency, rows_per_file)
        .await?;
    let store = floe.settings().object_store_config().url;
    let location = format!("{}/exports/{prefix}", store.trim_end_matches('/'));
    let mut body = serde_json::to_value(&report).map_err(|e| Error::internal("export", e))?;
    body["location"] = json!(location);
    Ok(Json(body).into_response())
}

/// Body of `POST …/attributes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddAttributes {
    attributes: Vec<crate::catalog::AttributeDef>,
}

async fn add_attributes(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: AddAttributes = parse_body(&floe, body).await?;
    let config = floe.add_attributes(&name, &request.attributes).await?;
    Ok(Json(config).into_response())
}

async fn start_import(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    Extension(grant): Extension<Grant>,
    body: Body,
) -> ApiResult<Response> {
    let request: crate::import::job::ImportRequest = parse_body(&floe, body).await?;
    let may_read_exports = grant.allow(Need::Everything(Role::Admin)).is_ok();
    let status = floe.start_import(&name, request, may_read_exports).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn import_status(
    State(floe): State<Arc<Floe>>,
    Path((name, job_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(floe.import_status(&name, &job_id).await?).into_response())
}

async fn delete_route(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: DeleteRequest = parse_body(&floe, body).await?;
    Ok(Json(delete(&floe, &name, request).await?).into_response())
}

async fn query_route(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: QueryRequest = parse_body(&floe, body).await?;
    Ok(Json(query(&floe, &name, request).await?).into_response())
}

async fn flush(State(floe): State<Arc<Floe>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(floe.flush(&name).await?).into_response())
}

async fn warm(State(floe): State<Arc<Floe>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(floe.warm(&name).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowParams {
    consistency: Option<String>,
    at_least_lsn: Option<String>,
    vector_encoding: Option<VectorEncoding>,
}

async fn get_row(
    State(floe): State<Arc<Floe>>,
    Path((name, id)): Path<(String, String)>,
    params: std::result::Result<Query<RowParams>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) =
        params.map_err(|e| ApiError::from(Error::invalid("query", e.body_text())))?;
    let at_least_lsn = params
        .at_least_lsn
        .as_deref()
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                Error::invalid(
                    "at_least_lsn",
                    format!("must be a non-negative integer, got {s:?}"),
                )
            })
        })
        .transpose()?;
    let consistency = wire::consistency(params.consistency.as_deref(), at_least_lsn)?;
    match floe.get_row(&name, &id, consistency).await? {
        Some(row) => {
            Ok(Json(RowOut::new(row, params.vector_encoding.unwrap_or_default())).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("id".into()),
            format!("no row with id {id:?}"),
        )),
    }
}

// ---- API keys -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    role: Role,
    #[serde(default)]
    collections: Option<Vec<String>>,
}

async fn create_key(State(app): State<App>, body: Body) -> ApiResult<Response> {
    let request: CreateKey = parse_body(&app.floe, body).await?;
    let grant = Grant {
        role: request.role,
        collections: request.collections,
    };
    let key = app.keys.create(&request.name, grant).await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn list_keys(State(app): State<App>) -> ApiResult<Response> {
    Ok(Json(json!({ "keys": app.keys.list().await? })).into_response())
}

async fn revoke_key(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(app.keys.revoke(&id).await?).into_response())
}
