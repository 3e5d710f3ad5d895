//! The collector's hot path: a batch of raw JSON lines into rows.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry_collector::decode::decode_batch;
use logferry_proto::{chunk, Chunk, ExportRequest, Format, Origin, RawLines};
use prost::Message;

fn batch(lines: u64) -> (ExportRequest, u64) {
    let mut data = String::new();
    for n in 0..lines {
        data.push_str(&format!(
            "{{\"timestamp\": \"2026-11-27T10:00:00.{n:06}+00:00\", \"level\": \"INFO\", \"logger\": \"Fast Users API\", \
             \"message\": \"API call: GET /api/v1/users/{n}\", \"module\": \"logging_middleware\", \"function\": \"dispatch\", \
             \"line\": 41, \"request_id\": \"req-{n}\", \"duration_ms\": 9.17, \"status_code\": 200, \"client_ip\": \"10.0.0.1\", \
             \"user_agent\": \"Mozilla/5.0\", \"event_type\": \"api_performance\", \"order_id\": {n}}}\n"
        ));
    }
    let bytes = data.len() as u64;
    let chunk = Chunk {
        first_seq: 0,
        origin: Some(Origin {
            source: "app".into(),
            file_path: "/var/log/app/api.log".into(),
            format: Format::Json as i32,
            service_name: "api".into(),
            attributes: vec![],
        }),
        observed_time_unix_nano: 1,
        body: Some(chunk::Body::Lines(RawLines {
            data: data.into_bytes().into(),
            ..Default::default()
        })),
    };
    let req = ExportRequest {
        agent_id: "bench".into(),
        first_seq: 0,
        last_seq: lines - 1,
        resource: vec![],
        chunks: vec![chunk.encode_to_vec().into()],
        report: None,
    };
    (req, bytes)
}

fn decode(c: &mut Criterion) {
    let (req, bytes) = batch(20_000);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("20k seed JSON lines", |b| {
        b.iter(|| decode_batch(&req, "default").expect("decodes").rows.len())
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
