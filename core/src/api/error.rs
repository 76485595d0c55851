//! Errors as HTTP responses: `{"error": {"kind", "field"?, "message"}}`,
//! with the status the error's kind calls for.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{Error, ErrorKind};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        kind: &'static str,
        field: Option<String>,
        message: String,
    ) -> Self {
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
            Error::Invalid { field, .. }
            | Error::ConditionFailed { field, .. }
            | Error::RowNotFound { field, .. } => Some(field.clone()),
            _ => None,
        };
        let (status, kind) = match (&e, e.kind()) {
            (Error::RecordTooLarge { .. }, _) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            (Error::ConditionFailed { .. }, _) => (StatusCode::CONFLICT, "condition_failed"),
            (_, ErrorKind::BadRequest) => (StatusCode::BAD_REQUEST, "bad_request"),
            (_, ErrorKind::Unauthenticated) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            (_, ErrorKind::Forbidden) => (StatusCode::FORBIDDEN, "forbidden"),
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
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Everything behind a 503 is worth retrying soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"floe\""),
            );
        }
        response
    }
}
