//! The query function on AWS Lambda: the same HTTP adapter as ingest,
//! deployed as its own function (its own IAM role, memory and scaling).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    floe::http::run().await
}
