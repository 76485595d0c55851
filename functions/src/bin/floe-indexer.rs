//! The indexer function on AWS Lambda: S3 object-created notifications and
//! an EventBridge schedule in, index builds and maintenance rounds out.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe::indexer::run().await
}
