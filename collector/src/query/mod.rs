//! Search requests: parameters (the same for HTTP and gRPC, as strings)
//! into a validated plan: a SQL filter with bound values, a time range, an
//! order, a page size and the key to resume after.
//!
//! Pages are cut on the key (time, agent id, sequence number), unique per
//! record, so walking with cursors neither repeats nor skips a row while
//! rows arrive. A cursor also pins the time range of its first page, so a
//! default range ("the last hour") does not slide under a long walk.

pub mod sql;
pub mod syntax;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use sql::{Dialect, Sql};
use syntax::{Expr, Op, Term};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
const HOUR_NS: u64 = 3_600_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter or the query text is wrong; `pos` points into the query.
    #[error("{message}")]
    Invalid { pos: Option<usize>, message: String },
}

impl From<syntax::SyntaxError> for QueryError {
    fn from(e: syntax::SyntaxError) -> Self {
        QueryError::Invalid {
            pos: Some(e.pos),
            message: e.to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        pos: None,
        message: message.into(),
    }
}

/// Search parameters as both APIs receive them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Query syntax: `level:error service:api status:>=500 "timeout" -path:/health`,
    /// with AND, OR, NOT, `-` and parentheses; `field:>=n` or `field>=n` to compare;
    /// `attr.key:value` (or an unknown field name) for attributes; `*` as a wildcard.
    pub q: Option<String>,
    /// Start: RFC 3339 or Unix milliseconds. Default: `to` minus one hour.
    pub from: Option<String>,
    /// End: RFC 3339 or Unix milliseconds. Default: now.
    pub to: Option<String>,
    /// Instead of `from`: a span back from `to`, like `15m`, `2h` or `7d`.
    pub last: Option<String>,
    /// Levels, comma-separated (`error,fatal`); each covers its range of severity numbers.
    #[serde(alias = "severity")]
    pub level: Option<String>,
    /// Services, comma-separated.
    pub service: Option<String>,
    pub host: Option<String>,
    pub environment: Option<String>,
    /// Case-insensitive substring of the message.
    pub text: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// One of the caller's tenants (default: all of them).
    pub tenant: Option<String>,
    /// `newest` (default) or `oldest`.
    pub order: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Newest,
    Oldest,
}

/// The sort key of a record, unique per record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    #[serde(rename = "t")]
    pub time_unix_nano: u64,
    #[serde(rename = "a")]
    pub agent_id: String,
    #[serde(rename = "s")]
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CursorData {
    #[serde(flatten)]
    key: Key,
    f: u64,
    u: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub filter: Sql,
    pub from_ns: u64,
    pub to_ns: u64,
    pub order: Order,
    pub limit: u32,
    pub after: Option<Key>,
    pub tenant: Option<String>,
}

impl Plan {
    /// The cursor that resumes after `key` with this plan's time range.
    pub fn cursor(&self, key: &Key) -> String {
        encode_cursor(key, self.from_ns, self.to_ns)
    }
}

pub fn encode_cursor(key: &Key, from_ns: u64, to_ns: u64) -> String {
    let data = CursorData {
        key: key.clone(),
        f: from_ns,
        u: to_ns,
    };
    B64.encode(serde_json::to_vec(&data).expect("cursor serializes"))
}

fn decode_cursor(s: &str) -> Result<CursorData, QueryError> {
    B64.decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("cursor is not one this API returned"))
}

/// Parses a time: Unix milliseconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<u64, QueryError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return ms
            .checked_mul(1_000_000)
            .ok_or_else(|| invalid(format!("time `{s}` is out of range")));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            invalid(format!(
                "time `{s}` is neither RFC 3339 (2026-01-31T12:00:00Z) nor Unix milliseconds"
            ))
        })
}

/// Parses a span like `90s`, `15m`, `2h`, `7d` or `1w`, into nanoseconds.
pub fn parse_span(s: &str) -> Result<u64, QueryError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let unit_s: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => 0,
    };
    n.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && unit_s > 0)
        .and_then(|n| n.checked_mul(unit_s * 1_000_000_000))
        .ok_or_else(|| invalid(format!("span `{s}` is not like 15m, 2h or 7d")))
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Most comma-separated values in one shorthand parameter (`service`,
/// `trace_id`, …): checked before any SQL is built.
pub const MAX_VALUES: usize = 100;

/// A parameter is at most as long as a query.
fn check_length(field: &str, value: &str) -> Result<(), QueryError> {
    let n = value.chars().count();
    if n > syntax::MAX_QUERY_CHARS {
        return Err(invalid(format!(
            "{field}: {n} characters, at most {}",
            syntax::MAX_QUERY_CHARS
        )));
    }
    Ok(())
}

/// `field:v1` OR `field:v2` … for a comma-separated shorthand parameter.
fn shorthand(field: &str, values: &str) -> Expr {
    let terms: Vec<Expr> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            Expr::Term(Term {
                field: Some(field.into()),
                op: Op::Eq,
                value: v.into(),
                quoted: true,
                pos: 0,
            })
        })
        .collect();
    Expr::Or(terms)
}

impl SearchParams {
    /// Validates the parameters into a plan for a server speaking `d`;
    /// `now_ns` is the default end.
    pub fn plan(&self, now_ns: u64, d: Dialect) -> Result<Plan, QueryError> {
        let mut parts = Vec::new();
        if let Some(q) = nonempty(&self.q) {
            if let Some(expr) = syntax::parse(q)? {
                parts.push(sql::to_sql(&expr, d)?);
            }
        }
        let shorthands = [
            ("level", &self.level),
            ("service", &self.service),
            ("host", &self.host),
            ("environment", &self.environment),
            ("request_id", &self.request_id),
            ("trace_id", &self.trace_id),
        ];
        for (field, value) in shorthands {
            if let Some(v) = nonempty(value) {
                check_length(field, v)?;
                let values = v.split(',').filter(|x| !x.trim().is_empty()).count();
                if values > MAX_VALUES {
                    return Err(invalid(format!(
                        "{field}: {values} values, at most {MAX_VALUES}"
                    )));
                }
                let sql = sql::to_sql(&shorthand(field, v), d).map_err(|e| match e {
                    QueryError::Invalid { message, .. } => invalid(format!("{field}: {message}")),
                })?;
                parts.push(sql);
            }
        }
        if let Some(text) = nonempty(&self.text) {
            check_length("text", text)?;
            parts.push(sql::text_contains(text, d));
        }
        let order = match nonempty(&self.order) {
            None | Some("newest" | "desc") => Order::Newest,
            Some("oldest" | "asc") => Order::Oldest,
            Some(o) => {
                return Err(invalid(format!(
                    "order `{o}` is neither `newest` nor `oldest`"
                )))
            }
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let (from_ns, to_ns, after) = match nonempty(&self.cursor) {
            Some(c) => {
                let c = decode_cursor(c)?;
                (c.f, c.u, Some(c.key))
            }
            None => {
                let to = nonempty(&self.to)
                    .map(parse_time)
                    .transpose()?
                    .unwrap_or(now_ns);
                let from = match (nonempty(&self.from), nonempty(&self.last)) {
                    (Some(_), Some(_)) => return Err(invalid("give `from` or `last`, not both")),
                    (Some(f), None) => parse_time(f)?,
                    (None, Some(l)) => to.saturating_sub(parse_span(l)?),
                    (None, None) => to.saturating_sub(HOUR_NS),
                };
                if from > to {
                    return Err(invalid("`from` is after `to`"));
                }
                (from, to, None)
            }
        };
        Ok(Plan {
            filter: Sql::and(parts),
            from_ns,
            to_ns,
            order,
            limit,
            after,
            tenant: nonempty(&self.tenant).map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000_000_000_000;

    #[test]
    fn long_parameters_are_refused_before_sql_is_built() {
        let many = vec!["x"; MAX_VALUES + 1].join(",");
        for params in [
            SearchParams {
                service: Some(many.clone()),
                ..SearchParams::default()
            },
            SearchParams {
                trace_id: Some(many),
                ..SearchParams::default()
            },
            SearchParams {
                text: Some("a".repeat(syntax::MAX_QUERY_CHARS + 1)),
                ..SearchParams::default()
            },
            SearchParams {
                q: Some("service:x ".repeat(1000)),
                ..SearchParams::default()
            },
        ] {
            let e = params.plan(NOW, Dialect::default()).expect_err("too long");
            assert!(
                e.to_string().contains("at most") || e.to_string().contains("longer than"),
                "{e}"
            );
        }
        let fits = vec!["x"; MAX_VALUES].join(",");
        SearchParams {
            service: Some(fits),
            ..SearchParams::default()
        }
        .plan(NOW, Dialect::default())
        .expect("at the limit");
    }

    #[test]
    fn defaults_are_the_last_hour_newest_first() {
        let plan = SearchParams::default()
            .plan(NOW, Dialect::default())
            .expect("valid");
        assert_eq!((plan.from_ns, plan.to_ns), (NOW - HOUR_NS, NOW));
        assert_eq!((plan.order, plan.limit), (Order::Newest, DEFAULT_LIMIT));
        assert_eq!(plan.filter, Sql::default());
    }

    #[test]
    fn shorthands_and_query_combine() {
        let params = SearchParams {
            q: Some("status:>=500".into()),
            level: Some("error,fatal".into()),
            service: Some("api".into()),
            text: Some("Timeout".into()),
            last: Some("15m".into()),
            to: Some("2026-01-31T12:00:00Z".into()),
            ..SearchParams::default()
        };
        let plan = params.plan(NOW, Dialect::default()).expect("valid");
        assert_eq!(plan.to_ns - plan.from_ns, 15 * 60 * 1_000_000_000);
        assert_eq!(plan.to_ns, 1_769_860_800_000_000_000);
        assert!(plan.filter.text.starts_with("(http_status >= ?) AND ("));
        assert_eq!(plan.filter.binds.len(), 1 + 4 + 1 + 1);
    }

    #[test]
    fn a_cursor_pins_the_range_and_resumes_after_its_key() {
        let key = Key {
            time_unix_nano: 5,
            agent_id: "a".into(),
            seq: 9,
        };
        let cursor = encode_cursor(&key, 1, 10);
        let plan = SearchParams {
            cursor: Some(cursor),
            last: Some("1d".into()),
            ..SearchParams::default()
        }
        .plan(NOW, Dialect::default())
        .expect("valid");
        assert_eq!((plan.from_ns, plan.to_ns, plan.after), (1, 10, Some(key)));
    }

    #[test]
    fn bad_parameters_say_what_is_wrong() {
        let bad = [
            SearchParams {
                limit: Some(0),
                ..Default::default()
            },
            SearchParams {
                limit: Some(5000),
                ..Default::default()
            },
            SearchParams {
                order: Some("sideways".into()),
                ..Default::default()
            },
            SearchParams {
                from: Some("yesterday".into()),
                ..Default::default()
            },
            SearchParams {
                last: Some("15x".into()),
                ..Default::default()
            },
            SearchParams {
                from: Some("2000".into()),
                to: Some("1000".into()),
                ..Default::default()
            },
            SearchParams {
                cursor: Some("bm90IGEgY3Vyc29y".into()),
                ..Default::default()
            },
            SearchParams {
                level: Some("loud".into()),
                ..Default::default()
            },
            SearchParams {
                q: Some("(a".into()),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.plan(NOW, Dialect::default()).is_err(), "{p:?}");
        }
    }
}
