//! The analytics domain: error groups, request performance, suspicion
//! scores, users and sessions, agent health and the daily report. Each is
//! computed from the aggregations of `store::analytics` over a window and
//! shaped into a view (`views`). The APIs call it after checking who asks
//! and what window they mean; the alert evaluator calls it for the rules
//! that watch error groups and addresses. Error groups are the union of
//! the window's pattern ids through `logferry_analysis::patterns::Grouper`.

mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::SecondsFormat;
use logferry_analysis::patterns::Grouper;

use crate::clock::{now_s, rfc3339_ns, rfc3339_s};
use crate::geoip::GeoIp;
use crate::store::analytics::{self as a, Window};
use crate::store::search::ReadLimits;
use crate::store::{Store, StoreError};
pub use views::*;

/// How long a daily report of a day that is over is served again without
/// recomputing it. Records that arrive later (an agent catching up) show
/// after at most this long.
pub const REPORT_CACHE: std::time::Duration = std::time::Duration::from_secs(300);

/// A day counts as over this long after its end: later arrivals are rare.
const REPORT_SETTLED_S: u64 = 600;

/// Reports by (scope, filters, day), with when they were computed.
#[derive(Debug, Default)]
struct ReportCache(std::sync::Mutex<HashMap<String, (std::time::Instant, DailyReport)>>);

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

/// The views, over any store; one per collector, shared by both APIs and
/// the alert evaluator.
#[derive(Debug)]
pub struct Analytics {
    /// Bounds on each aggregation (`api.max_execution_time_ms`, ...).
    limits: ReadLimits,
    /// Places addresses in countries for the security view.
    geoip: Option<Arc<GeoIp>>,
    /// Daily reports of days that are over, for `REPORT_CACHE`.
    reports: ReportCache,
}

impl Analytics {
    pub fn new(limits: ReadLimits, geoip: Option<GeoIp>) -> Analytics {
        Analytics {
            limits,
            geoip: geoip.map(Arc::new),
            reports: ReportCache::default(),
        }
    }

    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    pub async fn errors(&self, store: &Store, w: &Window) -> Result<ErrorsView, StoreError> {
        let limits = self.limits;
        let (series, breakdown, groups) = tokio::try_join!(
            store.series(w, limits),
            store.error_breakdown(w, limits),
            self.error_groups(store, w, 1000),
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
    pub async fn error_groups(
        &self,
        store: &Store,
        w: &Window,
        limit: u32,
    ) -> Result<Vec<ErrorGroup>, StoreError> {
        let limits = self.limits;
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
                    first_seen: r.first_s,
                    last_seen: r.last_s,
                    first_seen_ever: ever,
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
            e.first_seen = e.first_seen.min(r.first_s);
            e.last_seen = e.last_seen.max(r.last_s);
            e.first_seen_ever = e.first_seen_ever.min(ever);
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
        for e in &mut out {
            e.new = e.first_seen_ever >= w.from_s;
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
        store: &Store,
        w: &Window,
    ) -> Result<PerformanceView, StoreError> {
        let limits = self.limits;
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
                time: rfc3339_ns(s.t_ms.saturating_mul(1_000_000), SecondsFormat::Millis),
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

    pub async fn security(&self, store: &Store, w: &Window) -> Result<SecurityView, StoreError> {
        let limits = self.limits;
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

    /// Users, their sessions (split at `gap_s` of inactivity) and what
    /// they used.
    pub async fn users(
        &self,
        store: &Store,
        w: &Window,
        gap_s: u64,
    ) -> Result<UsersView, StoreError> {
        let limits = self.limits;
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
                key: rfc3339_s(day)[..10].to_string(),
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
                    first_seen: rfc3339_s(r.first_s),
                    last_seen: rfc3339_s(r.last_s),
                    endpoints: r.routes,
                })
                .collect(),
            feature_adoption,
        })
    }

    /// The pipeline's health in `w`: ClickHouse, throughput, errors, and
    /// each agent's activity and loss ledger. (`HealthView::unreachable`
    /// when there is no store to ask.)
    pub async fn health(&self, store: &Store, w: &Window) -> Result<HealthView, StoreError> {
        let limits = self.limits;
        let (storage, series, agents, reports) = tokio::try_join!(
            store.storage(&w.tenants, limits),
            store.series(w, limits),
            store.agents(w, limits),
            store.agent_reports(w, limits),
        )?;
        let totals = a::Totals::of(&series);
        let now_s = now_s();
        let mut reports: HashMap<String, crate::store::alerts::AgentReportRow> = reports
            .into_iter()
            .map(|r| (r.agent_id.clone(), r))
            .collect();
        let loss = |r: crate::store::alerts::AgentReportRow| AgentLoss {
            reported_at: rfc3339_s(u64::from(r.time)),
            agent_started: rfc3339_s(r.started_s),
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
                last_seen: rfc3339_s(x.last_s),
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
            last_seen: rfc3339_s(u64::from(r.time)),
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
            window: window_info(w),
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

    /// The headline figures of the day `day` and of the day before, and
    /// how much each changed. A day that is over is kept for
    /// `REPORT_CACHE`.
    pub async fn daily_report(
        &self,
        store: &Store,
        day: &Window,
    ) -> Result<DailyReport, StoreError> {
        let settled = day.to_s + REPORT_SETTLED_S <= now_s();
        let key = format!("{:?}|{:?}|{}", day.tenants, day.only, day.from_s);
        if settled {
            if let Some(report) = self.reports.get(&key) {
                return Ok(report);
            }
        }
        let previous = day.previous();
        let (today, before) = tokio::try_join!(
            self.day_summary(store, day),
            self.day_summary(store, &previous)
        )?;
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
    async fn day_summary(&self, store: &Store, w: &Window) -> Result<DaySummary, StoreError> {
        let limits = self.limits;
        let (series, groups, endpoints, ips, classes, users) = tokio::try_join!(
            store.series(w, limits),
            self.error_groups(store, w, 200),
            store.endpoints(w, limits),
            store.ip_activity(w, limits),
            store.classes(w, limits),
            store.user_sessions(w, 1800, limits),
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
            day: rfc3339_s(w.from_s)[..10].to_string(),
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
}

impl HealthView {
    /// The view when there is no ClickHouse to ask: degraded, and why.
    pub fn unreachable(w: &Window, why: String) -> HealthView {
        HealthView {
            window: window_info(w),
            status: "degraded".into(),
            clickhouse: ClickHouseHealth {
                reachable: false,
                version: String::new(),
                rows: 0,
                bytes_on_disk: 0,
                error: Some(why),
            },
            records: 0,
            records_per_s: 0.0,
            error_rate: 0.0,
            agents: Vec::new(),
            hosts: Vec::new(),
        }
    }
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

fn window_info(w: &Window) -> WindowInfo {
    WindowInfo {
        from: rfc3339_s(w.from_s),
        to: rfc3339_s(w.to_s),
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
pub fn suspicion(ip: &a::IpActivity) -> SuspiciousIp {
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

/// The security view's per-address activity, summed per country.
fn by_country(geoip: &GeoIp, ips: &[a::IpActivity]) -> Vec<CountryStats> {
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
