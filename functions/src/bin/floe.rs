//! `floe`: the command line; `floe serve` runs ingest, query and the
//! indexer in one process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    floe::cli::run().await
}
