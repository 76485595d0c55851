//! The Lambda code paths, driven by real event payloads (fixtures in
//! `functions/fixtures/`) against the S3 API server and nats-server: API
//! Gateway events through `lambda_http`'s adapter into the Floe router (what
//! the ingest and query functions run), and EventBridge / S3 events into the
//! indexer's handler.

use std::sync::Arc;

use floe_core::Floe;
use floe_tests::server::test_settings;
use floe_tests::{fixture, jetstream_config, s3_config};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use serde_json::{Value, json};

async fn cloud_floe() -> (Arc<Floe>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.object_store = Some(s3_config());
    settings.nats = Some(jetstream_config());
    // Behind API Gateway without keys: the explicit opt-out Lambda needs.
    settings.auth.allow_unauthenticated = true;
    (Floe::open(settings).await.unwrap(), dir)
}

/// Invokes the HTTP function the way the Lambda runtime does.
async fn invoke_http(floe: &Arc<Floe>, event: Value) -> (u16, Value) {
    let request: LambdaRequest = serde_json::from_value(event).expect("an API Gateway event");
    let mut adapter = Adapter::from(floe::http::service(Arc::clone(floe)));
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .expect("handler");
    let response = serde_json::to_value(response).expect("response json");
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let body = response["body"]
        .as_str()
        .map(|b| serde_json::from_str(b).unwrap_or(Value::String(b.into())))
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_events_reach_the_router() {
    let (floe, _dir) = cloud_floe().await;
    let (status, body) = invoke_http(&floe, fixture("apigw-v2-create.json")).await;
    assert_eq!(status, 201, "{body}");
    // A base64-encoded body, as API Gateway sends binary-safe payloads.
    let (status, body) = invoke_http(&floe, fixture("apigw-v2-upsert.json")).await;
    assert_eq!((status, body["lsn"].as_u64()), (200, Some(1)), "{body}");
    // A REST API (v1) event with a stage.
    let (status, body) = invoke_http(&floe, fixture("apigw-v1-query.json")).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(body["results"][0]["attributes"]["n"], 7);
    let (status, body) = invoke_http(&floe, fixture("apigw-v2-bad-upsert.json")).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("rows[0].vector")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_flushes_on_s3_and_scheduled_events() {
    let (floe, _dir) = cloud_floe().await;
    invoke_http(&floe, fixture("apigw-v2-create.json")).await;
    invoke_http(&floe, fixture("apigw-v2-upsert.json")).await;

    // An S3 object-created event naming the collection flushes it now.
    let report = floe::indexer::handle(&floe, fixture("s3-object-created.json"))
        .await
        .unwrap();
    assert_eq!(
        report["flushed"][0],
        json!({"collection": "lam", "checkpoint_lsn": 1, "rows": 2}),
        "{report}"
    );
    let info = floe.describe("lam").await.unwrap();
    assert_eq!((info.stats.checkpoint_lsn, info.stats.segments), (1, 1));

    // A scheduled event flushes what is due; nothing is, so nothing happens.
    let report = floe::indexer::handle(&floe, fixture("eventbridge-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(report["flushed"], json!([]));
    // Make the tail due (age threshold 0 s) and schedule again.
    let (status, _) = invoke_http(&floe, {
        let mut e = fixture("apigw-v2-upsert.json");
        e["body"] = json!("{\"rows\": [{\"id\": 9, \"vector\": [3, 3]}]}");
        e["isBase64Encoded"] = json!(false);
        e
    })
    .await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.object_store = floe.settings().object_store.clone();
    settings.nats = floe.settings().nats.clone();
    settings.flush.max_age_secs = 0;
    let eager = Floe::open(settings).await.unwrap();
    let report = floe::indexer::handle(&eager, fixture("eventbridge-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(report["flushed"][0]["checkpoint_lsn"], 2, "{report}");

    assert!(
        floe::indexer::handle(&floe, json!({"hello": "world"}))
            .await
            .is_err(),
        "unknown events are refused"
    );

    // The deleting route is served by the indexer (the only function that
    // may delete objects), from an API Gateway event.
    let response = floe::indexer::handle(&floe, fixture("apigw-v2-delete-collection.json"))
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(matches!(
        floe.describe("lam").await,
        Err(floe_core::Error::CollectionNotFound(_))
    ));
}

#[test]
fn the_lag_metric_is_embedded_metric_format() {
    let line = floe::indexer::lag_metric("docs", 42, 1_795_305_599_000);
    let spec = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(spec["Namespace"], "Floe");
    assert_eq!(spec["Metrics"][0]["Name"], "UnflushedRecords");
    assert_eq!(
        spec["Dimensions"],
        json!([["Collection"], []]),
        "per collection, and one aggregate the alarm watches"
    );
    assert_eq!(
        (
            line["Collection"].as_str(),
            line["UnflushedRecords"].as_u64()
        ),
        (Some("docs"), Some(42))
    );
    assert!(!floe::indexer::is_http_event(&fixture(
        "s3-object-created.json"
    )));
    assert!(floe::indexer::is_http_event(&fixture(
        "apigw-v1-query.json"
    )));
}
