//! Wires the collector together and shuts it down in order.
//!
//! The gRPC ingest port opens at once; a background task connects to
//! ClickHouse (retrying with backoff) and runs the migrations, and until it
//! has, batches are answered UNAVAILABLE. Retention runs on its own timer.
//! On shutdown the port stops accepting, batches in flight finish within
//! `shutdown_timeout_ms`, then the process exits.

use std::time::Duration;

use anyhow::Context;
use logferry_proto::ingest_service_server::IngestServiceServer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::ingest::Ingest;
use crate::store::Store;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (store_tx, store_rx) = watch::channel(None);
    tokio::spawn(connect(config.clone(), store_tx, shutdown.clone()));

    let ingest = Ingest::new(
        store_rx.clone(),
        Duration::from_millis(config.ingest.batch_deadline_ms),
    );
    let service = IngestServiceServer::from_arc(ingest)
        .max_decoding_message_size(config.ingest.max_message_bytes)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let addr: std::net::SocketAddr = config.ingest.listen.parse().context("ingest.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for agents"))?;
    info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "collector accepting batches");

    let retention = tokio::spawn(retention(config.clone(), store_rx, shutdown.clone()));
    let stop_serving = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop_serving.clone().cancelled_owned(),
            ),
    );
    shutdown.cancelled().await;
    info!("shutting down");
    stop_serving.cancel();
    let timeout = Duration::from_millis(config.shutdown_timeout_ms);
    match tokio::time::timeout(timeout, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "ingest server failed"),
        Ok(Err(e)) => error!(error = %e, "ingest server task failed"),
        Err(_) => {
            warn!("batches still in flight at the shutdown deadline; their agents will resend them")
        }
    }
    retention.abort();
    info!("collector stopped");
    Ok(())
}

async fn connect(config: Config, tx: watch::Sender<Option<Store>>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Store::open(&config.clickhouse).await {
            Ok(store) => {
                info!(server = %store.version, database = %config.clickhouse.database, "clickhouse ready");
                let _ = tx.send(Some(store));
                return;
            }
            Err(e) => {
                warn!(url = %config.clickhouse.url, error = %anyhow::Error::from(e), "cannot reach clickhouse; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn retention(
    config: Config,
    mut store: watch::Receiver<Option<Store>>,
    shutdown: CancellationToken,
) {
    if config.retention.days == 0 {
        return;
    }
    let Ok(store) = store.wait_for(Option::is_some).await.map(|s| s.clone()) else {
        return;
    };
    let Some(store) = store else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(config.retention.check_interval_s));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.apply_retention(config.retention.days).await {
            Ok(dropped) if !dropped.is_empty() => {
                info!(?dropped, "retention dropped old partitions")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %anyhow::Error::from(e), "retention check failed; will retry"),
        }
    }
}
