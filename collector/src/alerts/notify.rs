//! Sending what the evaluator decided: a generic webhook signed with
//! HMAC-SHA256, Slack incoming webhooks, PagerDuty Events API v2 and
//! Sentry. Each send runs in its own task with retries and exponential
//! backoff, so a slow or dead receiver never holds up evaluation; every
//! outcome goes to `alert_history` and to the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{watch, Semaphore};
use tracing::warn;

use super::config::{AlertsConfig, ChannelConfig, ChannelKind};
use super::state::Notice;
use crate::background::Background;
use crate::clock::{now_ns, now_s, rfc3339_s};
use crate::metrics::Metrics;
use crate::store::alerts::HistoryRow;
use crate::store::Store;
use logferry_daemon::error_chain;
use logferry_daemon::report::SentryTarget;

/// What happened to one alert, for every channel.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// A reminder while still firing (`repeat_s`).
    pub repeat: bool,
    pub tenant: String,
    pub rule: RuleInfo,
    /// What the rule groups by (an address, a host, an error group); empty for one value per tenant.
    pub group: String,
    pub value: f64,
    pub summary: String,
    pub sample: String,
    /// RFC 3339.
    pub since: String,
    pub fired_at: String,
    pub sent_at: String,
    /// PagerDuty's dedup key, also useful to any receiver: one per alert.
    pub key: String,
    /// What the rule knows of the group (error groups: template,
    /// services, hosts, request ids, endpoints).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub attributes: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub id: String,
    pub name: String,
    pub kind: super::rules::Kind,
    pub severity: super::rules::Severity,
    pub threshold: f64,
    pub window_s: u64,
}

impl Notification {
    pub fn new(
        rule: &super::Rule,
        tenant: &str,
        group: &str,
        notice: Notice,
        alert: &super::state::Alert,
        summary: String,
        sample: String,
    ) -> Notification {
        let (rule_id, rule) = (rule.id.as_str(), &rule.spec);
        Notification {
            status: match notice {
                Notice::Resolved => "resolved",
                Notice::Firing | Notice::Repeat => "firing",
            },
            repeat: notice == Notice::Repeat,
            tenant: tenant.to_string(),
            rule: RuleInfo {
                id: rule_id.to_string(),
                name: rule.name.clone(),
                kind: rule.kind,
                severity: rule.severity,
                threshold: rule.threshold,
                window_s: rule.window_s,
            },
            group: group.to_string(),
            value: alert.value,
            summary,
            sample,
            since: rfc3339_s(alert.since_s),
            fired_at: rfc3339_s(alert.fired_at_s),
            sent_at: rfc3339_s(now_s()),
            key: format!("logferry/{tenant}/{rule_id}/{group}"),
            attributes: serde_json::Value::Null,
        }
    }

    fn event(&self) -> &'static str {
        match (self.status, self.repeat) {
            ("resolved", _) => "resolved",
            (_, true) => "repeat",
            _ => "firing",
        }
    }
}

/// `X-Logferry-Signature`: `v1=` and the hex HMAC-SHA256, keyed with the
/// channel's secret, of `<X-Logferry-Timestamp>.<body>`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request for one channel, or `None` when the channel has nothing to
/// say (Sentry has no resolution).
fn request(
    client: &reqwest::Client,
    channel: &ChannelConfig,
    n: &Notification,
) -> Option<reqwest::RequestBuilder> {
    Some(match channel.kind {
        ChannelKind::Webhook => {
            let body = serde_json::to_vec(n).expect("a notification serializes");
            let ts = now_s();
            client
                .post(&channel.url)
                .header("Content-Type", "application/json")
                .header("X-Logferry-Timestamp", ts.to_string())
                .header(
                    "X-Logferry-Signature",
                    signature(&channel.secret, ts, &body),
                )
                .body(body)
        }
        ChannelKind::Slack => client
            .post(&channel.url)
            .json(&json!({ "text": slack_text(n) })),
        ChannelKind::Pagerduty => {
            let url = if channel.url.is_empty() {
                "https://events.pagerduty.com/v2/enqueue"
            } else {
                &channel.url
            };
            let body = if n.status == "resolved" {
                json!({
                    "routing_key": channel.routing_key,
                    "event_action": "resolve",
                    "dedup_key": n.key,
                })
            } else {
                json!({
                    "routing_key": channel.routing_key,
                    "event_action": "trigger",
                    "dedup_key": n.key,
                    "payload": {
                        "summary": truncate(&format!("{}: {}", n.rule.name, n.summary), 1024),
                        "source": format!("logferry/{}", n.tenant),
                        "severity": n.rule.severity.as_str(),
                        "component": n.group,
                        "group": n.rule.name,
                        "class": serde_json::to_value(n.rule.kind).unwrap_or_default(),
                        "custom_details": n,
                    },
                })
            };
            client.post(url).json(&body)
        }
        ChannelKind::Sentry => {
            if n.status == "resolved" {
                return None;
            }
            let target = SentryTarget::parse(&channel.dsn)?;
            target.request(client, &sentry_envelope(n))
        }
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn slack_text(n: &Notification) -> String {
    let head = match (n.status, n.repeat) {
        ("resolved", _) => "RESOLVED",
        (_, true) => "STILL FIRING",
        _ => "FIRING",
    };
    let group = if n.group.is_empty() {
        String::new()
    } else {
        format!(" [{}]", n.group)
    };
    format!(
        "*{head}* {} ({}, tenant `{}`){group}: {}",
        n.rule.name,
        n.rule.severity.as_str(),
        n.tenant,
        n.summary
    )
}

/// One Sentry event per alert: its fingerprint is the alert's key, so
/// repeats group with the first.
fn sentry_envelope(n: &Notification) -> sentry::Envelope {
    use sentry::protocol::{Event, Level};
    let mut event = Event {
        level: match n.rule.severity {
            super::rules::Severity::Critical => Level::Fatal,
            super::rules::Severity::Error => Level::Error,
            super::rules::Severity::Warning => Level::Warning,
            super::rules::Severity::Info => Level::Info,
        },
        logger: Some("logferry.alerts".into()),
        // A forwarded error group reads as the error itself.
        message: Some(match n.rule.kind {
            super::rules::Kind::NewErrorGroup if !n.sample.is_empty() => n.sample.clone(),
            _ => format!("{}: {}", n.rule.name, n.summary),
        }),
        fingerprint: vec![n.key.clone().into()].into(),
        ..Default::default()
    };
    for (k, v) in [
        ("tenant", &n.tenant),
        ("rule", &n.rule.name),
        ("group", &n.group),
    ] {
        event.tags.insert(k.into(), v.clone());
    }
    event
        .tags
        .insert("severity".into(), n.rule.severity.as_str().into());
    if let Ok(serde_json::Value::Object(extra)) = serde_json::to_value(n) {
        event.extra = extra.into_iter().collect();
    }
    let mut envelope = sentry::Envelope::new();
    envelope.add_item(event);
    envelope
}

/// A channel's limit on notifications per minute.
#[derive(Default)]
struct Budget {
    window_start: Option<Instant>,
    used: u32,
}

impl Budget {
    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(60) => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        if self.used < per_minute {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

pub struct Notifier {
    channels: Vec<ChannelConfig>,
    client: reqwest::Client,
    store: watch::Receiver<Option<Store>>,
    metrics: Arc<Metrics>,
    collector_id: String,
    max_attempts: u32,
    backoff: Duration,
    /// Sends in flight; beyond this, new ones are recorded as failed.
    slots: Arc<Semaphore>,
    budgets: Mutex<HashMap<String, Budget>>,
    /// Deliveries and history rows run there; at shutdown a delivery still
    /// retrying gives up and is recorded as `abandoned`.
    background: Background,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

const MAX_IN_FLIGHT: usize = 256;

impl Notifier {
    pub fn new(
        config: &AlertsConfig,
        store: watch::Receiver<Option<Store>>,
        metrics: Arc<Metrics>,
        collector_id: String,
        background: Background,
    ) -> anyhow::Result<Notifier> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("logferry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            channels: config.channels.clone(),
            client,
            store,
            metrics,
            collector_id,
            max_attempts: config.max_attempts,
            backoff: Duration::from_millis(config.backoff_ms),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            budgets: Mutex::default(),
            background,
        })
    }

    /// Sends `n` to the named channels (every channel when empty), each in
    /// the background. A silenced alert is recorded, not sent.
    pub fn send(self: &Arc<Self>, n: Notification, channels: &[String], silenced: bool) {
        let targets: Vec<ChannelConfig> = self
            .channels
            .iter()
            .filter(|c| channels.is_empty() || channels.contains(&c.name))
            .cloned()
            .collect();
        if silenced {
            self.record(&n, "", "silenced", 0, "");
            return;
        }
        for channel in targets {
            let kind = kind_label(channel.kind);
            let allowed = self
                .budgets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(channel.name.clone())
                .or_default()
                .take(channel.max_per_minute, Instant::now());
            if !allowed {
                self.outcome(kind, "rate_limited");
                self.record(
                    &n,
                    &channel.name,
                    "failed",
                    0,
                    "rate limit of the channel reached",
                );
                continue;
            }
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.outcome(kind, "failed");
                self.record(
                    &n,
                    &channel.name,
                    "failed",
                    0,
                    "too many notifications in flight",
                );
                continue;
            };
            let me = Arc::clone(self);
            let n = n.clone();
            self.background.spawn(async move {
                let _permit = permit;
                me.deliver(&channel, &n).await;
            });
        }
    }

    /// Sends `n` to `channel` with retries, and records the outcome; at
    /// shutdown, a delivery not done when the collector stops waiting is
    /// recorded as `abandoned`.
    async fn deliver(&self, channel: &ChannelConfig, n: &Notification) {
        let attempts = AtomicU32::new(0);
        tokio::select! {
            biased;
            () = self.attempts(channel, n, &attempts) => {}
            () = self.background.abandoning().cancelled() => {
                let attempts = attempts.load(Ordering::Relaxed);
                warn!(channel = %channel.name, rule = %n.rule.name, attempts, "the collector is shutting down: notification abandoned");
                self.outcome(kind_label(channel.kind), "abandoned");
                self.record(n, &channel.name, "abandoned", attempts, "the collector shut down before the delivery was confirmed");
            }
        }
    }

    async fn attempts(&self, channel: &ChannelConfig, n: &Notification, attempts: &AtomicU32) {
        let kind = kind_label(channel.kind);
        let mut error = String::new();
        for attempt in 1..=self.max_attempts {
            attempts.store(attempt, Ordering::Relaxed);
            let Some(request) = request(&self.client, channel, n) else {
                return;
            };
            match request.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => {
                    self.outcome(kind, "sent");
                    self.record(n, &channel.name, "sent", attempt, "");
                    return;
                }
                Err(e) => {
                    error = error_chain(&e.without_url());
                    if attempt < self.max_attempts {
                        self.metrics
                            .alert_notification_retries
                            .with_label_values(&[kind])
                            .inc();
                        let jitter = rand::random_range(0.5..1.0);
                        let wait = self.backoff.mul_f64(2f64.powi(attempt as i32 - 1) * jitter);
                        tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                    }
                }
            }
        }
        warn!(channel = %channel.name, rule = %n.rule.name, error = %error, "notification failed after {} attempts", self.max_attempts);
        self.outcome(kind, "failed");
        self.record(n, &channel.name, "failed", self.max_attempts, &error);
    }

    fn outcome(&self, kind: &str, outcome: &str) {
        self.metrics
            .alert_notifications
            .with_label_values(&[kind, outcome])
            .inc();
    }

    /// Writes a notification's outcome to the history, in the background.
    fn record(&self, n: &Notification, channel: &str, event: &str, attempts: u32, error: &str) {
        let Some(store) = self.store.borrow().clone() else {
            return;
        };
        let at = now_ns();
        let row = HistoryRow {
            tenant: n.tenant.clone(),
            time: (at / 1_000_000_000) as u32,
            time_ns: at,
            rule_id: n.rule.id.clone(),
            rule: n.rule.name.clone(),
            group_key: n.group.clone(),
            event: event.to_string(),
            severity: n.rule.severity.as_str().to_string(),
            value: n.value,
            summary: format!("{}: {}", n.event(), n.summary),
            channel: channel.to_string(),
            attempts,
            error: error.to_string(),
            collector_id: self.collector_id.clone(),
        };
        self.background.spawn(async move {
            if let Err(e) = store.insert_history(&[row]).await {
                warn!(error = %error_chain(&e), "cannot record a notification in alert_history");
            }
        });
    }
}

fn kind_label(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Webhook => "webhook",
        ChannelKind::Slack => "slack",
        ChannelKind::Pagerduty => "pagerduty",
        ChannelKind::Sentry => "sentry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        // Computed independently: python's
        // hmac.new(b"key", b"1700000000.{}", sha256).hexdigest().
        assert_eq!(
            signature("key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn budgets_refill_each_minute() {
        let mut b = Budget::default();
        let t = Instant::now();
        assert!(b.take(2, t) && b.take(2, t));
        assert!(!b.take(2, t));
        assert!(b.take(2, t + Duration::from_secs(61)));
        assert!(b.take(0, t), "0 is no limit");
    }
}
