//! What every binary reads at start: settings from the environment, and
//! where logs go.

use floe_core::Settings;

/// Logs to stderr; `RUST_LOG` filters (default `info`). To a terminal:
/// human-readable lines with colours. Otherwise (a file, a pipe, a log
/// collector, CloudWatch): one JSON object per line, no ANSI codes.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}

/// Lambda: the metrics (the same figures `floe serve` shows at
/// `/metrics`) as CloudWatch Embedded Metric Format lines on stdout, in
/// namespace `Floe` with the function's name as a dimension; call
/// [`flush_emf`] after each invocation. `None` if a recorder was already
/// installed.
pub fn init_emf() -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "floe".into());
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("Floe")
        .with_dimension("function", function)
        .init()
    {
        Ok(collector) => {
            floe_core::telemetry::describe();
            Some(collector)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: CloudWatch EMF not installed");
            None
        }
    }
}

/// Writes the figures gathered since the last flush (one EMF document per
/// label set) to stdout, where Lambda's log agent picks them up.
pub fn flush_emf(collector: Option<&'static metrics_cloudwatch_embedded::Collector>) {
    if let Some(collector) = collector
        && let Err(e) = collector.flush(std::io::stdout().lock())
    {
        tracing::warn!(error = %e, "metrics: writing EMF failed");
    }
}

/// What every Lambda function does at a cold start: logs, its settings,
/// the refusal to serve an open API behind API Gateway (keys, or the
/// explicit opt-out), and the EMF metrics recorder.
pub fn init_lambda() -> floe_core::Result<(
    Settings,
    Option<&'static metrics_cloudwatch_embedded::Collector>,
)> {
    init_tracing();
    let settings = settings_from_env()?;
    settings.check_exposure(None)?;
    Ok((settings, init_emf()))
}

/// Settings from `FLOE_CONFIG` and the `FLOE_*` variables of this process.
pub fn settings_from_env() -> floe_core::Result<Settings> {
    let env: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FLOE_"))
        .collect();
    Settings::from_env(&env)
}
