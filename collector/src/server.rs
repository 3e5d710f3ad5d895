//! Wires the collector together and shuts it down in order.
//!
//! Three listeners open at once, with the same TLS: gRPC ingest (agents,
//! optionally mTLS), gRPC `QueryService`, and HTTP. A background task
//! connects to ClickHouse (retrying with backoff) and runs the migrations;
//! until it has, batches and queries are answered UNAVAILABLE. Retention
//! runs on its own timer. On shutdown the ports stop accepting, requests in
//! flight finish within `shutdown_timeout_ms` (live tails are cut), then
//! background work (notifications, reports) finishes or, near the deadline,
//! gives up and records that it did (`background`); then the process
//! exits. A listener that stops on its own stops the collector with an
//! error exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use logferry_daemon::error_chain;
use logferry_proto::ingest_service_server::IngestServiceServer;
use logferry_proto::query_service_server::QueryServiceServer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::analytics::Analytics;
use crate::api::{grpc, http, Service};
use crate::auth::Auth;
use crate::background::Background;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::listen;
use crate::store::Store;
use crate::tls::Tls;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // rustls needs one process-wide crypto provider; ring is the one built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = Tls::load(&config.tls)?;
    if tls.is_none() {
        warn!("serving without TLS (tls.plaintext = true): tokens and logs cross the network in clear");
    }
    let (store_tx, store_rx) = watch::channel(None);
    tokio::spawn(connect(config.clone(), store_tx, shutdown.clone()));

    let collector_id = uuid::Uuid::new_v4().to_string();
    let auth = Arc::new(Auth::new(config.auth.clone(), collector_id.clone()));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let background = Background::default();
    let ingest = Ingest::new(
        store_rx.clone(),
        config.ingest.require_credentials.then(|| Arc::clone(&auth)),
        collector_id.clone(),
        &config.ingest,
        Arc::clone(&metrics),
        background.clone(),
    );
    if !config.ingest.require_credentials {
        warn!("ingest.require_credentials = false: any client can ship into tenant `default`");
    }
    let ingest_service = IngestServiceServer::from_arc(ingest)
        .max_decoding_message_size(config.ingest.max_message_bytes)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let alerts = config.alerts.clone().with_forwarding();
    let catalog = Arc::new(crate::alerts::Catalog::new(&alerts));
    let geoip = match config.api.geoip_mmdb.as_str() {
        "" => None,
        path => Some(crate::geoip::GeoIp::open(std::path::Path::new(path))?),
    };
    let analytics = Arc::new(Analytics::new(config.api.read_limits(), geoip));
    let service = Arc::new(Service::new(
        store_rx.clone(),
        auth,
        config.api.clone(),
        Arc::clone(&analytics),
        Arc::clone(&catalog),
    ));

    let stop_serving = CancellationToken::new();
    let mut servers = Servers {
        stop_serving: stop_serving.clone(),
        stopped_early: CancellationToken::new(),
        tasks: Vec::new(),
    };

    let header_timeout = Duration::from_millis(config.api.header_read_timeout_ms);
    let listener = bind(&config.ingest.listen, "agents").await?;
    let mut builder = listen::grpc_server(header_timeout);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc(true)).context("ingest TLS")?;
    }
    servers.spawn(
        "ingest",
        builder
            .add_service(ingest_service)
            .serve_with_incoming_shutdown(
                listen::grpc_incoming(listener, header_timeout),
                stop_serving.clone().cancelled_owned(),
            ),
    );

    let listener = bind(&config.api.grpc_listen, "gRPC queries").await?;
    let mut builder = listen::grpc_server(header_timeout);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc(false)).context("query TLS")?;
    }
    servers.spawn(
        "gRPC query",
        builder
            .add_service(QueryServiceServer::new(grpc::Query::new(Arc::clone(
                &service,
            ))))
            .serve_with_incoming_shutdown(
                listen::grpc_incoming(listener, header_timeout),
                stop_serving.clone().cancelled_owned(),
            ),
    );

    let listener = bind(&config.api.http_listen, "HTTP").await?.into_std()?;
    let metrics_token = match config.api.metrics_token_file.as_str() {
        "" => None,
        path => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read api.metrics_token_file `{path}`"))?
                .trim()
                .to_string(),
        ),
    };
    let app = http::router(Arc::clone(&service), Arc::clone(&metrics), metrics_token)
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    match &tls {
        Some(tls) => {
            let acceptor = listen::FirstByte {
                inner: axum_server::tls_rustls::RustlsAcceptor::new(tls.http().await?),
                timeout: header_timeout,
            };
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            listen::bound_http(server.http_builder(), header_timeout);
            servers.spawn("HTTP", async move { server.serve(app).await });
        }
        None => {
            let acceptor = listen::FirstByte {
                inner: axum_server::accept::DefaultAcceptor,
                timeout: header_timeout,
            };
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            listen::bound_http(server.http_builder(), header_timeout);
            servers.spawn("HTTP", async move { server.serve(app).await });
        }
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        tls = tls.is_some(),
        "collector serving"
    );

    let evaluator = alerts.enabled.then(|| {
        let notifier = crate::alerts::notify::Notifier::new(
            &alerts,
            store_rx.clone(),
            Arc::clone(&metrics),
            collector_id.clone(),
            background.clone(),
        );
        notifier.map(|notifier| {
            let evaluator = crate::alerts::Evaluator::new(
                alerts.clone(),
                catalog,
                analytics,
                Arc::new(notifier),
                Arc::clone(&metrics),
                collector_id.clone(),
            );
            tokio::spawn(evaluator.run(store_rx.clone(), shutdown.clone()))
        })
    });
    let evaluator = evaluator.transpose()?;
    let retention = tokio::spawn(retention(config.clone(), store_rx, shutdown.clone()));
    tokio::select! {
        _ = shutdown.cancelled() => info!("shutting down"),
        _ = servers.stopped_early.cancelled() => error!("a listener stopped; shutting down"),
    }
    let failed = servers.stopped_early.is_cancelled();
    let timeout = Duration::from_millis(config.shutdown_timeout_ms);
    stop_serving.cancel();
    // Open tails would hold the HTTP server forever; they are cut at once.
    handle.graceful_shutdown(Some(Duration::from_millis(500)));
    let deadline = tokio::time::Instant::now() + timeout;
    for (name, task) in servers.tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            warn!("{name} requests still in flight at the shutdown deadline; agents resend their batches");
        }
    }
    retention.abort();
    if let Some(evaluator) = evaluator {
        evaluator.abort();
    }
    let left = background
        .drain(deadline, BACKGROUND_GRACE.min(timeout / 4))
        .await;
    if left > 0 {
        warn!(
            tasks = left,
            "background work still running at the shutdown deadline is dropped"
        );
    }
    info!("collector stopped");
    if failed {
        anyhow::bail!("a listener stopped on its own (see the log above)");
    }
    Ok(())
}

/// The part of the shutdown deadline left to background work that gives up
/// to record that it did.
const BACKGROUND_GRACE: Duration = Duration::from_secs(1);

/// The listeners' tasks. One that ends before shutdown was asked for
/// (a failed accept loop, a panic) stops the whole collector with an
/// error, so a supervisor restarts it rather than leaving it half-deaf.
struct Servers {
    stop_serving: CancellationToken,
    stopped_early: CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Servers {
    fn spawn<F, E>(&mut self, name: &'static str, server: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let inner = tokio::spawn(server);
        let (stop_serving, stopped_early) = (self.stop_serving.clone(), self.stopped_early.clone());
        let task = tokio::spawn(async move {
            match inner.await {
                Ok(Ok(())) if stop_serving.is_cancelled() => return,
                Ok(Ok(())) => error!("{name} server stopped"),
                Ok(Err(e)) => error!(error = %error_chain(&e), "{name} server failed"),
                Err(e) => error!(error = %error_chain(&e), "{name} server task failed"),
            }
            stopped_early.cancel();
        });
        self.tasks.push((name, task));
    }
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("listen address {addr}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))?;
    info!(addr = %listener.local_addr()?, "listening for {what}");
    Ok(listener)
}

async fn connect(config: Config, tx: watch::Sender<Option<Store>>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Store::open(&config.clickhouse).await {
            Ok(store) => {
                info!(server = %store.version, database = %config.clickhouse.database, layout = ?store.layout, "clickhouse ready");
                let _ = tx.send(Some(store));
                return;
            }
            Err(e) => {
                let hint = e.hint().unwrap_or("");
                warn!(url = %config.clickhouse.url, hint, error = %error_chain(&e), "cannot reach clickhouse; retrying");
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
            Err(e) => warn!(error = %error_chain(&e), "retention check failed; will retry"),
        }
    }
}
