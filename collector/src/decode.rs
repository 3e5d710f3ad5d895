//! Turns an agent's batch into rows: raw file lines (JSON or text) and
//! pushed records, stamped with where they came from and their identity
//! (agent id, sequence number).
//!
//! Everything a row holds is derived from the batch alone, never from the
//! clock or the collector: the same batch always yields the same rows, which
//! is what lets a resent batch be recognised (see `ingest`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use logferry_proto::any_value::Value;
use logferry_proto::{chunk, AnyValue, Chunk, ExportRequest, Format, KeyValue, LogRecord, Origin};
use prost::Message;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::record::{set_severity, severity_number, Fill, LogRow};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("chunk {index} of the batch does not decode")]
    Chunk {
        index: usize,
        #[source]
        source: prost::DecodeError,
    },
    #[error("record {seq} lies outside the batch's range {first}..={last}")]
    OutOfRange { seq: u64, first: u64, last: u64 },
    #[error(
        "the batch holds {records} records, more than this collector takes in one batch ({max}, \
         `ingest.max_batch_records`); send smaller batches (the agent's `forward.batch_max_records`)"
    )]
    TooManyRecords { records: u64, max: u64 },
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub rows: Vec<LogRow>,
    pub min_time: u32,
    pub max_time: u32,
}

/// The rows of a batch of at most `max_records` records. The chunks are
/// decoded and their records counted before any row is made, so a batch of
/// many tiny records is refused before it costs a row's memory each.
pub fn decode_batch(
    req: &ExportRequest,
    tenant: &str,
    max_records: u64,
) -> Result<Decoded, DecodeError> {
    let chunks = req
        .chunks
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            Chunk::decode(bytes.clone()).map_err(|source| DecodeError::Chunk { index, source })
        })
        .collect::<Result<Vec<Chunk>, DecodeError>>()?;
    let records: u64 = chunks.iter().map(records_in).sum();
    if records > max_records {
        return Err(DecodeError::TooManyRecords {
            records,
            max: max_records,
        });
    }
    let mut agent = LogRow {
        tenant: tenant.to_string(),
        agent_id: req.agent_id.clone(),
        ..LogRow::default()
    };
    apply_resource(&mut agent, &req.resource);
    let mut out = Decoded {
        min_time: u32::MAX,
        ..Decoded::default()
    };
    out.rows.reserve_exact(records as usize);
    for chunk in chunks {
        let mut base = agent.clone();
        let format = chunk
            .origin
            .as_ref()
            .map_or(Format::Unspecified, |o| o.format());
        if let Some(origin) = &chunk.origin {
            apply_origin(&mut base, origin);
        }
        base.observed_unix_nano = chunk.observed_time_unix_nano;
        let start = out.rows.len();
        match chunk.body {
            Some(chunk::Body::Lines(lines)) => {
                let truncated: HashSet<u32> = lines.truncated.iter().copied().collect();
                let mut data: &[u8] = &lines.data;
                if data.last() == Some(&b'\n') {
                    data = &data[..data.len() - 1];
                }
                if !lines.data.is_empty() {
                    let mut start = 0;
                    let ends = memchr::memchr_iter(b'\n', data).chain([data.len()]);
                    for (i, end) in ends.enumerate() {
                        let line = &data[start..end];
                        start = end + 1;
                        let mut row = base.clone();
                        row.seq = chunk.first_seq + i as u64;
                        line_row(&mut row, line, format, truncated.contains(&(i as u32)));
                        out.rows.push(row);
                    }
                }
            }
            Some(chunk::Body::Records(records)) => {
                for (i, record) in records.records.iter().enumerate() {
                    let mut row = base.clone();
                    row.seq = chunk.first_seq + i as u64;
                    pushed_row(&mut row, record);
                    out.rows.push(row);
                }
            }
            None => {}
        }
        for row in &mut out.rows[start..] {
            if row.time_unix_nano == 0 {
                row.time_unix_nano = row.observed_unix_nano;
                row.timestamp = (row.observed_unix_nano / 1_000_000_000) as u32;
            }
            if row.seq < req.first_seq || row.seq > req.last_seq {
                return Err(DecodeError::OutOfRange {
                    seq: row.seq,
                    first: req.first_seq,
                    last: req.last_seq,
                });
            }
            out.min_time = out.min_time.min(row.timestamp);
            out.max_time = out.max_time.max(row.timestamp);
        }
    }
    if out.rows.is_empty() {
        out.min_time = 0;
    }
    Ok(out)
}

/// How many records a chunk holds: its lines, or its pushed records.
fn records_in(chunk: &Chunk) -> u64 {
    match &chunk.body {
        Some(chunk::Body::Lines(lines)) if !lines.data.is_empty() => {
            let data: &[u8] = &lines.data;
            let newlines = data.iter().filter(|b| **b == b'\n').count() as u64;
            newlines + u64::from(data.last() != Some(&b'\n'))
        }
        Some(chunk::Body::Records(records)) => records.records.len() as u64,
        _ => 0,
    }
}

fn apply_resource(row: &mut LogRow, resource: &[KeyValue]) {
    for kv in resource {
        let value = kv.value.as_ref().map(text_of).unwrap_or_default();
        match kv.key.as_str() {
            "host.name" => row.host = value,
            "service.name" => row.service = value,
            "deployment.environment" | "deployment.environment.name" => row.environment = value,
            "logferry.agent.id" => {}
            _ => {
                row.resource_keys.push(kv.key.clone());
                row.resource_values.push(value);
            }
        }
    }
}

fn apply_origin(row: &mut LogRow, origin: &Origin) {
    row.source = origin.source.clone();
    row.file_path = origin.file_path.clone();
    if !origin.service_name.is_empty() {
        row.service = origin.service_name.clone();
    }
    apply_resource(row, &origin.attributes);
}

fn line_row(row: &mut LogRow, line: &[u8], format: Format, truncated: bool) {
    // Valid UTF-8 is checked at `from_utf8`'s speed; only a line that is
    // not takes the slower lossy pass.
    let text = match std::str::from_utf8(line) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    if format == Format::Json {
        if let Err(e) = fill_json(&text, row) {
            row.attr_keys.clear();
            row.attr_values.clear();
            row.attr_keys.push("logferry.parse_error".into());
            row.attr_values.push(e.to_string());
            detect_severity(row, &text);
            row.body = text.into_owned();
        }
    } else {
        detect_severity(row, &text);
        row.body = text.into_owned();
    }
    if truncated {
        row.attr_keys.push("logferry.truncated".into());
        row.attr_values.push("true".into());
    }
}

fn pushed_row(row: &mut LogRow, record: &LogRecord) {
    apply_resource(row, &record.resource);
    let mut fill = Fill::new(row);
    for kv in &record.attributes {
        fill.put(&kv.key, kv.value.as_ref().map(text_of).unwrap_or_default());
    }
    fill.finish();
    if record.time_unix_nano != 0 {
        row.time_unix_nano = record.time_unix_nano;
        row.timestamp = (record.time_unix_nano / 1_000_000_000) as u32;
    }
    if record.observed_time_unix_nano != 0 {
        row.observed_unix_nano = record.observed_time_unix_nano;
    }
    if !record.severity_text.is_empty() {
        set_severity(row, &record.severity_text);
    }
    if record.severity_number > 0 {
        row.severity_number = record.severity_number.clamp(1, 24) as u8;
    }
    if !record.body.is_empty() {
        row.body = record.body.clone();
    }
    if !record.trace_id.is_empty() {
        row.trace_id = hex::encode(&record.trace_id);
    }
    if !record.span_id.is_empty() {
        row.span_id = hex::encode(&record.span_id);
    }
}

pub(crate) fn text_of(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex::encode(b),
        None => String::new(),
    }
}

/// A level word near the start of a text line (`ERROR`, `[WARN]`, `INFO:`):
/// upper case only, so prose does not count.
fn detect_severity(row: &mut LogRow, text: &str) {
    let head = &text[..text.floor_char_boundary(160)];
    if let Some(word) = head.split(|c: char| !c.is_ascii_alphabetic()).find(|w| {
        w.len() >= 3 && w.bytes().all(|b| b.is_ascii_uppercase()) && severity_number(w) > 0
    }) {
        row.severity_text = word.to_string();
        row.severity_number = severity_number(word);
    }
}

/// The members of a JSON object, keys borrowed where they have no escapes,
/// values left as raw JSON text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Maps the members of a JSON object line onto the row. On an error the
/// row may hold some attributes; the caller clears them.
fn fill_json(line: &str, row: &mut LogRow) -> Result<(), serde_json::Error> {
    let members: Members = serde_json::from_str(line)?;
    let mut fill = Fill::new(row);
    for (key, raw) in &members.0 {
        let raw = raw.get();
        let value = match raw.as_bytes()[0] {
            b'"' => serde_json::from_str::<String>(raw)?,
            b'n' => continue,
            _ => raw.to_string(),
        };
        fill.put(key, value);
    }
    fill.finish();
    Ok(())
}

#[cfg(test)]
mod tests;
