//! Alerting: its configuration (`config`), rules (`rules`) and the
//! aggregations that check them (`aggregate`), each alert's life
//! (`state`), notifications (`notify`), and the evaluator that runs them on
//! one collector at a time. Rules on error groups and addresses are checked
//! on the analytics views (`crate::analytics`), the others by one
//! aggregation each, which the store runs.
//!
//! Several collectors share one ClickHouse and nothing else, so the work is
//! given to one of them by a lease in ClickHouse (`leases`, server clock):
//! the holder renews it every few seconds; when it stops renewing, the
//! first collector to see it expired claims the next term, and a tie is
//! settled by re-reading after a pause (the lowest collector id wins).
//! Alert states live in `alert_states`, written before notifications are
//! sent, so the next holder neither repeats nor forgets what was sent.

mod aggregate;
pub mod config;
pub mod notify;
pub mod rules;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_daemon::error_chain;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::analytics::{self, Analytics, ErrorGroup};
use crate::clock::now_ns;
use crate::metrics::Metrics;
use crate::query::sql::{Sql, Value};
use crate::store::alerts::{HistoryRow, Observation, SilenceRow, StateRow};
use crate::store::analytics::Window;
use crate::store::Store;
pub use config::AlertsConfig;
use notify::{Notification, Notifier};
use rules::{Kind, RuleSpec, EVERY_TENANT};
use state::{Alert, State, Timing};

const LEASE: &str = "alerts";
/// How long a claimant waits before re-reading to see whether it won.
const SETTLE: Duration = Duration::from_secs(1);
/// Records of the last day make a tenant's rules (for `*` rules) and a
/// sender (for silence rules) known.
const LOOKBACK_S: u64 = 86_400;

/// Where a rule comes from: the config file (read-only through the API)
/// or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Default,
    Config,
    Api,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rule {
    pub id: String,
    pub source: Source,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// The rules of the config file and the channel names: what the API and
/// the evaluator both need.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub config_rules: Vec<Rule>,
    pub channels: Vec<String>,
}

impl Catalog {
    pub fn new(config: &AlertsConfig) -> Catalog {
        let defaults = rules::defaults()
            .into_iter()
            .filter(|_| config.default_rules)
            .map(|spec| Rule {
                id: format!("default-{}", slug(&spec.name)),
                source: Source::Default,
                spec,
            });
        let configured = config.rules.iter().map(|spec| Rule {
            id: format!("config-{}-{}", slug(&spec.tenant), slug(&spec.name)),
            source: Source::Config,
            spec: spec.clone(),
        });
        Catalog {
            config_rules: defaults.chain(configured).collect(),
            channels: config.channels.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// Every rule: the config file's, then the API's (a stored rule that no
    /// longer parses is skipped with a warning).
    pub async fn rules(&self, store: &Store) -> Result<Vec<Rule>, crate::store::StoreError> {
        let mut all = self.config_rules.clone();
        for row in store.alert_rules().await? {
            match serde_json::from_str::<RuleSpec>(&row.body) {
                Ok(spec) => all.push(Rule {
                    id: row.id,
                    source: Source::Api,
                    spec,
                }),
                Err(e) => {
                    warn!(rule = %row.id, error = %error_chain(&e), "stored alert rule cannot be read; skipped")
                }
            }
        }
        Ok(all)
    }
}

/// Lowercase letters and digits, other runs as one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "all".into()
    } else {
        out
    }
}

/// This collector's claim on the evaluator lease.
struct Lease {
    me: String,
    ttl_s: u64,
    held_until: Option<Instant>,
    term: u64,
}

impl Lease {
    /// Renews the lease if held, claims it if it expired; whether this
    /// collector holds it now.
    async fn hold(&mut self, store: &Store) -> Result<bool, crate::store::StoreError> {
        let started = Instant::now();
        let view = store.lease(LEASE).await?;
        let live = view.expires_s > view.now_s;
        if live && view.holder != self.me {
            if self.held_until.take().is_some() {
                info!(holder = %view.holder, term = view.term, "another collector evaluates alerts now");
            }
            return Ok(false);
        }
        let term = if live { view.term } else { view.term + 1 };
        store.put_lease(LEASE, term, &self.me, self.ttl_s).await?;
        if !live {
            tokio::time::sleep(SETTLE).await;
            let view = store.lease(LEASE).await?;
            if view.holder != self.me {
                return Ok(false);
            }
            info!(term, "this collector evaluates alerts now");
        }
        self.term = term;
        // A margin for the time the renewal took to land.
        let valid = Duration::from_secs(self.ttl_s).saturating_sub(Duration::from_secs(2));
        self.held_until = Some(started + valid);
        Ok(true)
    }

    fn valid(&self) -> bool {
        self.held_until.is_some_and(|t| Instant::now() < t)
    }
}

pub struct Evaluator {
    config: AlertsConfig,
    catalog: Arc<Catalog>,
    analytics: Arc<Analytics>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
    collector_id: String,
}

impl Evaluator {
    pub fn new(
        config: AlertsConfig,
        catalog: Arc<Catalog>,
        analytics: Arc<Analytics>,
        notifier: Arc<Notifier>,
        metrics: Arc<Metrics>,
        collector_id: String,
    ) -> Evaluator {
        Evaluator {
            config,
            catalog,
            analytics,
            notifier,
            metrics,
            collector_id,
        }
    }

    /// Competes for the lease and, while holding it, evaluates every rule
    /// each `interval_s`.
    pub async fn run(self, mut store: watch::Receiver<Option<Store>>, shutdown: CancellationToken) {
        let Ok(store) = store.wait_for(Option::is_some).await.map(|s| s.clone()) else {
            return;
        };
        let Some(store) = store else { return };
        let mut lease = Lease {
            me: self.collector_id.clone(),
            ttl_s: self.config.lease_ttl_s,
            held_until: None,
            term: 0,
        };
        let renew = Duration::from_secs((self.config.lease_ttl_s / 3).max(1))
            .min(Duration::from_secs(self.config.interval_s));
        let interval = Duration::from_secs(self.config.interval_s);
        let mut last: Option<Instant> = None;
        loop {
            match lease.hold(&store).await {
                Ok(held) => self.metrics.alert_evaluator.set(i64::from(held)),
                Err(e) => {
                    warn!(error = %error_chain(&e), "cannot reach the evaluator lease");
                    lease.held_until = None;
                    self.metrics.alert_evaluator.set(0);
                }
            }
            if lease.valid() && last.is_none_or(|t| t.elapsed() >= interval) {
                last = Some(Instant::now());
                let started = Instant::now();
                let outcome = match self.evaluate(&store, &lease).await {
                    Ok(()) => "ok",
                    Err(e) => {
                        warn!(
                            error = %error_chain(e.as_ref()),
                            "alert evaluation failed; will retry"
                        );
                        "failed"
                    }
                };
                self.metrics
                    .alert_evaluations
                    .with_label_values(&[outcome])
                    .inc();
                self.metrics
                    .alert_evaluation_seconds
                    .observe(started.elapsed().as_secs_f64());
            } else if !lease.valid() {
                self.metrics.alerts_firing.set(0);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(renew) => {}
            }
        }
    }

    /// Evaluates every rule once: reads the states, steps each alert,
    /// stores the changes, then notifies.
    async fn evaluate(&self, store: &Store, lease: &Lease) -> anyhow::Result<()> {
        let now_s = now_ns() / 1_000_000_000;
        let rules = self.catalog.rules(store).await?;
        let silences = store.silences().await?;
        let mut states: HashMap<(String, String, String), StateRow> = store
            .alert_states()
            .await?
            .into_iter()
            .map(|s| {
                (
                    (s.tenant.clone(), s.rule_id.clone(), s.group_key.clone()),
                    s,
                )
            })
            .collect();
        let mut active_tenants: Option<Vec<String>> = None;
        let mut writes: Vec<StateRow> = Vec::new();
        let mut history: Vec<HistoryRow> = Vec::new();
        let mut notices: Vec<(Notification, Vec<String>, bool)> = Vec::new();
        let mut failed = 0usize;
        // Alerts firing after this round, counted as they are stepped.
        let mut firing = 0usize;
        let is_firing = |s: &StateRow| s.state == State::Firing.as_str();
        for rule in &rules {
            let tenants: BTreeSet<String> = if rule.spec.tenant == EVERY_TENANT {
                if active_tenants.is_none() {
                    active_tenants = Some(store.active_tenants(now_s - LOOKBACK_S).await?);
                }
                let known = states
                    .keys()
                    .filter(|k| k.1 == rule.id)
                    .map(|k| k.0.clone());
                active_tenants
                    .iter()
                    .flatten()
                    .cloned()
                    .chain(known)
                    .collect()
            } else {
                [rule.spec.tenant.clone()].into()
            };
            for tenant in tenants {
                let seen = match self.observe(store, &rule.spec, &tenant, now_s).await {
                    Ok(seen) => seen,
                    Err(e) => {
                        failed += 1;
                        warn!(rule = %rule.id, tenant = %tenant, error = %error_chain(e.as_ref()), "cannot evaluate alert rule");
                        // Its alerts keep their states until it can be read.
                        states.retain(|k, s| {
                            let kept = k.0 == tenant && k.1 == rule.id;
                            firing += usize::from(kept && is_firing(s));
                            !kept
                        });
                        continue;
                    }
                };
                let silenced = silences.iter().any(|s: &SilenceRow| {
                    s.rule_id == rule.id && (s.tenant == tenant || s.tenant == EVERY_TENANT)
                });
                let seen: HashMap<String, Observation> =
                    seen.into_iter().map(|o| (o.key.clone(), o)).collect();
                let mut keys: BTreeSet<String> = seen.keys().cloned().collect();
                keys.extend(
                    states
                        .keys()
                        .filter(|k| k.0 == tenant && k.1 == rule.id)
                        .map(|k| k.2.clone()),
                );
                for key in keys {
                    let prev = states
                        .remove(&(tenant.clone(), rule.id.clone(), key.clone()))
                        .map(|s| (alert_of(&s), s));
                    let observed = seen.get(&key);
                    let timing = Timing {
                        for_s: rule.spec.for_s,
                        repeat_s: rule.spec.repeat_s,
                    };
                    let (next, notice) = state::step(
                        prev.as_ref().map(|p| &p.0),
                        observed.map(|o| o.value),
                        now_s,
                        timing,
                    );
                    let Some(next) = next else {
                        firing += usize::from(prev.as_ref().is_some_and(|p| is_firing(&p.1)));
                        continue;
                    };
                    firing += usize::from(next.state == State::Firing);
                    let summary = match observed {
                        Some(o) => summary(&rule.spec, &key, o.value),
                        None => prev
                            .as_ref()
                            .map(|p| p.1.summary.clone())
                            .unwrap_or_default(),
                    };
                    let (sample, attributes) = observed
                        .map(|o| (o.sample.clone(), o.attributes.clone()))
                        .unwrap_or_default();
                    let row = StateRow {
                        tenant: tenant.clone(),
                        rule_id: rule.id.clone(),
                        rule: rule.spec.name.clone(),
                        group_key: key.clone(),
                        state: next.state.as_str().into(),
                        severity: rule.spec.severity.as_str().into(),
                        summary: summary.clone(),
                        value: next.value,
                        since: next.since_s as u32,
                        fired_at: next.fired_at_s as u32,
                        notified_at: next.notified_at_s as u32,
                        updated_ns: now_ns(),
                    };
                    if prev.as_ref().map(|p| p.0.state) != Some(next.state) {
                        history.push(self.history(&row, next.state.as_str()));
                    }
                    if let Some(notice) = notice {
                        if notice == state::Notice::Repeat {
                            history.push(self.history(&row, "repeat"));
                        }
                        let mut n =
                            Notification::new(rule, &tenant, &key, notice, &next, summary, sample);
                        n.attributes = attributes;
                        notices.push((n, rule.spec.channels.clone(), silenced));
                    }
                    writes.push(row);
                }
            }
        }
        // Alerts of rules that are gone end without a notification.
        for (_, s) in states {
            if !rules.iter().any(|r| r.id == s.rule_id) && s.state != State::Inactive.as_str() {
                history.push(self.history(&s, "deleted"));
                writes.push(StateRow {
                    state: State::Inactive.as_str().into(),
                    updated_ns: now_ns(),
                    ..s
                });
            }
        }
        if !lease.valid() {
            anyhow::bail!("the evaluator lease ran out during evaluation; nothing stored or sent");
        }
        // Stored before anything is sent: a collector that takes over
        // reads these and does not send them again.
        store.put_alert_states(&writes).await?;
        store.insert_history(&history).await?;
        for (n, channels, silenced) in notices {
            self.notifier.send(n, &channels, silenced);
        }
        self.metrics.alerts_firing.set(firing as i64);
        if failed > 0 {
            anyhow::bail!("{failed} rule evaluations failed (see above)");
        }
        Ok(())
    }

    fn history(&self, s: &StateRow, event: &str) -> HistoryRow {
        let at = now_ns();
        HistoryRow {
            tenant: s.tenant.clone(),
            time: (at / 1_000_000_000) as u32,
            time_ns: at,
            rule_id: s.rule_id.clone(),
            rule: s.rule.clone(),
            group_key: s.group_key.clone(),
            event: event.into(),
            severity: s.severity.clone(),
            value: s.value,
            summary: s.summary.clone(),
            channel: String::new(),
            attempts: 0,
            error: String::new(),
            collector_id: self.collector_id.clone(),
        }
    }

    /// The groups for which the rule's condition holds now, for one tenant.
    async fn observe(
        &self,
        store: &Store,
        rule: &RuleSpec,
        tenant: &str,
        now_s: u64,
    ) -> anyhow::Result<Vec<Observation>> {
        let only = if rule.services.is_empty() {
            Sql::default()
        } else {
            Sql::new(
                format!("service IN ({})", vec!["?"; rule.services.len()].join(", ")),
                rule.services.iter().cloned().map(Value::Str).collect(),
            )
        };
        let w = Window {
            from_s: now_s.saturating_sub(rule.window_s),
            to_s: now_s + 1,
            tenants: Sql::new("tenant = ?", vec![Value::Str(tenant.into())]),
            only,
        };
        let limits = self.analytics.limits();
        Ok(match rule.kind {
            Kind::NewErrorGroup => self
                .analytics
                .error_groups(store, &w, 1000)
                .await?
                .into_iter()
                .filter(|g| g.new && g.count as f64 > rule.threshold)
                .map(group_observation)
                .collect(),
            Kind::ReturningErrorGroup => {
                let quiet_from = w.from_s.saturating_sub(rule.quiet_s());
                let quiet = Window {
                    from_s: quiet_from,
                    to_s: w.from_s,
                    ..w.clone()
                };
                let (now, before) = tokio::try_join!(
                    self.analytics.error_groups(store, &w, 1000),
                    self.analytics.error_groups(store, &quiet, 1000),
                )?;
                let before: BTreeSet<String> = before.into_iter().map(|g| g.id).collect();
                now.into_iter()
                    .filter(|g| {
                        !g.new
                            && !before.contains(&g.id)
                            && g.first_seen_ever < quiet_from
                            && g.count as f64 > rule.threshold
                    })
                    .map(group_observation)
                    .collect()
            }
            Kind::SuspiciousIp => store
                .ip_activity(&w, limits)
                .await?
                .iter()
                .map(analytics::suspicion)
                .filter(|s| s.score as f64 > rule.threshold)
                .map(|s| Observation {
                    key: s.ip,
                    value: s.score as f64,
                    sample: s.reasons.join("; "),
                    attributes: serde_json::Value::Null,
                })
                .collect(),
            _ => {
                let (sql, parts) = aggregate::aggregation(rule, &w, store.dialect())?;
                store.observations(&sql, &parts, limits).await?
            }
        })
    }
}

/// An error group as an observation: its id, count and sample, and what
/// the errors view knows of it.
fn group_observation(g: ErrorGroup) -> Observation {
    Observation {
        value: g.count as f64,
        attributes: serde_json::json!({
            "template": g.template,
            "first_seen": crate::clock::rfc3339_s(g.first_seen),
            "services": g.services,
            "hosts": g.hosts,
            "request_ids": g.request_ids,
            "endpoints": g.endpoints.iter().map(|e| &e.key).collect::<Vec<_>>(),
        }),
        key: g.id,
        sample: g.sample,
    }
}

fn alert_of(s: &StateRow) -> Alert {
    Alert {
        state: State::parse(&s.state),
        since_s: u64::from(s.since),
        fired_at_s: u64::from(s.fired_at),
        notified_at_s: u64::from(s.notified_at),
        value: s.value,
    }
}

/// One line saying what the rule saw.
fn summary(rule: &RuleSpec, key: &str, value: f64) -> String {
    let window = span(rule.window_s);
    let of = if key.is_empty() {
        String::new()
    } else {
        format!(" for {key}")
    };
    let v = if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    let t = rule.threshold;
    match rule.kind {
        Kind::Count if rule.query.is_empty() => format!("{v} records{of} in {window} (above {t})"),
        Kind::Count => format!(
            "{v} records matching `{}`{of} in {window} (above {t})",
            rule.query
        ),
        Kind::FailedLogins => format!("{v} failed logins{of} in {window} (above {t})"),
        Kind::ErrorRate => format!("{v}% of requests failed{of} in {window} (above {t}%)"),
        Kind::Latency => format!(
            "p{} latency {v} ms{of} over {window} (above {t} ms)",
            (rule.quantile() * 100.0).round()
        ),
        Kind::NewErrorGroup => format!("new error group {key}: {v} errors in {window}"),
        Kind::ReturningErrorGroup => format!(
            "error group {key} is back after {} quiet: {v} errors in {window}",
            span(rule.quiet_s())
        ),
        Kind::Security => format!("{v} attack requests{of} in {window} (above {t})"),
        Kind::SuspiciousIp => format!("{key} scored {v} of 100 over {window} (above {t})"),
        Kind::Silence => format!("{key} has sent nothing for {}", span(value as u64)),
        Kind::Loss => {
            format!("{key} lost {v} (bytes abandoned, lines truncated, parse errors) in {window}")
        }
    }
}

fn span(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs() {
        assert_eq!(slug("Failed logins / IP"), "failed-logins-ip");
        assert_eq!(slug("*"), "all");
        let c = Catalog::new(&AlertsConfig::default());
        let ids: Vec<&str> = c.config_rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "default-errors",
                "default-failed-logins",
                "default-slow-responses",
                "default-security-events"
            ]
        );
    }

    #[test]
    fn summaries_say_what_was_seen() {
        let r = &rules::defaults()[0];
        assert_eq!(
            summary(r, "", 12.0),
            "12 records matching `level:error` in 5m (above 10)"
        );
        let r = &rules::defaults()[2];
        assert_eq!(
            summary(r, "/orders", 2500.5),
            "p95 latency 2500.5 ms for /orders over 5m (above 2000 ms)"
        );
    }
}
