//! Wires the agent together and shuts it down in order.
//!
//! Start: open the queue (recovering it first if damaged, `queue::recover`;
//! it keeps `queue.min_free_bytes` free), start the tailer thread (with its
//! watcher), the push receiver and the forwarder. Stop, all within
//! `shutdown_timeout_ms`:
//! stop reading files, stop accepting pushes (in-flight pushes finish), give
//! batches in flight the rest of the time, then flush and close the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use logferry_daemon::error_chain;
use logferry_proto::push_service_server::PushServiceServer;
use logferry_proto::KeyValue;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, SyncPolicy};
use crate::forward::{Client, Forwarder};
use crate::metrics::Metrics;
use crate::push::PushReceiver;
use crate::queue::Queue;
use crate::tail::{FileRefill, Matcher, Tailer, Wake};

/// What a push connection may send ahead of being read (HTTP/2 flow
/// control), outside `memory.budget_bytes`.
const PUSH_WINDOW_BYTES: u32 = 256 << 10;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let dir = config.data_dir.join("queue");
    let (max_bytes, sync) = (
        config.queue.max_bytes,
        config.queue.sync == SyncPolicy::Always,
    );
    let refill = FileRefill::new(&config.sources);
    let plan = config.memory_plan();
    info!(
        budget_mib = config.memory.budget_bytes >> 20,
        queue_mib = plan.queue >> 20,
        batches_mib = plan.batches >> 20,
        pushes_mib = plan.pushes >> 20,
        files_mib = plan.files >> 20,
        "memory budget"
    );
    let (queue, recovery) = tokio::task::spawn_blocking(move || {
        Queue::open_or_recover(&dir, max_bytes, sync, plan.queue, &refill)
    })
    .await?
    .with_context(|| format!("cannot open the queue in {}", config.data_dir.display()))?;
    let host = if config.host_name.is_empty() {
        hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.host_name.clone()
    };
    info!(agent_id = queue.agent_id(), host = %host, version = env!("CARGO_PKG_VERSION"), "agent starting");
    let mut resource = vec![
        KeyValue::string("host.name", &host),
        KeyValue::string("logferry.agent.id", queue.agent_id()),
    ];
    resource.extend(config.resource.iter().map(|(k, v)| KeyValue::string(k, v)));

    queue.reserve_free(config.queue.min_free_bytes);
    let metrics = Arc::new(Metrics::new());
    if let Some(r) = recovery {
        metrics.queue_lost_records.inc_by(r.lost_records);
        error!(
            lost_records = r.lost_records,
            refilled_records = r.refilled_records,
            "the queue was damaged and has been recovered: {r}"
        );
    }
    metrics.init(
        &config
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
    );
    let stop_metrics = CancellationToken::new();
    let metrics_server = if config.metrics.listen.is_empty() {
        None
    } else {
        let addr: std::net::SocketAddr = config.metrics.listen.parse().context("metrics.listen")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        Some(tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&metrics),
            queue.clone(),
            stop_metrics.clone(),
        )))
    };

    // Files.
    let stop_tailing = Arc::new(AtomicBool::new(false));
    let tailer = if config.sources.is_empty() {
        None
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Wake>(64);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let rescan = match event {
                    Ok(e) => !matches!(
                        e.kind,
                        EventKind::Modify(notify::event::ModifyKind::Data(_))
                            | EventKind::Access(_)
                    ),
                    Err(_) => true,
                };
                let _ = tx.try_send(rescan);
            })
            .context("cannot start the filesystem watcher")?;
        for (root, recursive) in Matcher::new(&config.sources).watch_roots() {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(&root, mode) {
                warn!(dir = %root.display(), error = %e, "cannot watch directory; relying on rescans");
            }
        }
        let stop = stop_tailing.clone();
        let (cfg, sources, queue) = (config.tail.clone(), config.sources.clone(), queue.clone());
        let metrics = Arc::clone(&metrics);
        let spool = config.data_dir.join("spool");
        // The tailer reads its checkpoints and then the files on its own
        // thread, never on the async runtime.
        let handle = std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                let _watcher = watcher;
                Tailer::new(cfg, sources, queue, metrics, spool)?.run(rx, stop)
            })
            .context("cannot start the tailer thread")?;
        Some(handle)
    };

    // Pushes.
    let stop_push = CancellationToken::new();
    let push = if config.push.listen.is_empty() {
        None
    } else {
        let addr: std::net::SocketAddr = config.push.listen.parse().context("push.listen")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for pushes"))?;
        info!(addr = %listener.local_addr()?, "accepting gRPC pushes");
        let service =
            PushServiceServer::new(PushReceiver::new(queue.clone(), Arc::clone(&metrics)))
                .max_decoding_message_size(config.push.max_message_bytes)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let stop = stop_push.clone();
        Some(tokio::spawn(
            tonic::transport::Server::builder()
                // Within the memory budget: more pushes wait for a turn,
                // and what a connection sends ahead of its turn is small.
                .initial_connection_window_size(PUSH_WINDOW_BYTES)
                .initial_stream_window_size(PUSH_WINDOW_BYTES)
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    config.push.max_concurrent,
                ))
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                ),
        ))
    };

    // Forwarding.
    let client = Client::new(&config.forward)?;
    let forwarder = Forwarder::new(
        queue.clone(),
        config.forward.clone(),
        client,
        resource,
        Arc::clone(&metrics),
    );
    let stop_forward = CancellationToken::new();
    let timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let forward = tokio::spawn(forwarder.run(stop_forward.clone(), timeout / 2));

    let tailer_failed = async {
        match &tailer {
            Some(h) => {
                while !h.is_finished() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    // Any part stopping on its own is fatal: an agent that tails but no
    // longer ships (or the reverse) must exit, so its supervisor restarts it.
    let mut forward = Some(forward);
    let mut push = push;
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = tailer_failed => Some("the tailer stopped"),
        done = async { forward.as_mut().expect("set above").await } => {
            forward = None;
            match done {
                Ok(Err(e)) => error!(error = %error_chain(e.as_ref()), "forwarder failed"),
                Ok(Ok(())) => {}
                Err(e) => error!(error = %e, "forwarder task failed"),
            }
            Some("the forwarder stopped")
        }
        done = async { push.as_mut().expect("guarded").await }, if push.is_some() => {
            push = None;
            if let Ok(Err(e)) = done {
                error!(error = %error_chain(&e), "push receiver failed");
            }
            Some("the push receiver stopped")
        }
    };
    match failure {
        Some(what) => error!("{what}; shutting down"),
        None => info!("shutting down"),
    }
    let started = Instant::now();

    stop_tailing.store(true, Ordering::Relaxed);
    if let Some(h) = tailer {
        // A read stuck in the kernel (a hung network filesystem) must not
        // hold the exit past `shutdown_timeout_ms`: what the tailer read and
        // did not commit is read again at the next start.
        let joined = tokio::task::spawn_blocking(move || h.join());
        match tokio::time::timeout(timeout / 4, joined).await {
            Ok(joined) => match joined? {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = %error_chain(&e), "tailer failed"),
                Err(_) => error!("tailer panicked"),
            },
            Err(_) => warn!(
                "the tailer did not stop within a quarter of shutdown_timeout_ms; exiting without it (what it read and did not commit is read again at the next start)"
            ),
        }
    }
    stop_push.cancel();
    if let Some(p) = push {
        let _ = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), p).await;
    }
    stop_forward.cancel();
    if let Some(f) = forward {
        if let Err(e) = f.await? {
            error!(error = %error_chain(e.as_ref()), "forwarder failed");
        }
    }
    stop_metrics.cancel();
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    tokio::task::spawn_blocking(move || queue.flush()).await??;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "agent stopped"
    );
    match failure {
        Some(what) => anyhow::bail!("{what}; see the errors above"),
        None => Ok(()),
    }
}
