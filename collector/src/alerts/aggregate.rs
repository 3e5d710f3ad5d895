//! Alert rules as ClickHouse aggregations, for the kinds that one query
//! checks: the groups for which the condition holds in a window, each with
//! its value and a sample. Error groups and suspicion scores are computed
//! from the analytics views instead (`Evaluator::observe`).

use anyhow::{anyhow, bail};

use super::rules::{Kind, RuleSpec};
use crate::query::sql::{to_sql, Dialect, Sql, Value};
use crate::query::syntax;
use crate::store::analytics::{Window, AUTH_REFUSALS, FAILED_AUTH};

/// `rule`'s aggregation over `w` (the rule's window, tenant and services):
/// SQL whose `{w}` placeholders take the returned parts in order (see
/// `Store::observations`).
pub fn aggregation(
    rule: &RuleSpec,
    w: &Window,
    dialect: Dialect,
) -> anyhow::Result<(String, Vec<Sql>)> {
    let key = rule
        .group_column()
        .map_or_else(|| "''".to_string(), |c| format!("toString({c})"));
    let threshold = Sql::new("value > ?", vec![Value::F64(rule.threshold)]);
    Ok(match rule.kind {
        Kind::Count => {
            let query = match syntax::parse(&rule.query) {
                Ok(Some(expr)) => to_sql(&expr, dialect).map_err(|e| anyhow!("rule query: {e}"))?,
                Ok(None) => Sql::default(),
                Err(e) => bail!("rule query: {e}"),
            };
            (
                format!(
                    "SELECT {key} AS key, toFloat64(count()) AS value, any(body) AS sample \
                     FROM logs WHERE {{w}} AND {{w}} GROUP BY key HAVING {{w}} \
                     ORDER BY value DESC, key LIMIT 100"
                ),
                vec![w.filter(), query, threshold],
            )
        }
        Kind::FailedLogins => (
            format!(
                "SELECT {key} AS key, toFloat64(count()) AS value, any(body) AS sample \
                 FROM logs PREWHERE {AUTH_REFUSALS} WHERE {{w}} AND {FAILED_AUTH} \
                 GROUP BY key HAVING {{w}} ORDER BY value DESC, key LIMIT 100"
            ),
            vec![w.filter(), threshold],
        ),
        Kind::ErrorRate => (
            format!(
                "SELECT {key} AS key, 100 * countIf(http_status >= 500) / count() AS value, \
                 concat(toString(countIf(http_status >= 500)), ' of ', toString(count()), ' requests failed') AS sample \
                 FROM logs WHERE {{w}} AND http_status > 0 GROUP BY key \
                 HAVING count() >= {} AND {{w}} ORDER BY value DESC, key LIMIT 100",
                rule.min_requests()
            ),
            vec![w.filter(), threshold],
        ),
        Kind::Latency => {
            let route = if rule.route.is_empty() {
                Sql::default()
            } else {
                Sql::new("http_route = ?", vec![Value::Str(rule.route.clone())])
            };
            (
                format!(
                    "SELECT {key} AS key, quantileExact({})(duration_ms) AS value, \
                     concat(toString(count()), ' requests') AS sample \
                     FROM logs WHERE {{w}} AND {{w}} AND duration_ms > 0 GROUP BY key \
                     HAVING count() >= {} AND {{w}} ORDER BY value DESC, key LIMIT 100",
                    rule.quantile(),
                    rule.min_requests()
                ),
                vec![w.filter(), route, threshold],
            )
        }
        Kind::Security => {
            let classes: Vec<String> = if rule.classes.is_empty() {
                ["sqli", "xss", "path_traversal", "cmd_injection"]
                    .map(String::from)
                    .to_vec()
            } else {
                rule.classes.clone()
            };
            let list = Sql::new(
                format!(
                    "security_class IN ({})",
                    vec!["?"; classes.len()].join(", ")
                ),
                classes.into_iter().map(Value::Str).collect(),
            );
            (
                format!(
                    "SELECT {key} AS key, toFloat64(count()) AS value, \
                     concat(arrayStringConcat(groupUniqArray(security_class), ', '), ': ', any(concat(http_method, ' ', http_path))) AS sample \
                     FROM logs WHERE {{w}} AND {{w}} GROUP BY key HAVING {{w}} \
                     ORDER BY value DESC, key LIMIT 100"
                ),
                vec![w.filter(), list, threshold],
            )
        }
        Kind::Silence => {
            // Senders of the last day that have been quiet since the
            // window began; the value is how long, in seconds.
            let seen = Window {
                from_s: w.to_s.saturating_sub(86_400),
                ..w.clone()
            };
            (
                // The window's bounds are our own clock's numbers.
                format!(
                    "SELECT {key} AS key, toFloat64({to} - toUInt32(max(timestamp))) AS value, \
                     concat('last record at ', toString(max(timestamp))) AS sample \
                     FROM logs WHERE {{w}} AND {key} != '' GROUP BY key \
                     HAVING max(timestamp) < toDateTime({from}) AND {{w}} ORDER BY value DESC, key LIMIT 100",
                    to = w.to_s,
                    from = w.from_s,
                ),
                vec![seen.filter(), threshold],
            )
        }
        Kind::Loss => (
            // Counters are cumulative per agent run: the loss in the
            // window is the growth of the latest run's counters.
            format!("SELECT concat(host, ' (', agent_id, ')') AS key, \
             toFloat64(max(abandoned_bytes + truncated_lines + parse_errors + queue_lost_records) - min(abandoned_bytes + truncated_lines + parse_errors + queue_lost_records) \
               + if(min(started_s) >= {from}, min(abandoned_bytes + truncated_lines + parse_errors + queue_lost_records), 0)) AS value, \
             concat(toString(max(abandoned_bytes)), ' bytes abandoned, ', toString(max(truncated_lines)), ' lines truncated, ', \
               toString(max(parse_errors)), ' parse errors, ', toString(max(queue_lost_records)), ' records lost to a damaged queue since the agent started') AS sample \
             FROM agent_reports WHERE {{w}} GROUP BY host, agent_id, started_s HAVING {{w}} \
             ORDER BY value DESC, key LIMIT 100", from = w.from_s),
            vec![
                Sql::and(vec![
                    Sql::new(
                        "time >= toDateTime(?) AND time < toDateTime(?)",
                        vec![Value::U64(w.from_s), Value::U64(w.to_s)],
                    ),
                    w.tenants.clone(),
                ]),
                threshold,
            ],
        ),
        Kind::NewErrorGroup | Kind::ReturningErrorGroup | Kind::SuspiciousIp => {
            bail!("{:?} rules are not one aggregation", rule.kind)
        }
    })
}
