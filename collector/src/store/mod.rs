//! ClickHouse: the client and its connection options, schema migrations at
//! start-up, inserts, the ingest ledger and retention; accounts
//! (`accounts`), reads for the query API (`search`), the aggregations
//! behind the analytics views (`analytics`) and the alerting tables
//! (`alerts`). It knows ClickHouse and its own row types only: nothing of
//! config files, alert rules, analysis or secrets (the layers test keeps
//! it below every module that does).
//!
//! The `clickhouse` crate runs with validation off: its validation sends a
//! setting that ClickHouse 18.16 rejects, and `RowBinary` without it is
//! faster anyway. Column names come from the row structs, so their order
//! does not matter.

pub mod accounts;
pub mod alerts;
pub mod analytics;
mod layout;
pub mod schema;
pub mod search;

use std::collections::HashSet;
use std::time::Duration;

use clickhouse::Client;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::record::LogRow;
pub use layout::Layout;
use layout::MapsRow;
use schema::{ServerVersion, MIGRATIONS_TABLE};

/// Where and how to reach ClickHouse (`[clickhouse]` in the collector's
/// config).
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct ClickHouseConfig {
    /// HTTP interface of the server; `https://` verifies the server's
    /// certificate against the system roots, or `ca_file`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// PEM CA bundle to verify an `https://` server with, instead of the
    /// system roots.
    pub ca_file: String,
    /// PEM client certificate and key, for servers that ask for one.
    pub cert_file: String,
    pub key_file: String,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "logferry".into(),
            user: "default".into(),
            password: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse request failed")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse reported version `{0}`, which logferry cannot parse")]
    Version(String),
    #[error("clickhouse {0} is older than 18.16, the oldest supported server")]
    TooOld(ServerVersion),
    #[error("the query would read too much; narrow the time range or add filters")]
    TooExpensive,
    #[error("clickhouse answered rows logferry cannot read: {0}")]
    Decode(String),
    #[error("the token signing key in table `signing_keys` is not hex; delete the row to make a new one")]
    CorruptKey,
    #[error("clickhouse TLS: {0}")]
    Tls(String),
    #[error("clickhouse did not answer within {after:?}{}", if *tls { " (over TLS: a plain-text port named https:// never completes the TLS handshake)" } else { "" })]
    NoAnswer { after: Duration, tls: bool },
}

/// How long the first request to a server may take before start-up says
/// it got no answer (and tries again).
const FIRST_ANSWER: Duration = Duration::from_secs(10);

impl StoreError {
    /// What a connection failure most likely means, in the operator's
    /// terms, when its chain of causes shows it.
    pub fn hint(&self) -> Option<&'static str> {
        let text = logferry_daemon::error_chain(self);
        // A plain-text port answers a TLS hello with an HTTP error (a
        // "corrupt message" to rustls) or just closes the connection.
        if ["InvalidContentType", "corrupt message", "tls handshake eof"]
            .iter()
            .any(|c| text.contains(c))
        {
            Some("the server does not answer TLS on this port: use http:// for a plain-text port, or the server's https_port")
        } else if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
            Some("the server's certificate is not trusted: set clickhouse.ca_file to the CA bundle that signed it")
        } else if [
            "Code: 516",
            "Code: 192",
            "Code: 193",
            "Authentication failed",
        ]
        .iter()
        .any(|c| text.contains(c))
        {
            Some("ClickHouse refused the user or password (clickhouse.user, clickhouse.password)")
        } else {
            None
        }
    }
}

/// The crate's client: its own for `http://` and for `https://` against
/// the system roots; for a configured CA bundle or client certificate, one
/// built on rustls with them.
fn http_client(cfg: &ClickHouseConfig) -> Result<Client, StoreError> {
    if cfg.ca_file.is_empty() && cfg.cert_file.is_empty() {
        return Ok(Client::default());
    }
    let tls = |e: &dyn std::fmt::Display| StoreError::Tls(e.to_string());
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| StoreError::Tls(format!("cannot read {path}: {e}")))
    };
    let pems = |path: &str| -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, StoreError> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(&read(path)?)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Tls(format!("{path}: {e}")))
    };
    let mut roots = rustls::RootCertStore::empty();
    if cfg.ca_file.is_empty() {
        let (_, skipped) = roots.add_parsable_certificates(native_roots()?);
        if skipped > 0 {
            tracing::debug!(skipped, "system root certificates rustls cannot use");
        }
    } else {
        for cert in pems(&cfg.ca_file)? {
            roots.add(cert).map_err(|e| tls(&e))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots);
    let config = if cfg.cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        use rustls::pki_types::pem::PemObject;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(&cfg.key_file)?)
            .map_err(|e| StoreError::Tls(format!("{}: {e}", cfg.key_file)))?;
        builder
            .with_client_auth_cert(pems(&cfg.cert_file)?, key)
            .map_err(|e| tls(&e))?
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build(connector);
    Ok(Client::with_http_client(client))
}

/// The system's trusted roots (for a client certificate without a CA
/// bundle).
fn native_roots() -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(StoreError::Tls(format!(
            "no system root certificates: {:?}; set clickhouse.ca_file",
            found.errors
        )));
    }
    Ok(found.certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: u32) -> LogRow {
        LogRow {
            timestamp: day * 86_400 + 5,
            ..LogRow::default()
        }
    }

    #[test]
    fn a_column_another_collector_added_is_what_the_migration_wanted() {
        let add = "ALTER TABLE {db}.logs ADD COLUMN pattern_id UInt64";
        // As 18.16 and 26.9 answer when the column is there.
        let old = "Code: 44, e.displayText() = DB::Exception: Cannot add column pattern_id: column with this name already exists";
        let new = "Code: 15. DB::Exception: Cannot add column `pattern_id`: column with this name already exists. (DUPLICATE_COLUMN) (version 26.9.2.1)";
        assert!(column_already_added(add, old));
        assert!(column_already_added(add, new));
        assert!(!column_already_added(
            add,
            "Code: 60. DB::Exception: Table upgrade.logs doesn't exist"
        ));
        assert!(!column_already_added(
            "CREATE TABLE IF NOT EXISTS {db}.x (a UInt8) ENGINE = Memory",
            new
        ));
    }

    #[test]
    fn inserts_span_at_most_fifty_days() {
        let mut rows: Vec<LogRow> = [3, 1, 2, 1].into_iter().map(row).collect();
        assert_eq!(
            day_groups(&mut rows).len(),
            1,
            "the usual case: one insert, order kept"
        );
        assert_eq!(rows[0].timestamp / 86_400, 3);

        let mut rows: Vec<LogRow> = (0..120).rev().flat_map(|d| [row(d), row(d)]).collect();
        let groups = day_groups(&mut rows);
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            vec![100, 100, 40]
        );
        for g in &groups {
            let mut days: Vec<u32> = g.iter().map(|r| r.timestamp / 86_400).collect();
            days.dedup();
            assert!(days.len() <= MAX_DAYS_PER_INSERT);
        }
    }
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    database: String,
    pub version: ServerVersion,
    pub layout: Layout,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .field("version", &self.version)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

pub const MAX_DAYS_PER_INSERT: usize = 50;

/// Splits rows into groups that each span at most `MAX_DAYS_PER_INSERT`
/// days. Rows keep their order when they fit in one group (the usual case);
/// otherwise they are sorted by day first.
fn day_groups(rows: &mut [LogRow]) -> Vec<&[LogRow]> {
    let day = |r: &LogRow| r.timestamp / 86_400;
    let (first, last) = rows
        .iter()
        .map(day)
        .fold((u32::MAX, 0), |(lo, hi), d| (lo.min(d), hi.max(d)));
    if last.saturating_sub(first) < MAX_DAYS_PER_INSERT as u32 {
        return vec![&*rows];
    }
    let mut days: Vec<u32> = rows.iter().map(day).collect();
    days.sort_unstable();
    days.dedup();
    if days.len() <= MAX_DAYS_PER_INSERT {
        return vec![&*rows];
    }
    rows.sort_by_key(day);
    let mut groups = Vec::new();
    let mut rest: &[LogRow] = rows;
    for bound in days.chunks(MAX_DAYS_PER_INSERT).map(|c| c[c.len() - 1]) {
        let split = rest.partition_point(|r| day(r) <= bound);
        let (group, tail) = rest.split_at(split);
        groups.push(group);
        rest = tail;
    }
    groups
}

/// Whether `error` says that the column `statement` adds exists already:
/// what the statement wanted, added by another collector starting at the
/// same time (or an earlier attempt). 18.16 has no `ADD COLUMN IF NOT
/// EXISTS`; it answers code 44 (ILLEGAL_COLUMN), newer servers 15
/// (DUPLICATE_COLUMN).
fn column_already_added(statement: &str, error: &str) -> bool {
    statement.contains(" ADD COLUMN ") && (error.contains("Code: 44") || error.contains("Code: 15"))
}

/// The TTL clause of `logs` for a retention of `days`, as the server
/// prints it in `system.tables.engine_full`.
fn ttl_clause(days: u32) -> String {
    format!("TTL timestamp + toIntervalDay({days})")
}

/// A batch's entry in the ingest ledger (`ingest_batches`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct LedgerEntry {
    /// The shipping credential's tenant ('' for entries older than
    /// migration 8).
    pub tenant: String,
    pub agent_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub state: u8,
    pub collector_id: String,
    pub deadline_ms: u64,
    pub records: u64,
    pub min_time: u32,
    pub max_time: u32,
    pub recorded_at: u32,
}

/// A template as stored in `patterns`.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct PatternRow {
    pub tenant: String,
    pub pattern_id: u64,
    pub template: String,
    pub first_seen: u32,
    pub collector_id: String,
}

/// Which credential an agent id belongs to (`agent_ids`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AgentId {
    pub agent_id: String,
    pub credential_id: String,
    pub tenant: String,
    pub first_seen_ns: u64,
}

pub const PENDING: u8 = 1;
pub const COMMITTED: u8 = 2;

impl Store {
    /// Connects, checks the server version, creates the database and runs
    /// the migrations this server supports.
    pub async fn open(cfg: &ClickHouseConfig) -> Result<Store, StoreError> {
        let base = http_client(cfg)?
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_password(&cfg.password)
            .with_validation(false);
        // A plain-text port named https:// never answers the TLS hello:
        // bound the first request, so that start-up says so instead of
        // waiting for ever.
        let raw: String =
            tokio::time::timeout(FIRST_ANSWER, base.query("SELECT version()").fetch_one())
                .await
                .map_err(|_| StoreError::NoAnswer {
                    after: FIRST_ANSWER,
                    tls: cfg.url.starts_with("https://"),
                })??;
        let version = ServerVersion::parse(&raw).ok_or(StoreError::Version(raw))?;
        if version
            < (ServerVersion {
                major: 18,
                minor: 16,
            })
        {
            return Err(StoreError::TooOld(version));
        }
        base.query(&format!("CREATE DATABASE IF NOT EXISTS `{}`", cfg.database))
            .execute()
            .await?;
        let mut client = base.with_database(&cfg.database);
        if version >= schema::ASYNC_INSERT {
            // An acknowledgement means the rows are in a part: never let a
            // server default (or a profile) buffer them asynchronously.
            client = client.with_setting("async_insert", "0");
        }
        let mut store = Store {
            client,
            database: cfg.database.clone(),
            version,
            layout: Layout::Arrays,
        };
        store.migrate().await?;
        store.layout = store.read_layout().await?;
        Ok(store)
    }

    /// Which layout `logs` has: `Maps` when `time` is a stored column.
    async fn read_layout(&self) -> Result<Layout, StoreError> {
        if self.version < schema::MODERN {
            return Ok(Layout::Arrays);
        }
        let stored: u64 = self
            .client
            .query("SELECT count() FROM system.columns WHERE database = ? AND table = 'logs' AND name = 'time' AND default_kind = ''")
            .bind(&self.database)
            .fetch_one()
            .await?;
        Ok(if stored > 0 {
            Layout::Maps
        } else {
            Layout::Arrays
        })
    }

    /// What the SQL of searches may use on this server (its migrations
    /// ran at `open`).
    pub fn dialect(&self) -> crate::query::sql::Dialect {
        crate::query::sql::Dialect {
            body_ngrams: self.version >= schema::BODY_NGRAMS,
            attribute_map: self.layout == Layout::Maps,
        }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{db}", &format!("`{}`", self.database))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.client
            .query(&self.sql(MIGRATIONS_TABLE))
            .execute()
            .await?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all()
            .await?;
        for m in schema::pending(&applied, self.version) {
            info!(
                version = m.version,
                name = m.name,
                "applying schema migration"
            );
            for statement in m.statements_for(self.version) {
                match self.client.query(&self.sql(statement)).execute().await {
                    Err(clickhouse::error::Error::BadResponse(e))
                        if column_already_added(statement, &e) => {}
                    result => result?,
                }
            }
            self.client
                .query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())")
                .bind(m.version)
                .bind(m.name)
                .execute()
                .await?;
        }
        Ok(())
    }

    /// Inserts rows, in one statement per group of at most
    /// `MAX_DAYS_PER_INSERT` day partitions: modern servers refuse an INSERT
    /// that touches more than 100 partitions, and a backfill or garbage
    /// timestamps can span that many. If only some statements land, the
    /// ledger's recovery inserts the rest (see `ingest`).
    ///
    /// Each statement runs under the query id `{query_ids}{n}`, so that
    /// a later attempt can see whether it is still running on the server
    /// (`Store::inserts_running`).
    pub async fn insert_logs(
        &self,
        rows: &mut [LogRow],
        timeout: Duration,
        query_ids: &str,
    ) -> Result<(), StoreError> {
        for (n, group) in day_groups(rows).into_iter().enumerate() {
            let query_id = format!("{query_ids}{n}");
            match self.layout {
                Layout::Arrays => {
                    let mut insert = self.begin_insert::<LogRow>(&query_id, timeout).await?;
                    for row in group {
                        insert.write(row).await?;
                    }
                    insert.end().await?;
                }
                Layout::Maps => {
                    let mut insert = self.begin_insert::<MapsRow>(&query_id, timeout).await?;
                    for row in group {
                        insert.write(&MapsRow::from(row)).await?;
                    }
                    insert.end().await?;
                }
            }
        }
        Ok(())
    }

    async fn begin_insert<T: clickhouse::Row>(
        &self,
        query_id: &str,
        timeout: Duration,
    ) -> Result<clickhouse::insert::Insert<T>, StoreError> {
        Ok(self
            .client
            .insert::<T>("logs")
            .await?
            .with_setting("query_id", query_id)
            .with_timeouts(Some(timeout), Some(timeout)))
    }

    /// Registers message templates (`analyze::Registry` decides which).
    pub async fn insert_patterns(&self, rows: &[PatternRow]) -> Result<(), StoreError> {
        let mut insert = self.client.insert::<PatternRow>("patterns").await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The ledger entries of a tenant's batch, committed ones first.
    /// Entries from before the ledger knew tenants ('') count for every
    /// tenant: no new one can be written, and ignoring them would store
    /// their batches twice.
    pub async fn ledger(
        &self,
        tenant: &str,
        agent_id: &str,
        first_seq: u64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        Ok(self
            .client
            .query("SELECT ?fields FROM ingest_batches WHERE agent_id = ? AND first_seq = ? AND tenant IN (?, '') ORDER BY state DESC, deadline_ms DESC")
            .bind(agent_id)
            .bind(first_seq)
            .bind(tenant)
            .fetch_all()
            .await?)
    }

    /// The registrations of `agent_id`, earliest first (ties by credential
    /// id, so every collector reads the same order).
    pub async fn agent_ids(&self, agent_id: &str) -> Result<Vec<AgentId>, StoreError> {
        Ok(self
            .client
            .query("SELECT ?fields FROM agent_ids WHERE agent_id = ? ORDER BY first_seen_ns, credential_id LIMIT 100")
            .bind(agent_id)
            .fetch_all()
            .await?)
    }

    pub async fn register_agent(&self, id: &AgentId) -> Result<(), StoreError> {
        self.insert_one("agent_ids", id).await
    }

    /// Whether a statement whose query id names `member` is running on the
    /// server: an INSERT that its collector gave up on (timeout, dropped
    /// attempt) can still be writing parts. Query ids of log inserts are
    /// `lf-`, the `-`-terminated members of the insert, then a unique
    /// suffix (`ingest::coalesce`); `member` includes its dashes.
    pub async fn inserts_running(&self, member: &str) -> Result<bool, StoreError> {
        let n: u64 = self
            .client
            .query(
                "SELECT count() FROM system.processes \
                 WHERE startsWith(query_id, 'lf-') AND position(query_id, ?) > 0",
            )
            .bind(member)
            .fetch_one()
            .await?;
        Ok(n > 0)
    }

    /// Writes ledger entries in one statement.
    pub async fn record_batches(&self, entries: &[&LedgerEntry]) -> Result<(), StoreError> {
        let mut insert = self.client.insert::<LedgerEntry>("ingest_batches").await?;
        for entry in entries {
            insert.write(*entry).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Sequence numbers of a batch's records already in `logs`, for a batch
    /// whose earlier attempt may have been cut short. The time range (the
    /// batch's own, from the ledger) keeps the scan to its partitions.
    pub async fn stored_seqs(
        &self,
        tenant: &str,
        entry: &LedgerEntry,
    ) -> Result<HashSet<u64>, StoreError> {
        let seqs: Vec<u64> = self
            .client
            .query(
                "SELECT seq FROM logs WHERE tenant = ? AND agent_id = ? AND seq >= ? AND seq <= ? \
                 AND timestamp >= toDateTime(?) AND timestamp <= toDateTime(?)",
            )
            .bind(tenant)
            .bind(&entry.agent_id)
            .bind(entry.first_seq)
            .bind(entry.last_seq)
            .bind(entry.min_time)
            .bind(entry.max_time)
            .fetch_all()
            .await?;
        Ok(seqs.into_iter().collect())
    }

    /// Sets the TTL of `logs` to `days` unless it has it already. Existing
    /// parts are not rewritten for it (`materialize_ttl_after_modify = 0`).
    async fn set_ttl(&self, days: u32) -> Result<(), StoreError> {
        let engine: String = self
            .client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = 'logs'")
            .bind(&self.database)
            .fetch_one()
            .await?;
        let clause = ttl_clause(days);
        // `toIntervalDay(3)` must not match `toIntervalDay(30)`.
        if !(engine.ends_with(&clause) || engine.contains(&format!("{clause} "))) {
            info!(days, "setting the TTL of logs");
            self.client
                .query(&format!(
                    "ALTER TABLE logs MODIFY TTL timestamp + INTERVAL {days} DAY"
                ))
                .with_setting("materialize_ttl_after_modify", "0")
                .execute()
                .await?;
        }
        Ok(())
    }

    /// Drops day partitions of `logs` (and month partitions of the ledger,
    /// the attribute catalogue, security events, the alert history and the
    /// agents' reports) older than `days`. Returns the partitions dropped.
    ///
    /// On a modern server `logs` also carries the retention as its TTL, so
    /// that the server drops expired parts itself; parts written before
    /// the TTL was set are left to the partition drops here.
    pub async fn apply_retention(&self, days: u32) -> Result<Vec<String>, StoreError> {
        if self.version >= schema::MODERN {
            self.set_ttl(days).await?;
        }
        let cutoff = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(days));
        let day: u32 = cutoff.format("%Y%m%d").to_string().parse().expect("digits");
        let months = |yyyymm: u32| (yyyymm / 100) * 12 + yyyymm % 100;
        let month = months(day / 100);
        let parts: Vec<(String, String)> = self
            .client
            .query("SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active AND table IN ('logs', 'ingest_batches', 'attr_catalogue', 'security_events', 'alert_history', 'agent_reports')")
            .bind(&self.database)
            .fetch_all()
            .await?;
        let mut dropped = Vec::new();
        for (table, partition) in parts {
            let Ok(value) = partition.parse::<u32>() else {
                continue;
            };
            let old = match table.as_str() {
                "logs" => value < day,
                // A month is kept past the logs these tables describe.
                _ => months(value) + 1 < month,
            };
            if old {
                self.client
                    .query(&format!("ALTER TABLE `{table}` DROP PARTITION {value}"))
                    .execute()
                    .await?;
                dropped.push(format!("{table}/{value}"));
            }
        }
        Ok(dropped)
    }
}
