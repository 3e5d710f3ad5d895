//! Versioned, idempotent migrations.
//!
//! The baseline runs on every supported server, ClickHouse 18.16 included:
//! no TTL, codecs, skip indexes, `Map`, `LowCardinality` or `DateTime64`.
//! Attributes are parallel key and value arrays; the time is a `DateTime`
//! (seconds: partitions and sort key) beside the full nanoseconds. Later
//! migrations that need newer servers name the version they require and are
//! applied once the server reports it (`SELECT version()`), so upgrading
//! ClickHouse upgrades the schema at the next collector start.
//!
//! On a server of at least [`MODERN`], a new database gets the modern
//! `logs` table instead ([`Migration::modern`]): `DateTime64(9)` time,
//! attributes and resource as `Map`, `LowCardinality` and codecs. The
//! baseline's names stay readable there as `ALIAS` columns (`time_unix_nano`,
//! `attr_keys`, …), so every query reads both. A baseline table on an
//! upgraded server is brought to the same query surface in place by
//! migration 9 (`LowCardinality`, codecs, the `time` and `attributes`
//! aliases); its arrays and nanosecond integer stay physical, since
//! converting them would rewrite every part while other collectors insert.
//! The collector reads which layout `logs` has from `system.columns`
//! (`Store::layout`).
//!
//! Every statement is safe to run twice (`IF NOT EXISTS`, or for `ADD
//! COLUMN` on 18.16, "already exists" accepted), so collectors
//! that start together cannot break each other.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    pub fn parse(s: &str) -> Option<ServerVersion> {
        let mut parts = s.trim().split('.');
        Some(ServerVersion {
            major: parts.next()?.parse().ok()?,
            minor: parts.next()?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The oldest server that can apply it; `None` for the baseline.
    pub requires: Option<ServerVersion>,
    /// `{db}` stands for the database name.
    pub statements: &'static [&'static str],
    /// What a new database gets instead on a server of at least [`MODERN`]
    /// (empty: the same statements).
    pub modern: &'static [&'static str],
}

impl Migration {
    /// The statements to run on `server`.
    pub fn statements_for(&self, server: ServerVersion) -> &'static [&'static str] {
        if server >= MODERN && !self.modern.is_empty() {
            self.modern
        } else {
            self.statements
        }
    }
}

/// The baseline `ingest_batches` ledger (every server).
const INGEST_BATCHES: &str = "CREATE TABLE IF NOT EXISTS {db}.ingest_batches (
                agent_id String,
                first_seq UInt64,
                last_seq UInt64,
                state UInt8,
                collector_id String,
                deadline_ms UInt64,
                records UInt64,
                min_time DateTime,
                max_time DateTime,
                recorded_at DateTime
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(recorded_at)
            ORDER BY (agent_id, first_seq)";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "logs table and ingest ledger",
        requires: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.logs (
                tenant String,
                timestamp DateTime,
                time_unix_nano UInt64,
                observed_unix_nano UInt64,
                severity_number UInt8,
                severity_text String,
                service String,
                host String,
                environment String,
                source String,
                file_path String,
                body String,
                trace_id String,
                span_id String,
                request_id String,
                http_method String,
                http_path String,
                http_status UInt16,
                duration_ms Float64,
                client_ip String,
                user_agent String,
                user_id String,
                event_type String,
                logger String,
                module String,
                function String,
                line UInt32,
                attr_keys Array(String),
                attr_values Array(String),
                resource_keys Array(String),
                resource_values Array(String),
                agent_id String,
                seq UInt64
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMMDD(timestamp)
            ORDER BY (tenant, service, timestamp)",
            INGEST_BATCHES,
        ],
        modern: &[
            // The layout of OpenTelemetry's `otel_logs`, on our columns:
            // seconds for partitions and the sort key beside the
            // nanosecond `time`; strings with few distinct values as
            // `LowCardinality`; monotonic numbers delta-coded. Migration 5
            // adds the stamped columns, as on every server.
            "CREATE TABLE IF NOT EXISTS {db}.logs (
                tenant LowCardinality(String) CODEC(ZSTD(1)),
                timestamp DateTime CODEC(DoubleDelta, ZSTD(1)),
                time DateTime64(9) CODEC(Delta(8), ZSTD(1)),
                time_unix_nano UInt64 ALIAS toUnixTimestamp64Nano(time),
                observed_unix_nano UInt64 CODEC(Delta(8), ZSTD(1)),
                severity_number UInt8 CODEC(ZSTD(1)),
                severity_text LowCardinality(String) CODEC(ZSTD(1)),
                service LowCardinality(String) CODEC(ZSTD(1)),
                host LowCardinality(String) CODEC(ZSTD(1)),
                environment LowCardinality(String) CODEC(ZSTD(1)),
                source LowCardinality(String) CODEC(ZSTD(1)),
                file_path LowCardinality(String) CODEC(ZSTD(1)),
                body String CODEC(ZSTD(1)),
                trace_id String CODEC(ZSTD(1)),
                span_id String CODEC(ZSTD(1)),
                request_id String CODEC(ZSTD(1)),
                http_method LowCardinality(String) CODEC(ZSTD(1)),
                http_path String CODEC(ZSTD(1)),
                http_status UInt16 CODEC(ZSTD(1)),
                duration_ms Float64 CODEC(ZSTD(1)),
                client_ip String CODEC(ZSTD(1)),
                user_agent String CODEC(ZSTD(1)),
                user_id String CODEC(ZSTD(1)),
                event_type LowCardinality(String) CODEC(ZSTD(1)),
                logger LowCardinality(String) CODEC(ZSTD(1)),
                module LowCardinality(String) CODEC(ZSTD(1)),
                function LowCardinality(String) CODEC(ZSTD(1)),
                line UInt32 CODEC(ZSTD(1)),
                attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
                attr_keys Array(String) ALIAS mapKeys(attributes),
                attr_values Array(String) ALIAS mapValues(attributes),
                resource Map(LowCardinality(String), String) CODEC(ZSTD(1)),
                resource_keys Array(String) ALIAS mapKeys(resource),
                resource_values Array(String) ALIAS mapValues(resource),
                agent_id LowCardinality(String) CODEC(ZSTD(1)),
                seq UInt64 CODEC(Delta(8), ZSTD(1))
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMMDD(timestamp)
            ORDER BY (tenant, service, timestamp)
            SETTINGS ttl_only_drop_parts = 1",
            INGEST_BATCHES,
        ],
    },
    Migration {
        version: 2,
        name: "bloom-filter skip indexes for id lookups",
        requires: Some(ServerVersion { major: 22, minor: 8 }),
        statements: &[
            "ALTER TABLE {db}.logs ADD INDEX IF NOT EXISTS idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4",
            "ALTER TABLE {db}.logs ADD INDEX IF NOT EXISTS idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4",
        ],
        modern: &[],
    },
    Migration {
        version: 3,
        name: "tenants, users, credentials, security events, attribute catalogue",
        requires: None,
        statements: &[
            // Account tables are tiny and rewritten whole: each change
            // inserts a new row version; readers take the latest (`FINAL`).
            "CREATE TABLE IF NOT EXISTS {db}.tenants (
                name String,
                description String,
                deleted UInt8,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY name",
            "CREATE TABLE IF NOT EXISTS {db}.users (
                username String,
                password_hash String,
                role String,
                tenants Array(String),
                all_tenants UInt8,
                deleted UInt8,
                created_at DateTime,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY username",
            "CREATE TABLE IF NOT EXISTS {db}.credentials (
                id String,
                kind String,
                name String,
                secret_hash String,
                role String,
                tenants Array(String),
                all_tenants UInt8,
                created_by String,
                created_at DateTime,
                expires_at DateTime,
                revoked UInt8,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY id",
            // The key that signs session tokens, shared by every collector:
            // the oldest row wins (see `auth::Keys`).
            "CREATE TABLE IF NOT EXISTS {db}.signing_keys (
                created_unix_nano UInt64,
                key String
            ) ENGINE = MergeTree ORDER BY created_unix_nano",
            "CREATE TABLE IF NOT EXISTS {db}.security_events (
                tenant String,
                time DateTime,
                time_unix_nano UInt64,
                kind String,
                username String,
                client_ip String,
                detail String,
                collector_id String
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(time)
            ORDER BY (kind, username, time)",
            // Attribute keys and values per service and day, for field
            // autocomplete without scanning `logs`. Counts are summed at
            // merge time; values are cut to 128 bytes.
            "CREATE TABLE IF NOT EXISTS {db}.attr_catalogue (
                tenant String,
                service String,
                day Date,
                attr_key String,
                attr_value String,
                n UInt64
            ) ENGINE = SummingMergeTree(n)
            PARTITION BY toYYYYMM(day)
            ORDER BY (tenant, service, attr_key, attr_value, day)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attr_catalogue_mv TO {db}.attr_catalogue
            AS SELECT tenant, service, toDate(timestamp) AS day,
                k AS attr_key, substring(v, 1, 128) AS attr_value, count() AS n
            FROM {db}.logs
            ARRAY JOIN attr_keys AS k, attr_values AS v
            GROUP BY tenant, service, day, attr_key, attr_value",
        ],
        modern: &[],
    },
    Migration {
        version: 4,
        name: "n-gram index for text search",
        requires: Some(BODY_NGRAMS),
        statements: &[
            // Free text is searched as `lowerUTF8(body) LIKE '%…%'` on
            // servers with this index (`Store::dialect`). It covers parts
            // written after it was added. On 26.x too: the `text` index
            // (ngrams(3)) skipped the same granules at 50 times the size
            // and 1.4 times the insert CPU (ARCHITECTURE.md).
            "ALTER TABLE {db}.logs ADD INDEX IF NOT EXISTS idx_body_ngrams lowerUTF8(body) TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 4",
        ],
        modern: &[],
    },
    Migration {
        version: 5,
        name: "patterns, security classes and routes stamped at ingest; alert states",
        requires: None,
        statements: &[
            // Filled by the collector at ingest (`analyze::stamp`); rows
            // written before this migration read as 0 and "". Without
            // `IF NOT EXISTS` on 18.16, the runner accepts "column already
            // exists" for these statements (`column_already_added`).
            "ALTER TABLE {db}.logs ADD COLUMN pattern_id UInt64",
            "ALTER TABLE {db}.logs ADD COLUMN security_class String",
            "ALTER TABLE {db}.logs ADD COLUMN security_rules Array(String)",
            // The endpoint: method-less path with ids as `{id}`.
            "ALTER TABLE {db}.logs ADD COLUMN http_route String",
            // Alert states (filled by alert evaluation); the active-alerts
            // view reads it.
            "CREATE TABLE IF NOT EXISTS {db}.alert_states (
                tenant String,
                rule String,
                state String,
                severity String,
                summary String,
                value Float64,
                since DateTime,
                updated_at DateTime
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (tenant, rule)",
            // One row per (tenant, template) per collector that saw it
            // first; readers take min(first_seen). Templates are few, so
            // the table stays small.
            "CREATE TABLE IF NOT EXISTS {db}.patterns (
                tenant String,
                pattern_id UInt64,
                template String,
                first_seen DateTime,
                collector_id String
            ) ENGINE = MergeTree
                        ORDER BY (tenant, pattern_id)",
        ],
        modern: &[],
    },
    Migration {
        version: 6,
        name: "first sighting of each user, for new versus returning users",
        requires: None,
        statements: &[
            // `min` is idempotent: a row counted twice cannot change it,
            // and two collectors backfilling at once agree.
            "CREATE TABLE IF NOT EXISTS {db}.user_first_seen (
                tenant String,
                user_id String,
                first_seen AggregateFunction(min, DateTime)
            ) ENGINE = AggregatingMergeTree
            ORDER BY (tenant, user_id)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.user_first_seen_mv TO {db}.user_first_seen
            AS SELECT tenant, user_id, minState(timestamp) AS first_seen
            FROM {db}.logs WHERE user_id != '' GROUP BY tenant, user_id",
            "INSERT INTO {db}.user_first_seen
            SELECT tenant, user_id, minState(timestamp) FROM {db}.logs
            WHERE user_id != '' GROUP BY tenant, user_id",
        ],
        modern: &[],
    },
    Migration {
        version: 7,
        name: "alert rules, silences, states per group, history and the evaluator lease; agents' loss reports",
        requires: None,
        statements: &[
            // Migration 5's table had no group key; nothing wrote to it
            // before alert evaluation existed.
            "DROP TABLE IF EXISTS {db}.alert_states",
            "CREATE TABLE IF NOT EXISTS {db}.alert_states (
                tenant String,
                rule_id String,
                rule String,
                group_key String,
                state String,
                severity String,
                summary String,
                value Float64,
                since DateTime,
                fired_at DateTime,
                notified_at DateTime,
                updated_ns UInt64
            ) ENGINE = ReplacingMergeTree(updated_ns)
            ORDER BY (tenant, rule_id, group_key)",
            // Rules made through the API (those in the config file are
            // not stored); the body is the rule as JSON.
            "CREATE TABLE IF NOT EXISTS {db}.alert_rules (
                id String,
                tenant String,
                body String,
                deleted UInt8,
                updated_by String,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY id",
            "CREATE TABLE IF NOT EXISTS {db}.alert_silences (
                rule_id String,
                tenant String,
                until DateTime,
                reason String,
                created_by String,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY (rule_id, tenant)",
            "CREATE TABLE IF NOT EXISTS {db}.alert_history (
                tenant String,
                time DateTime,
                time_ns UInt64,
                rule_id String,
                rule String,
                group_key String,
                event String,
                severity String,
                value Float64,
                summary String,
                channel String,
                attempts UInt32,
                error String,
                collector_id String
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(time)
            ORDER BY (tenant, time, rule_id)",
            // One row per (term, holder), its expiry raised by renewals.
            "CREATE TABLE IF NOT EXISTS {db}.leases (
                name String,
                term UInt64,
                holder String,
                expires_s UInt64
            ) ENGINE = ReplacingMergeTree(expires_s)
            ORDER BY (name, term, holder)",
            // What each agent reported with its latest batches: cumulative
            // counters since it started, and how far behind it is.
            "CREATE TABLE IF NOT EXISTS {db}.agent_reports (
                tenant String,
                agent_id String,
                host String,
                time DateTime,
                abandoned_bytes UInt64,
                truncated_lines UInt64,
                parse_errors UInt64,
                unread_bytes UInt64,
                queue_records UInt64,
                oldest_unacked_s UInt64,
                started_s UInt64
            ) ENGINE = ReplacingMergeTree(time)
            PARTITION BY toYYYYMM(time)
            ORDER BY (tenant, agent_id, time)",
        ],
        modern: &[],
    },
    Migration {
        version: 8,
        name: "batch identity bound to the shipping credential",
        requires: None,
        statements: &[
            // The tenant of the credential that shipped a batch: a batch is
            // (tenant, agent id, first seq), so no credential can claim or
            // pre-empt another tenant's batches. Entries written before
            // this migration have '' and match any tenant (see
            // `Store::ledger`).
            "ALTER TABLE {db}.ingest_batches ADD COLUMN tenant String DEFAULT ''",
            // Which credential first shipped under each agent id; another
            // credential presenting the same id is refused.
            "CREATE TABLE IF NOT EXISTS {db}.agent_ids (
                agent_id String,
                credential_id String,
                tenant String,
                first_seen_ns UInt64
            ) ENGINE = MergeTree
            ORDER BY (agent_id, first_seen_ns)",
        ],
        modern: &[],
    },
    Migration {
        version: 9,
        name: "modern column types and codecs; the modern layout's names on every layout",
        requires: Some(MODERN),
        statements: &[
            // A no-op on the modern table; on a baseline one, background
            // mutations that rewrite these columns (rows stay readable
            // throughout). The arrays and `time_unix_nano` stay physical.
            "ALTER TABLE {db}.logs
                MODIFY COLUMN tenant LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN timestamp DateTime CODEC(DoubleDelta, ZSTD(1)),
                MODIFY COLUMN observed_unix_nano UInt64 CODEC(Delta(8), ZSTD(1)),
                MODIFY COLUMN severity_number UInt8 CODEC(ZSTD(1)),
                MODIFY COLUMN severity_text LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN service LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN host LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN environment LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN source LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN file_path LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN body String CODEC(ZSTD(1)),
                MODIFY COLUMN trace_id String CODEC(ZSTD(1)),
                MODIFY COLUMN span_id String CODEC(ZSTD(1)),
                MODIFY COLUMN request_id String CODEC(ZSTD(1)),
                MODIFY COLUMN http_method LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN http_path String CODEC(ZSTD(1)),
                MODIFY COLUMN http_status UInt16 CODEC(ZSTD(1)),
                MODIFY COLUMN duration_ms Float64 CODEC(ZSTD(1)),
                MODIFY COLUMN client_ip String CODEC(ZSTD(1)),
                MODIFY COLUMN user_agent String CODEC(ZSTD(1)),
                MODIFY COLUMN user_id String CODEC(ZSTD(1)),
                MODIFY COLUMN event_type LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN logger LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN module LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN function LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN line UInt32 CODEC(ZSTD(1)),
                MODIFY COLUMN agent_id LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN seq UInt64 CODEC(Delta(8), ZSTD(1)),
                MODIFY COLUMN pattern_id UInt64 CODEC(ZSTD(1)),
                MODIFY COLUMN security_class LowCardinality(String) CODEC(ZSTD(1)),
                MODIFY COLUMN security_rules Array(LowCardinality(String)) CODEC(ZSTD(1)),
                MODIFY COLUMN http_route LowCardinality(String) CODEC(ZSTD(1))",
            "ALTER TABLE {db}.logs
                ADD COLUMN IF NOT EXISTS time DateTime64(9) ALIAS fromUnixTimestamp64Nano(toInt64(time_unix_nano)),
                ADD COLUMN IF NOT EXISTS attributes Map(String, String) ALIAS mapFromArrays(attr_keys, attr_values),
                ADD COLUMN IF NOT EXISTS resource Map(String, String) ALIAS mapFromArrays(resource_keys, resource_values)",
            // Retention sets a TTL (`Store::apply_retention`); whole parts
            // go, as partitions do.
            "ALTER TABLE {db}.logs MODIFY SETTING ttl_only_drop_parts = 1",
        ],
        modern: &[],
    },
    Migration {
        version: 10,
        name: "agents report their dead letters, what a damaged queue lost, and how old their backlog is",
        requires: None,
        statements: &[
            // Batches every collector refused for good, set aside on the
            // agent until replayed: what the dead-letter area holds now.
            "ALTER TABLE {db}.agent_reports ADD COLUMN dead_letter_batches UInt64 DEFAULT 0",
            "ALTER TABLE {db}.agent_reports ADD COLUMN dead_letter_records UInt64 DEFAULT 0",
            "ALTER TABLE {db}.agent_reports ADD COLUMN queue_lost_records UInt64 DEFAULT 0",
            "ALTER TABLE {db}.agent_reports ADD COLUMN unread_age_s UInt64 DEFAULT 0",
        ],
        modern: &[],
    },
];

/// The first server version that gets the modern layout (migrations 1 and
/// 9): `Map`, `DateTime64`, `mapFromArrays` and in-place `LowCardinality`
/// conversions of key columns are all older; production runs 24.x to 26.x.
pub const MODERN: ServerVersion = ServerVersion {
    major: 24,
    minor: 1,
};

/// The first server version with the `async_insert` setting (21.11).
pub const ASYNC_INSERT: ServerVersion = ServerVersion {
    major: 21,
    minor: 11,
};

/// The server version from which migration 4 (the body n-gram index) runs.
pub const BODY_NGRAMS: ServerVersion = ServerVersion {
    major: 22,
    minor: 8,
};

pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = MergeTree ORDER BY version";

/// The migrations to run now: not yet applied, and supported by the server.
pub fn pending<'a>(
    applied: &[u32],
    server: ServerVersion,
) -> impl Iterator<Item = &'a Migration> + use<'a, '_> {
    MIGRATIONS
        .iter()
        .filter(move |m| !applied.contains(&m.version) && m.requires.is_none_or(|r| server >= r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_follow_the_server_version() {
        let old = ServerVersion::parse("18.16.1").expect("parses");
        let new = ServerVersion::parse("24.8.4.13").expect("parses");
        assert_eq!(
            pending(&[], old).map(|m| m.version).collect::<Vec<_>>(),
            vec![1, 3, 5, 6, 7, 8, 10]
        );
        assert_eq!(pending(&[1, 3, 5, 6, 7, 8, 10], old).count(), 0);
        assert_eq!(
            pending(&[1], new).map(|m| m.version).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn versions_are_unique_and_ascending() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
