//! The ingest function on AWS Lambda: API Gateway events in, the Floe HTTP
//! router out (the same router `floe serve` runs). Configuration comes from
//! `FLOE_*` environment variables, read once at cold start.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    floe::http::run().await
}
