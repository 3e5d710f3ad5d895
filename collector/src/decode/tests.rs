use super::*;
use logferry_proto::{PushedRecords, RawLines};
use proptest::prelude::*;

fn decode_batch_all(req: &ExportRequest, tenant: &str) -> Result<Decoded, DecodeError> {
    decode_batch(req, tenant, u64::MAX)
}

fn lines_batch(format: Format, data: &[u8], truncated: Vec<u32>) -> ExportRequest {
    let chunk = Chunk {
        first_seq: 100,
        origin: Some(Origin {
            source: "app".into(),
            file_path: "/var/log/app/api.log".into(),
            format: format as i32,
            service_name: "api".into(),
            attributes: vec![KeyValue::string("team", "payments")],
        }),
        observed_time_unix_nano: 1_700_000_000_000_000_000,
        body: Some(chunk::Body::Lines(RawLines {
            data: data.to_vec().into(),
            truncated,
            file_offset: 0,
        })),
    };
    ExportRequest {
        agent_id: "agent-1".into(),
        first_seq: 100,
        last_seq: 199,
        resource: vec![
            KeyValue::string("host.name", "web-1"),
            KeyValue::string("deployment.environment", "prod"),
        ],
        chunks: vec![chunk.encode_to_vec().into()],
        report: None,
    }
}

const SEED_LINE: &str = r#"{"timestamp": "2025-08-14T11:01:46.503939+00:00", "level": "INFO", "logger": "Fast Users API", "message": "API call: GET /docs", "module": "logging_middleware", "function": "dispatch", "line": 41, "request_id": "d29c0fa5-cfa3-467d-8a8a-81bac38a1ac0", "duration_ms": 9.17, "status_code": 200, "client_ip": "127.0.0.1", "user_agent": "Mozilla/5.0", "event_type": "api_performance", "method": "GET", "path": "/docs", "order_id": 42, "tags": ["a", "b"], "note": null}"#;

#[test]
fn seed_json_lines_map_without_configuration() {
    let d = decode_batch_all(
        &lines_batch(Format::Json, format!("{SEED_LINE}\n").as_bytes(), vec![]),
        "t1",
    )
    .expect("decodes");
    let r = &d.rows[0];
    assert_eq!(r.time_unix_nano, 1_755_169_306_503_939_000);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (9, "INFO"));
    assert_eq!(r.body, "API call: GET /docs");
    assert_eq!(
        (
            r.logger.as_str(),
            r.module.as_str(),
            r.function.as_str(),
            r.line
        ),
        ("Fast Users API", "logging_middleware", "dispatch", 41)
    );
    assert_eq!(r.request_id, "d29c0fa5-cfa3-467d-8a8a-81bac38a1ac0");
    assert_eq!(
        (r.http_method.as_str(), r.http_path.as_str(), r.http_status),
        ("GET", "/docs", 200)
    );
    assert_eq!(r.duration_ms, 9.17);
    assert_eq!(
        (
            r.client_ip.as_str(),
            r.user_agent.as_str(),
            r.event_type.as_str()
        ),
        ("127.0.0.1", "Mozilla/5.0", "api_performance")
    );
    assert_eq!(r.attr_keys, vec!["order_id", "tags"]);
    assert_eq!(r.attr_values, vec!["42", r#"["a", "b"]"#]);
    assert_eq!(
        (r.service.as_str(), r.host.as_str(), r.environment.as_str()),
        ("api", "web-1", "prod")
    );
    assert_eq!(
        (r.resource_keys.clone(), r.resource_values.clone()),
        (vec!["team".to_string()], vec!["payments".to_string()])
    );
    assert_eq!(
        (r.tenant.as_str(), r.agent_id.as_str(), r.seq),
        ("t1", "agent-1", 100)
    );
    assert_eq!(r.file_path, "/var/log/app/api.log");
    assert_eq!((d.min_time, d.max_time), (1_755_169_306, 1_755_169_306));
}

#[test]
fn bad_lines_are_kept_and_marked() {
    let data = b"not json {\n\xff\xfebinary ERROR here\n[1,2]\n{\"message\": \"cut";
    let d = decode_batch_all(
        &lines_batch(Format::Json, &[&data[..], b"\n"].concat(), vec![3]),
        "",
    )
    .expect("decodes");
    assert_eq!(d.rows.len(), 4);
    assert_eq!(d.rows[0].body, "not json {");
    assert_eq!(d.rows[0].attr_keys, vec!["logferry.parse_error"]);
    assert_eq!(
        d.rows[1].body, "\u{fffd}\u{fffd}binary ERROR here",
        "invalid UTF-8 is replaced, not dropped"
    );
    assert_eq!(d.rows[1].severity_number, 17);
    assert_eq!(
        d.rows[2].attr_keys,
        vec!["logferry.parse_error"],
        "JSON that is not an object"
    );
    assert_eq!(
        d.rows[3].attr_keys,
        vec!["logferry.parse_error", "logferry.truncated"]
    );
    assert_eq!(
        d.rows[3].time_unix_nano, 1_700_000_000_000_000_000,
        "no time in the line: observed time"
    );
    assert_eq!(
        d.rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![100, 101, 102, 103]
    );
}

#[test]
fn text_lines_keep_the_whole_line() {
    let d = decode_batch_all(
        &lines_batch(
            Format::Text,
            b"2025-01-01 WARN disk almost full\nall is information\n",
            vec![],
        ),
        "",
    )
    .expect("decodes");
    assert_eq!(d.rows[0].body, "2025-01-01 WARN disk almost full");
    assert_eq!(d.rows[0].severity_number, 13);
    assert_eq!(d.rows[1].severity_number, 0, "prose is not a level");
}

#[test]
fn pushed_records_use_their_attributes_and_resource() {
    let chunk = Chunk {
        first_seq: 7,
        origin: Some(Origin {
            source: "push".into(),
            ..Default::default()
        }),
        observed_time_unix_nano: 5,
        body: Some(chunk::Body::Records(PushedRecords {
            records: vec![LogRecord {
                time_unix_nano: 2_000_000_000,
                severity_text: "error".into(),
                body: "boom".into(),
                attributes: vec![
                    KeyValue::string("http.response.status_code", "502"),
                    KeyValue::string("k", "v"),
                ],
                trace_id: vec![0xab, 0xcd].into(),
                resource: vec![KeyValue::string("service.name", "billing")],
                ..Default::default()
            }],
        })),
    };
    let req = ExportRequest {
        agent_id: "a".into(),
        first_seq: 7,
        last_seq: 7,
        resource: vec![],
        chunks: vec![chunk.encode_to_vec().into()],
        report: None,
    };
    let d = decode_batch(&req, "", u64::MAX).expect("decodes");
    let r = &d.rows[0];
    assert_eq!(
        (r.timestamp, r.severity_number, r.body.as_str()),
        (2, 17, "boom")
    );
    assert_eq!(
        (r.http_status, r.service.as_str(), r.trace_id.as_str()),
        (502, "billing", "abcd")
    );
    assert_eq!(r.attr_keys, vec!["k"]);
}

#[test]
fn rows_outside_the_batch_range_are_refused() {
    let mut req = lines_batch(Format::Text, b"a\nb\n", vec![]);
    req.last_seq = 100;
    assert!(matches!(
        decode_batch(&req, "", u64::MAX),
        Err(DecodeError::OutOfRange { seq: 101, .. })
    ));
    req.chunks = vec![bytes::Bytes::from_static(b"\xff\xff")];
    assert!(matches!(
        decode_batch(&req, "", u64::MAX),
        Err(DecodeError::Chunk { index: 0, .. })
    ));
}

#[test]
fn batches_of_too_many_records_are_refused_before_rows_are_made() {
    let req = lines_batch(Format::Text, &[b'\n'; 50], vec![]);
    let err = decode_batch(&req, "", 49).expect_err("50 empty lines, at most 49");
    assert!(matches!(
        err,
        DecodeError::TooManyRecords {
            records: 50,
            max: 49
        }
    ));
    assert!(
        err.to_string().contains("ingest.max_batch_records"),
        "{err}"
    );
    assert_eq!(decode_batch(&req, "", 50).expect("fits").rows.len(), 50);
}

#[test]
fn decoding_is_deterministic() {
    let req = lines_batch(
        Format::Json,
        format!("{SEED_LINE}\nplain\n").as_bytes(),
        vec![],
    );
    assert_eq!(
        decode_batch(&req, "", u64::MAX).expect("a").rows,
        decode_batch(&req, "", u64::MAX).expect("b").rows
    );
}

proptest! {
    /// Whatever the bytes, every line becomes exactly one row, in order,
    /// with consecutive sequence numbers (a text line: its whole line, as
    /// lossy UTF-8), and nothing panics.
    #[test]
    fn any_bytes_yield_one_row_per_line(
        lines in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..80), 1..30),
        json in any::<bool>(),
    ) {
        let mut data = Vec::new();
        for l in &lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        let format = if json { Format::Json } else { Format::Text };
        let mut req = lines_batch(format, &data, vec![]);
        req.last_seq = 100 + lines.len() as u64 - 1;
        let d = decode_batch(&req, "", lines.len() as u64).expect("decodes");
        prop_assert_eq!(d.rows.len(), lines.len());
        let refused = decode_batch(&req, "", lines.len() as u64 - 1);
        prop_assert!(matches!(refused, Err(DecodeError::TooManyRecords { .. })), "counted before decoding");
        for (i, row) in d.rows.iter().enumerate() {
            prop_assert_eq!(row.seq, 100 + i as u64);
            if !json {
                prop_assert_eq!(&row.body, &String::from_utf8_lossy(&lines[i]));
            }
        }
    }
}
