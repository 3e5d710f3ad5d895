//! Query trees into SQL `WHERE` fragments with bound values.
//!
//! Column names come only from the table below; every value the user typed
//! (attribute keys included) becomes a bound parameter, escaped by the
//! `clickhouse` crate's typed binding. (ClickHouse 18.16 has no server-side
//! query parameters; the crate's binding is the portable equivalent.)

use super::syntax::{Expr, Op, Term};
use super::QueryError;

/// What the server offers that the SQL may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialect {
    /// The n-gram bloom filter on `lowerUTF8(body)` (migration 4): text
    /// search is written as `lowerUTF8(body) LIKE '%…%'` so it can skip
    /// granules; without it, `positionCaseInsensitiveUTF8` is faster.
    pub body_ngrams: bool,
    /// `logs` stores attributes as a `Map` (`store::Layout::Maps`): a
    /// lookup reads the map, not the two arrays it is an alias for.
    pub attribute_map: bool,
}

/// A value bound to a `?` placeholder, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    U64(u64),
    F64(f64),
}

/// A `WHERE` fragment and its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Value>,
}

impl Sql {
    pub fn new(text: impl Into<String>, binds: Vec<Value>) -> Sql {
        Sql {
            text: text.into(),
            binds,
        }
    }

    /// All parts, ANDed; empty parts are skipped. Every part is bracketed,
    /// a lone one too, so the result can be placed next to any other
    /// condition as text (`… AND {text}`) without an `OR` inside it
    /// reaching out.
    pub fn and(parts: Vec<Sql>) -> Sql {
        join(parts, " AND ")
    }

    pub fn bind_to(&self, mut query: clickhouse::query::Query) -> clickhouse::query::Query {
        for v in &self.binds {
            query = match v {
                Value::Str(s) => query.bind(s.as_str()),
                Value::U64(n) => query.bind(*n),
                Value::F64(f) => query.bind(*f),
            };
        }
        query
    }
}

fn join(parts: Vec<Sql>, sep: &str) -> Sql {
    let parts: Vec<Sql> = parts.into_iter().filter(|p| !p.text.is_empty()).collect();
    let mut out = Sql::default();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.text.push_str(sep);
        }
        out.text.push('(');
        out.text.push_str(&p.text);
        out.text.push(')');
        out.binds.extend(p.binds);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Exact match; `*` is a wildcard.
    Str,
    /// Case-insensitive substring (the message).
    Text,
    UInt,
    Float,
    /// A level name or number, compared on `severity_number`.
    Severity,
}

/// Query field names (with aliases) and their columns.
pub const FIELDS: &[(&str, &str)] = &[
    ("level", "severity_number"),
    ("severity", "severity_number"),
    ("service", "service"),
    ("host", "host"),
    ("env", "environment"),
    ("environment", "environment"),
    ("source", "source"),
    ("file", "file_path"),
    ("file_path", "file_path"),
    ("message", "body"),
    ("msg", "body"),
    ("body", "body"),
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("request_id", "request_id"),
    ("method", "http_method"),
    ("http_method", "http_method"),
    ("path", "http_path"),
    ("http_path", "http_path"),
    ("status", "http_status"),
    ("status_code", "http_status"),
    ("http_status", "http_status"),
    ("duration", "duration_ms"),
    ("duration_ms", "duration_ms"),
    ("ip", "client_ip"),
    ("client_ip", "client_ip"),
    ("user_agent", "user_agent"),
    ("user", "user_id"),
    ("user_id", "user_id"),
    ("event", "event_type"),
    ("event_type", "event_type"),
    ("logger", "logger"),
    ("module", "module"),
    ("function", "function"),
    ("line", "line"),
    ("agent_id", "agent_id"),
    ("tenant", "tenant"),
];

fn kind_of(column: &str) -> Kind {
    match column {
        "severity_number" => Kind::Severity,
        "body" => Kind::Text,
        "http_status" | "line" => Kind::UInt,
        "duration_ms" => Kind::Float,
        _ => Kind::Str,
    }
}

pub fn column_of(field: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(field))
        .map(|(_, col)| *col)
}

/// The lowest severity number of a level name (OpenTelemetry ranges).
pub fn severity_floor(level: &str) -> Option<u64> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "information" | "notice" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" | "panic" | "emergency" | "alert" => 21,
        n => return n.parse::<u64>().ok().filter(|n| (1..=24).contains(n)),
    })
}

pub fn to_sql(expr: &Expr, d: Dialect) -> Result<Sql, QueryError> {
    let all = |parts: &[Expr]| parts.iter().map(|p| to_sql(p, d)).collect::<Result<_, _>>();
    Ok(match expr {
        Expr::And(parts) => join(all(parts)?, " AND "),
        Expr::Or(parts) => join(all(parts)?, " OR "),
        Expr::Not(inner) => {
            let inner = to_sql(inner, d)?;
            Sql::new(format!("NOT ({})", inner.text), inner.binds)
        }
        Expr::Term(t) => term(t, d)?,
    })
}

fn op_sql(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
    }
}

fn bad(t: &Term, message: String) -> QueryError {
    QueryError::Invalid {
        pos: Some(t.pos),
        message,
    }
}

fn term(t: &Term, d: Dialect) -> Result<Sql, QueryError> {
    let Some(field) = &t.field else {
        return Ok(text_contains(&t.value, d));
    };
    let attr_key = field
        .strip_prefix("attr.")
        .or_else(|| field.strip_prefix("@"));
    let column = match attr_key {
        Some(_) => None,
        None => column_of(field),
    };
    let Some(column) = column else {
        // Unknown names are attributes, as in Datadog: `order_id:42`.
        return attribute(t, attr_key.unwrap_or(field), d);
    };
    let kind = kind_of(column);
    match (kind, t.op) {
        (Kind::Text, Op::Eq) => Ok(text_contains(&t.value, d)),
        (Kind::Str, Op::Eq) => Ok(string_eq(column, t)),
        (Kind::Str | Kind::Text, _) => Err(bad(
            t,
            format!("`{field}` is text; comparisons (<, >) need a numeric field"),
        )),
        (Kind::UInt, op) => {
            let n: u64 = t.value.parse().map_err(|_| {
                bad(
                    t,
                    format!("`{field}` needs a whole number, not `{}`", t.value),
                )
            })?;
            Ok(Sql::new(
                format!("{column} {} ?", op_sql(op)),
                vec![Value::U64(n)],
            ))
        }
        (Kind::Float, op) => {
            let n: f64 = t
                .value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| bad(t, format!("`{field}` needs a number, not `{}`", t.value)))?;
            Ok(Sql::new(
                format!("{column} {} ?", op_sql(op)),
                vec![Value::F64(n)],
            ))
        }
        (Kind::Severity, op) => {
            let floor = severity_floor(&t.value).ok_or_else(|| {
                bad(
                    t,
                    format!(
                        "unknown level `{}`: use trace, debug, info, warn, error, fatal or 1-24",
                        t.value
                    ),
                )
            })?;
            // A level is a range of numbers: `level:warn` is 13..=16.
            let top = if floor >= 21 { 24 } else { floor + 3 };
            let sql = match op {
                Op::Eq if t.value.parse::<u64>().is_ok() => "severity_number = ?".to_string(),
                Op::Eq => {
                    return Ok(Sql::new(
                        "severity_number >= ? AND severity_number <= ?",
                        vec![Value::U64(floor), Value::U64(top)],
                    ))
                }
                Op::Ge | Op::Lt => format!("severity_number {} ?", op_sql(t.op)),
                Op::Gt => {
                    return Ok(Sql::new("severity_number > ?", vec![Value::U64(top)]));
                }
                Op::Le => {
                    return Ok(Sql::new("severity_number <= ?", vec![Value::U64(top)]));
                }
            };
            Ok(Sql::new(sql, vec![Value::U64(floor)]))
        }
    }
}

/// The message contains `needle`, in any case.
pub fn text_contains(needle: &str, d: Dialect) -> Sql {
    if d.body_ngrams {
        let pattern = format!("%{}%", like_escape(&needle.to_lowercase()));
        Sql::new("lowerUTF8(body) LIKE ?", vec![Value::Str(pattern)])
    } else {
        Sql::new(
            "positionCaseInsensitiveUTF8(body, ?) > 0",
            vec![Value::Str(needle.to_string())],
        )
    }
}

fn like_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `*` wildcard pattern as a LIKE pattern.
fn like_pattern(value: &str) -> String {
    like_escape(value).replace('*', "%")
}

fn string_eq(column: &str, t: &Term) -> Sql {
    if !t.quoted && t.value.contains('*') {
        Sql::new(
            format!("{column} LIKE ?"),
            vec![Value::Str(like_pattern(&t.value))],
        )
    } else {
        Sql::new(format!("{column} = ?"), vec![Value::Str(t.value.clone())])
    }
}

fn attribute(t: &Term, key: &str, d: Dialect) -> Result<Sql, QueryError> {
    if key.is_empty() {
        return Err(bad(t, "expected an attribute name after `attr.`".into()));
    }
    // Each takes the key as its one bound value.
    let (has, value) = if d.attribute_map {
        ("mapContains(attributes, ?)", "attributes[?]")
    } else {
        ("has(attr_keys, ?)", "attr_values[indexOf(attr_keys, ?)]")
    };
    let key_bind = Value::Str(key.to_string());
    match t.op {
        Op::Eq if !t.quoted && t.value.contains('*') => Ok(Sql::new(
            format!("{has} AND {value} LIKE ?"),
            vec![
                key_bind.clone(),
                key_bind,
                Value::Str(like_pattern(&t.value)),
            ],
        )),
        Op::Eq => Ok(Sql::new(
            format!("{has} AND {value} = ?"),
            vec![key_bind.clone(), key_bind, Value::Str(t.value.clone())],
        )),
        op => {
            let n: f64 = t
                .value
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| {
                    bad(
                        t,
                        format!(
                            "`{key}` with {} needs a number, not `{}`",
                            op_sql(op),
                            t.value
                        ),
                    )
                })?;
            // Values that are not numbers never match a comparison.
            Ok(Sql::new(
                format!(
                    "{has} AND match({value}, '^-{{0,1}}[0-9]+([.][0-9]+){{0,1}}$') \
                     AND toFloat64OrZero({value}) {} ?",
                    op_sql(op)
                ),
                vec![key_bind.clone(), key_bind.clone(), key_bind, Value::F64(n)],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::syntax::parse;

    fn sql(q: &str) -> Sql {
        let s = to_sql(
            &parse(q).expect("parses").expect("not empty"),
            Dialect::default(),
        )
        .expect("translates");
        assert_eq!(
            s.text.matches('?').count(),
            s.binds.len(),
            "{q}: one value per placeholder"
        );
        s
    }

    #[test]
    fn fields_map_to_columns_and_values_are_bound() {
        let s = sql(r#"level:error service:api status:>=500 "timeout" -path:/health"#);
        assert_eq!(
            s.text,
            "(severity_number >= ? AND severity_number <= ?) AND (service = ?) AND (http_status >= ?) \
             AND (positionCaseInsensitiveUTF8(body, ?) > 0) AND (NOT (http_path = ?))"
        );
        assert_eq!(
            s.binds,
            vec![
                Value::U64(17),
                Value::U64(20),
                Value::Str("api".into()),
                Value::U64(500),
                Value::Str("timeout".into()),
                Value::Str("/health".into())
            ]
        );
        let s = sql("order_id:42 OR attr.order_id=42");
        assert!(s.text.contains("has(attr_keys, ?)"));
        assert_eq!(
            s.binds
                .iter()
                .filter(|v| **v == Value::Str("order_id".into()))
                .count(),
            4
        );
        let expr = parse("order_id:42").expect("parses").expect("not empty");
        let maps = Dialect {
            attribute_map: true,
            ..Dialect::default()
        };
        let s = to_sql(&expr, maps).expect("translates");
        assert_eq!(s.text, "mapContains(attributes, ?) AND attributes[?] = ?");
        let s = sql("attr.size>10 host:web-*");
        assert!(s.text.contains("toFloat64OrZero"), "{}", s.text);
        assert!(s.text.contains("host LIKE ?"));
        assert_eq!(s.binds.last(), Some(&Value::Str("web-%".into())));
    }

    #[test]
    fn text_search_uses_the_ngram_index_where_there_is_one() {
        let expr = parse(r#""50% OFF_now" message:Timeout"#)
            .expect("parses")
            .expect("not empty");
        let modern = to_sql(
            &expr,
            Dialect {
                body_ngrams: true,
                ..Dialect::default()
            },
        )
        .expect("translates");
        assert_eq!(
            modern.text,
            "(lowerUTF8(body) LIKE ?) AND (lowerUTF8(body) LIKE ?)"
        );
        assert_eq!(
            modern.binds,
            vec![
                Value::Str("%50\\% off\\_now%".into()),
                Value::Str("%timeout%".into())
            ]
        );
        let old = to_sql(&expr, Dialect::default()).expect("translates");
        assert!(old
            .text
            .starts_with("(positionCaseInsensitiveUTF8(body, ?) > 0)"));
    }

    #[test]
    fn user_text_never_reaches_the_sql() {
        for q in [
            r#"service:"x' OR 1=1 --""#,
            "attr.a'b=1",
            r#""'); DROP TABLE logs; --""#,
            "host:a\\'*",
        ] {
            let s = sql(q);
            assert!(!s.text.contains('\''), "{q}: {}", s.text);
            assert!(!s.text.contains("DROP"));
        }
    }

    #[test]
    fn wrong_types_are_errors_with_positions() {
        for (q, pos) in [
            ("status:abc", 0),
            ("a:1 duration_ms:>slow", 4),
            ("level:loud", 0),
            ("path:>/a", 0),
            ("x attr.n>big", 2),
        ] {
            let e = to_sql(
                &parse(q).expect("parses").expect("not empty"),
                Dialect::default(),
            )
            .expect_err(q);
            assert!(
                matches!(e, QueryError::Invalid { pos: Some(p), .. } if p == pos),
                "{q}: {e:?}"
            );
        }
    }
}
