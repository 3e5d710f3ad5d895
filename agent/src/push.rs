//! The gRPC receiver for applications (`logferry.v1.PushService`).
//!
//! A push is answered only once its records are durable in the queue (synced
//! to disk under the default `queue.sync = "always"`; concurrent pushes share
//! one fsync through RocksDB's group commit). A full queue answers
//! `RESOURCE_EXHAUSTED`, so the application knows to retry: nothing is
//! dropped silently.

use std::sync::Arc;

use logferry_daemon::error_chain;
use logferry_proto::push_service_server::PushService;
use logferry_proto::{chunk, Chunk, Origin, PushRequest, PushResponse, PushedRecords};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::queue::{Queue, QueueError};
use crate::tail::now_nanos;

#[derive(Debug, Clone)]
pub struct PushReceiver {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl PushReceiver {
    pub fn new(queue: Arc<Queue>, metrics: Arc<Metrics>) -> PushReceiver {
        PushReceiver { queue, metrics }
    }

    /// Commits one request, counting it as accepted or refused.
    async fn commit(&self, req: PushRequest) -> Result<u64, Status> {
        let result = self.commit_inner(req).await;
        let outcome = if result.is_ok() {
            "accepted"
        } else {
            "refused"
        };
        self.metrics.pushes.with_label_values(&[outcome]).inc();
        result
    }

    async fn commit_inner(&self, req: PushRequest) -> Result<u64, Status> {
        let count = req.records.len();
        if count == 0 {
            return Ok(0);
        }
        let count32 = u32::try_from(count)
            .map_err(|_| Status::invalid_argument("too many records in one push"))?;
        let observed = now_nanos();
        let mut records = req.records;
        for r in &mut records {
            if r.observed_time_unix_nano == 0 {
                r.observed_time_unix_nano = observed;
            }
        }
        let chunk = Chunk {
            first_seq: 0,
            // `service.name` among the resource attributes names the service;
            // the collector maps it like any resource attribute.
            origin: Some(Origin {
                source: "push".into(),
                attributes: req.resource,
                ..Default::default()
            }),
            observed_time_unix_nano: observed,
            body: Some(chunk::Body::Records(PushedRecords { records })),
        };
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.commit(count32, chunk, None))
            .await
            .map_err(|_| Status::internal("queue writer stopped"))?
            .map_err(|e| match e {
                QueueError::Full { .. } | QueueError::DiskFull { .. } => {
                    Status::resource_exhausted(e.to_string())
                }
                // The whole chain: "queue database error" alone says nothing.
                other => {
                    Status::unavailable(format!("queue write failed: {}", error_chain(&other)))
                }
            })?;
        Ok(count as u64)
    }
}

#[tonic::async_trait]
impl PushService for PushReceiver {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let accepted = self.commit(request.into_inner()).await?;
        Ok(Response::new(PushResponse { accepted }))
    }

    async fn push_stream(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<PushResponse>, Status> {
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while let Some(msg) = stream.message().await? {
            accepted += self.commit(msg).await?;
        }
        Ok(Response::new(PushResponse { accepted }))
    }
}
