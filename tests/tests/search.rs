//! The query API against a real ClickHouse with seeded rows: every filter,
//! the query syntax and its errors, both orders, cursor paging (also while
//! rows arrive), HTTP and gRPC agreeing, and the OpenAPI document.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use logferry_e2e::api::{insert_rows, Stack, USER_PASSWORD};
use logferry_e2e::now_ns;
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::SearchRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};

const N: u64 = 300;

/// One seeded row, kept to compute what each search must return.
#[derive(Debug, Clone)]
struct Row {
    tenant: &'static str,
    ns: u64,
    seq: u64,
    service: &'static str,
    level: u8,
    status: u16,
    duration: f64,
    path: String,
    body: String,
    host: String,
    env: &'static str,
    order_id: u64,
}

fn rows(now: u64) -> Vec<Row> {
    (0..N)
        .map(|i| Row {
            tenant: if i % 6 == 5 { "globex" } else { "acme" },
            // One row every 5 s over the last 25 minutes, with nanoseconds.
            ns: now - 60_000_000_000 - i * 5_000_000_000 + i,
            seq: i,
            service: if i % 3 == 0 { "web" } else { "api" },
            level: match i % 10 {
                0 => 17,
                1 => 13,
                _ => 9,
            },
            status: if i % 7 == 0 {
                500
            } else if i % 11 == 0 {
                404
            } else {
                200
            },
            duration: i as f64 * 10.0,
            path: if i % 5 == 0 {
                "/health".into()
            } else {
                format!("/items/{i}")
            },
            body: if i % 13 == 0 {
                format!("upstream Timeout after {i}s")
            } else {
                format!("request {i} handled")
            },
            host: format!("h{}", i % 2),
            env: if i % 4 == 0 { "staging" } else { "prod" },
            order_id: i % 20,
        })
        .collect()
}

fn json_row(r: &Row) -> Value {
    json!({
        "tenant": r.tenant,
        "timestamp": r.ns / 1_000_000_000,
        "time_unix_nano": r.ns,
        "severity_number": r.level,
        "severity_text": match r.level { 17 => "ERROR", 13 => "WARNING", _ => "INFO" },
        "service": r.service,
        "host": r.host,
        "environment": r.env,
        "body": r.body,
        "request_id": format!("req-{}", r.seq),
        "trace_id": format!("tr-{}", r.seq),
        "http_method": "GET",
        "http_path": r.path,
        "http_status": r.status,
        "duration_ms": r.duration,
        "attr_keys": ["order_id", "size"],
        "attr_values": [r.order_id.to_string(), r.seq.to_string()],
        "agent_id": "agent-a",
        "seq": r.seq,
    })
}

fn seqs(reply: &Value) -> Vec<u64> {
    reply["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {reply}"))
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

fn expected(rows: &[Row], tenant: &str, keep: impl Fn(&Row) -> bool) -> BTreeSet<u64> {
    rows.iter()
        .filter(|r| r.tenant == tenant && keep(r))
        .map(|r| r.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_and_the_query_syntax_over_http_and_grpc() {
    let stack = Stack::start("search", None, "").await;
    let now = now_ns();
    let data = rows(now);
    insert_rows(
        &stack.ch.url(),
        "search",
        &data.iter().map(json_row).collect::<Vec<_>>(),
    )
    .await;
    let http = &stack.http;
    let ana = http.login("ana", USER_PASSWORD).await;

    type Case = (Vec<(&'static str, String)>, Box<dyn Fn(&Row) -> bool>);
    let cases: Vec<Case> = vec![
        (vec![], Box::new(|_| true)),
        (vec![("level", "error".into())], Box::new(|r| r.level == 17)),
        (
            vec![("level", "warn,error".into())],
            Box::new(|r| r.level >= 13),
        ),
        (
            vec![("service", "web".into())],
            Box::new(|r| r.service == "web"),
        ),
        (vec![("host", "h1".into())], Box::new(|r| r.host == "h1")),
        (
            vec![("environment", "staging".into())],
            Box::new(|r| r.env == "staging"),
        ),
        (
            vec![("text", "TIMEOUT".into())],
            Box::new(|r| r.body.contains("Timeout")),
        ),
        (
            vec![("request_id", "req-42".into())],
            Box::new(|r| r.seq == 42),
        ),
        (
            vec![("trace_id", "tr-43".into())],
            Box::new(|r| r.seq == 43),
        ),
        (
            vec![("q", "status_code>=500".into())],
            Box::new(|r| r.status >= 500),
        ),
        (
            vec![("q", "duration_ms>1000".into())],
            Box::new(|r| r.duration > 1000.0),
        ),
        (
            vec![("q", "attr.order_id=7".into())],
            Box::new(|r| r.order_id == 7),
        ),
        (
            vec![("q", "order_id:7".into())],
            Box::new(|r| r.order_id == 7),
        ),
        (
            vec![("q", "attr.size:>=290".into())],
            Box::new(|r| r.seq >= 290),
        ),
        (
            vec![(
                "q",
                r#"level:error service:api status:>=500 "timeout" -path:/health"#.into(),
            )],
            Box::new(|r| {
                r.level == 17
                    && r.service == "api"
                    && r.status >= 500
                    && r.body.contains("Timeout")
                    && r.path != "/health"
            }),
        ),
        (
            vec![("q", "(service:web OR level:warn) AND NOT host:h0".into())],
            Box::new(|r| (r.service == "web" || r.level == 13) && r.host != "h0"),
        ),
        (
            vec![("q", "path:/items/1*".into())],
            Box::new(|r| r.path.starts_with("/items/1")),
        ),
        (
            vec![("q", "-status:200".into())],
            Box::new(|r| r.status != 200),
        ),
        (
            vec![("q", "message:handled status:404".into())],
            Box::new(|r| r.body.contains("handled") && r.status == 404),
        ),
        // Rows are 60 s + 5 s * seq old when seeded: 722 s back from
        // then reaches seq 132, however late the search runs.
        (
            vec![
                ("last", "722s".into()),
                ("to", (now / 1_000_000).to_string()),
            ],
            Box::new(|r| r.seq <= 132),
        ),
        (
            vec![
                ("from", ((now - 900_000_000_000) / 1_000_000).to_string()),
                ("to", ((now - 300_000_000_000) / 1_000_000).to_string()),
            ],
            Box::new(move |r| {
                r.ns >= (now - 900_000_000_000) / 1_000_000 * 1_000_000
                    && r.ns <= (now - 300_000_000_000) / 1_000_000 * 1_000_000
            }),
        ),
    ];
    let mut grpc = QueryServiceClient::connect(stack.collector.grpc_url())
        .await
        .expect("grpc connects");
    for (params, keep) in &cases {
        let mut p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.push(("limit", "1000"));
        let reply = http.search(&ana, &p).await;
        assert_eq!(reply.status, StatusCode::OK, "{params:?}: {}", reply.body);
        let got = seqs(&reply.body);
        let want = expected(&data, "acme", keep);
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            want,
            "{params:?}"
        );
        assert_eq!(got.len(), want.len(), "{params:?}: no duplicates");
        assert!(
            got.windows(2)
                .all(|w| data[w[0] as usize].ns > data[w[1] as usize].ns),
            "{params:?}: newest first"
        );
        // The same search over gRPC returns the same records.
        let mut req = SearchRequest {
            limit: 1000,
            ..Default::default()
        };
        for (k, v) in params {
            match *k {
                "q" => req.query = v.clone(),
                "level" => req.severity = v.clone(),
                "service" => req.service = v.clone(),
                "host" => req.host = v.clone(),
                "environment" => req.environment = v.clone(),
                "text" => req.text = v.clone(),
                "request_id" => req.request_id = v.clone(),
                "trace_id" => req.trace_id = v.clone(),
                "last" => req.last = v.clone(),
                "from" => req.from = v.clone(),
                "to" => req.to = v.clone(),
                other => panic!("unmapped {other}"),
            }
        }
        let mut request = tonic::Request::new(req);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ana}").parse().expect("ascii"),
        );
        let resp = grpc
            .search(request)
            .await
            .expect("grpc search")
            .into_inner();
        let grpc_seqs: Vec<u64> = resp.records.iter().map(|r| r.seq).collect();
        assert_eq!(grpc_seqs, got, "{params:?}: gRPC agrees with HTTP");
    }

    // Fields come back mapped.
    let reply = http.search(&ana, &[("request_id", "req-42")]).await;
    let rec = &reply.body["records"][0];
    assert_eq!(
        (rec["http_status"].as_u64(), rec["service"].as_str()),
        (Some(500), Some("web"))
    );
    assert_eq!(rec["attributes"]["order_id"], "2");
    assert_eq!(rec["tenant"], "acme");

    // Oldest first.
    let reply = http
        .search(&ana, &[("order", "oldest"), ("limit", "3")])
        .await;
    let acme: Vec<&Row> = data.iter().filter(|r| r.tenant == "acme").collect();
    let oldest: Vec<u64> = acme.iter().rev().take(3).map(|r| r.seq).collect();
    assert_eq!(seqs(&reply.body), oldest);

    // Syntax errors point at the mistake, on both APIs.
    for (q, pos) in [
        ("level:error (service:api", 24),
        ("status:abc", 0),
        ("a:1 OR", 6),
    ] {
        let reply = http.search(&ana, &[("q", q)]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(reply.body["error"]["code"], "invalid_query", "{q}");
        assert_eq!(reply.body["error"]["position"], pos, "{q}: {}", reply.body);
        let mut request = tonic::Request::new(SearchRequest {
            query: q.into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ana}").parse().expect("ascii"),
        );
        let status = grpc.search(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains(&format!("position {pos}")),
            "{}",
            status.message()
        );
    }
    for bad in [
        vec![("limit", "5000")],
        vec![("order", "up")],
        vec![("from", "yesterday")],
        vec![("cursor", "xyz")],
    ] {
        let reply = http.search(&ana, &bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }

    // Cursor paging walks every row once, in both orders.
    for order in ["newest", "oldest"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut p = vec![("limit", "7"), ("order", order)];
            if let Some(c) = &cursor {
                p.push(("cursor", c));
            }
            let reply = http.search(&ana, &p).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            seen.extend(seqs(&reply.body));
            match reply.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), acme.len(), "{order}");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            acme.len(),
            "{order}: no repeats"
        );
    }

    // Field autocomplete from the catalogue.
    let reply = http
        .get("/api/v1/logs/fields?service=api", Some(&ana))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let fields = reply.body.as_array().expect("a list");
    let order_id = fields
        .iter()
        .find(|f| f["name"] == "order_id")
        .expect("order_id attribute");
    assert_eq!(order_id["kind"], "attribute");
    assert!(order_id["top_values"]
        .as_array()
        .is_some_and(|v| !v.is_empty() && v.len() <= 10));
    assert!(fields
        .iter()
        .any(|f| f["name"] == "status" && f["kind"] == "column"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_that_reads_too_much_is_refused() {
    let stack = Stack::start("limits", None, "max_rows_to_read = 100").await;
    let now = now_ns();
    insert_rows(
        &stack.ch.url(),
        "limits",
        &rows(now).iter().map(json_row).collect::<Vec<_>>(),
    )
    .await;
    let reply = stack
        .http
        .search(&stack.admin, &[("q", "\"handled\""), ("limit", "1000")])
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "query_too_expensive");
    assert!(reply.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("narrow the time range")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_rows_arrive_neither_skips_nor_repeats() {
    let stack = Stack::start("paging", None, "").await;
    let now = now_ns();
    let initial: Vec<Value> = (0..2000u64)
        .map(|i| {
            let ns = now - 50 * 60_000_000_000 + i * 1_000_000_000;
            json!({"tenant": "acme", "timestamp": ns / 1_000_000_000, "time_unix_nano": ns,
                   "body": format!("initial {i}"), "agent_id": "a", "seq": i})
        })
        .collect();
    insert_rows(&stack.ch.url(), "paging", &initial).await;
    let ch_url = stack.ch.url();
    // A writer adds rows all over the walked range, and newer ones, while
    // the walk goes on.
    let writer = tokio::spawn(async move {
        for round in 0..40u64 {
            let batch: Vec<Value> = (0..25u64)
                .map(|j| {
                    let k = round * 25 + j;
                    let ns = now - 55 * 60_000_000_000 + (k * 7_919 % 3_600) * 1_000_000_000 + 3;
                    json!({"tenant": "acme", "timestamp": ns / 1_000_000_000, "time_unix_nano": ns,
                           "body": format!("late {k}"), "agent_id": "b", "seq": k})
                })
                .collect();
            insert_rows(&ch_url, "paging", &batch).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut p = vec![("limit", "50"), ("last", "2h")];
        if let Some(c) = &cursor {
            p.push(("cursor", c));
        }
        let reply = stack.http.search(&stack.admin, &p).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        for r in reply.body["records"].as_array().expect("records") {
            seen.push((
                r["agent_id"].as_str().expect("agent").into(),
                r["seq"].as_u64().expect("seq"),
            ));
        }
        pages += 1;
        match reply.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    writer.await.expect("writer");
    let unique: HashSet<&(String, u64)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was repeated");
    for i in 0..2000u64 {
        assert!(
            unique.contains(&("a".to_string(), i)),
            "initial row {i} skipped"
        );
    }
    assert!(
        pages > 40,
        "the walk took {pages} pages, overlapping the writer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint_and_the_docs_page_is_self_contained() {
    let stack = Stack::start("openapi", None, "").await;
    let http = &stack.http;
    let doc = http.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().expect("paths");
    for required in [
        "/api/v1/auth/login",
        "/api/v1/auth/tokens",
        "/api/v1/logs/search",
        "/api/v1/logs/tail",
        "/api/v1/users",
        "/api/v1/tenants",
        "/api/v1/agents",
    ] {
        assert!(paths.contains_key(required), "{required} missing");
    }
    // Every documented operation exists (no 404/405), and every one but
    // login refuses a caller without a token.
    for (path, item) in paths {
        for method in item.as_object().expect("operations").keys() {
            let url = path
                .replace("{id}", "x")
                .replace("{username}", "x")
                .replace("{name}", "x");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = json!({});
            let reply = http.call(m, &url, None, Some(&body)).await;
            if path == "/api/v1/auth/login" {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path}: {}",
                    reply.body
                );
            }
        }
    }
    let page = http
        .client
        .get(format!("{}/docs", http.base))
        .send()
        .await
        .expect("docs");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("/api/v1/openapi.json"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );
    let missing = http.get("/api/v1/nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
