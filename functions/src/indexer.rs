//! The indexer function's event adapter. An S3 object-created event for a
//! sealed segment (`collections/<name>/segments/<id>/sealed.parquet`) builds
//! its index; an import job's `imports/<job>/job.json` runs the import;
//! any other key under `collections/<name>/` flushes that collection. A scheduled (EventBridge) event runs a thorough maintenance
//! round ([`Floe::maintain`], the one `floe serve` runs too) over every
//! collection and reports each collection's unflushed log records as a
//! CloudWatch metric (EMF).
//! API Gateway events (the routes that delete: `DELETE /v1/collections/…`)
//! go through the same HTTP adapter as the ingest and query functions: the
//! indexer is the only function allowed to delete objects.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use floe_core::Floe;
use floe_core::storage::{CollectionFile, CollectionKey, parse_key};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Objects were created: these keys (decoded).
    Objects(Vec<String>),
    /// The schedule: a full round over every collection.
    AllDue,
}

/// Reads an S3 notification or a scheduled event.
pub fn work_for(event: &Value) -> anyhow::Result<Work> {
    if let Some(records) = event.get("Records") {
        // Only the keys are read: S3-compatible servers differ in the
        // fields around them (moto's eventTime has no time zone, say).
        let records: Vec<S3Record> = serde_json::from_value(records.clone())
            .map_err(|e| anyhow::anyhow!("reading the S3 notification's Records: {e}"))?;
        // Keys in S3 notifications are URL-encoded.
        let keys = records
            .into_iter()
            .map(|r| percent_decode(&r.s3.object.key.replace('+', " ")))
            .collect();
        return Ok(Work::Objects(keys));
    }
    if event.get("detail-type").is_some() {
        let _: EventBridgeEvent<Value> = serde_json::from_value(event.clone())?;
        return Ok(Work::AllDue);
    }
    anyhow::bail!(
        "unsupported event: expected an S3 notification or an EventBridge scheduled event"
    )
}

/// The part of an S3 notification record the indexer needs.
#[derive(Deserialize)]
struct S3Record {
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An API Gateway event rather than an S3 or scheduled one.
pub fn is_http_event(event: &Value) -> bool {
    event.get("requestContext").is_some()
        && (event.get("httpMethod").is_some() || event.get("routeKey").is_some())
}

/// The HTTP routes as the indexer serves them: built once per process, so
/// that its API key cache lasts across events.
pub type HttpService = tower::util::BoxCloneService<
    lambda_http::Request,
    axum::response::Response,
    std::convert::Infallible,
>;

/// The router behind the HTTP adapter ([`crate::http::service`]).
pub fn http_service(floe: Arc<Floe>) -> HttpService {
    tower::util::BoxCloneService::new(crate::http::service(floe))
}

/// Serves an API Gateway event with the Floe router, as the HTTP functions do.
pub async fn handle_http(router: HttpService, event: Value) -> anyhow::Result<Value> {
    use lambda_http::Service;
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event)?;
    let mut adapter = lambda_http::Adapter::from(router);
    let context = lambda_http::Context::default();
    let response = adapter
        .call(lambda_http::LambdaEvent::new(request, context))
        .await
        .map_err(|e| match e {})?;
    Ok(serde_json::to_value(response)?)
}

/// One CloudWatch Embedded Metric Format line: `Floe/UnflushedRecords` per
/// collection, and without dimensions (so one alarm, on the maximum, covers
/// every collection).
pub fn lag_metric(collection: &str, unflushed_records: u64, now_ms: u64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "Floe",
                "Dimensions": [["Collection"], []],
                "Metrics": [{"Name": "UnflushedRecords", "Unit": "Count"}]
            }]
        },
        "Collection": collection,
        "UnflushedRecords": unflushed_records
    })
}

/// An index build as the indexer reports it: the sealed segment it
/// replaced and the indexed segment that took its place.
fn index_report(r: &floe_core::engine::IndexReport) -> Value {
    json!({"replaced": r.replaced, "segment": r.segment, "rows": r.rows, "build_ms": r.build_ms})
}

/// A compaction as the indexer reports it.
fn compact_report(name: &str, r: &floe_core::engine::CompactReport) -> Value {
    json!({"collection": name, "rows_in": r.rows_in, "rows_out": r.rows_out, "sealed": r.sealed, "indexed": r.indexed, "purged": r.purged, "deletes_dropped": r.deletes_dropped})
}

/// Carries out an event and reports what it did (with a router of its own
/// for an HTTP event; [`handle_with`] reuses one).
pub async fn handle(floe: &Arc<Floe>, event: Value) -> anyhow::Result<Value> {
    handle_with(floe, &http_service(Arc::clone(floe)), event).await
}

/// Carries out an event, serving an HTTP one with `http`.
pub async fn handle_with(
    floe: &Arc<Floe>,
    http: &HttpService,
    event: Value,
) -> anyhow::Result<Value> {
    if is_http_event(&event) {
        return handle_http(http.clone(), event).await;
    }
    let mut flushed = Vec::new();
    let mut indexed = Vec::new();
    let mut compacted = Vec::new();
    let mut collected = 0;
    let mut swept = 0;
    let mut imported = Vec::new();
    match work_for(&event)? {
        Work::Objects(keys) => {
            let mut to_flush = BTreeSet::new();
            for key in keys {
                match parse_key(&key) {
                    Some(k) if matches!(k.file, CollectionFile::SealedData(_)) => {
                        if let Some(r) = floe.on_object_created(&key).await? {
                            indexed.push(index_report(&r));
                        }
                    }
                    // A new import job: run here to its end (a round
                    // resumes it if this invocation times out).
                    Some(CollectionKey {
                        collection,
                        file: CollectionFile::ImportJob(job),
                        ..
                    }) => match floe.run_import(&collection, &job).await {
                        Ok(status) => imported.push(json!(status)),
                        Err(floe_core::Error::CollectionNotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    },
                    Some(k) => {
                        to_flush.insert(k.collection);
                    }
                    None => {}
                }
            }
            for name in to_flush {
                match floe.flush(&name).await {
                    Ok(r) => flushed.push(json!({"collection": name, "checkpoint_lsn": r.checkpoint_lsn, "rows": r.rows_flushed})),
                    Err(floe_core::Error::CollectionNotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Work::AllDue => {
            for name in floe.list_collections().await? {
                let round = match floe.maintain(&name, true).await {
                    // Dropped since the listing.
                    Err(floe_core::Error::CollectionNotFound(_)) => continue,
                    other => other?,
                };
                if let Some(r) = round.flushed {
                    flushed.push(json!({"collection": name, "checkpoint_lsn": r.checkpoint_lsn, "rows": r.rows_flushed}));
                }
                indexed.extend(round.indexed.iter().map(index_report));
                if let Some(r) = round.compacted {
                    compacted.push(compact_report(&name, &r));
                }
                collected += round.garbage_deleted;
                let info = match floe.describe(&name).await {
                    Err(floe_core::Error::CollectionNotFound(_)) => continue,
                    other => other?,
                };
                let now_ms = floe_core::clock::now_ms();
                // Lambda's log agent turns this stdout line into a metric.
                println!(
                    "{}",
                    lag_metric(&name, info.stats.unflushed_records, now_ms)
                );
            }
            swept = floe.sweep_orphans(floe_core::engine::ORPHAN_GRACE).await?;
            // Last: an import resumed here may run until the invocation ends.
            let names = floe.list_collections().await?;
            for status in floe.resume_all_imports(&names).await {
                imported.push(json!(status));
            }
        }
    }
    Ok(
        json!({ "flushed": flushed, "compacted": compacted, "indexed": indexed, "imported": imported, "garbage_deleted": collected, "orphans_swept": swept }),
    )
}

/// Reads `FLOE_*` settings once (cold start) and handles events until the
/// runtime stops.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    // It answers API Gateway's DELETE route too: the same start as the others.
    let (settings, emf) = crate::env::init_lambda()?;
    let floe = Floe::open(settings).await?;
    let http = http_service(Arc::clone(&floe));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let floe = Arc::clone(&floe);
        let http = http.clone();
        async move {
            let done = handle_with(&floe, &http, event.payload).await;
            crate::env::flush_emf(emf);
            done.map_err(|e| lambda_runtime::Diagnostic {
                error_type: "FloeIndexerError".into(),
                // The whole context chain, not only the outermost message.
                error_message: format!("{e:#}"),
            })
        }
    }))
    .await
}
