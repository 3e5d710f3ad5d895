//! The gRPC contracts of logferry (package `logferry.v1`) and their generated
//! code. This crate is the only one that knows generated types; the agent and
//! the collector turn them into domain types at their edges.
//!
//! `Chunk` is also a storage format: the agent persists encoded chunks in its
//! queue and forwards those bytes unchanged, so its encoding is pinned by the
//! golden tests below.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("logferry.v1");
}

pub use generated::*;

/// The metadata key of a permanent refusal of a batch: its value is one of
/// the `REFUSAL_*` reasons. A refusal without it is transient.
pub const REFUSAL_KEY: &str = "logferry-refusal";
/// The batch itself is malformed: a chunk does not decode, a record lies
/// outside the batch's range, the identity is incomplete.
pub const REFUSAL_MALFORMED: &str = "malformed";
/// The batch holds more records than the collector takes in one batch.
pub const REFUSAL_TOO_LARGE: &str = "too-large";

/// The metadata key of a RESOURCE_EXHAUSTED answer of an overloaded
/// collector: how long to wait before sending the batch again, in ms.
pub const RETRY_AFTER_MS_KEY: &str = "logferry-retry-after-ms";

impl AnyValue {
    pub fn string(s: impl Into<String>) -> Self {
        AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        }
    }
}

impl KeyValue {
    pub fn string(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue::string(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A queued chunk written by an older agent must still decode: this pins
    /// the field numbers and wire types of everything a chunk holds.
    #[test]
    fn chunk_encoding_is_stable() {
        let chunk = Chunk {
            first_seq: 7,
            origin: Some(Origin {
                source: "app".into(),
                file_path: "/a".into(),
                format: Format::Json as i32,
                service_name: "s".into(),
                attributes: vec![KeyValue::string("k", "v")],
            }),
            observed_time_unix_nano: 1,
            body: Some(chunk::Body::Lines(RawLines {
                data: bytes::Bytes::from_static(b"x\n"),
                truncated: vec![0],
                file_offset: 3,
            })),
        };
        assert_eq!(
            hex(&chunk.encode_to_vec()),
            // first_seq=7 | origin (24 bytes): source, file_path, format,
            // service_name, attributes | observed_time (fixed64) | lines:
            // data, truncated (packed), file_offset
            "0807\
             12180a0361707012022f6118012201732a080a016b12030a0176\
             190100000000000000\
             22090a02780a1201001803"
        );
        assert_eq!(
            Chunk::decode(chunk.encode_to_vec().as_slice()).ok(),
            Some(chunk)
        );
    }

    #[test]
    fn pushed_record_encoding_is_stable() {
        let chunk = Chunk {
            first_seq: 1,
            origin: None,
            observed_time_unix_nano: 0,
            body: Some(chunk::Body::Records(PushedRecords {
                records: vec![LogRecord {
                    time_unix_nano: 2,
                    severity_number: 9,
                    body: "b".into(),
                    ..Default::default()
                }],
            })),
        };
        assert_eq!(
            hex(&chunk.encode_to_vec()),
            // first_seq=1 | records { record { time (fixed64), severity, body } }
            "08012a100a0e09020000000000000018092a0162"
        );
    }

    /// `ExportRequest.chunks` is `repeated bytes` holding encoded chunks; on
    /// the wire that is the same as `repeated Chunk`, which is what lets the
    /// agent forward stored bytes without decoding them.
    #[test]
    fn export_request_carries_chunks_verbatim() {
        let chunk = Chunk {
            first_seq: 5,
            ..Default::default()
        }
        .encode_to_vec();
        let req = ExportRequest {
            agent_id: "a".into(),
            first_seq: 5,
            last_seq: 5,
            resource: vec![],
            chunks: vec![bytes::Bytes::from(chunk.clone())],
            report: None,
        };
        let decoded = ExportRequest::decode(req.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.chunks[0].as_ref(), chunk.as_slice());
    }
}
