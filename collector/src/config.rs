//! The collector's configuration: TOML into serde structs, defaults in code,
//! environment overrides for endpoints and secrets, and validation that
//! reports every problem at once before anything is opened (loading and
//! unknown keys: `logferry_daemon`).

use std::net::SocketAddr;

use logferry_daemon::{LogConfig, Settings};
use serde::Deserialize;

pub use crate::alerts::config::AlertsConfig;
use crate::store::search::ReadLimits;
pub use crate::store::ClickHouseConfig;

pub const ENV_CLICKHOUSE_URL: &str = "LOGFERRY_CLICKHOUSE_URL";
pub const ENV_CLICKHOUSE_USER: &str = "LOGFERRY_CLICKHOUSE_USER";
pub const ENV_CLICKHOUSE_PASSWORD: &str = "LOGFERRY_CLICKHOUSE_PASSWORD";
pub const ENV_INGEST_LISTEN: &str = "LOGFERRY_INGEST_LISTEN";
pub const ENV_HTTP_LISTEN: &str = "LOGFERRY_HTTP_LISTEN";
pub const ENV_QUERY_GRPC_LISTEN: &str = "LOGFERRY_QUERY_GRPC_LISTEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub ingest: IngestConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub clickhouse: ClickHouseConfig,
    pub retention: RetentionConfig,
    pub alerts: AlertsConfig,
    pub sentry: logferry_daemon::SentryConfig,
    pub log: LogConfig,
    pub shutdown_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ingest: IngestConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            retention: RetentionConfig::default(),
            alerts: AlertsConfig::default(),
            sentry: logferry_daemon::SentryConfig::default(),
            log: LogConfig::default(),
            shutdown_timeout_ms: 15_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// gRPC listen address for agents.
    pub listen: String,
    /// Largest accepted batch, compressed size after decompression.
    pub max_message_bytes: usize,
    /// A batch not stored within this time is abandoned (the agent retries).
    /// Agents' `forward.request_timeout_ms` must be longer.
    pub batch_deadline_ms: u64,
    /// Most records in one batch; larger ones are refused for good
    /// (INVALID_ARGUMENT, `logferry-refusal: too-large`) before rows are
    /// made, which bounds a batch's
    /// memory (see README, "Memory"). At least the agents'
    /// `forward.batch_max_records` (100,000 by default).
    pub max_batch_records: u64,
    /// Refuse batches without a valid agent credential; the credential's
    /// tenant is stamped on every record. With `false`, records go to the
    /// tenant `default`.
    pub require_credentials: bool,
    /// Stamp each record with its message pattern and, for HTTP requests,
    /// its security class (`logferry_analysis`). The analytics API needs
    /// it; `false` only to measure what it costs.
    pub analyze: bool,
    /// Batches stored at once; more wait up to `admission_wait_ms`, then
    /// are answered RESOURCE_EXHAUSTED with a retry-after hint. Bounds the
    /// load many agents catching up put on ClickHouse.
    pub max_concurrent_batches: usize,
    /// Bytes of batches (as received, decompressed) being stored at once;
    /// beyond it, batches wait and are refused as above. Bounds memory.
    pub max_in_flight_bytes: u64,
    /// How long a batch may wait for room before it is refused.
    pub admission_wait_ms: u64,
    /// INSERTs of rows into `logs` at once. Batches that find every one
    /// busy are written together by the next free one (group commit), so
    /// this bounds the statements and new parts per second however many
    /// agents send.
    pub max_concurrent_inserts: usize,
    /// Most rows one group INSERT takes (a single larger batch is still
    /// written, alone).
    pub max_insert_rows: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "0.0.0.0:4320".into(),
            max_message_bytes: 64 << 20,
            batch_deadline_ms: 20_000,
            max_batch_records: 100_000,
            require_credentials: true,
            analyze: true,
            max_concurrent_batches: 16,
            max_in_flight_bytes: 256 << 20,
            admission_wait_ms: 1000,
            max_concurrent_inserts: 2,
            max_insert_rows: 200_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// HTTP API (`/api/v1`, `/docs`).
    pub http_listen: String,
    /// gRPC `QueryService`.
    pub grpc_listen: String,
    /// A search, tail poll or catalogue read running longer is cut off.
    pub max_execution_time_ms: u64,
    /// A read that would scan more rows is refused.
    pub max_rows_to_read: u64,
    /// How often a live tail asks ClickHouse for new records.
    pub tail_poll_interval_ms: u64,
    /// How far back a tail looks again for records that arrived late (a
    /// slow agent, a retried batch).
    pub tail_lookback_ms: u64,
    /// Live tails served at once; more are refused (429).
    pub max_tails: usize,
    /// A MaxMind-format country database (`.mmdb`); the security view then
    /// breaks activity down by country. Empty: no breakdown.
    pub geoip_mmdb: String,
    /// A file holding a token that `/metrics` requires as
    /// `Authorization: Bearer <token>`; empty: `/metrics` is open to anyone
    /// who can reach the HTTP listener (keep that listener on a private
    /// network then).
    pub metrics_token_file: String,
    /// An HTTP connection that has not sent a request's complete headers
    /// within this time, from connecting or since its last response, is
    /// closed: it bounds slow and idle connections.
    pub header_read_timeout_ms: u64,
}

impl ApiConfig {
    /// The bounds every read through the API runs under.
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_execution_time: std::time::Duration::from_millis(self.max_execution_time_ms),
            max_rows_to_read: self.max_rows_to_read,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http_listen: "0.0.0.0:8080".into(),
            grpc_listen: "0.0.0.0:4321".into(),
            max_execution_time_ms: 10_000,
            max_rows_to_read: 2_000_000_000,
            tail_poll_interval_ms: 500,
            tail_lookback_ms: 10_000,
            max_tails: 64,
            geoip_mmdb: String::new(),
            metrics_token_file: String::new(),
            header_read_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Lifetime of a session token from `POST /api/v1/auth/login`.
    pub session_ttl_s: u64,
    /// Login attempts per username per minute on one collector (per client
    /// address: four times this).
    pub login_attempts_per_minute: u64,
    /// Failed logins for one username within `lockout_window_s`, across all
    /// collectors, that lock it out (per client address: four times this).
    pub lockout_failures: u64,
    pub lockout_window_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_s: 12 * 3600,
            login_attempts_per_minute: 10,
            lockout_failures: 5,
            lockout_window_s: 900,
        }
    }
}

/// TLS for every listener (ingest, gRPC query, HTTP). Either a certificate
/// and key, or `plaintext = true`: serving without TLS is never implicit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub plaintext: bool,
    /// PEM certificate chain and private key.
    pub cert_file: String,
    pub key_file: String,
    /// PEM CA bundle for client certificates (mTLS) on the ingest port.
    pub client_ca_file: String,
    /// With a CA: whether agents must present a certificate.
    pub client_cert_required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Day partitions older than this are dropped; 0 keeps everything.
    pub days: u32,
    pub check_interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            days: 30,
            check_interval_s: 3600,
        }
    }
}

impl Settings for Config {
    fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.sentry.apply_env(get);
        if let Some(v) = get(ENV_CLICKHOUSE_URL) {
            self.clickhouse.url = v;
        }
        if let Some(v) = get(ENV_CLICKHOUSE_USER) {
            self.clickhouse.user = v;
        }
        if let Some(v) = get(ENV_CLICKHOUSE_PASSWORD) {
            self.clickhouse.password = v;
        }
        if let Some(v) = get(ENV_INGEST_LISTEN) {
            self.ingest.listen = v;
        }
        if let Some(v) = get(ENV_HTTP_LISTEN) {
            self.api.http_listen = v;
        }
        if let Some(v) = get(ENV_QUERY_GRPC_LISTEN) {
            self.api.grpc_listen = v;
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, value, example) in [
            ("ingest.listen", &self.ingest.listen, "0.0.0.0:4320"),
            ("api.http_listen", &self.api.http_listen, "0.0.0.0:8080"),
            ("api.grpc_listen", &self.api.grpc_listen, "0.0.0.0:4321"),
        ] {
            if value.parse::<SocketAddr>().is_err() {
                p.push(format!("{key}: `{value}` is not an address like {example}"));
            }
        }
        let tls = &self.tls;
        match (tls.plaintext, tls.cert_file.is_empty(), tls.key_file.is_empty()) {
            (true, true, true) | (false, false, false) => {}
            (true, _, _) => p.push("tls: `plaintext = true` and a certificate contradict each other".into()),
            (false, true, true) => p.push(
                "tls: no certificate; set tls.cert_file and tls.key_file, or tls.plaintext = true to serve without TLS".into(),
            ),
            (false, _, _) => p.push("tls: cert_file and key_file go together".into()),
        }
        if tls.client_cert_required && tls.client_ca_file.is_empty() {
            p.push("tls.client_cert_required: needs tls.client_ca_file".into());
        }
        if self.api.max_execution_time_ms < 1000 {
            p.push("api.max_execution_time_ms: must be at least 1000".into());
        }
        if !self.api.metrics_token_file.is_empty() {
            match std::fs::read_to_string(&self.api.metrics_token_file) {
                Ok(t) if t.trim().len() >= 16 => {}
                Ok(_) => p.push(format!(
                    "api.metrics_token_file: `{}` must hold a token of at least 16 characters",
                    self.api.metrics_token_file
                )),
                Err(e) => p.push(format!(
                    "api.metrics_token_file: cannot read `{}`: {e}",
                    self.api.metrics_token_file
                )),
            }
        }
        if self.api.header_read_timeout_ms < 100 {
            p.push("api.header_read_timeout_ms: must be at least 100".into());
        }
        if !self.api.geoip_mmdb.is_empty() && !std::path::Path::new(&self.api.geoip_mmdb).is_file()
        {
            p.push(format!(
                "api.geoip_mmdb: `{}` is not a file",
                self.api.geoip_mmdb
            ));
        }
        if self.api.tail_poll_interval_ms == 0 || self.api.max_tails == 0 {
            p.push("api.tail_poll_interval_ms and api.max_tails: must be positive".into());
        }
        if self.auth.session_ttl_s < 60 {
            p.push("auth.session_ttl_s: must be at least 60".into());
        }
        if self.auth.login_attempts_per_minute == 0 || self.auth.lockout_failures == 0 {
            p.push(
                "auth.login_attempts_per_minute and auth.lockout_failures: must be positive".into(),
            );
        }
        if self.ingest.max_message_bytes < 1 << 20 {
            p.push("ingest.max_message_bytes: must be at least 1048576".into());
        }
        if self.ingest.batch_deadline_ms < 1000 {
            p.push("ingest.batch_deadline_ms: must be at least 1000".into());
        }
        if self.ingest.max_concurrent_inserts == 0 {
            p.push("ingest.max_concurrent_inserts: must be at least 1".into());
        }
        if self.ingest.max_insert_rows == 0 {
            p.push("ingest.max_insert_rows: must be at least 1".into());
        }
        if self.ingest.max_concurrent_batches == 0 {
            p.push("ingest.max_concurrent_batches: must be at least 1".into());
        }
        if self.ingest.max_in_flight_bytes < self.ingest.max_message_bytes as u64 {
            p.push(format!(
                "ingest.max_in_flight_bytes: must be at least ingest.max_message_bytes ({})",
                self.ingest.max_message_bytes
            ));
        }
        if self.ingest.max_batch_records < 1000 {
            p.push("ingest.max_batch_records: must be at least 1000".into());
        }
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            p.push(format!(
                "clickhouse.url: `{url}` must be an http:// or https:// URL of the HTTP interface"
            ));
        }
        let ch = &self.clickhouse;
        let tls_files = [
            ("ca_file", &ch.ca_file),
            ("cert_file", &ch.cert_file),
            ("key_file", &ch.key_file),
        ];
        for (key, path) in tls_files {
            if path.is_empty() {
                continue;
            }
            if !url.starts_with("https://") {
                p.push(format!(
                    "clickhouse.{key}: needs an https:// clickhouse.url"
                ));
            }
            if let Err(e) = std::fs::read(path) {
                p.push(format!("clickhouse.{key}: cannot read `{path}`: {e}"));
            }
        }
        if ch.cert_file.is_empty() != ch.key_file.is_empty() {
            p.push("clickhouse: cert_file and key_file go together".into());
        }
        let db = &self.clickhouse.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            p.push(format!(
                "clickhouse.database: `{db}` must be letters, digits and underscores"
            ));
        }
        if self.retention.check_interval_s == 0 {
            p.push("retention.check_interval_s: must be positive".into());
        }
        p.extend(self.alerts.problems());
        p.extend(self.sentry.problems());
        p.extend(self.log.problem());
        p
    }

    fn log(&mut self) -> &mut LogConfig {
        &mut self.log
    }

    fn sentry(&self) -> &logferry_daemon::SentryConfig {
        &self.sentry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let (config, unknown) =
            logferry_daemon::parse::<Config>(include_str!("../../deploy/collector.toml"))
                .expect("parses");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(config.problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (_, unknown) =
            logferry_daemon::parse::<Config>("[ingest]\nport = 1\n[clickhouse]\nhost = \"x\"\n")
                .expect("parses");
        assert_eq!(
            unknown,
            vec!["clickhouse.host: unknown key", "ingest.port: unknown key"]
        );
        let (config, _) = logferry_daemon::parse::<Config>(
            "[ingest]\nlisten = \"nowhere\"\n[clickhouse]\nurl = \"tcp://x\"\ndatabase = \"a-b\"\n",
        )
        .expect("parses");
        let problems = config.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[1].starts_with("tls: no certificate"),
            "TLS is never implicit"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_stay_out_of_debug_output() {
        let mut config = Config::default();
        config.apply_env(&|k| (k == ENV_CLICKHOUSE_PASSWORD).then(|| "hunter2".into()));
        assert_eq!(config.clickhouse.password, "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
