//! What every Floe binary shares: settings from the environment, tracing,
//! and serving the HTTP router on a socket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use floe_core::{Floe, Settings};

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Settings from `FLOE_CONFIG` and the `FLOE_*` variables of this process.
pub fn settings_from_env() -> floe_core::Result<Settings> {
    let env: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FLOE_"))
        .collect();
    Settings::from_env(&env)
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub indexer: Option<tokio::task::JoinHandle<()>>,
}

/// Serves the API on `listen` (port 0 picks a free one); with
/// `background_indexer` the flusher runs in this process too (`floe serve`).
pub async fn start(
    floe: Arc<Floe>,
    listen: &str,
    background_indexer: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let indexer = background_indexer.then(|| floe.spawn_background_indexer());
    let app = floe_core::api::router(floe);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(Server {
        addr,
        task,
        indexer,
    })
}
