//! Metrics: every figure Floe reports goes through the `metrics` facade,
//! recorded here in one place each. `floe serve` installs the Prometheus
//! recorder ([`install_prometheus`], rendered at `/metrics`); the Lambda
//! functions install a CloudWatch EMF one instead. With no recorder
//! installed (tests, embedders) recording costs next to nothing.
//!
//! The names and labels are the reference in `docs/metrics.md`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) of every duration histogram: 100 µs to 5 min.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the Prometheus recorder for this process (once; later calls
/// are no-ops). False when another recorder was installed first.
pub fn install_prometheus() -> bool {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .is_some()
}

/// The Prometheus exposition text, when that recorder is installed.
pub fn render_prometheus() -> Option<String> {
    PROMETHEUS.get()?.as_ref().map(PrometheusHandle::render)
}

/// Describes every metric (help text and unit) to the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route and method"
    );
    describe_histogram!(LOG_APPEND, Unit::Seconds, "Write-ahead log append latency");
    describe_counter!(LOG_APPEND_ERRORS, "Write-ahead log appends that failed");
    describe_counter!(STORE_REQUESTS, "Object-store requests, by operation");
    describe_counter!(
        STORE_ERRORS,
        "Object-store requests that failed, by operation"
    );
    describe_counter!(
        STORE_BYTES,
        Unit::Bytes,
        "Object-store bytes, by direction (read, written)"
    );
    describe_counter!(
        CACHE_BLOCKS,
        "Read-cache blocks served, by tier (memory, disk, object_store)"
    );
    describe_counter!(
        MAINTENANCE,
        "Maintenance steps done, by kind (flush, compaction, index_build)"
    );
    describe_histogram!(
        MAINTENANCE_DURATION,
        Unit::Seconds,
        "Maintenance step duration, by kind"
    );
    describe_gauge!(
        UNFLUSHED,
        "Log records not yet flushed into a segment, by collection"
    );
    describe_gauge!(
        UNFLUSHED_AGE,
        Unit::Seconds,
        "Age of the oldest unflushed log record, by collection"
    );
}

/// `floe_http_requests_total{route, method, status}`.
pub const HTTP_REQUESTS: &str = "floe_http_requests_total";
/// `floe_http_request_duration_seconds{route, method}`.
pub const HTTP_DURATION: &str = "floe_http_request_duration_seconds";
/// `floe_log_append_duration_seconds`.
pub const LOG_APPEND: &str = "floe_log_append_duration_seconds";
/// `floe_log_append_errors_total`.
pub const LOG_APPEND_ERRORS: &str = "floe_log_append_errors_total";
/// `floe_object_store_requests_total{op}`.
pub const STORE_REQUESTS: &str = "floe_object_store_requests_total";
/// `floe_object_store_errors_total{op}`.
pub const STORE_ERRORS: &str = "floe_object_store_errors_total";
/// `floe_object_store_bytes_total{direction}`.
pub const STORE_BYTES: &str = "floe_object_store_bytes_total";
/// `floe_cache_blocks_total{tier}`.
pub const CACHE_BLOCKS: &str = "floe_cache_blocks_total";
/// `floe_maintenance_total{kind}`.
pub const MAINTENANCE: &str = "floe_maintenance_total";
/// `floe_maintenance_duration_seconds{kind}`.
pub const MAINTENANCE_DURATION: &str = "floe_maintenance_duration_seconds";
/// `floe_unflushed_records{collection}`.
pub const UNFLUSHED: &str = "floe_unflushed_records";
/// `floe_unflushed_age_seconds{collection}`.
pub const UNFLUSHED_AGE: &str = "floe_unflushed_age_seconds";

/// One HTTP request answered.
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    counter!(HTTP_REQUESTS, "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method.to_string())
        .record(took.as_secs_f64());
}

/// One log append, and whether it succeeded.
pub fn log_append(took: Duration, ok: bool) {
    histogram!(LOG_APPEND).record(took.as_secs_f64());
    if !ok {
        counter!(LOG_APPEND_ERRORS).increment(1);
    }
}

/// One object-store request (`op`: get, head, put, list, delete, copy, multipart).
pub fn store_request(op: &'static str, ok: bool) {
    counter!(STORE_REQUESTS, "op" => op).increment(1);
    if !ok {
        counter!(STORE_ERRORS, "op" => op).increment(1);
    }
}

/// Bytes read from or written to the object store.
pub fn store_bytes(read: bool, bytes: u64) {
    let direction = if read { "read" } else { "written" };
    counter!(STORE_BYTES, "direction" => direction).increment(bytes);
}

/// Read-cache blocks served from `tier` (memory, disk, object_store).
pub fn cache_blocks(tier: &'static str, blocks: u64) {
    if blocks > 0 {
        counter!(CACHE_BLOCKS, "tier" => tier).increment(blocks);
    }
}

/// A maintenance step done (`kind`: flush, compaction, index_build).
pub fn maintenance(kind: &'static str, took: Duration) {
    counter!(MAINTENANCE, "kind" => kind).increment(1);
    histogram!(MAINTENANCE_DURATION, "kind" => kind).record(took.as_secs_f64());
}

/// A collection's unflushed log tail: records, and the oldest one's age.
pub fn unflushed(collection: &str, records: u64, oldest_age: Option<Duration>) {
    gauge!(UNFLUSHED, "collection" => collection.to_string()).set(records as f64);
    gauge!(UNFLUSHED_AGE, "collection" => collection.to_string())
        .set(oldest_age.map_or(0.0, |a| a.as_secs_f64()));
}
