//! Forwarding: cut batches from the queue, send them to a collector, delete
//! them once acknowledged.
//!
//! A batch is cut when the unbatched backlog reaches `batch_max_records` or
//! `batch_max_bytes`, or its oldest record has waited `batch_timeout_ms`.
//! Its manifest is persisted before the first send (see `queue`), so every
//! resend carries the same records under the same identity, and the
//! collector stores it once. Up to `max_in_flight` batches travel at once;
//! each is retried, with failover and backoff, until some collector
//! acknowledges it, or until every collector has refused it for good (the
//! refusal says so, `logferry_proto::REFUSAL_KEY`: a batch that does not
//! decode, or holds more records than a collector takes). Such a batch moves
//! to the queue's dead-letter area, records kept, and stops holding a slot;
//! `logferry-agent dead-letters replay` sends it again. Every other failure
//! (a collector down, overloaded, a refused credential) is retried forever.
//!
//! One attempt of a batch ends (answer or `request_timeout_ms`) before the
//! next begins, and that timeout exceeds the collector's own deadline for a
//! batch: a batch is never being stored by two collectors at once.

mod client;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use logferry_proto::{ExportRequest, KeyValue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::ForwardConfig;
use crate::metrics::Metrics;
use crate::queue::{Batch, Manifest, Queue};
pub use client::Client;

pub struct Forwarder {
    queue: Arc<Queue>,
    cfg: ForwardConfig,
    client: Arc<Client>,
    resource: Arc<Vec<KeyValue>>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(
        queue: Arc<Queue>,
        cfg: ForwardConfig,
        client: Client,
        resource: Vec<KeyValue>,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        Forwarder {
            queue,
            cfg,
            client: Arc::new(client),
            resource: Arc::new(resource),
            metrics,
        }
    }

    /// Runs until `shutdown`; then gives batches in flight `grace` to be
    /// acknowledged. What is not acknowledged stays queued for the next start.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()> {
        let queue = self.queue.clone();
        let mut pending = tokio::task::spawn_blocking(move || queue.unacked_batches()).await??;
        pending.reverse();
        let mut in_flight = JoinSet::new();
        loop {
            if in_flight.len() >= self.cfg.max_in_flight {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    done = in_flight.join_next() => log_join(done),
                }
                continue;
            }
            if let Some(batch) = pending.pop() {
                in_flight.spawn(self.deliver(batch));
                continue;
            }
            // Waiting for a batch to be due is cancel-safe; cutting it is
            // not (it persists a manifest), so it happens in the branch
            // body, which runs to completion.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = in_flight.join_next(), if !in_flight.is_empty() => log_join(done),
                () = self.batch_due() => match self.cut().await? {
                    Some(batch) => {
                        in_flight.spawn(self.deliver(batch));
                    }
                    // Records still being written: look again shortly.
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                },
            }
        }
        if tokio::time::timeout(grace, async {
            while let Some(done) = in_flight.join_next().await {
                log_join(Some(done));
            }
        })
        .await
        .is_err()
        {
            warn!(batches = in_flight.len(), "shutting down with batches in flight; they stay queued and are resent at the next start");
            in_flight.abort_all();
        }
        Ok(())
    }

    /// Returns once a batch is due: enough records or bytes, or the oldest
    /// record has waited `batch_timeout_ms`. Cancel-safe.
    async fn batch_due(&self) {
        let timeout = Duration::from_millis(self.cfg.batch_timeout_ms);
        loop {
            let notified = self.queue.arrived.notified();
            let backlog = self.queue.backlog();
            match backlog.oldest {
                _ if backlog.records >= self.cfg.batch_max_records
                    || backlog.bytes >= self.cfg.batch_max_bytes =>
                {
                    return
                }
                Some(t) if t.elapsed() >= timeout => return,
                Some(t) => {
                    let _ = tokio::time::timeout_at((t + timeout).into(), notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Cuts the next batch (persisting its manifest). `None` when the
    /// records are still being written.
    async fn cut(&self) -> anyhow::Result<Option<Batch>> {
        let queue = self.queue.clone();
        let (records, bytes) = (self.cfg.batch_max_records, self.cfg.batch_max_bytes);
        Ok(tokio::task::spawn_blocking(move || queue.cut_batch(records, bytes)).await??)
    }

    fn deliver(&self, batch: Batch) -> impl std::future::Future<Output = ()> + Send + 'static {
        let client = self.client.clone();
        let queue = self.queue.clone();
        let metrics = self.metrics.clone();
        let mut request = ExportRequest {
            agent_id: queue.agent_id().to_string(),
            first_seq: batch.manifest.first_seq,
            last_seq: batch.manifest.last_seq,
            resource: self.resource.as_ref().clone(),
            chunks: batch.chunks,
            report: None,
        };
        let manifest = batch.manifest;
        let (initial, max) = (
            Duration::from_millis(self.cfg.backoff_initial_ms),
            Duration::from_millis(self.cfg.backoff_max_ms),
        );
        async move {
            let mut backoff = initial;
            let mut failures = 0u32;
            // Collectors that refused this batch for good.
            let mut refused_by = HashSet::new();
            loop {
                if failures > 0 {
                    metrics.retries.inc();
                }
                request.report = Some(metrics.report(&queue));
                let sent = std::time::Instant::now();
                let answer = client.export(request.clone()).await;
                metrics.roundtrip.observe(sent.elapsed().as_secs_f64());
                match answer {
                    Ok(resp) => {
                        let outcome = if resp.duplicate {
                            "duplicate"
                        } else {
                            "acknowledged"
                        };
                        metrics.batches.with_label_values(&[outcome]).inc();
                        debug!(
                            first_seq = manifest.first_seq,
                            records = manifest.records,
                            duplicate = resp.duplicate,
                            "batch acknowledged"
                        );
                        let acked = tokio::task::spawn_blocking(move || queue.ack(&manifest)).await;
                        if !matches!(acked, Ok(Ok(()))) {
                            error!(first_seq = manifest.first_seq, "cannot delete an acknowledged batch; it will be resent and recognised");
                        }
                        return;
                    }
                    Err(e) => {
                        let refusal = e.refusal();
                        if let Some(reason) = &refusal {
                            metrics.batches.with_label_values(&["refused"]).inc();
                            warn!(
                                first_seq = manifest.first_seq,
                                endpoint = e.endpoint(),
                                reason,
                                "a collector refused a batch for good"
                            );
                            let new = refused_by.insert(e.endpoint().to_string());
                            if refused_by.len() >= client.endpoints() {
                                if set_aside(&queue, &metrics, manifest, reason).await {
                                    return;
                                }
                            } else if new {
                                // Ask the next collector straight away.
                                continue;
                            }
                        }
                        failures += 1;
                        // Log the first failure and then every tenth, not every retry.
                        if failures == 1 || failures.is_multiple_of(10) {
                            warn!(first_seq = manifest.first_seq, failures, error = %e, "batch not delivered; retrying");
                        }
                        let wait = match e.retry_after() {
                            // An overloaded collector's hint, stretched by
                            // up to half so that agents do not return at once.
                            Some(hint) => {
                                metrics.batches.with_label_values(&["overloaded"]).inc();
                                hint.mul_f64(1.0 + rand::random::<f64>() / 2.0)
                            }
                            None => {
                                if refusal.is_none() {
                                    metrics.batches.with_label_values(&["failed"]).inc();
                                }
                                let wait = jitter(backoff);
                                backoff = (backoff * 2).min(max);
                                wait
                            }
                        };
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
}

/// Moves a batch every collector refused for good to the dead-letter area;
/// false if that failed (the batch is then retried).
async fn set_aside(
    queue: &Arc<Queue>,
    metrics: &Metrics,
    manifest: Manifest,
    reason: &str,
) -> bool {
    let reason = bounded(reason.to_string());
    let moved = {
        let (queue, reason) = (queue.clone(), reason.clone());
        tokio::task::spawn_blocking(move || queue.dead_letter(&manifest, &reason)).await
    };
    if matches!(moved, Ok(Ok(()))) {
        metrics.batches.with_label_values(&["dead_lettered"]).inc();
        error!(
            first_seq = manifest.first_seq,
            records = manifest.records,
            reason,
            "every collector refused a batch for good; it is kept in the dead-letter area: fix the cause, then `logferry-agent dead-letters replay`"
        );
        return true;
    }
    error!(
        first_seq = manifest.first_seq,
        "cannot move a refused batch to the dead-letter area; retrying it"
    );
    false
}

/// A refusal's words, cut to what a dead letter keeps (1 KiB).
fn bounded(mut reason: String) -> String {
    const MAX: usize = 1024;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Full jitter: a random wait between half the backoff and the backoff.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn log_join(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        if e.is_panic() {
            error!(error = %e, "batch delivery task panicked");
        }
    }
}
