//! `floe serve`: ingest, query and the indexer in one process. With no
//! configuration it keeps everything under `./floe-data` (local object
//! store, embedded log); `FLOE_*` variables or `FLOE_CONFIG` select S3 and
//! NATS.

use std::sync::Arc;

use anyhow::Context;
use floe_core::Floe;

use crate::env::{init_tracing, settings_from_env};

/// Runs `floe serve` until SIGTERM or Ctrl-C.
pub(super) async fn serve(
    listen: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    allow_unauthenticated: bool,
) -> anyhow::Result<()> {
    init_tracing();
    let mut settings = settings_from_env().context("reading FLOE_* settings")?;
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    if allow_unauthenticated {
        settings.auth.allow_unauthenticated = true;
    }
    settings.validate().context("checking settings")?;
    if let Ok(addr) = settings.listen.parse() {
        // Before opening anything: a refused server should say so at once.
        settings.check_exposure(Some(addr))?;
    }
    let store = settings.object_store_config().url;
    let log = settings
        .nats
        .as_ref()
        .map(|n| n.url.clone())
        .unwrap_or_else(|| settings.log_dir().display().to_string());
    let listen = settings.listen.clone();
    let floe = Floe::open(settings)
        .await
        .context("opening the object store and the log")?;
    let server = crate::serve::start(Arc::clone(&floe), &listen, true, stop_signal())
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let scheme = if server.tls { "https" } else { "http" };
    let keys = if floe.settings().auth.admin_key.is_some() {
        "API keys required"
    } else {
        "no API keys"
    };
    tracing::info!(addr = %server.addr, %store, %log, %keys, "floe serving");
    eprintln!(
        "floe listening on {scheme}://{} ({keys}; objects: {store}, log: {log})",
        server.addr
    );
    server.task.await??;
    tracing::info!("stopped accepting; requests in flight are done");
    if let Some(indexer) = server.indexer {
        indexer.await.context("background indexer")?;
    }
    floe.close_cache().await.context("closing the cache")?;
    eprintln!("floe stopped");
    Ok(())
}

/// Resolves on SIGTERM (what Docker, Kubernetes and systemd send) or
/// SIGINT (Ctrl-C).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("stopping: finishing requests in flight and the indexer's round");
}
