//! The `[alerts]` section of the collector's config: evaluation, channels,
//! the rules written in the file, and Sentry forwarding.

use logferry_daemon::report::SentryTarget;
use serde::Deserialize;

use super::rules::RuleSpec;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertsConfig {
    /// Take part in alert evaluation. One collector evaluates at a time
    /// (a lease in ClickHouse); `false` keeps this one out of it.
    pub enabled: bool,
    /// How often rules are evaluated.
    pub interval_s: u64,
    /// How long the evaluator's lease lasts without renewal: a collector
    /// that dies hands over within this plus one renewal period.
    pub lease_ttl_s: u64,
    /// The four rules of our users' old stack (errors, failed logins, slow
    /// responses, security events), for every tenant.
    pub default_rules: bool,
    /// Rules of the config file; the API adds more.
    pub rules: Vec<RuleSpec>,
    pub channels: Vec<ChannelConfig>,
    /// Attempts per notification, with exponential backoff from `backoff_ms`.
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub timeout_ms: u64,
    /// Forward each new error group found in the logs to this Sentry
    /// project (a rule for every tenant with its own Sentry channel).
    pub sentry_forward_dsn: String,
    /// At most this many forwarded error groups per minute.
    pub sentry_forward_max_per_minute: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            interval_s: 30,
            lease_ttl_s: 30,
            default_rules: true,
            rules: Vec::new(),
            channels: Vec::new(),
            max_attempts: 5,
            backoff_ms: 1000,
            timeout_ms: 10_000,
            sentry_forward_dsn: String::new(),
            sentry_forward_max_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// JSON POST signed with HMAC-SHA256 (`secret`).
    Webhook,
    /// A Slack incoming webhook (`url`).
    Slack,
    /// PagerDuty Events API v2 (`routing_key`; `url` defaults to PagerDuty's).
    Pagerduty,
    /// One Sentry event per firing (`dsn`).
    Sentry,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    #[serde(default)]
    pub url: String,
    /// Webhook: the HMAC key receivers verify `X-Logferry-Signature` with.
    #[serde(default)]
    pub secret: String,
    /// PagerDuty: the integration's routing key.
    #[serde(default)]
    pub routing_key: String,
    /// Sentry: the project's DSN.
    #[serde(default)]
    pub dsn: String,
    /// Notifications per minute beyond which they are dropped (and the
    /// drop recorded); 0: no limit.
    #[serde(default)]
    pub max_per_minute: u32,
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("max_per_minute", &self.max_per_minute)
            .finish_non_exhaustive()
    }
}

/// The channel, and the rule's name, of `sentry_forward_dsn`.
pub const SENTRY_FORWARD: &str = "sentry-forward";

impl AlertsConfig {
    /// The channels and rules with error-group forwarding added when
    /// `sentry_forward_dsn` is set: a rule for every tenant that sends each
    /// new error group (one event per group) to its own rate-limited
    /// Sentry channel.
    pub fn with_forwarding(mut self) -> AlertsConfig {
        if self.sentry_forward_dsn.is_empty() {
            return self;
        }
        self.channels.push(ChannelConfig {
            name: SENTRY_FORWARD.into(),
            kind: ChannelKind::Sentry,
            url: String::new(),
            secret: String::new(),
            routing_key: String::new(),
            dsn: self.sentry_forward_dsn.clone(),
            max_per_minute: self.sentry_forward_max_per_minute,
        });
        self.rules.push(RuleSpec {
            channels: vec![SENTRY_FORWARD.into()],
            ..RuleSpec::new(
                SENTRY_FORWARD,
                super::rules::EVERY_TENANT,
                super::rules::Kind::NewErrorGroup,
                0.0,
                300,
                super::rules::Severity::Error,
            )
        });
        self
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.interval_s == 0 || self.lease_ttl_s < 3 || self.max_attempts == 0 {
            p.push(
                "alerts: interval_s and max_attempts must be positive, lease_ttl_s at least 3"
                    .into(),
            );
        }
        if !self.sentry_forward_dsn.is_empty()
            && SentryTarget::parse(&self.sentry_forward_dsn).is_none()
        {
            p.push("alerts.sentry_forward_dsn: not a Sentry DSN like https://key@host/42".into());
        }
        let names: Vec<String> = self.channels.iter().map(|c| c.name.clone()).collect();
        for (i, c) in self.channels.iter().enumerate() {
            let at = format!("alerts.channels[{i}] `{}`", c.name);
            if c.name.is_empty() || names[..i].contains(&c.name) || c.name == SENTRY_FORWARD {
                p.push(format!(
                    "{at}: needs a unique name (not `{SENTRY_FORWARD}`)"
                ));
            }
            let url_ok = c.url.starts_with("http://") || c.url.starts_with("https://");
            match c.kind {
                ChannelKind::Webhook if !url_ok || c.secret.len() < 16 => p.push(format!(
                    "{at}: a webhook needs an http(s) url and a secret of 16 characters or more"
                )),
                ChannelKind::Slack if !url_ok => p.push(format!(
                    "{at}: a Slack channel needs its incoming-webhook url"
                )),
                ChannelKind::Pagerduty
                    if c.routing_key.is_empty() || !(c.url.is_empty() || url_ok) =>
                {
                    p.push(format!(
                        "{at}: PagerDuty needs a routing_key (and an http(s) url if set)"
                    ))
                }
                ChannelKind::Sentry if SentryTarget::parse(&c.dsn).is_none() => p.push(format!(
                    "{at}: `dsn` is not a Sentry DSN like https://key@host/42"
                )),
                _ => {}
            }
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in super::rules::defaults()
            .into_iter()
            .filter(|_| self.default_rules)
            .chain(self.rules.iter().cloned())
        {
            for problem in r.problems(&names) {
                p.push(format!("alerts.rules `{}`: {problem}", r.name));
            }
            let key = (r.tenant.clone(), r.name.clone());
            if seen.contains(&key) {
                p.push(format!(
                    "alerts.rules `{}`: a second rule with this name for tenant `{}` (set default_rules = false to replace a default)",
                    r.name, r.tenant
                ));
            }
            seen.push(key);
        }
        p
    }
}
