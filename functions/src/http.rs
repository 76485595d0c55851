//! The HTTP function adapter that the ingest and query functions share: API
//! Gateway events in, the Floe router out. They are one adapter deployed
//! twice, so that each gets its own IAM role, memory and scaling.

use std::sync::Arc;

use floe_core::Floe;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tower::ServiceExt;

/// REST APIs (v1) put the stage in the path (`/prod/v1/...`); the router
/// knows only `/v1/...`, so the stage is taken off here.
pub fn strip_stage(mut request: Request) -> Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    if let Some(stage) = stage.filter(|s| s != "$default") {
        let prefix = format!("/{stage}");
        let path = request.uri().path();
        if let Some(rest) = path.strip_prefix(&prefix).filter(|r| r.starts_with('/')) {
            let path_and_query = match request.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            let mut parts = request.uri().clone().into_parts();
            if let Ok(pq) = path_and_query.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = lambda_http::http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
            }
        }
    }
    request
}

/// The service Lambda runs: the Floe router behind [`strip_stage`].
pub fn service(
    floe: Arc<Floe>,
) -> impl tower::Service<
    Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    floe_core::api::router(floe).map_request(|r: Request| strip_stage(r).map(axum::body::Body::new))
}

/// Reads `FLOE_*` settings once (cold start) and serves events until the
/// runtime stops.
pub async fn run() -> Result<(), lambda_http::Error> {
    let (settings, emf) = crate::env::init_lambda()?;
    let floe = Floe::open(settings).await?;
    let service = service(floe).map_future(move |answer| async move {
        let response = answer.await;
        crate::env::flush_emf(emf);
        response
    });
    lambda_http::run(service).await
}
