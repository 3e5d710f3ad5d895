//! Alert rules: what they say, how they are checked, and the defaults.
//!
//! A rule is one flat JSON/TOML object (the same in the config file and the
//! API); `kind` says which of the other fields apply, and a field set for a
//! kind that does not use it is an error rather than silently ignored.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::query::sql::{column_of, to_sql, Dialect};
use crate::query::syntax;

/// Rules of the config file with this tenant apply to every tenant, each
/// evaluated and notified on its own.
pub const EVERY_TENANT: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Records matching `query` in the window, optionally per `group_by`.
    Count,
    /// Failed authentications (as the security view counts them) in the
    /// window, optionally per `group_by` (`client_ip` or `user_id`).
    FailedLogins,
    /// Percent of requests answered with status >= 500.
    ErrorRate,
    /// A percentile (`quantile`) of `duration_ms`, per route or for `route`.
    Latency,
    /// An error group seen for the first time in the window.
    NewErrorGroup,
    /// An error group seen again after `quiet_s` without it.
    ReturningErrorGroup,
    /// Requests classified as one of `classes` (default: every attack
    /// class), per client address.
    Security,
    /// An address whose suspicion score (0-100, the security view's) is
    /// above the threshold.
    SuspiciousIp,
    /// A host or service (`group_by`) that sent in the last day and then
    /// nothing for `window_s`.
    Silence,
    /// An agent that reported lost data (abandoned bytes, truncated lines,
    /// parse errors) in the window; the value is the sum.
    Loss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// An alert rule as written in the config file or sent to the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique per tenant.
    pub name: String,
    /// The tenant whose logs the rule reads; `*` (config file only) for each tenant.
    #[serde(default)]
    pub tenant: String,
    /// Only these services (all when empty).
    #[serde(default)]
    pub services: Vec<String>,
    pub kind: Kind,
    /// Fires when the value is above this.
    #[serde(default)]
    pub threshold: f64,
    /// The sliding window the value is computed over, in seconds.
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// How long the condition must hold before the alert fires (pending until then).
    #[serde(default)]
    pub for_s: u64,
    /// While firing, notify again this often; 0: only once.
    #[serde(default)]
    pub repeat_s: u64,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Channel names (`alerts.channels`) to notify; empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// count: records matching this query (the search syntax).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// count, failed_logins, error_rate, latency, silence: a field to group by
    /// (`client_ip`, `user_id`, `service`, `host`, `http_route`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_by: String,
    /// latency: the percentile, 0 < q < 1 (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// latency: only this route (`/orders/{id}`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route: String,
    /// error_rate, latency: fewest requests for the value to count (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// security: attack classes (`sqli`, `xss`, `path_traversal`, `cmd_injection`, `scanner`, `bot`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// returning_error_group: how long a group must have been absent (default one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_s: Option<u64>,
}

fn default_window_s() -> u64 {
    300
}

fn default_severity() -> Severity {
    Severity::Warning
}

pub const CLASSES: &[&str] = &[
    "sqli",
    "xss",
    "path_traversal",
    "cmd_injection",
    "scanner",
    "bot",
];

impl RuleSpec {
    /// A rule with no optional part set (notified once, to every channel).
    pub fn new(
        name: &str,
        tenant: &str,
        kind: Kind,
        threshold: f64,
        window_s: u64,
        severity: Severity,
    ) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            tenant: tenant.into(),
            services: Vec::new(),
            kind,
            threshold,
            window_s,
            for_s: 0,
            repeat_s: 0,
            severity,
            channels: Vec::new(),
            query: String::new(),
            group_by: String::new(),
            quantile: None,
            route: String::new(),
            min_requests: None,
            classes: Vec::new(),
            quiet_s: None,
        }
    }

    pub fn quantile(&self) -> f64 {
        self.quantile.unwrap_or(0.95)
    }

    pub fn min_requests(&self) -> u64 {
        self.min_requests.unwrap_or(10)
    }

    pub fn quiet_s(&self) -> u64 {
        self.quiet_s.unwrap_or(86_400)
    }

    /// The column `group_by` names, or `None` for one value per tenant.
    pub fn group_column(&self) -> Option<&'static str> {
        if self.group_by.is_empty() {
            return match self.kind {
                Kind::Silence => Some("host"),
                Kind::Security | Kind::SuspiciousIp => Some("client_ip"),
                Kind::Latency if self.route.is_empty() => Some("http_route"),
                _ => None,
            };
        }
        column_of(&self.group_by)
    }

    /// Every problem with the rule, as messages naming the field.
    pub fn problems(&self, channels: &[String]) -> Vec<String> {
        let mut p = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            p.push("name: 1 to 200 printable characters".to_string());
        }
        if self.tenant.is_empty() {
            p.push("tenant: required (`*` in the config file: every tenant)".into());
        }
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            p.push("threshold: a number >= 0".into());
        }
        if !(1..=7 * 86_400).contains(&self.window_s) {
            p.push("window_s: 1 second to 7 days".into());
        }
        if self.for_s > 86_400 {
            p.push("for_s: at most one day".into());
        }
        if self.repeat_s != 0 && self.repeat_s < 60 {
            p.push("repeat_s: 0 (never) or at least 60".into());
        }
        for c in &self.channels {
            if !channels.contains(c) {
                p.push(format!(
                    "channels: no channel named `{c}` in alerts.channels"
                ));
            }
        }
        let k = self.kind;
        let only = |field: &str, set: bool, kinds: &[Kind], p: &mut Vec<String>| {
            if set && !kinds.contains(&k) {
                p.push(format!(
                    "{field}: does not apply to {} rules",
                    serde_json::to_string(&k).unwrap_or_default()
                ));
            }
        };
        only("query", !self.query.is_empty(), &[Kind::Count], &mut p);
        only(
            "group_by",
            !self.group_by.is_empty(),
            &[
                Kind::Count,
                Kind::FailedLogins,
                Kind::ErrorRate,
                Kind::Latency,
                Kind::Silence,
            ],
            &mut p,
        );
        only(
            "quantile",
            self.quantile.is_some(),
            &[Kind::Latency],
            &mut p,
        );
        only("route", !self.route.is_empty(), &[Kind::Latency], &mut p);
        only(
            "min_requests",
            self.min_requests.is_some(),
            &[Kind::ErrorRate, Kind::Latency],
            &mut p,
        );
        only(
            "classes",
            !self.classes.is_empty(),
            &[Kind::Security],
            &mut p,
        );
        only(
            "quiet_s",
            self.quiet_s.is_some(),
            &[Kind::ReturningErrorGroup],
            &mut p,
        );
        if !self.query.is_empty() {
            match syntax::parse(&self.query) {
                Ok(Some(expr)) => {
                    if let Err(e) = to_sql(&expr, Dialect::default()) {
                        p.push(format!("query: {e}"));
                    }
                }
                Ok(None) => {}
                Err(e) => p.push(format!("query: {e} at position {}", e.pos)),
            }
        }
        if !self.group_by.is_empty() {
            match (k, column_of(&self.group_by)) {
                (_, None) => p.push(format!(
                    "group_by: `{}` is not a field (service, host, client_ip, user_id, http_route, ...)",
                    self.group_by
                )),
                (Kind::Silence, Some(c)) if c != "host" && c != "service" => {
                    p.push("group_by: silence rules group by `host` or `service`".into())
                }
                (Kind::FailedLogins, Some(c)) if c != "client_ip" && c != "user_id" => {
                    p.push("group_by: failed_logins rules group by `client_ip` or `user_id`".into())
                }
                _ => {}
            }
        }
        if let Some(q) = self.quantile {
            if !(q > 0.0 && q < 1.0) {
                p.push("quantile: between 0 and 1, like 0.95".into());
            }
        }
        for c in &self.classes {
            if !CLASSES.contains(&c.as_str()) {
                p.push(format!(
                    "classes: `{c}` is not one of {}",
                    CLASSES.join(", ")
                ));
            }
        }
        if k == Kind::SuspiciousIp && self.threshold >= 100.0 {
            p.push("threshold: scores go up to 100".into());
        }
        p
    }
}

/// The rules our users' old stack alerted on, shipped for every tenant:
/// more than 10 errors in 5 minutes, more than 5 failed logins from one
/// address in 10 minutes, slow responses (p95 of a route above 2 s) and
/// security events (any attack request).
pub fn defaults() -> Vec<RuleSpec> {
    let base = |name: &str, kind: Kind, threshold: f64, window_s: u64, severity| RuleSpec {
        repeat_s: 3600,
        ..RuleSpec::new(name, EVERY_TENANT, kind, threshold, window_s, severity)
    };
    vec![
        RuleSpec {
            query: "level:error".into(),
            ..base("errors", Kind::Count, 10.0, 300, Severity::Error)
        },
        RuleSpec {
            group_by: "client_ip".into(),
            ..base(
                "failed logins",
                Kind::FailedLogins,
                5.0,
                600,
                Severity::Warning,
            )
        },
        RuleSpec {
            quantile: Some(0.95),
            min_requests: Some(10),
            ..base(
                "slow responses",
                Kind::Latency,
                2000.0,
                300,
                Severity::Warning,
            )
        },
        base(
            "security events",
            Kind::Security,
            0.0,
            300,
            Severity::Critical,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> RuleSpec {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn defaults_are_valid() {
        for r in defaults() {
            assert_eq!(r.problems(&[]), Vec::<String>::new(), "{}", r.name);
        }
    }

    #[test]
    fn fields_of_other_kinds_are_refused() {
        let r = rule(
            r#"{"name":"x","tenant":"acme","kind":"count","quantile":0.9,"classes":["sqli"],"query":"level:error"}"#,
        );
        let p = r.problems(&[]);
        assert!(
            p.iter()
                .any(|m| m.starts_with("quantile: does not apply to \"count\"")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.starts_with("classes:")), "{p:?}");
    }

    #[test]
    fn bad_values_are_named() {
        let r = rule(
            r#"{"name":"","tenant":"","kind":"latency","quantile":1.5,"window_s":0,"repeat_s":5,"group_by":"nope","channels":["pager"]}"#,
        );
        let p = r.problems(&["ops".into()]);
        for field in [
            "name:",
            "tenant:",
            "quantile:",
            "window_s:",
            "repeat_s:",
            "group_by:",
            "channels:",
        ] {
            assert!(p.iter().any(|m| m.starts_with(field)), "{field} in {p:?}");
        }
        let r = rule(r#"{"name":"q","tenant":"a","kind":"count","query":"level:(error"}"#);
        assert!(r.problems(&[])[0].starts_with("query:"));
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"name":"x","kind":"count","bogus":1}"#).is_err()
        );
        assert!(serde_json::from_str::<RuleSpec>(r#"{"name":"x","kind":"sometimes"}"#).is_err());
    }

    #[test]
    fn group_columns_default_by_kind() {
        let r = rule(r#"{"name":"s","tenant":"a","kind":"silence"}"#);
        assert_eq!(r.group_column(), Some("host"));
        let r = rule(r#"{"name":"c","tenant":"a","kind":"count","group_by":"ip"}"#);
        assert_eq!(r.group_column(), column_of("ip"));
        let r = rule(r#"{"name":"c","tenant":"a","kind":"count"}"#);
        assert_eq!(r.group_column(), None);
    }
}
