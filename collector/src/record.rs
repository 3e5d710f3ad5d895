//! The stored form of a log record (one row of the `logs` table) and the
//! mapping of well-known keys onto its first-class columns.
//!
//! Keys are matched as our users' applications write them (the seed's JSON
//! lines: `timestamp, level, logger, message, module, function, line,
//! request_id, duration_ms, status_code, client_ip, user_agent, event_type`),
//! with the common aliases of other loggers and the OpenTelemetry semantic
//! conventions. When two aliases of one field appear, the earlier alias in
//! `field_of` wins and the other stays an attribute.

use serde::{Deserialize, Serialize};

/// One row of `logs`. Field names are column names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct LogRow {
    pub tenant: String,
    /// Seconds, for partitioning and the sort key (`DateTime`).
    pub timestamp: u32,
    pub time_unix_nano: u64,
    pub observed_unix_nano: u64,
    pub severity_number: u8,
    pub severity_text: String,
    pub service: String,
    pub host: String,
    pub environment: String,
    pub source: String,
    pub file_path: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub request_id: String,
    pub http_method: String,
    pub http_path: String,
    pub http_status: u16,
    pub duration_ms: f64,
    pub client_ip: String,
    pub user_agent: String,
    pub user_id: String,
    pub event_type: String,
    pub logger: String,
    pub module: String,
    pub function: String,
    pub line: u32,
    pub attr_keys: Vec<String>,
    pub attr_values: Vec<String>,
    pub resource_keys: Vec<String>,
    pub resource_values: Vec<String>,
    pub agent_id: String,
    pub seq: u64,
    /// The message template's id (`logferry_analysis::patterns`).
    pub pattern_id: u64,
    /// For HTTP requests: `benign`, an attack class, `scanner` or `bot`;
    /// empty for other records.
    pub security_class: String,
    pub security_rules: Vec<String>,
    /// `http_path` without its query, ids replaced by `{id}`.
    pub http_route: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    Severity,
    Body,
    Logger,
    Module,
    Function,
    Line,
    RequestId,
    Method,
    Path,
    Status,
    Duration,
    ClientIp,
    UserAgent,
    UserId,
    EventType,
    TraceId,
    SpanId,
    Service,
    Environment,
}

const FIELDS: usize = 20;

/// The first-class field a key maps to, and the alias's rank (lower wins).
pub fn field_of(key: &str) -> Option<(Field, u8)> {
    use Field::*;
    Some(match key {
        "timestamp" => (Time, 0),
        "time" | "@timestamp" => (Time, 1),
        "ts" | "datetime" | "asctime" => (Time, 2),
        "level" => (Severity, 0),
        "severity" | "levelname" | "log.level" => (Severity, 1),
        "lvl" | "loglevel" | "severity_text" => (Severity, 2),
        "message" => (Body, 0),
        "msg" => (Body, 1),
        "body" | "log" => (Body, 2),
        "logger" => (Logger, 0),
        "logger_name" | "log.logger" => (Logger, 1),
        "module" => (Module, 0),
        "function" => (Function, 0),
        "func" | "funcName" | "code.function" => (Function, 1),
        "line" => (Line, 0),
        "lineno" | "code.lineno" => (Line, 1),
        "request_id" => (RequestId, 0),
        "requestId" | "req_id" | "http.request_id" | "x_request_id" => (RequestId, 1),
        "method" | "http_method" => (Method, 0),
        "http.method" | "http.request.method" => (Method, 1),
        "path" | "http_path" => (Path, 0),
        "url.path" | "http.target" | "http.route" => (Path, 1),
        "status_code" => (Status, 0),
        "status" | "http_status" | "http.status_code" | "http.response.status_code" => (Status, 1),
        "duration_ms" => (Duration, 0),
        "latency_ms" | "elapsed_ms" | "response_time_ms" | "http.duration_ms" => (Duration, 1),
        "client_ip" => (ClientIp, 0),
        "remote_addr" | "ip" | "client.address" | "http.client_ip" => (ClientIp, 1),
        "user_agent" => (UserAgent, 0),
        "http.user_agent" | "user_agent.original" => (UserAgent, 1),
        "user_id" => (UserId, 0),
        "userId" | "enduser.id" | "uid" => (UserId, 1),
        "event_type" => (EventType, 0),
        "event" | "event.name" => (EventType, 1),
        "trace_id" => (TraceId, 0),
        "traceId" | "trace.id" => (TraceId, 1),
        "span_id" => (SpanId, 0),
        "spanId" | "span.id" => (SpanId, 1),
        "service.name" => (Service, 0),
        "service" | "service_name" => (Service, 1),
        "deployment.environment" => (Environment, 0),
        "environment" | "env" | "deployment.environment.name" => (Environment, 1),
        _ => return None,
    })
}

/// Fills a row from key/value pairs: for each first-class field the best
/// ranked alias whose value fits the field's type; everything else becomes
/// an attribute. Values arrive as text (JSON numbers as written).
#[derive(Debug)]
pub struct Fill<'r, 'k> {
    row: &'r mut LogRow,
    mapped: Vec<(Field, u8, &'k str, String)>,
}

impl<'r, 'k> Fill<'r, 'k> {
    pub fn new(row: &'r mut LogRow) -> Fill<'r, 'k> {
        Fill {
            row,
            mapped: Vec::with_capacity(16),
        }
    }

    pub fn put(&mut self, key: &'k str, value: String) {
        match field_of(key) {
            Some((field, rank)) => self.mapped.push((field, rank, key, value)),
            None => self.attribute(key, value),
        }
    }

    fn attribute(&mut self, key: &str, value: String) {
        self.row.attr_keys.push(key.to_string());
        self.row.attr_values.push(value);
    }

    /// Applies the first-class fields. Returns whether a time was found.
    pub fn finish(mut self) -> bool {
        let mut mapped = std::mem::take(&mut self.mapped);
        mapped.sort_unstable_by_key(|(field, rank, _, _)| (*field as u8, *rank));
        let mut done = [false; FIELDS];
        for (field, _, key, value) in mapped {
            if done[field as usize] || !self.set(field, value.as_str()) {
                self.attribute(key, value);
                continue;
            }
            done[field as usize] = true;
            self.assign(field, value);
        }
        done[Field::Time as usize]
    }

    /// Checks that the value fits the field's type; numeric fields take
    /// their value here.
    fn set(&mut self, field: Field, value: &str) -> bool {
        let r = &mut *self.row;
        match field {
            Field::Time => parse_time(value)
                .map(|ns| {
                    r.time_unix_nano = ns;
                    r.timestamp = (ns / 1_000_000_000) as u32;
                })
                .is_some(),
            Field::Line => value.trim().parse().map(|v| r.line = v).is_ok(),
            Field::Status => value.trim().parse().map(|v| r.http_status = v).is_ok(),
            Field::Duration => value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| r.duration_ms = v)
                .is_some(),
            _ => true,
        }
    }

    fn assign(&mut self, field: Field, value: String) {
        let r = &mut *self.row;
        match field {
            Field::Time | Field::Line | Field::Status | Field::Duration => {}
            Field::Severity => set_severity(r, &value),
            Field::Body => r.body = value,
            Field::Logger => r.logger = value,
            Field::Module => r.module = value,
            Field::Function => r.function = value,
            Field::RequestId => r.request_id = value,
            Field::Method => r.http_method = value.to_ascii_uppercase(),
            Field::Path => r.http_path = value,
            Field::ClientIp => r.client_ip = value,
            Field::UserAgent => r.user_agent = value,
            Field::UserId => r.user_id = value,
            Field::EventType => r.event_type = value,
            Field::TraceId => r.trace_id = value.to_ascii_lowercase(),
            Field::SpanId => r.span_id = value.to_ascii_lowercase(),
            Field::Service => r.service = value,
            Field::Environment => r.environment = value,
        }
    }
}

/// Sets the severity text (upper case) and number (OpenTelemetry's scale)
/// from a level name or a numeric level (syslog-free loggers such as pino
/// write 10..60).
pub fn set_severity(row: &mut LogRow, level: &str) {
    let level = level.trim();
    if let Ok(n) = level.parse::<u32>() {
        let (number, text) = match n {
            0..=10 => (1, "TRACE"),
            11..=20 => (5, "DEBUG"),
            21..=30 => (9, "INFO"),
            31..=40 => (13, "WARN"),
            41..=50 => (17, "ERROR"),
            _ => (21, "FATAL"),
        };
        row.severity_number = number;
        row.severity_text = text.into();
        return;
    }
    row.severity_text = level.to_ascii_uppercase();
    row.severity_number = severity_number(&row.severity_text);
}

pub fn severity_number(upper: &str) -> u8 {
    match upper {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" | "INFORMATION" => 9,
        "NOTICE" => 10,
        "WARN" | "WARNING" => 13,
        "ERROR" | "ERR" => 17,
        "CRITICAL" | "CRIT" | "FATAL" | "ALERT" | "EMERGENCY" | "PANIC" => 21,
        _ => 0,
    }
}

/// Parses RFC 3339 (`T` or space, any offset, `Z`), a naive date-time taken
/// as UTC, or a Unix time in seconds, milliseconds, microseconds or
/// nanoseconds (told apart by magnitude). Returns nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        let ns = match n {
            0 => return None,
            1..100_000_000_000 => n * 1_000_000_000,
            100_000_000_000..100_000_000_000_000 => n * 1_000_000,
            100_000_000_000_000..100_000_000_000_000_000 => n * 1_000,
            _ => n,
        };
        return Some(ns);
    }
    if let Ok(secs) = s.parse::<f64>() {
        // Fractional seconds (`1755169306.503`).
        return (secs.is_finite() && secs > 0.0 && secs < 1e11).then_some((secs * 1e9) as u64);
    }
    let ns = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        t.timestamp_nanos_opt()?
    } else {
        // Python's logging writes milliseconds after a comma.
        let s = s.replacen(',', ".", 1);
        let naive = chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?;
        naive.and_utc().timestamp_nanos_opt()?
    };
    // DateTime in ClickHouse 18.16 is 32-bit seconds.
    u64::try_from(ns)
        .ok()
        .filter(|ns| *ns < u64::from(u32::MAX) * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_common_form() {
        let want = 1_755_169_306_503_939_000;
        assert_eq!(parse_time("2025-08-14T11:01:46.503939+00:00"), Some(want));
        assert_eq!(parse_time("2025-08-14T13:01:46.503939+02:00"), Some(want));
        assert_eq!(parse_time("2025-08-14 11:01:46.503939Z"), Some(want));
        assert_eq!(parse_time("2025-08-14 11:01:46.503939"), Some(want));
        assert_eq!(parse_time("2025-08-14 11:01:46,503"), Some(want - 939_000));
        assert_eq!(parse_time("1755169306"), Some(1_755_169_306_000_000_000));
        assert_eq!(parse_time("1755169306503"), Some(1_755_169_306_503_000_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("-5"), None);
    }

    #[test]
    fn aliases_rank_and_losers_stay_attributes() {
        let mut row = LogRow::default();
        let mut f = Fill::new(&mut row);
        f.put("msg", "second".into());
        f.put("message", "first".into());
        f.put("status_code", "not a number".into());
        f.put("status", "503".into());
        f.put("level", "warning".into());
        f.put("order_id", "42".into());
        assert!(!f.finish(), "no time given");
        assert_eq!(row.body, "first");
        assert_eq!(row.http_status, 503);
        assert_eq!(
            (row.severity_number, row.severity_text.as_str()),
            (13, "WARNING")
        );
        assert_eq!(row.attr_keys, vec!["order_id", "msg", "status_code"]);
        assert_eq!(row.attr_values, vec!["42", "second", "not a number"]);
    }

    #[test]
    fn numeric_levels() {
        let mut row = LogRow::default();
        set_severity(&mut row, "50");
        assert_eq!(
            (row.severity_number, row.severity_text.as_str()),
            (17, "ERROR")
        );
    }
}
