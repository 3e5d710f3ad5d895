//! The analytics views: health, errors, performance, security, users,
//! the daily report and active alerts. Each is computed in ClickHouse over
//! a window (`store::analytics`) for the caller's tenants, then shaped
//! here; error groups are the union of the window's pattern ids through
//! `logferry_analysis::patterns::Grouper`. Both APIs call these methods.

use std::collections::{BTreeMap, HashMap};

use logferry_analysis::patterns::Grouper;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::service::Service;
use super::ApiError;
use crate::auth::Principal;
use crate::query::sql::{Sql, Value};
use crate::query::{parse_span, parse_time};
use crate::store::analytics::{self as a, Window};
use crate::store::now_ns;

const NS: u64 = 1_000_000_000;

/// How long a daily report of a day that is over is served again without
/// recomputing it. Records that arrive later (an agent catching up) show
/// after at most this long.
pub const REPORT_CACHE: std::time::Duration = std::time::Duration::from_secs(300);

/// A day counts as over this long after its end: later arrivals are rare.
const REPORT_SETTLED_S: u64 = 600;

/// Reports by (scope, filters, day), with when they were computed.
#[derive(Debug, Default)]
pub struct ReportCache(std::sync::Mutex<HashMap<String, (std::time::Instant, DailyReport)>>);

impl ReportCache {
    fn get(&self, key: &str) -> Option<DailyReport> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < REPORT_CACHE)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, report: DailyReport) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < REPORT_CACHE);
        if cache.len() < 1000 {
            cache.insert(key, (std::time::Instant::now(), report));
        }
    }
}

/// Window and filters, as both APIs receive them.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// Start: RFC 3339 or Unix milliseconds. Default: `to` minus 24 hours
    /// (15 minutes for health).
    pub from: Option<String>,
    /// End: RFC 3339 or Unix milliseconds. Default: now.
    pub to: Option<String>,
    /// Instead of `from`: a span back from `to`, like `15m`, `2h` or `7d`.
    pub last: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this host.
    pub host: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this tenant (one of the caller's).
    pub tenant: Option<String>,
    /// Users: inactivity that ends a session, like `30m` (the default).
    pub session_gap: Option<String>,
    /// Daily report: the day, `YYYY-MM-DD` (UTC). Default: yesterday.
    pub day: Option<String>,
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
    /// In the window, RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// The first time any collector saw this group's patterns for these tenants.
    pub first_seen_ever: String,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveAlert {
    pub tenant: String,
    pub rule_id: String,
    /// The rule's name.
    pub rule: String,
    /// What the rule groups by (an address, a host, an error group), or empty.
    pub group: String,
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub value: f64,
    pub since: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertsView {
    pub alerts: Vec<ActiveAlert>,
}

fn rfc(s: u64) -> String {
    chrono::DateTime::from_timestamp(s as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

fn counted(rows: Vec<a::Count>) -> Vec<Counted> {
    rows.into_iter()
        .map(|c| Counted {
            key: c.key,
            count: c.n,
        })
        .collect()
}

impl AnalyticsParams {
    /// The window: `[from, to)` in whole seconds, `default_span_s` back
    /// from `to` when neither `from` nor `last` is given.
    pub(crate) fn window(&self, p: &Principal, default_span_s: u64) -> Result<Window, ApiError> {
        let to_ns = match self.to.as_deref() {
            Some(t) => parse_time(t)?,
            None => now_ns(),
        };
        let from_ns = match (self.from.as_deref(), self.last.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give `from` or `last`, not both".into(),
                ))
            }
            (Some(f), None) => parse_time(f)?,
            (None, Some(l)) => to_ns.saturating_sub(parse_span(l)?),
            (None, None) => to_ns.saturating_sub(default_span_s * NS),
        };
        if from_ns >= to_ns {
            return Err(ApiError::BadRequest("`from` must be before `to`".into()));
        }
        Ok(Window {
            from_s: from_ns / NS,
            to_s: to_ns.div_ceil(NS),
            tenants: p.scope.sql(self.tenant.as_deref())?,
            only: self.only(),
        })
    }

    /// The service, host and environment filters.
    fn only(&self) -> Sql {
        let mut parts = Vec::new();
        for (column, value) in [
            ("service", &self.service),
            ("host", &self.host),
            ("environment", &self.environment),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                parts.push(Sql::new(
                    format!("{column} = ?"),
                    vec![Value::Str(v.into())],
                ));
            }
        }
        Sql::and(parts)
    }
}

fn window_info(w: &Window) -> WindowInfo {
    WindowInfo {
        from: rfc(w.from_s),
        to: rfc(w.to_s),
        from_unix_ms: w.from_s * 1000,
        to_unix_ms: w.to_s * 1000,
        step_s: w.step_s(),
    }
}

fn points(rows: Vec<a::Bucket>) -> Vec<Point> {
    rows.into_iter()
        .map(|b| Point {
            t: b.t,
            records: b.records,
            errors: b.errors,
            requests: b.requests,
        })
        .collect()
}

fn endpoint(e: a::Endpoint) -> EndpointStats {
    EndpointStats {
        error_rate: ratio(e.server_errors, e.n),
        method: e.method,
        route: e.route,
        count: e.n,
        p50_ms: e.p50,
        p95_ms: e.p95,
        p99_ms: e.p99,
        max_ms: e.max,
    }
}

/// Scores an address by what it did: attacks weigh most, then scanning,
/// failed logins, 404 bursts and rate limiting.
pub(crate) fn suspicion(ip: &a::IpActivity) -> SuspiciousIp {
    let mut score = 0u64;
    let mut reasons = Vec::new();
    if ip.attacks > 0 {
        score += 40 + 5 * ip.attacks.min(8);
        reasons.push(format!(
            "{} attack requests ({})",
            ip.attacks,
            ip.classes.join(", ")
        ));
    }
    if ip.scanner > 0 {
        score += 20 + 2 * ip.scanner.min(10);
        reasons.push(format!("{} scanner requests", ip.scanner));
    }
    if ip.failed_auth > 0 {
        score += 5 * ip.failed_auth.min(8);
        reasons.push(format!("{} failed authentications", ip.failed_auth));
    }
    if ip.not_found >= 10 {
        score += 10;
        reasons.push(format!("{} not-found responses", ip.not_found));
    }
    if ip.rate_limited > 0 {
        score += 10;
        reasons.push(format!("{} rate-limited requests", ip.rate_limited));
    }
    SuspiciousIp {
        ip: ip.ip.clone(),
        score: score.min(100),
        reasons,
    }
}

impl Service {
    fn reader_window(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
        default_span_s: u64,
    ) -> Result<Window, ApiError> {
        p.require_reader()?;
        params.window(p, default_span_s)
    }

    pub async fn errors(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<ErrorsView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        self.errors_in(&w).await
    }

    async fn errors_in(&self, w: &Window) -> Result<ErrorsView, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let (series, breakdown, groups) = tokio::try_join!(
            async { Ok::<_, ApiError>(store.series(w, limits).await?) },
            async { Ok(store.error_breakdown(w, limits).await?) },
            self.error_groups(w, 1000),
        )?;
        let totals = a::Totals::of(&series);
        let top = |key: fn(&a::Breakdown) -> &str| -> Vec<Counted> {
            let mut by: HashMap<&str, u64> = HashMap::new();
            for b in &breakdown {
                *by.entry(key(b)).or_default() += b.n;
            }
            let mut v: Vec<Counted> = by
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, n)| Counted {
                    key: k.to_string(),
                    count: n,
                })
                .collect();
            v.sort_by(|x, y| y.count.cmp(&x.count).then(x.key.cmp(&y.key)));
            v.truncate(20);
            v
        };
        Ok(ErrorsView {
            window: window_info(w),
            records: totals.records,
            errors: totals.errors,
            error_rate: ratio(totals.errors, totals.records),
            series: points(series),
            by_service: top(|b| &b.service),
            by_module: top(|b| &b.module),
            by_function: top(|b| &b.function),
            exception_types: top(|b| &b.exception),
            groups,
        })
    }

    /// The window's error patterns, grouped, busiest first.
    pub(crate) async fn error_groups(
        &self,
        w: &Window,
        limit: u32,
    ) -> Result<Vec<ErrorGroup>, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let previous_window = w.previous();
        let (rows, previous) = tokio::try_join!(
            store.error_patterns(w, limit, limits),
            store.error_pattern_counts(&previous_window, limits),
        )?;
        let ids: Vec<u64> = rows.iter().map(|r| r.pattern_id).collect();
        // Correlation: the endpoints of a sample of each busy pattern's
        // request ids (20 per pattern, the 50 busiest patterns).
        let sampled: Vec<String> = rows
            .iter()
            .take(50)
            .flat_map(|r| r.request_ids.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let (infos, request_routes) = tokio::try_join!(
            store.patterns(&w.tenants, &ids, limits),
            store.request_routes(w, &sampled, limits),
        )?;
        let route_of: HashMap<String, String> = request_routes
            .into_iter()
            .map(|r| (r.request_id, r.route))
            .collect();
        let infos: HashMap<u64, a::PatternInfo> =
            infos.into_iter().map(|i| (i.pattern_id, i)).collect();
        let previous: HashMap<u64, u64> = previous
            .into_iter()
            .filter_map(|c| Some((c.key.parse().ok()?, c.n)))
            .collect();

        // A pattern without a registered template (its registration is
        // still to be retried) is its own group, named by its sample.
        let template_of = |r: &a::PatternCount| match infos.get(&r.pattern_id) {
            Some(i) => i.template.clone(),
            None => logferry_analysis::patterns::template(&r.sample).text,
        };
        let mut grouper = Grouper::new();
        for r in &rows {
            grouper.add(&template_of(r));
        }
        let groups = grouper.groups();
        let mut out: Vec<ErrorGroup> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for r in &rows {
            let g = &groups[&template_of(r)];
            // The registry records the batch that first carried a template;
            // an older record can arrive later, so the window's own first
            // sighting bounds it too.
            let ever = infos
                .get(&r.pattern_id)
                .map_or(r.first_s, |i| i.first_seen_s.min(r.first_s));
            let prev = previous.get(&r.pattern_id).copied().unwrap_or(0);
            let i = *index.entry(g.id).or_insert_with(|| {
                out.push(ErrorGroup {
                    id: format!("{:016x}", g.id),
                    template: g.template.clone(),
                    count: 0,
                    first_seen: rfc(r.first_s),
                    last_seen: rfc(r.last_s),
                    first_seen_ever: rfc(ever),
                    new: false,
                    previous_count: 0,
                    spike: false,
                    sample: r.sample.clone(),
                    services: Vec::new(),
                    hosts: Vec::new(),
                    request_ids: Vec::new(),
                    endpoints: Vec::new(),
                });
                out.len() - 1
            });
            let e = &mut out[i];
            e.count += r.n;
            e.previous_count += prev;
            e.first_seen = e.first_seen.clone().min(rfc(r.first_s));
            e.last_seen = e.last_seen.clone().max(rfc(r.last_s));
            e.first_seen_ever = e.first_seen_ever.clone().min(rfc(ever));
            for (acc, more) in [
                (&mut e.services, &r.services),
                (&mut e.hosts, &r.hosts),
                (&mut e.request_ids, &r.request_ids),
            ] {
                for m in more {
                    if acc.len() < 10 && !acc.contains(m) {
                        acc.push(m.clone());
                    }
                }
            }
            for route in r.request_ids.iter().filter_map(|id| route_of.get(id)) {
                match e.endpoints.iter_mut().find(|c| &c.key == route) {
                    Some(c) => c.count += 1,
                    None => e.endpoints.push(Counted {
                        key: route.clone(),
                        count: 1,
                    }),
                }
            }
        }
        let from = rfc(w.from_s);
        for e in &mut out {
            e.new = e.first_seen_ever >= from;
            e.spike = e.count >= 5 && e.count >= 2 * e.previous_count;
            e.endpoints
                .sort_by(|x, y| y.count.cmp(&x.count).then(x.key.cmp(&y.key)));
            e.endpoints.truncate(3);
            e.services.sort();
            e.hosts.sort();
        }
        out.sort_by(|x, y| y.count.cmp(&x.count).then(x.id.cmp(&y.id)));
        Ok(out)
    }

    pub async fn performance(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<PerformanceView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        self.performance_in(&w).await
    }

    async fn performance_in(&self, w: &Window) -> Result<PerformanceView, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let (series, endpoints, status_codes, slow, db) = tokio::try_join!(
            store.series(w, limits),
            store.endpoints(w, limits),
            store.status_codes(w, limits),
            store.slow_requests(w, 20, limits),
            store.db_queries(w, limits),
        )?;
        let totals = a::Totals::of(&series);
        let endpoints: Vec<EndpointStats> = endpoints.into_iter().map(endpoint).collect();
        let mut slowest: Vec<EndpointStats> =
            endpoints.iter().filter(|e| e.count >= 5).cloned().collect();
        slowest.sort_by(|x, y| y.p95_ms.total_cmp(&x.p95_ms).then(x.route.cmp(&y.route)));
        slowest.truncate(10);
        let slow_requests = slow
            .into_iter()
            .map(|s| SlowRequest {
                time: chrono::DateTime::from_timestamp_millis(s.t_ms as i64)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                method: s.method,
                path: s.path,
                status: s.status,
                duration_ms: s.duration_ms,
                request_id: s.request_id,
                service: s.service,
                host: s.host,
            })
            .collect();
        Ok(PerformanceView {
            window: window_info(w),
            requests: totals.requests,
            server_errors: totals.server_errors,
            error_rate: ratio(totals.server_errors, totals.requests),
            throughput: points(series),
            endpoints,
            slowest,
            status_codes: counted(status_codes),
            slow_requests,
            db_queries: db.into_iter().map(endpoint).collect(),
        })
    }

    pub async fn security(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<SecurityView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        self.security_in(&w).await
    }

    async fn security_in(&self, w: &Window) -> Result<SecurityView, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let (ips, by_user, classes, agents) = tokio::try_join!(
            store.ip_activity(w, limits),
            store.failed_auth_users(w, limits),
            store.classes(w, limits),
            store.agents_by_class(w, limits),
        )?;
        let by_user = counted(by_user);
        let mut by_ip: Vec<IpFailures> = ips
            .iter()
            .filter(|i| i.failed_auth > 0)
            .map(|i| IpFailures {
                ip: i.ip.clone(),
                count: i.failed_auth,
                users: i.users.clone(),
            })
            .collect();
        by_ip.sort_by(|x, y| y.count.cmp(&x.count).then(x.ip.cmp(&y.ip)));
        let mut suspicious: Vec<SuspiciousIp> =
            ips.iter().map(suspicion).filter(|s| s.score > 0).collect();
        suspicious.sort_by(|x, y| y.score.cmp(&x.score).then(x.ip.cmp(&y.ip)));
        let class_stats = |rows: Vec<a::ClassCount>| -> Vec<ClassStats> {
            rows.into_iter()
                .map(|c| ClassStats {
                    class: c.class,
                    count: c.n,
                    ips: c.ips,
                    rules: c.rules,
                    samples: c.samples,
                })
                .collect()
        };
        let burst = |f: fn(&a::IpActivity) -> u64, min: u64| -> Vec<Counted> {
            let mut v: Vec<Counted> = ips
                .iter()
                .filter(|i| f(i) >= min)
                .map(|i| Counted {
                    key: i.ip.clone(),
                    count: f(i),
                })
                .collect();
            v.sort_by(|x, y| y.count.cmp(&x.count).then(x.key.cmp(&y.key)));
            v
        };
        Ok(SecurityView {
            window: window_info(w),
            failed_auth: by_ip.iter().map(|i| i.count).sum(),
            brute_force_ips: by_ip
                .iter()
                .filter(|i| i.count >= 5)
                .map(|i| i.ip.clone())
                .collect(),
            brute_force_users: by_user
                .iter()
                .filter(|u| u.count >= 5)
                .map(|u| u.key.clone())
                .collect(),
            failed_auth_by_ip: by_ip,
            failed_auth_by_user: by_user,
            suspicious_ips: suspicious,
            classes: class_stats(classes),
            user_agents: class_stats(agents),
            not_found_bursts: burst(|i| i.not_found, 10),
            rate_limited: burst(|i| i.rate_limited, 1),
            countries: self.geoip.as_deref().map(|g| by_country(g, &ips)),
        })
    }

    pub async fn users(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<UsersView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        let gap = match params.session_gap.as_deref() {
            Some(g) => parse_span(g)? / NS,
            None => 1800,
        };
        if gap == 0 {
            return Err(ApiError::BadRequest(
                "`session_gap` must be at least 1s".into(),
            ));
        }
        self.users_in(&w, gap).await
    }

    async fn users_in(&self, w: &Window, gap_s: u64) -> Result<UsersView, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let (rows, returning) = tokio::try_join!(
            store.user_sessions(w, gap_s, limits),
            store.returning_users(w, limits),
        )?;
        let mut days: BTreeMap<u64, u64> = BTreeMap::new();
        for r in &rows {
            for d in &r.days {
                *days.entry(*d).or_default() += 1;
            }
        }
        let returning: HashMap<String, u64> = returning.into_iter().map(|c| (c.key, c.n)).collect();
        let mut adoption: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            for route in &r.routes {
                *adoption.entry(route.clone()).or_default() += 1;
            }
        }
        let mut feature_adoption: Vec<Counted> = adoption
            .into_iter()
            .map(|(key, count)| Counted { key, count })
            .collect();
        feature_adoption.sort_by(|x, y| y.count.cmp(&x.count).then(x.key.cmp(&y.key)));
        let sessions: u64 = rows.iter().map(|r| r.sessions).sum();
        let active: u64 = rows.iter().map(|r| r.active_s).sum();
        let returning_users = rows
            .iter()
            .filter(|r| returning.contains_key(&r.user))
            .count() as u64;
        let per_day = days
            .into_iter()
            .map(|(day, users)| Counted {
                key: rfc(day)[..10].to_string(),
                count: users,
            })
            .collect();
        Ok(UsersView {
            window: window_info(w),
            session_gap_s: gap_s,
            active_users: rows.len() as u64,
            per_day,
            sessions,
            avg_session_s: ratio(active, sessions),
            new_users: rows.len() as u64 - returning_users,
            returning_users,
            users: rows
                .into_iter()
                .map(|r| UserStats {
                    returning: returning.contains_key(&r.user),
                    user: r.user,
                    requests: r.requests,
                    sessions: r.sessions,
                    active_s: r.active_s,
                    first_seen: rfc(r.first_s),
                    last_seen: rfc(r.last_s),
                    endpoints: r.routes,
                })
                .collect(),
            feature_adoption,
        })
    }

    pub async fn health(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<HealthView, ApiError> {
        let w = self.reader_window(p, params, 900)?;
        let limits = self.limits();
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => {
                return Ok(HealthView {
                    window: window_info(&w),
                    status: "degraded".into(),
                    clickhouse: ClickHouseHealth {
                        reachable: false,
                        version: String::new(),
                        rows: 0,
                        bytes_on_disk: 0,
                        error: Some(e.to_string()),
                    },
                    records: 0,
                    records_per_s: 0.0,
                    error_rate: 0.0,
                    agents: Vec::new(),
                    hosts: Vec::new(),
                })
            }
        };
        let (storage, series, agents, reports) = tokio::try_join!(
            store.storage(&w.tenants, limits),
            store.series(&w, limits),
            store.agents(&w, limits),
            store.agent_reports(&w, limits),
        )?;
        let totals = a::Totals::of(&series);
        let now_s = now_ns() / NS;
        let mut reports: HashMap<String, crate::store::alerts::AgentReportRow> = reports
            .into_iter()
            .map(|r| (r.agent_id.clone(), r))
            .collect();
        let loss = |r: crate::store::alerts::AgentReportRow| AgentLoss {
            reported_at: rfc(u64::from(r.time)),
            agent_started: rfc(r.started_s),
            abandoned_bytes: r.abandoned_bytes,
            truncated_lines: r.truncated_lines,
            parse_errors: r.parse_errors,
            unread_bytes: r.unread_bytes,
            unread_age_s: r.unread_age_s,
            queue_records: r.queue_records,
            oldest_unacked_s: r.oldest_unacked_s,
            dead_letter_batches: r.dead_letter_batches,
            dead_letter_records: r.dead_letter_records,
            queue_lost_records: r.queue_lost_records,
        };
        let mut agents: Vec<AgentHealth> = agents
            .into_iter()
            .map(|x| AgentHealth {
                loss: reports.remove(&x.key).map(loss),
                agent_id: x.key,
                host: x.host,
                records: x.records,
                last_seen: rfc(x.last_s),
                seconds_since_last: now_s.saturating_sub(x.last_s),
                lag_ms: x.lag_ms,
            })
            .collect();
        // Agents that reported but shipped no record in the window.
        let mut quiet: Vec<_> = reports.into_values().collect();
        quiet.sort_by(|x, y| x.host.cmp(&y.host).then(x.agent_id.cmp(&y.agent_id)));
        agents.extend(quiet.into_iter().map(|r| AgentHealth {
            agent_id: r.agent_id.clone(),
            host: r.host.clone(),
            records: 0,
            last_seen: rfc(u64::from(r.time)),
            seconds_since_last: now_s.saturating_sub(u64::from(r.time)),
            lag_ms: 0.0,
            loss: Some(loss(r)),
        }));
        let mut hosts: BTreeMap<String, u64> = BTreeMap::new();
        for x in &agents {
            *hosts.entry(x.host.clone()).or_default() += x.records;
        }
        let error_rate = ratio(totals.errors, totals.records);
        Ok(HealthView {
            window: window_info(&w),
            status: if error_rate > 0.05 { "degraded" } else { "ok" }.into(),
            clickhouse: ClickHouseHealth {
                reachable: true,
                version: store.version.to_string(),
                rows: storage.rows,
                bytes_on_disk: storage.bytes,
                error: None,
            },
            records: totals.records,
            records_per_s: totals.records as f64 / (w.to_s - w.from_s).max(1) as f64,
            error_rate,
            agents,
            hosts: hosts
                .into_iter()
                .map(|(key, count)| Counted { key, count })
                .collect(),
        })
    }

    pub async fn daily_report(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<DailyReport, ApiError> {
        p.require_reader()?;
        if params.from.is_some() || params.to.is_some() || params.last.is_some() {
            return Err(ApiError::BadRequest(
                "the daily report takes `day`, not `from`, `to` or `last`".into(),
            ));
        }
        let start = match params.day.as_deref() {
            Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ApiError::BadRequest(format!("`day` must be YYYY-MM-DD, not `{d}`"))
            })?,
            None => (chrono::Utc::now() - chrono::Duration::days(1)).date_naive(),
        };
        let day_s = start
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0)
            .max(0) as u64;
        let day = Window {
            from_s: day_s,
            to_s: day_s + 86_400,
            tenants: p.scope.sql(params.tenant.as_deref())?,
            only: params.only(),
        };
        let settled = day.to_s + REPORT_SETTLED_S <= now_ns() / NS;
        let key = format!("{:?}|{:?}|{}", day.tenants, day.only, day.from_s);
        if settled {
            if let Some(report) = self.reports.get(&key) {
                return Ok(report);
            }
        }
        let previous = day.previous();
        let (today, before) =
            tokio::try_join!(self.day_summary(&day), self.day_summary(&previous))?;
        let pairs = [
            ("records", today.records as f64, before.records as f64),
            ("errors", today.errors as f64, before.errors as f64),
            ("error_rate", today.error_rate, before.error_rate),
            ("requests", today.requests as f64, before.requests as f64),
            (
                "server_error_rate",
                today.server_error_rate,
                before.server_error_rate,
            ),
            ("attacks", today.attacks as f64, before.attacks as f64),
            (
                "failed_auth",
                today.failed_auth as f64,
                before.failed_auth as f64,
            ),
            (
                "active_users",
                today.active_users as f64,
                before.active_users as f64,
            ),
            ("sessions", today.sessions as f64, before.sessions as f64),
        ];
        let change = pairs
            .into_iter()
            .map(|(k, now, then)| (k.to_string(), (then != 0.0).then(|| (now - then) / then)))
            .collect();
        let report = DailyReport {
            day: today,
            previous_day: before,
            change,
        };
        if settled {
            self.reports.put(key, report.clone());
        }
        Ok(report)
    }

    /// One day's headline figures: the queries of the views that feed
    /// them, without the views' detail (breakdowns, samples, adoption).
    async fn day_summary(&self, w: &Window) -> Result<DaySummary, ApiError> {
        let (store, limits) = (self.store()?, self.limits());
        let (series, groups, endpoints, ips, classes, users) = tokio::try_join!(
            async { Ok::<_, ApiError>(store.series(w, limits).await?) },
            self.error_groups(w, 200),
            async { Ok(store.endpoints(w, limits).await?) },
            async { Ok(store.ip_activity(w, limits).await?) },
            async { Ok(store.classes(w, limits).await?) },
            async { Ok(store.user_sessions(w, 1800, limits).await?) },
        )?;
        let totals = a::Totals::of(&series);
        let mut slowest: Vec<EndpointStats> = endpoints
            .into_iter()
            .map(endpoint)
            .filter(|e| e.count >= 5)
            .collect();
        slowest.sort_by(|x, y| y.p95_ms.total_cmp(&x.p95_ms).then(x.route.cmp(&y.route)));
        slowest.truncate(5);
        let mut suspicious: Vec<SuspiciousIp> =
            ips.iter().map(suspicion).filter(|s| s.score > 0).collect();
        suspicious.sort_by(|x, y| y.score.cmp(&x.score).then(x.ip.cmp(&y.ip)));
        suspicious.truncate(5);
        Ok(DaySummary {
            day: rfc(w.from_s)[..10].to_string(),
            records: totals.records,
            errors: totals.errors,
            error_rate: ratio(totals.errors, totals.records),
            new_error_groups: groups.iter().filter(|g| g.new).count() as u64,
            top_error_groups: groups.into_iter().take(5).collect(),
            requests: totals.requests,
            server_error_rate: ratio(totals.server_errors, totals.requests),
            slowest,
            attacks: classes
                .iter()
                .filter(|c| {
                    ["sqli", "xss", "path_traversal", "cmd_injection"].contains(&c.class.as_str())
                })
                .map(|c| c.n)
                .sum(),
            failed_auth: ips.iter().map(|i| i.failed_auth).sum(),
            suspicious_ips: suspicious,
            active_users: users.len() as u64,
            sessions: users.iter().map(|u| u.sessions).sum(),
        })
    }

    /// A view by its path under `/api/v1/logs/`, as JSON (the gRPC
    /// `Analytics` call).
    pub async fn analytics_json(
        &self,
        p: &Principal,
        view: &str,
        params: &AnalyticsParams,
    ) -> Result<String, ApiError> {
        fn json<T: Serialize>(v: T) -> Result<String, ApiError> {
            Ok(serde_json::to_string(&v)
                .expect("views hold only strings, numbers, booleans and lists"))
        }
        match view {
            "health" => json(self.health(p, params).await?),
            "errors" => json(self.errors(p, params).await?),
            "performance" => json(self.performance(p, params).await?),
            "security" => json(self.security(p, params).await?),
            "users/activity" => json(self.users(p, params).await?),
            "report/daily" => json(self.daily_report(p, params).await?),
            "alerts/active" => json(self.active_alerts(p, params).await?),
            "alerts/history" => json(self.alert_history(p, params).await?),
            other => Err(ApiError::BadRequest(format!(
                "unknown view `{other}`: one of health, errors, performance, security, users/activity, report/daily, alerts/active, alerts/history"
            ))),
        }
    }

    pub async fn active_alerts(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<AlertsView, ApiError> {
        p.require_reader()?;
        let scope = p.scope.sql(params.tenant.as_deref())?;
        let rows = self.store()?.firing_alerts(&scope, self.limits()).await?;
        Ok(AlertsView {
            alerts: rows
                .into_iter()
                .map(|r| ActiveAlert {
                    tenant: r.tenant,
                    rule_id: r.rule_id,
                    rule: r.rule,
                    group: r.group_key,
                    state: r.state,
                    severity: r.severity,
                    summary: r.summary,
                    value: r.value,
                    since: rfc(u64::from(r.since)),
                })
                .collect(),
        })
    }
}

/// The security view's per-address activity, summed per country.
fn by_country(geoip: &crate::geoip::GeoIp, ips: &[a::IpActivity]) -> Vec<CountryStats> {
    let mut by: BTreeMap<String, CountryStats> = BTreeMap::new();
    for ip in ips {
        let country = geoip.country(&ip.ip).unwrap_or_else(|| "--".into());
        let c = by.entry(country.clone()).or_insert_with(|| CountryStats {
            country,
            ips: 0,
            failed_auth: 0,
            attacks: 0,
            scanner: 0,
            not_found: 0,
            rate_limited: 0,
        });
        c.ips += 1;
        c.failed_auth += ip.failed_auth;
        c.attacks += ip.attacks;
        c.scanner += ip.scanner;
        c.not_found += ip.not_found;
        c.rate_limited += ip.rate_limited;
    }
    let mut v: Vec<CountryStats> = by.into_values().collect();
    v.sort_by(|x, y| {
        (y.attacks + y.failed_auth + y.scanner)
            .cmp(&(x.attacks + x.failed_auth + x.scanner))
            .then(x.country.cmp(&y.country))
    });
    v
}
