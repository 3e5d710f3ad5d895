//! What the analytics views answer, as both APIs serialize it. Times that
//! code compares are Unix seconds, written as RFC 3339 only on the wire.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use utoipa::ToSchema;

fn rfc3339<S: Serializer>(s: &u64, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&crate::clock::rfc3339_s(*s))
}

/// The window a view covers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowInfo {
    pub from: String,
    pub to: String,
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    /// Width of the series' buckets, in seconds.
    pub step_s: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Point {
    /// Bucket start, Unix seconds.
    pub t: u64,
    pub records: u64,
    pub errors: u64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counted {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorGroup {
    /// Stable group id (hex): the hash of the group's template.
    pub id: String,
    pub template: String,
    pub count: u64,
    /// In the window; Unix seconds here, RFC 3339 on the wire.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub first_seen: u64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub last_seen: u64,
    /// The first time any collector saw this group's patterns for these tenants.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub first_seen_ever: u64,
    /// First seen ever inside the window.
    pub new: bool,
    /// Count in the previous window of the same length.
    pub previous_count: u64,
    /// At least twice the previous window's count, and at least 5.
    pub spike: bool,
    pub sample: String,
    pub services: Vec<String>,
    pub hosts: Vec<String>,
    /// Request ids of some of the group's records (up to 10).
    pub request_ids: Vec<String>,
    /// The endpoints of the requests the errors belong to (shared request
    /// id), counted over a sample of up to 20 request ids per group.
    pub endpoints: Vec<Counted>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorsView {
    pub window: WindowInfo,
    pub records: u64,
    pub errors: u64,
    /// errors / records.
    pub error_rate: f64,
    pub series: Vec<Point>,
    pub by_service: Vec<Counted>,
    pub by_module: Vec<Counted>,
    pub by_function: Vec<Counted>,
    /// From the `exception.type`, `error.type`, `exc_type` or `exception_type` attribute.
    pub exception_types: Vec<Counted>,
    pub groups: Vec<ErrorGroup>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointStats {
    pub method: String,
    /// The path with ids as `{id}`.
    pub route: String,
    pub count: u64,
    /// Share of responses with status >= 500.
    pub error_rate: f64,
    /// Latency percentiles in ms: the value at position ⌊q·n⌋ of the sorted durations.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlowRequest {
    pub time: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub request_id: String,
    pub service: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerformanceView {
    pub window: WindowInfo,
    pub requests: u64,
    pub server_errors: u64,
    pub error_rate: f64,
    /// Requests per bucket.
    pub throughput: Vec<Point>,
    /// Busiest first.
    pub endpoints: Vec<EndpointStats>,
    /// Highest p95 first, endpoints with at least 5 requests.
    pub slowest: Vec<EndpointStats>,
    pub status_codes: Vec<Counted>,
    pub slow_requests: Vec<SlowRequest>,
    /// Records with a `db.statement` or `db_query` attribute, by statement pattern.
    pub db_queries: Vec<EndpointStats>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IpFailures {
    pub ip: String,
    pub count: u64,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuspiciousIp {
    pub ip: String,
    /// 0 to 100.
    pub score: u64,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClassStats {
    pub class: String,
    pub count: u64,
    pub ips: u64,
    pub rules: Vec<String>,
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecurityView {
    pub window: WindowInfo,
    pub failed_auth: u64,
    pub failed_auth_by_ip: Vec<IpFailures>,
    pub failed_auth_by_user: Vec<Counted>,
    /// Addresses and users with at least 5 failed authentications.
    pub brute_force_ips: Vec<String>,
    pub brute_force_users: Vec<String>,
    pub suspicious_ips: Vec<SuspiciousIp>,
    /// Attack payloads (sqli, xss, path_traversal, cmd_injection), scanners and bots.
    pub classes: Vec<ClassStats>,
    /// Scanners and bots by user agent (`class` is the user agent).
    pub user_agents: Vec<ClassStats>,
    /// Addresses with 10 or more 404s in the window.
    pub not_found_bursts: Vec<Counted>,
    /// Addresses answered 429.
    pub rate_limited: Vec<Counted>,
    /// The same activity by the addresses' country (`api.geoip_mmdb`);
    /// null without a database. `--` stands for addresses it does not place.
    pub countries: Option<Vec<CountryStats>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountryStats {
    /// ISO 3166 code.
    pub country: String,
    pub ips: u64,
    pub failed_auth: u64,
    pub attacks: u64,
    pub scanner: u64,
    pub not_found: u64,
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserStats {
    pub user: String,
    pub requests: u64,
    pub sessions: u64,
    /// Time between the first and last request of each session, summed.
    pub active_s: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The endpoints this user called (up to 20).
    pub endpoints: Vec<String>,
    /// Seen before the window (by this tenant, any service).
    pub returning: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsersView {
    pub window: WindowInfo,
    pub session_gap_s: u64,
    pub active_users: u64,
    pub per_day: Vec<Counted>,
    pub sessions: u64,
    pub avg_session_s: f64,
    pub new_users: u64,
    pub returning_users: u64,
    /// Busiest first (up to 1000).
    pub users: Vec<UserStats>,
    /// Per endpoint, how many users called it.
    pub feature_adoption: Vec<Counted>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentHealth {
    pub agent_id: String,
    pub host: String,
    pub records: u64,
    pub last_seen: String,
    pub seconds_since_last: u64,
    /// Mean time from the record's own timestamp to the agent reading it.
    pub lag_ms: f64,
    /// The agent's latest loss report in the window, if it sent one.
    pub loss: Option<AgentLoss>,
}

/// What an agent could not ship since it started, and how far behind it is
/// (the loss ledger: every agent reports it with its batches).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentLoss {
    pub reported_at: String,
    pub agent_started: String,
    /// Bytes of files that will never be read (truncated with no copy found).
    pub abandoned_bytes: u64,
    /// Lines cut at the source's `max_line_bytes`.
    pub truncated_lines: u64,
    /// Lines of JSON sources that were not JSON objects (stored as text).
    pub parse_errors: u64,
    /// Bytes written to followed files and not read yet, and how long the
    /// longest-waiting file has had some (its oldest unread line is at
    /// least that old).
    pub unread_bytes: u64,
    pub unread_age_s: u64,
    /// Records queued on the agent, not yet acknowledged, and the age of the oldest.
    pub queue_records: u64,
    pub oldest_unacked_s: u64,
    /// Batches every collector refused for good, kept on the agent until
    /// replayed (`logferry-agent dead-letters`), and their records.
    pub dead_letter_batches: u64,
    pub dead_letter_records: u64,
    /// Records lost to a damaged queue, found when it was recovered at the
    /// agent's start.
    pub queue_lost_records: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClickHouseHealth {
    pub reachable: bool,
    pub version: String,
    pub rows: u64,
    pub bytes_on_disk: u64,
    /// Why it is unreachable.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthView {
    pub window: WindowInfo,
    /// `ok`, or `degraded` when ClickHouse is unreachable or errors exceed 5% of records.
    pub status: String,
    pub clickhouse: ClickHouseHealth,
    pub records: u64,
    pub records_per_s: f64,
    pub error_rate: f64,
    pub agents: Vec<AgentHealth>,
    pub hosts: Vec<Counted>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DaySummary {
    pub day: String,
    pub records: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub new_error_groups: u64,
    pub top_error_groups: Vec<ErrorGroup>,
    pub requests: u64,
    pub server_error_rate: f64,
    pub slowest: Vec<EndpointStats>,
    pub attacks: u64,
    pub failed_auth: u64,
    pub suspicious_ips: Vec<SuspiciousIp>,
    pub active_users: u64,
    pub sessions: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DailyReport {
    pub day: DaySummary,
    pub previous_day: DaySummary,
    /// Relative change from the previous day (0.25 = 25% more); null when the previous day had none.
    pub change: BTreeMap<String, Option<f64>>,
}
