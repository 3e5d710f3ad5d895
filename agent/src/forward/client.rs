//! The gRPC client to the collectors: one lazily connected channel per
//! endpoint, a current endpoint, and failover to the next on any failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logferry_proto::ingest_service_client::IngestServiceClient;
use logferry_proto::{ExportRequest, ExportResponse};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::config::{Compression, ForwardConfig};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("collector {endpoint} answered {status}")]
    Status {
        endpoint: String,
        status: Box<tonic::Status>,
    },
    #[error("collector {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
}

pub struct Client {
    endpoints: Vec<(String, IngestServiceClient<Channel>)>,
    current: AtomicUsize,
    timeout: Duration,
}

impl Client {
    pub fn new(cfg: &ForwardConfig) -> Result<Client, tonic::transport::Error> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let mut endpoints = Vec::new();
        for url in &cfg.endpoints {
            let channel = Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect_lazy();
            let mut client = IngestServiceClient::new(channel).max_decoding_message_size(1 << 20);
            let encoding = match cfg.compression {
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::None => None,
            };
            if let Some(enc) = encoding {
                client = client.send_compressed(enc);
            }
            endpoints.push((url.clone(), client));
        }
        Ok(Client {
            endpoints,
            current: AtomicUsize::new(0),
            timeout,
        })
    }

    /// One attempt against the current endpoint. On failure the next
    /// endpoint becomes current. The attempt is over (answered or abandoned)
    /// when this returns.
    pub async fn export(&self, request: ExportRequest) -> Result<ExportResponse, SendError> {
        let index = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        let (endpoint, client) = &self.endpoints[index];
        let mut client = client.clone();
        let mut req = tonic::Request::new(request);
        req.set_timeout(self.timeout);
        let result = match tokio::time::timeout(self.timeout, client.export(req)).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner()),
            Ok(Err(status)) => SendError::Status {
                endpoint: endpoint.clone(),
                status: Box::new(status),
            },
            Err(_) => SendError::Timeout {
                endpoint: endpoint.clone(),
                timeout: self.timeout,
            },
        };
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.endpoints.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Err(result)
    }
}
