//! The two physical layouts of `logs` (see `schema`) and the row each one
//! is written with. Reads need no such split: the modern layout's `ALIAS`
//! columns give every query the baseline's names, and migration 9 gives a
//! baseline table the modern names.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::record::LogRow;

/// How `logs` stores time and attributes, read from the table itself: a
/// database keeps the layout it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Nanoseconds as `UInt64`, attributes as key and value arrays: the
    /// baseline, on every server.
    Arrays,
    /// `DateTime64(9)` time, attributes and resource as `Map`: a database
    /// created on a modern server.
    Maps,
}

/// A `LogRow` as the `Maps` layout stores it. `DateTime64(9)` is the
/// nanoseconds as `Int64` on the wire, and a `Map` its pairs in order, so
/// duplicate keys and their order survive as in the arrays.
#[derive(Serialize, clickhouse::Row)]
pub struct MapsRow<'a> {
    tenant: &'a str,
    timestamp: u32,
    time: i64,
    observed_unix_nano: u64,
    severity_number: u8,
    severity_text: &'a str,
    service: &'a str,
    host: &'a str,
    environment: &'a str,
    source: &'a str,
    file_path: &'a str,
    body: &'a str,
    trace_id: &'a str,
    span_id: &'a str,
    request_id: &'a str,
    http_method: &'a str,
    http_path: &'a str,
    http_status: u16,
    duration_ms: f64,
    client_ip: &'a str,
    user_agent: &'a str,
    user_id: &'a str,
    event_type: &'a str,
    logger: &'a str,
    module: &'a str,
    function: &'a str,
    line: u32,
    attributes: Pairs<'a>,
    resource: Pairs<'a>,
    agent_id: &'a str,
    seq: u64,
    pattern_id: u64,
    security_class: &'a str,
    security_rules: &'a [String],
    http_route: &'a str,
}

/// Parallel key and value arrays, written as a `Map`.
pub struct Pairs<'a>(&'a [String], &'a [String]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len().min(self.1.len())))?;
        for (k, v) in self.0.iter().zip(self.1) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'a> From<&'a LogRow> for MapsRow<'a> {
    fn from(r: &'a LogRow) -> MapsRow<'a> {
        MapsRow {
            tenant: &r.tenant,
            timestamp: r.timestamp,
            // Nanoseconds since 1970 fit an i64 until 2262.
            time: i64::try_from(r.time_unix_nano).unwrap_or(i64::MAX),
            observed_unix_nano: r.observed_unix_nano,
            severity_number: r.severity_number,
            severity_text: &r.severity_text,
            service: &r.service,
            host: &r.host,
            environment: &r.environment,
            source: &r.source,
            file_path: &r.file_path,
            body: &r.body,
            trace_id: &r.trace_id,
            span_id: &r.span_id,
            request_id: &r.request_id,
            http_method: &r.http_method,
            http_path: &r.http_path,
            http_status: r.http_status,
            duration_ms: r.duration_ms,
            client_ip: &r.client_ip,
            user_agent: &r.user_agent,
            user_id: &r.user_id,
            event_type: &r.event_type,
            logger: &r.logger,
            module: &r.module,
            function: &r.function,
            line: r.line,
            attributes: Pairs(&r.attr_keys, &r.attr_values),
            resource: Pairs(&r.resource_keys, &r.resource_values),
            agent_id: &r.agent_id,
            seq: r.seq,
            pattern_id: r.pattern_id,
            security_class: &r.security_class,
            security_rules: &r.security_rules,
            http_route: &r.http_route,
        }
    }
}

#[cfg(test)]
mod tests {
    use clickhouse::Row;

    use super::*;

    /// Every column of `LogRow` is written in both layouts, under the
    /// baseline name or the modern one that stores it.
    #[test]
    fn both_rows_write_every_column() {
        let modern = |c: &'static str| match c {
            "time_unix_nano" => "time",
            "attr_keys" | "attr_values" => "attributes",
            "resource_keys" | "resource_values" => "resource",
            c => c,
        };
        let mut expected: Vec<&str> = LogRow::COLUMN_NAMES.iter().map(|c| modern(c)).collect();
        expected.dedup();
        assert_eq!(MapsRow::COLUMN_NAMES, expected.as_slice());
    }
}
