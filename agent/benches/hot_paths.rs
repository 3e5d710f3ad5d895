//! The agent's hot paths: framing lines, redacting them, a chunk's trip
//! through the queue (commit, cut into a batch, acknowledge), and a batch
//! made ready for the wire.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry_agent::config::{Format, SourceConfig};
use logferry_agent::metrics::Metrics;
use logferry_agent::queue::Queue;
use logferry_agent::redact::{built_in_names, Redactor};
use logferry_agent::tail::count_lines;
use logferry_agent::tail::framer::{Framer, Lines};
use logferry_proto::{chunk, Chunk, ExportRequest, RawLines};
use prost::Message;

fn seed_lines(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 512);
    let mut n = 0u64;
    while out.len() < bytes {
        out.extend_from_slice(
            format!(
                "{{\"timestamp\": \"2026-11-27T10:00:00.{n:06}+00:00\", \"level\": \"INFO\", \"logger\": \"Fast Users API\", \
                 \"message\": \"API call: GET /api/v1/users/{n}\", \"module\": \"logging_middleware\", \"function\": \"dispatch\", \
                 \"line\": 41, \"request_id\": \"req-{n}\", \"duration_ms\": 9.17, \"status_code\": 200, \"client_ip\": \"10.0.0.1\", \
                 \"user_agent\": \"Mozilla/5.0\", \"event_type\": \"api_performance\"}}\n"
            )
            .as_bytes(),
        );
        n += 1;
    }
    out
}

fn framing(c: &mut Criterion) {
    let data = seed_lines(8 << 20);
    let mut g = c.benchmark_group("framer");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("feed 8 MiB in 1 MiB reads", |b| {
        b.iter(|| {
            let mut f = Framer::new(1 << 20, false);
            let mut total = 0;
            for read in data.chunks(1 << 20) {
                let mut out = Lines::default();
                f.feed(read, &mut out);
                total += out.count;
            }
            total
        })
    });
    // What the tailer adds per committed read: the metrics and, for JSON
    // sources, the check that each line is a JSON object.
    let mut framed = Lines::default();
    Framer::new(1 << 20, false).feed(&data, &mut framed);
    let metrics = Metrics::new();
    for format in [Format::Json, Format::Text] {
        let source = SourceConfig {
            name: "app".into(),
            format,
            ..SourceConfig::default()
        };
        let name = format!("count 8 MiB of lines, {format:?} source");
        g.bench_function(name, |b| b.iter(|| count_lines(&metrics, &source, &framed)));
    }
    g.finish();
}

fn queue_round_trip(c: &mut Criterion) {
    let data = seed_lines(1 << 20);
    let count = data.iter().filter(|b| **b == b'\n').count() as u32;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for sync in [false, true] {
        let q = Queue::open(
            &dir.path().join(format!("sync-{sync}")),
            1 << 34,
            sync,
            16 << 20,
        )
        .expect("queue");
        let name = if sync {
            "commit+cut+ack 1 MiB, fsync"
        } else {
            "commit+cut+ack 1 MiB, no fsync"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let chunk = Chunk {
                    body: Some(chunk::Body::Lines(RawLines {
                        data: data.clone().into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                };
                q.commit(count, chunk, Some((b"ckpt", b"pos")))
                    .expect("commit");
                let batch = q
                    .cut_batch(u64::MAX, u64::MAX)
                    .expect("cut")
                    .expect("batch");
                q.ack(&batch.manifest).expect("ack");
            })
        });
    }
    g.finish();
}

/// Every built-in detector over 8 MiB of seed lines, which hold nothing to
/// hide (the common case: one set scan a line), and over the same lines
/// with an e-mail address in each.
fn redaction(c: &mut Criterion) {
    let names: Vec<String> = built_in_names().map(str::to_string).collect();
    let r = Redactor::new(&names, &[]).expect("valid").expect("some");
    let clean = seed_lines(8 << 20);
    let dirty: Vec<u8> = clean
        .split_inclusive(|b| *b == b'\n')
        .flat_map(|l| [b"user bob@example.com ".as_slice(), l].concat())
        .collect();
    let mut g = c.benchmark_group("redact");
    for (name, data) in [("clean", &clean), ("an e-mail a line", &dirty)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("every built-in detector, 8 MiB, {name}"), |b| {
            b.iter(|| {
                let mut found = vec![0; names.len()];
                data.split_inclusive(|b| *b == b'\n')
                    .map(|l| r.redact(l, &mut found).len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

/// A batch of 16 MiB (the default `forward.batch_max_bytes`) as it is
/// sent: cut from the queue in 1 MiB chunks, the request encoded, and
/// compressed with zstd as tonic compresses a message (a streaming encoder
/// at zstd's default level, copied through).
fn batch_encode(c: &mut Criterion) {
    let data = seed_lines(16 << 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 34, false, 64 << 20).expect("queue");
    // 1 MiB reads, framed into chunks as the tailer frames them.
    let mut framer = Framer::new(1 << 20, false);
    for read in data.chunks(1 << 20) {
        let mut lines = Lines::default();
        framer.feed(read, &mut lines);
        let chunk = Chunk {
            body: Some(chunk::Body::Lines(RawLines {
                data: lines.data.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        q.commit(lines.count, chunk, None).expect("commit");
    }
    let batch = q
        .cut_batch(u64::MAX, u64::MAX)
        .expect("cut")
        .expect("batch");
    let request = ExportRequest {
        agent_id: "bench".into(),
        first_seq: batch.manifest.first_seq,
        last_seq: batch.manifest.last_seq,
        resource: vec![],
        chunks: batch.chunks,
        report: None,
    };
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(request.encoded_len() as u64));
    g.bench_function("encode + zstd a 16 MiB batch of seed lines", |b| {
        b.iter(|| {
            let encoded = request.encode_to_vec();
            let mut zstd = zstd::stream::read::Encoder::new(
                encoded.as_slice(),
                zstd::DEFAULT_COMPRESSION_LEVEL,
            )
            .expect("encoder");
            let mut out = Vec::with_capacity(encoded.len() / 4);
            std::io::copy(&mut zstd, &mut out).expect("compress");
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, framing, redaction, queue_round_trip, batch_encode);
criterion_main!(benches);
