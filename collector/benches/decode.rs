//! The collector's hot paths: a batch of raw JSON lines into rows,
//! stamping each row (pattern id, route, security class) for two shapes of
//! record (the seed's middleware lines, which name the request only in the
//! message, and request-shaped lines with separate `method` and `path`,
//! query strings included, and real user agents, as framework and
//! nginx-derived logs carry them), and the rows' INSERT: RowBinary, LZ4
//! and HTTP, into a local endpoint that reads the body and answers 200.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use logferry_collector::analyze::stamp as stamp_row;
use logferry_collector::decode::decode_batch;
use logferry_collector::record::LogRow;
use logferry_proto::{chunk, Chunk, ExportRequest, Format, Origin, RawLines};
use prost::Message;

fn seed_line(n: u64) -> String {
    format!(
        "{{\"timestamp\": \"2026-11-27T10:00:00.{n:06}+00:00\", \"level\": \"INFO\", \"logger\": \"Fast Users API\", \
         \"message\": \"API call: GET /api/v1/users/{n}\", \"module\": \"logging_middleware\", \"function\": \"dispatch\", \
         \"line\": 41, \"request_id\": \"req-{n}\", \"duration_ms\": 9.17, \"status_code\": 200, \"client_ip\": \"10.0.0.1\", \
         \"user_agent\": \"Mozilla/5.0\", \"event_type\": \"api_performance\", \"order_id\": {n}}}\n"
    )
}

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "python-httpx/0.27.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
];

const PATHS: [&str; 5] = [
    "/api/v1/orders?page={n}&limit=50",
    "/api/v1/users/{n}/profile",
    "/api/v1/products/search?q=item{n}&sort=price",
    "/api/v1/payments/{n}/charge",
    "/healthz",
];

fn request_line(n: u64) -> String {
    let path = PATHS[n as usize % PATHS.len()].replace("{n}", &n.to_string());
    let ua = USER_AGENTS[n as usize % USER_AGENTS.len()];
    format!(
        "{{\"timestamp\":\"2026-08-21T00:00:{:02}.{:03}Z\",\"level\":\"INFO\",\"logger\":\"app.api.orders\",\
         \"message\":\"request completed\",\"module\":\"orders\",\"function\":\"list_orders\",\"line\":61,\
         \"request_id\":\"{n:08x}5b1c2d3e4f60\",\"duration_ms\":31.270,\"status_code\":200,\"client_ip\":\"10.1.2.3\",\
         \"user_agent\":\"{ua}\",\"event_type\":\"http_request\",\"method\":\"GET\",\"path\":\"{path}\",\
         \"user_id\":\"user_{n}\"}}\n",
        n % 60,
        n % 1000
    )
}

fn batch(lines: u64) -> (ExportRequest, u64) {
    batch_of(lines, seed_line)
}

fn batch_of(lines: u64, line: fn(u64) -> String) -> (ExportRequest, u64) {
    let mut data = String::new();
    for n in 0..lines {
        data.push_str(&line(n));
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
        b.iter(|| {
            decode_batch(&req, "default", u64::MAX)
                .expect("decodes")
                .rows
                .len()
        })
    });
    g.finish();
}

fn stamp(c: &mut Criterion) {
    let mut g = c.benchmark_group("stamp");
    for (name, line) in [
        ("seed lines", seed_line as fn(u64) -> String),
        ("request-shaped lines", request_line),
    ] {
        let (req, _) = batch_of(2_000, line);
        let rows = decode_batch(&req, "default", u64::MAX)
            .expect("decodes")
            .rows;
        g.throughput(Throughput::Elements(rows.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || rows.clone(),
                |rows| {
                    for row in rows.iter_mut() {
                        black_box(stamp_row(row));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// The rows of a 20,000-line batch, stamped, written as `Store`'s insert
/// writes the baseline layout: the `clickhouse` crate's RowBinary with its
/// LZ4 compression, over HTTP to an endpoint that only reads the body (so
/// the figure is the collector's side of an insert, not ClickHouse's).
fn insert(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let sink = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        black_box(body.len());
    });
    rt.spawn(async move { axum::serve(listener, sink).await });
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    let mut g = c.benchmark_group("insert");
    for (name, line) in [
        ("20k seed rows", seed_line as fn(u64) -> String),
        ("20k request-shaped rows", request_line),
    ] {
        let (req, _) = batch_of(20_000, line);
        let mut rows = decode_batch(&req, "default", u64::MAX)
            .expect("decodes")
            .rows;
        for row in &mut rows {
            stamp_row(row);
        }
        g.throughput(Throughput::Elements(rows.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut insert = client.insert::<LogRow>("logs").await.expect("insert");
                    for row in &rows {
                        insert.write(row).await.expect("write");
                    }
                    insert.end().await.expect("answered");
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, stamp, insert);
criterion_main!(benches);
