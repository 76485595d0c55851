//! The HTTP API (`/v1`, JSON), one axum `Router` served both by `floe serve`
//! and by the Lambda functions through `lambda_http`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::db::Floe;
use crate::error::{Error, ErrorKind};
use crate::types::{Consistency, CreateCollection, DeleteRequest, QueryRequest, UpsertRequest};

/// The OpenAPI description, kept in `docs/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

pub fn router(floe: Arc<Floe>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        )
        .route("/v1/collections", get(list_collections))
        .route(
            "/v1/collections/{name}",
            get(describe).put(create).delete(drop_collection),
        )
        .route("/v1/collections/{name}/upsert", post(upsert))
        .route("/v1/collections/{name}/delete", post(delete))
        .route("/v1/collections/{name}/query", post(query))
        .route("/v1/collections/{name}/flush", post(flush))
        .route("/v1/collections/{name}/warm", post(warm))
        .route("/v1/collections/{name}/rows/{id}", get(get_row))
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
        .with_state(floe)
}

/// An error response: `{"error": {"kind", "field"?, "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, field: Option<String>, message: String) -> Self {
        Self {
            status,
            kind,
            field,
            message,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let field = match &e {
            Error::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let (status, kind) = match (&e, e.kind()) {
            (Error::RecordTooLarge { .. }, _) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            (_, ErrorKind::BadRequest) => (StatusCode::BAD_REQUEST, "bad_request"),
            (_, ErrorKind::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            (_, ErrorKind::Conflict) => (StatusCode::CONFLICT, "conflict"),
            (_, ErrorKind::Unavailable) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (_, ErrorKind::Internal) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        let message = match &e {
            Error::RecordTooLarge { size, max } => {
                format!(
                    "the encoded batch is {size} bytes, the log takes at most {max}: send fewer rows per request"
                )
            }
            other => other.to_string(),
        };
        ApiError::new(status, kind, field, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"kind": self.kind, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Reads the body within the configured limit and parses it, naming the
/// JSON path of a bad field.
async fn parse_body<T: DeserializeOwned>(floe: &Floe, body: Body) -> ApiResult<T> {
    let limit = floe.settings().limits.max_request_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            Some("body".into()),
            format!("request body is larger than {limit} bytes"),
        )
    })?;
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

async fn list_collections(State(floe): State<Arc<Floe>>) -> ApiResult<Response> {
    let names = floe.list_collections().await?;
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

async fn upsert(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: UpsertRequest = parse_body(&floe, body).await?;
    Ok(Json(floe.upsert(&name, request).await?).into_response())
}

async fn delete(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: DeleteRequest = parse_body(&floe, body).await?;
    Ok(Json(floe.delete(&name, request).await?).into_response())
}

async fn query(
    State(floe): State<Arc<Floe>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let request: QueryRequest = parse_body(&floe, body).await?;
    Ok(Json(floe.query(&name, request).await?).into_response())
}

async fn flush(State(floe): State<Arc<Floe>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(floe.flush(&name).await?).into_response())
}

async fn warm(State(floe): State<Arc<Floe>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(floe.warm(&name).await?).into_response())
}

#[derive(Deserialize)]
struct RowParams {
    consistency: Option<String>,
    at_least_lsn: Option<u64>,
}

async fn get_row(
    State(floe): State<Arc<Floe>>,
    Path((name, id)): Path<(String, String)>,
    Query(params): Query<RowParams>,
) -> ApiResult<Response> {
    let consistency = match (params.consistency.as_deref(), params.at_least_lsn) {
        (_, Some(lsn)) => Consistency::AtLeast(lsn),
        (None | Some("strong"), None) => Consistency::Strong,
        (Some("eventual"), None) => Consistency::Eventual,
        (Some(other), None) => {
            return Err(Error::invalid(
                "consistency",
                format!("expected strong or eventual, got {other:?}"),
            )
            .into());
        }
    };
    match floe.get_row(&name, &id, consistency).await? {
        Some(row) => Ok(Json(row).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("id".into()),
            format!("no row with id {id:?}"),
        )),
    }
}
