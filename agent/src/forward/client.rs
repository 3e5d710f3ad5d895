//! The gRPC client to the collectors: one lazily connected channel per
//! endpoint, a current endpoint, and failover to the next on any failure.
//! `https://` endpoints use TLS (with a client certificate if configured);
//! every request carries the agent credential, if one is configured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use logferry_proto::ingest_service_client::IngestServiceClient;
use logferry_proto::{ExportRequest, ExportResponse, REFUSAL_KEY, RETRY_AFTER_MS_KEY};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{Compression, ForwardConfig, ForwardTls};

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

impl SendError {
    pub fn endpoint(&self) -> &str {
        match self {
            SendError::Status { endpoint, .. } | SendError::Timeout { endpoint, .. } => endpoint,
        }
    }

    /// When an overloaded collector said how long to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        let SendError::Status { status, .. } = self else {
            return None;
        };
        let ms = status.metadata().get(RETRY_AFTER_MS_KEY)?.to_str().ok()?;
        ms.parse().ok().map(Duration::from_millis)
    }

    /// When the collector refused the batch for good: its reason and words.
    pub fn refusal(&self) -> Option<String> {
        let SendError::Status { status, .. } = self else {
            return None;
        };
        let reason = status.metadata().get(REFUSAL_KEY)?.to_str().ok()?;
        Some(format!("{reason}: {}", status.message()))
    }
}

pub struct Client {
    endpoints: Vec<(String, IngestServiceClient<Channel>)>,
    current: AtomicUsize,
    timeout: Duration,
    /// `Bearer <agent credential>`; never logged.
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

fn tls_config(tls: &ForwardTls) -> anyhow::Result<ClientTlsConfig> {
    let read = |path: &str| std::fs::read(path).with_context(|| format!("cannot read {path}"));
    let mut config = ClientTlsConfig::new();
    config = if tls.ca_file.is_empty() {
        config.with_native_roots()
    } else {
        config.ca_certificate(Certificate::from_pem(read(&tls.ca_file)?))
    };
    if !tls.cert_file.is_empty() {
        config = config.identity(Identity::from_pem(
            read(&tls.cert_file)?,
            read(&tls.key_file)?,
        ));
    }
    if !tls.server_name.is_empty() {
        config = config.domain_name(tls.server_name.clone());
    }
    Ok(config)
}

fn authorization(
    token_file: &str,
) -> anyhow::Result<Option<MetadataValue<tonic::metadata::Ascii>>> {
    if token_file.is_empty() {
        return Ok(None);
    }
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read forward.token_file {token_file}"))?;
    let mut value: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .ok()
        .with_context(|| format!("forward.token_file {token_file} holds no valid credential"))?;
    // Kept out of HTTP/2 header compression tables and debug output.
    value.set_sensitive(true);
    Ok(Some(value))
}

impl Client {
    pub fn new(cfg: &ForwardConfig) -> anyhow::Result<Client> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let authorization = authorization(&cfg.token_file)?;
        let tls = if cfg.endpoints.iter().any(|e| e.starts_with("https://")) {
            Some(tls_config(&cfg.tls).context("forward.tls")?)
        } else {
            None
        };
        let mut endpoints = Vec::new();
        for url in &cfg.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("forward.endpoints: {url}"))?;
            if let (true, Some(tls)) = (url.starts_with("https://"), &tls) {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .with_context(|| format!("TLS for {url}"))?;
            }
            let channel = endpoint
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
            authorization,
        })
    }

    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
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
        if let Some(auth) = &self.authorization {
            req.metadata_mut().insert("authorization", auth.clone());
        }
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
