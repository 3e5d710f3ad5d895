//! The aggregations behind the analytics API. Each is one ClickHouse query
//! over `logs` (or `patterns`, `alert_states`, `system.parts`) restricted
//! by a [`Window`]: the caller's tenants, a time range on the sort key's
//! `timestamp`, and optional service, host and environment. Rows come back
//! as `JSONEachRow`, so a query's columns are named where they are used.
//!
//! Classification happened at ingest (`pattern_id`, `http_route`,
//! `security_class`), so none of these scan message text.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::search::ReadLimits;
use super::{Store, StoreError};
use crate::query::sql::{Sql, Value};

/// Severity numbers from ERROR up (OpenTelemetry's scale).
pub const ERROR_SEVERITY: u8 = 17;

/// What an analytics query covers.
#[derive(Debug, Clone)]
pub struct Window {
    pub from_s: u64,
    pub to_s: u64,
    /// The caller's tenants (`tenant = ?` or `tenant IN (...)`).
    pub tenants: Sql,
    /// Service, host and environment filters.
    pub only: Sql,
}

impl Window {
    /// The window as a `WHERE` fragment: `timestamp` in [from, to) and the
    /// scope.
    pub fn filter(&self) -> Sql {
        Sql::and(vec![
            Sql::new(
                "timestamp >= toDateTime(?) AND timestamp < toDateTime(?)",
                vec![Value::U64(self.from_s), Value::U64(self.to_s)],
            ),
            self.tenants.clone(),
            self.only.clone(),
        ])
    }

    /// The window of the same length just before this one.
    pub fn previous(&self) -> Window {
        let len = self.to_s - self.from_s;
        Window {
            from_s: self.from_s.saturating_sub(len),
            to_s: self.from_s,
            tenants: self.tenants.clone(),
            only: self.only.clone(),
        }
    }

    /// Bucket width for per-interval series: about 60 points.
    pub fn step_s(&self) -> u64 {
        let len = self.to_s.saturating_sub(self.from_s).max(60);
        [60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86_400]
            .into_iter()
            .find(|s| len / s <= 60)
            .unwrap_or(86_400)
    }
}

#[derive(Debug, Clone)]
pub struct Totals {
    pub records: u64,
    pub errors: u64,
    pub requests: u64,
    pub server_errors: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub t: u64,
    pub records: u64,
    pub errors: u64,
    pub requests: u64,
    pub server_errors: u64,
}

impl Totals {
    /// The sums of a series (one scan serves both).
    pub fn of(series: &[Bucket]) -> Totals {
        Totals {
            records: series.iter().map(|b| b.records).sum(),
            errors: series.iter().map(|b| b.errors).sum(),
            requests: series.iter().map(|b| b.requests).sum(),
            server_errors: series.iter().map(|b| b.server_errors).sum(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Breakdown {
    pub service: String,
    pub module: String,
    pub function: String,
    pub exception: String,
    pub n: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Count {
    pub key: String,
    pub n: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PatternCount {
    pub pattern_id: u64,
    pub n: u64,
    pub first_s: u64,
    pub last_s: u64,
    pub sample: String,
    pub services: Vec<String>,
    pub hosts: Vec<String>,
    pub request_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestRoute {
    pub request_id: String,
    pub route: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PatternInfo {
    pub pattern_id: u64,
    pub template: String,
    pub first_seen_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub method: String,
    pub route: String,
    pub n: u64,
    pub server_errors: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlowRequest {
    pub t_ms: u64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub request_id: String,
    pub service: String,
    pub host: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpActivity {
    pub ip: String,
    pub failed_auth: u64,
    pub attacks: u64,
    pub scanner: u64,
    pub not_found: u64,
    pub rate_limited: u64,
    pub classes: Vec<String>,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClassCount {
    pub class: String,
    pub n: u64,
    pub ips: u64,
    pub rules: Vec<String>,
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentSeen {
    pub key: String,
    /// Read back as `agent_host`: an alias named `host` would stand for
    /// the aggregate in the window's `host = ?` filter too.
    #[serde(rename = "agent_host")]
    pub host: String,
    pub records: u64,
    pub last_s: u64,
    pub lag_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserSessions {
    pub user: String,
    pub requests: u64,
    pub sessions: u64,
    pub active_s: u64,
    pub first_s: u64,
    pub last_s: u64,
    pub routes: Vec<String>,
    /// The UTC days (Unix seconds) with a request.
    pub days: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Storage {
    pub rows: u64,
    pub bytes: u64,
}

/// Failed authentication: a refusal on a login-like route, or an event
/// that says so.
/// Event types that say an authentication failed.
macro_rules! auth_failure_events {
    () => {
        "('login_failed', 'auth_failed', 'authentication_failed', 'failed_login', 'login_failure')"
    };
}

pub const FAILED_AUTH: &str = concat!(
    "((http_status IN (401, 403) AND match(lower(http_route), 'login|signin|sign-in|auth|token|session|password')) \
     OR event_type IN ",
    auth_failure_events!(),
    ")"
);

/// A cheap superset of failed authentications.
pub const AUTH_REFUSALS: &str = concat!(
    "(http_status IN (401, 403) OR event_type IN ",
    auth_failure_events!(),
    ")"
);

/// A cheap superset of the rows the security view counts, read first
/// (`PREWHERE`) so the route match runs on few rows.
const NOTEWORTHY: &str = concat!(
    "(http_status IN (401, 403, 404, 429) OR security_class NOT IN ('', 'benign') OR event_type IN ",
    auth_failure_events!(),
    ")"
);

const ATTACK: &str = "security_class IN ('sqli', 'xss', 'path_traversal', 'cmd_injection')";

/// `sql` with each `{w}` replaced by the next of `parts`, bracketed, so
/// that a part's `OR` can never reach past it (a rule's query `a OR b`
/// next to the tenant scope must stay `scope AND (a OR b)`). An empty part
/// is `1`.
fn splice(sql: &str, parts: &[&Sql]) -> String {
    let mut text = sql.to_string();
    for part in parts {
        let fragment = if part.text.is_empty() {
            "1".to_string()
        } else {
            format!("({})", part.text)
        };
        text = text.replacen("{w}", &fragment, 1);
    }
    text
}

impl Store {
    /// Runs `sql` with each `{w}` replaced by the next of `parts` (with
    /// its bound values, in order) and reads `JSONEachRow`.
    pub(super) async fn json_rows<T: DeserializeOwned>(
        &self,
        sql: &str,
        parts: &[&Sql],
        limits: ReadLimits,
    ) -> Result<Vec<T>, StoreError> {
        let text = splice(sql, parts);
        debug_assert!(!text.contains("{w}"), "a `{{w}}` without its filter");
        // The crate binds values to `?` in order: no other `?` may appear.
        let query = parts
            .iter()
            .fold(self.limited(&text, limits), |q, p| p.bind_to(q))
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .with_setting("output_format_json_quote_denormals", "0");
        let mut cursor = query
            .fetch_bytes("JSONEachRow")
            .map_err(super::search::classify)?;
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(super::search::classify)? {
            bytes.extend_from_slice(&chunk);
        }
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| {
                    StoreError::Decode(format!("{e} in {}", String::from_utf8_lossy(l)))
                })
            })
            .collect()
    }

    pub async fn series(&self, w: &Window, limits: ReadLimits) -> Result<Vec<Bucket>, StoreError> {
        let step = w.step_s();
        let sql = format!(
            "SELECT intDiv(toUInt32(timestamp), {step}) * {step} AS t, count() AS records, \
             countIf(severity_number >= {ERROR_SEVERITY}) AS errors, countIf(http_status != 0) AS requests, \
             countIf(http_status >= 500) AS server_errors \
             FROM logs WHERE {{w}} GROUP BY t ORDER BY t"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// The window's errors by service, module, function and exception type
    /// (the first of `exception.type`, `error.type`, `exc_type`,
    /// `exception_type`; index 1 of the padded array, as 18.16 rejects 0).
    pub async fn error_breakdown(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Breakdown>, StoreError> {
        let sql = format!(
            "SELECT service, module, function, \
             arrayElement(arrayPushFront(attr_values, ''), 1 + arrayFirstIndex(k -> k IN ('exception.type', 'error.type', 'exc_type', 'exception_type'), attr_keys)) AS exception, \
             count() AS n FROM logs WHERE {{w}} AND severity_number >= {ERROR_SEVERITY} \
             GROUP BY service, module, function, exception ORDER BY n DESC LIMIT 10000"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// Error records per pattern id.
    pub async fn error_patterns(
        &self,
        w: &Window,
        limit: u32,
        limits: ReadLimits,
    ) -> Result<Vec<PatternCount>, StoreError> {
        let sql = format!(
            "SELECT pattern_id, count() AS n, toUInt32(min(timestamp)) AS first_s, toUInt32(max(timestamp)) AS last_s, \
             any(body) AS sample, topK(5)(service) AS services, topK(5)(host) AS hosts, \
             groupArrayIf(20)(request_id, request_id != '') AS request_ids \
             FROM logs WHERE {{w}} AND severity_number >= {ERROR_SEVERITY} \
             GROUP BY pattern_id ORDER BY n DESC, pattern_id LIMIT {limit}"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// Error counts per pattern id (no samples): for the previous window.
    pub async fn error_pattern_counts(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Count>, StoreError> {
        let sql = format!(
            "SELECT toString(pattern_id) AS key, count() AS n FROM logs \
             WHERE {{w}} AND severity_number >= {ERROR_SEVERITY} GROUP BY key"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// The endpoint (`METHOD /route`) of each of these request ids that
    /// has a request record in the window.
    pub async fn request_routes(
        &self,
        w: &Window,
        request_ids: &[String],
        limits: ReadLimits,
    ) -> Result<Vec<RequestRoute>, StoreError> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = Sql::new(
            format!(
                "request_id IN ({})",
                vec!["?"; request_ids.len()].join(", ")
            ),
            request_ids.iter().map(|r| Value::Str(r.clone())).collect(),
        );
        let sql =
            "SELECT request_id, any(concat(http_method, ' ', http_route)) AS route FROM logs \
             WHERE {w} AND http_route != '' AND {w} GROUP BY request_id";
        self.json_rows(sql, &[&w.filter(), &ids], limits).await
    }

    /// Templates and first sighting of the given patterns, within scope.
    pub async fn patterns(
        &self,
        scope: &Sql,
        ids: &[u64],
        limits: ReadLimits,
    ) -> Result<Vec<PatternInfo>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT pattern_id, any(template) AS template, toUInt32(min(first_seen)) AS first_seen_s \
             FROM patterns WHERE {{w}} AND pattern_id IN ({list}) GROUP BY pattern_id"
        );
        self.json_rows(&sql, &[scope], limits).await
    }

    pub async fn endpoints(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Endpoint>, StoreError> {
        let sql = "SELECT http_method AS method, http_route AS route, count() AS n, \
             countIf(http_status >= 500) AS server_errors, \
             quantilesExact(0.5, 0.95, 0.99)(duration_ms) AS q, q[1] AS p50, q[2] AS p95, q[3] AS p99, \
             max(duration_ms) AS max \
             FROM logs WHERE {w} AND http_route != '' \
             GROUP BY method, route ORDER BY n DESC, route, method LIMIT 500";
        self.json_rows(sql, &[&w.filter()], limits).await
    }

    pub async fn status_codes(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Count>, StoreError> {
        let sql = "SELECT toString(http_status) AS key, count() AS n FROM logs \
             WHERE {w} AND http_status != 0 GROUP BY key ORDER BY key";
        self.json_rows(sql, &[&w.filter()], limits).await
    }

    pub async fn slow_requests(
        &self,
        w: &Window,
        limit: u32,
        limits: ReadLimits,
    ) -> Result<Vec<SlowRequest>, StoreError> {
        // Two steps: the times of the slowest requests from numeric columns
        // only, then their details from the few granules that hold them.
        let sql = format!(
            "SELECT toString(time_unix_nano) AS key, toUInt64(0) AS n FROM logs \
             WHERE {{w}} AND http_status != 0 ORDER BY duration_ms DESC LIMIT {limit}"
        );
        let times: Vec<Count> = self.json_rows(&sql, &[&w.filter()], limits).await?;
        if times.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = times
            .iter()
            .filter_map(|t| t.key.parse::<u64>().ok())
            .map(|t| t.to_string())
            .collect();
        let sql = format!(
            "SELECT intDiv(time_unix_nano, 1000000) AS t_ms, http_method AS method, http_path AS path, \
             http_status AS status, duration_ms, request_id, service, host \
             FROM logs PREWHERE time_unix_nano IN ({}) WHERE {{w}} AND http_status != 0 \
             ORDER BY duration_ms DESC LIMIT {limit}",
            list.join(", ")
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// Timings of database queries: records with a `db.statement` or
    /// `db_query` attribute and a duration, grouped by the statement's
    /// pattern.
    pub async fn db_queries(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Endpoint>, StoreError> {
        let sql = format!("SELECT 'DB' AS method, any(arrayElement(arrayPushFront(attr_values, ''), 1 + arrayFirstIndex(k -> k IN ('db.statement', 'db_query'), attr_keys))) AS route, \
             count() AS n, countIf(severity_number >= {ERROR_SEVERITY}) AS server_errors, \
             quantilesExact(0.5, 0.95, 0.99)(duration_ms) AS q, q[1] AS p50, q[2] AS p95, q[3] AS p99, max(duration_ms) AS max \
             FROM logs WHERE {{w}} AND (has(attr_keys, 'db.statement') OR has(attr_keys, 'db_query')) \
             GROUP BY pattern_id ORDER BY p95 DESC LIMIT 50");
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// Per client address: what it did that matters to security.
    pub async fn ip_activity(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<IpActivity>, StoreError> {
        let sql = format!(
            "SELECT client_ip AS ip, countIf({FAILED_AUTH}) AS failed_auth, \
             countIf({ATTACK}) AS attacks, countIf(security_class = 'scanner') AS scanner, \
             countIf(http_status = 404) AS not_found, countIf(http_status = 429) AS rate_limited, \
             topKIf(8)(security_class, security_class NOT IN ('', 'benign')) AS classes, \
             topKIf(8)(user_id, user_id != '' AND {FAILED_AUTH}) AS users \
             FROM logs PREWHERE {NOTEWORTHY} WHERE {{w}} AND client_ip != '' GROUP BY ip \
             HAVING failed_auth > 0 OR attacks > 0 OR scanner > 0 OR not_found >= 10 OR rate_limited > 0 \
             ORDER BY attacks + failed_auth + scanner DESC, ip LIMIT 500"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// Failed authentication per user name.
    pub async fn failed_auth_users(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Count>, StoreError> {
        let sql = format!(
            "SELECT user_id AS key, count() AS n FROM logs PREWHERE {AUTH_REFUSALS} WHERE {{w}} AND user_id != '' AND {FAILED_AUTH} \
             GROUP BY key ORDER BY n DESC, key LIMIT 100"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    pub async fn classes(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<ClassCount>, StoreError> {
        let sql = "SELECT security_class AS class, count() AS n, uniqExact(client_ip) AS ips, \
             topKArray(10)(security_rules) AS rules, \
             topK(3)(concat(http_method, ' ', http_path)) AS samples \
             FROM logs WHERE {w} AND security_class NOT IN ('', 'benign') \
             GROUP BY class ORDER BY n DESC";
        self.json_rows(sql, &[&w.filter()], limits).await
    }

    /// Scanners and bots by user agent.
    pub async fn agents_by_class(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<ClassCount>, StoreError> {
        let sql = "SELECT user_agent AS class, count() AS n, uniqExact(client_ip) AS ips, \
             topK(1)(security_class) AS rules, topK(3)(http_path) AS samples \
             FROM logs WHERE {w} AND security_class IN ('scanner', 'bot') \
             GROUP BY class ORDER BY n DESC LIMIT 50";
        self.json_rows(sql, &[&w.filter()], limits).await
    }

    /// Users' requests with sessions: a gap of more than `gap_s` seconds
    /// between two requests of a user starts a new session.
    pub async fn user_sessions(
        &self,
        w: &Window,
        gap_s: u64,
        limits: ReadLimits,
    ) -> Result<Vec<UserSessions>, StoreError> {
        let sql = format!(
            "SELECT user, requests, 1 + arrayCount(d -> d > {gap_s}, diffs) AS sessions, \
             arraySum(arrayFilter(d -> d <= {gap_s}, diffs)) AS active_s, first_s, last_s, routes, \
             arrayDistinct(arrayMap(x -> intDiv(x, 86400) * 86400, ts)) AS days FROM ( \
               SELECT user_id AS user, count() AS requests, arraySort(groupArray(toUInt32(timestamp))) AS ts, \
               arrayDifference(ts) AS diffs, ts[1] AS first_s, ts[-1] AS last_s, \
               arraySlice(groupUniqArrayIf(http_route, http_route != ''), 1, 20) AS routes \
               FROM logs WHERE {{w}} AND user_id != '' GROUP BY user \
             ) ORDER BY requests DESC, user LIMIT 1000"
        );
        self.json_rows(&sql, &[&w.filter()], limits).await
    }

    /// The users of `w`'s tenants first seen before it
    /// (`user_first_seen`, kept by a materialized view).
    pub async fn returning_users(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<Count>, StoreError> {
        let sql = format!(
            "SELECT user_id AS key, toUInt64(1) AS n FROM user_first_seen WHERE {{w}} \
             GROUP BY user_id HAVING minMerge(first_seen) < toDateTime({})",
            w.from_s
        );
        self.json_rows(&sql, &[&w.tenants], limits).await
    }

    /// Agents (and hosts) that shipped in the window, with their last
    /// record and how far behind the source they were.
    pub async fn agents(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<AgentSeen>, StoreError> {
        let sql = "SELECT agent_id AS key, any(host) AS agent_host, count() AS records, toUInt32(max(timestamp)) AS last_s, \
             avg(toInt64(observed_unix_nano) - toInt64(time_unix_nano)) / 1000000 AS lag_ms \
             FROM logs WHERE {w} GROUP BY key ORDER BY last_s DESC, key LIMIT 1000";
        self.json_rows(sql, &[&w.filter()], limits).await
    }

    /// Rows and bytes on disk of the database, or, for a caller scoped to
    /// some tenants (`tenants` not empty), their rows of `logs` and their
    /// share of its bytes (in proportion to rows): never the totals of
    /// tenants the caller cannot see.
    pub async fn storage(&self, tenants: &Sql, limits: ReadLimits) -> Result<Storage, StoreError> {
        let db = Sql::new(
            "database = ? AND active",
            vec![Value::Str(self.database.clone())],
        );
        let one = |rows: Vec<Storage>| {
            rows.into_iter()
                .next()
                .ok_or_else(|| StoreError::Decode("no storage row".into()))
        };
        if tenants.text.is_empty() {
            let sql =
                "SELECT sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts WHERE {w}";
            return one(self.json_rows(sql, &[&db], limits).await?);
        }
        let logs = Sql::new(
            "database = ? AND table = 'logs' AND active",
            vec![Value::Str(self.database.clone())],
        );
        #[derive(Deserialize)]
        struct Share {
            mine: u64,
            rows: u64,
            bytes: u64,
        }
        let sql = "SELECT (SELECT count() FROM logs WHERE {w}) AS mine, \
             sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts WHERE {w}";
        let share: Vec<Share> = self.json_rows(sql, &[tenants, &logs], limits).await?;
        one(share
            .into_iter()
            .map(|s| Storage {
                rows: s.mine,
                bytes: (s.bytes as f64 * s.mine as f64 / s.rows.max(1) as f64) as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_parts_are_bracketed() {
        let scope = Sql::new("tenant = ?", vec![Value::Str("acme".into())]);
        let query = Sql::new("a = 1 OR b = 2", vec![]);
        let empty = Sql::default();
        assert_eq!(
            splice(
                "SELECT 1 WHERE {w} AND {w} AND {w}",
                &[&scope, &query, &empty]
            ),
            "SELECT 1 WHERE (tenant = ?) AND (a = 1 OR b = 2) AND 1"
        );
    }
}
