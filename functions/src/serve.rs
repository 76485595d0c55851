//! Serving the HTTP router on a socket, with the background indexer in the
//! same process (`floe serve`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use floe_core::Floe;

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server; ends on shutdown.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The background indexer, when started.
    pub indexer: Option<tokio::task::JoinHandle<()>>,
}

/// Serves the API on `listen` (port 0 picks a free one); with
/// `background_indexer` the flusher runs in this process too (`floe serve`).
/// When `shutdown` resolves the server stops accepting, finishes the
/// requests in flight and ends; the indexer stops after its current round.
pub async fn start(
    floe: Arc<Floe>,
    listen: &str,
    background_indexer: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let indexer =
        background_indexer.then(|| floe.spawn_background_indexer(stopped(stop_rx.clone())));
    let app = floe_core::api::router(floe);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .await
    });
    Ok(Server {
        addr,
        task,
        indexer,
    })
}
