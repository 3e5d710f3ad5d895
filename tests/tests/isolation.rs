//! The holes found from outside, closed: an attacker holding one tenant's
//! credentials (an admin's session, an agent credential) reaches no byte
//! of another tenant's logs through alert rules, cannot pre-empt or erase
//! another tenant's batches by presenting its agent id, and cannot exhaust
//! the collector's memory with one batch of tiny records.

use std::time::{Duration, Instant};

use logferry_e2e::api::{export_batch as batch, insert_rows, ship, Stack, USER_PASSWORD};
use logferry_e2e::now_ns;
use logferry_e2e::wait_until;
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::AnalyticsRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ALERTS: &str = "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\ndefault_rules = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_never_read_another_tenants_logs() {
    let stack = Stack::start_with("isolation_alerts", None, "", ALERTS).await;
    // Errors and warnings of both tenants, within the rules' window.
    let now = now_ns();
    let rows: Vec<Value> = (0..8u64)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let (level, text) = if i % 4 < 2 {
                (17, "ERROR")
            } else {
                (13, "WARN")
            };
            let ns = now - 2_000_000_000 + i;
            json!({"tenant": tenant, "timestamp": ns / 1_000_000_000, "time_unix_nano": ns,
                   "severity_number": level, "severity_text": text, "service": "x",
                   "body": format!("Login failed for user {i} BODY{}", tenant.to_uppercase()),
                   "agent_id": "seeded", "seq": i})
        })
        .collect();
    insert_rows(&stack.ch.url(), &stack.database, &rows).await;

    let ada = stack.http.login("ada", USER_PASSWORD).await;
    for (name, query) in [
        ("reach", "tenant:globex"),
        ("widen", "service:x OR tenant:globex"),
        ("levels", "level:error OR level:warn"),
    ] {
        let r = stack
            .http
            .post(
                "/api/v1/alerts/rules",
                Some(&ada),
                &json!({"name": name, "tenant": "acme", "kind": "count", "query": query,
                        "group_by": "body", "threshold": 0, "window_s": 600}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {:?}", r.body);
    }
    // The `levels` rule matches acme's four rows: once its groups are
    // stored, every rule has been evaluated at least once.
    let states = |tenant: &str, pattern: &str| {
        stack.ch.count(&format!(
            "SELECT count() FROM {}.alert_states WHERE tenant = '{tenant}' \
             AND (group_key LIKE '%{pattern}%' OR summary LIKE '%{pattern}%')",
            stack.database
        ))
    };
    assert!(
        wait_until(Duration::from_secs(30), || states("acme", "BODYACME") >= 4),
        "acme's rule found acme's rows: {}",
        stack.collector.proc.log_text()
    );
    assert_eq!(
        states("acme", "BODYGLOBEX"),
        0,
        "no globex row in acme's alerts"
    );
    assert_eq!(
        stack.ch.count(&format!(
            "SELECT count() FROM {}.alert_history WHERE tenant = 'acme' AND (group_key LIKE '%BODYGLOBEX%' OR summary LIKE '%BODYGLOBEX%')",
            stack.database
        )),
        0
    );

    let mut views = Vec::new();
    for path in [
        "/api/v1/logs/alerts/active?last=1h",
        "/api/v1/logs/alerts/history?last=1h",
        "/api/v1/alerts/rules",
    ] {
        let r = stack.http.get(path, Some(&ada)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        views.push((path.to_string(), r.body.to_string()));
    }
    let mut grpc = QueryServiceClient::connect(stack.collector.grpc_url())
        .await
        .expect("grpc");
    for view in ["alerts/active", "alerts/history"] {
        let mut request = tonic::Request::new(AnalyticsRequest {
            view: view.into(),
            last: "1h".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ada}").parse().expect("ascii"),
        );
        let reply = grpc.analytics(request).await.expect("grpc").into_inner();
        views.push((format!("gRPC {view}"), reply.json));
    }
    for (view, body) in &views {
        assert!(
            !body.contains("BODYGLOBEX"),
            "{view} shows globex's logs: {body}"
        );
    }
    assert!(
        views[0].1.contains("BODYACME"),
        "the active view shows acme's own alerts: {}",
        views[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_agent_id_is_refused_and_erases_nothing() {
    let stack = Stack::start("isolation_batches", None, "").await;
    let (_, acme_file) = stack.agent_token_file("acme").await;
    let (_, globex_file) = stack.agent_token_file("globex").await;
    let acme = std::fs::read_to_string(acme_file).expect("token");
    let globex = std::fs::read_to_string(globex_file).expect("token");
    let endpoint = stack.collector.endpoint();
    let lines =
        |who: &str, n: u64| -> Vec<String> { (0..n).map(|i| format!("{who} line {i}")).collect() };

    // acme's agent ships its first batch: its id is now acme's.
    let first = ship(
        &endpoint,
        &acme,
        batch("agent-acme-1", 0, &lines("acme", 10)),
    )
    .await
    .expect("acme's first batch");
    assert_eq!((first.stored, first.duplicate), (10, false));

    // globex's credential presents that id with the range acme's agent is
    // about to use: refused, and recorded for both tenants.
    let forged = ship(
        &endpoint,
        &globex,
        batch("agent-acme-1", 10, &lines("globex", 10)),
    )
    .await
    .expect_err("another credential's agent id");
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    assert!(
        forged.message().contains("belongs to another credential"),
        "{forged:?}"
    );

    // acme's real batch of that range is stored, every record of it.
    let real = ship(
        &endpoint,
        &acme,
        batch("agent-acme-1", 10, &lines("acme", 10)),
    )
    .await
    .expect("acme's second batch");
    assert_eq!((real.stored, real.duplicate), (10, false));
    let db = &stack.database;
    assert_eq!(
        stack.ch.count(&format!(
            "SELECT count() FROM {db}.logs WHERE agent_id = 'agent-acme-1' AND tenant = 'acme' AND body LIKE 'acme line%'"
        )),
        20
    );
    assert_eq!(
        stack.ch.count(&format!(
            "SELECT count() FROM {db}.logs WHERE tenant = 'globex'"
        )),
        0
    );
    assert_eq!(
        stack.ch.count(&format!(
            "SELECT count() FROM {db}.security_events WHERE kind = 'agent_id_conflict' AND tenant IN ('acme', 'globex')"
        )),
        2,
        "one event for each tenant"
    );

    // A batch identity is per tenant in the ledger too: globex, shipping
    // under a fresh id of its own, never meets acme's entries.
    let own = ship(
        &endpoint,
        &globex,
        batch("agent-globex-1", 0, &lines("globex", 5)),
    )
    .await
    .expect("globex's own batch");
    assert_eq!((own.stored, own.duplicate), (5, false));
    assert_eq!(
        stack.ch.count(&format!(
            "SELECT count() FROM {db}.ingest_batches WHERE state = 2 AND tenant = 'globex'"
        )),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_tiny_records_cannot_exhaust_memory() {
    let stack = Stack::start("isolation_memory", None, "").await;
    let (_, file) = stack.agent_token_file("acme").await;
    let token = std::fs::read_to_string(file).expect("token");
    let endpoint = stack.collector.endpoint();
    // Warm up: the first batch opens the connection pools and caches.
    ship(
        &endpoint,
        &token,
        batch("mem-agent", 0, &["warm".to_string()]),
    )
    .await
    .expect("warm-up batch");
    let peak = || stack.collector.proc.usage().expect("collector usage").1;
    let before = peak();

    // 500,000 empty lines: 0.5 MiB on the wire, refused before any row.
    let empty = vec![String::new(); 500_000];
    let started = Instant::now();
    let refused = ship(&endpoint, &token, batch("mem-agent", 1, &empty))
        .await
        .expect_err("more records than ingest.max_batch_records");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.metadata().get(logferry_proto::REFUSAL_KEY),
        Some(&tonic::metadata::MetadataValue::from_static(
            logferry_proto::REFUSAL_TOO_LARGE
        )),
        "a refusal no resend can change says so: {refused:?}"
    );
    assert!(
        refused.message().contains("max_batch_records") && refused.message().contains("500000"),
        "a reason the agent's operator can act on: {refused:?}"
    );
    let after_refused = peak();
    assert!(
        after_refused - before < 32.0,
        "refusing 500,000 empty records grew the collector's peak RSS by {:.0} MiB",
        after_refused - before
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // The most a batch may hold, 100,000 empty lines: stored, within the
    // README's bound (wire size x 3 + 1 KiB a record, here about 100 MiB).
    let most = vec![String::new(); 100_000];
    let stored = ship(&endpoint, &token, batch("mem-agent", 1, &most))
        .await
        .expect("a batch at the limit");
    assert_eq!(stored.stored, 100_000);
    let grown = peak() - before;
    eprintln!(
        "peak RSS growth: {:.1} MiB refusing 500,000 empty records, {grown:.1} MiB storing 100,000",
        after_refused - before
    );
    assert!(
        grown < 100.0,
        "storing 100,000 empty records grew the collector's peak RSS by {grown:.0} MiB"
    );
}
