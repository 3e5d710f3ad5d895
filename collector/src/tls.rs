//! TLS for the collector's listeners, from PEM files named in `[tls]`.
//! The ingest port may also ask agents for client certificates (mTLS).

use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

#[derive(Clone)]
pub struct Tls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    client_cert_required: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_ca", &self.client_ca.is_some())
            .field("client_cert_required", &self.client_cert_required)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files; `None` when the config asks for plain text.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<Option<Tls>> {
        if cfg.plaintext {
            return Ok(None);
        }
        let read = |path: &str| {
            std::fs::read(path).with_context(|| format!("cannot read TLS file {path}"))
        };
        Ok(Some(Tls {
            cert: read(&cfg.cert_file)?,
            key: read(&cfg.key_file)?,
            client_ca: if cfg.client_ca_file.is_empty() {
                None
            } else {
                Some(read(&cfg.client_ca_file)?)
            },
            client_cert_required: cfg.client_cert_required,
        }))
    }

    /// For a gRPC listener; `agents` adds the client CA (mTLS), if any.
    pub fn grpc(&self, agents: bool) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        if let (true, Some(ca)) = (agents, &self.client_ca) {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(!self.client_cert_required);
        }
        config
    }

    pub async fn http(&self) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
        axum_server::tls_rustls::RustlsConfig::from_pem(self.cert.clone(), self.key.clone())
            .await
            .context("cannot use the TLS certificate and key")
    }
}
