//! The collector's configuration: TOML into serde structs, defaults in code,
//! environment overrides for endpoints and secrets, and validation that
//! reports every problem at once before anything is opened (loading and
//! unknown keys: `logferry_daemon`).

use std::net::SocketAddr;

use logferry_daemon::{LogConfig, Settings};
use serde::Deserialize;

pub const ENV_CLICKHOUSE_URL: &str = "LOGFERRY_CLICKHOUSE_URL";
pub const ENV_CLICKHOUSE_USER: &str = "LOGFERRY_CLICKHOUSE_USER";
pub const ENV_CLICKHOUSE_PASSWORD: &str = "LOGFERRY_CLICKHOUSE_PASSWORD";
pub const ENV_INGEST_LISTEN: &str = "LOGFERRY_INGEST_LISTEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub ingest: IngestConfig,
    pub clickhouse: ClickHouseConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    pub shutdown_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ingest: IngestConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            retention: RetentionConfig::default(),
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
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "0.0.0.0:4320".into(),
            max_message_bytes: 64 << 20,
            batch_deadline_ms: 20_000,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct ClickHouseConfig {
    /// HTTP interface of the server.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "logferry".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
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
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.ingest.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "ingest.listen: `{}` is not an address like 0.0.0.0:4320",
                self.ingest.listen
            ));
        }
        if self.ingest.max_message_bytes < 1 << 20 {
            p.push("ingest.max_message_bytes: must be at least 1048576".into());
        }
        if self.ingest.batch_deadline_ms < 1000 {
            p.push("ingest.batch_deadline_ms: must be at least 1000".into());
        }
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            p.push(format!(
                "clickhouse.url: `{url}` must be an http:// or https:// URL of the HTTP interface"
            ));
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
        p.extend(self.log.problem());
        p
    }

    fn log(&mut self) -> &mut LogConfig {
        &mut self.log
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
        assert_eq!(config.problems().len(), 3);
    }

    #[test]
    fn secrets_come_from_the_environment_and_stay_out_of_debug_output() {
        let mut config = Config::default();
        config.apply_env(&|k| (k == ENV_CLICKHOUSE_PASSWORD).then(|| "hunter2".into()));
        assert_eq!(config.clickhouse.password, "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
