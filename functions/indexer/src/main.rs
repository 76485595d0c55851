//! The indexer function on AWS Lambda: S3 object-created notifications and
//! an EventBridge schedule in, flushes out. Built once at cold start.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe_functions::init_tracing();
    let settings = floe_functions::settings_from_env()?;
    let floe = floe_core::Floe::open(settings).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let floe = Arc::clone(&floe);
        async move {
            floe_indexer::handle(&floe, event.payload)
                .await
                .map_err(|e| lambda_runtime::Diagnostic {
                    error_type: "FloeIndexerError".into(),
                    // The whole context chain, not only the outermost message.
                    error_message: format!("{e:#}"),
                })
        }
    }))
    .await
}
