//! Serving the HTTP router on a socket, with the background indexer in the
//! same process (`floe serve`).
//!
//! The accept loop is hyper's own (not `axum::serve`) for what that hides:
//! a deadline on each request's headers (`http.header_timeout_secs`, which
//! also bounds a TLS handshake), a cap on connections served at once
//! (`http.max_connections`; more wait in the listen backlog) and TLS with
//! rustls (`http.tls_cert` / `http.tls_key`). Body deadlines are the
//! router's (408).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use floe_core::Floe;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a stopping server waits for the requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it speaks HTTPS.
    pub tls: bool,
    /// The server; ends on shutdown, once the requests in flight are answered.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The background indexer, when started.
    pub indexer: Option<tokio::task::JoinHandle<()>>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings refuse this address (an open API off loopback).
    #[error(transparent)]
    Settings(#[from] floe_core::Error),
    /// The certificate or key could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Binding the address failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
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
) -> Result<Server, StartError> {
    let settings = floe.settings().clone();
    let bind = |source| StartError::Bind {
        addr: listen.to_string(),
        source,
    };
    let tls = match (&settings.http.tls_cert, &settings.http.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    // The bound address, so a name that resolved off loopback is caught
    // too (`floe serve` checks before opening anything as well).
    settings.check_exposure(Some(addr))?;
    floe_core::telemetry::install_prometheus();
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
    let is_tls = tls.is_some();
    let task = tokio::spawn(accept_loop(
        listener,
        app,
        tls,
        settings.http.clone(),
        stopped(stop_rx),
    ));
    Ok(Server {
        addr,
        tls: is_tls,
        task,
        indexer,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    http: floe_core::config::HttpSettings,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let header_timeout = http.header_timeout();
    let slots = Arc::new(Semaphore::new(http.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |request: hyper::Request<hyper::body::Incoming>| {
                app.clone().oneshot(request.map(axum::body::Body::new))
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // A client that stops reading its answer must not hold the exit forever.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period: closing them");
    }
    Ok(())
}

/// A TLS acceptor for a PEM certificate chain and private key.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("reading {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError::Tls(format!("reading {}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("certificate and key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
