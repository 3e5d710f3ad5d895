//! Bounded by construction: what a client of the HTTP API can do without
//! (or with) a credential to the collector's memory, connections, lockout,
//! metrics and error answers, and the health view's scope.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use logferry_e2e::api::{insert_rows, urlencode, Stack, ADMIN_PASSWORD, USER_PASSWORD};
use logferry_e2e::now_ns;
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::SearchRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_with_huge_usernames_do_not_grow_memory() {
    let stack = Stack::start("hardening_logins", None, "").await;
    let peak = || stack.collector.proc.usage().expect("usage").1;
    // Warm up the login path (argon2's memory, connection pools).
    for i in 0..3 {
        stack
            .http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": format!("warm{i}"), "password": "x"}),
            )
            .await;
    }
    let before = peak();
    for i in 0..300 {
        let username = format!("{i}{}", "u".repeat(200_000));
        let r = stack
            .http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": username, "password": "wrong"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    let grown = peak() - before;
    eprintln!("peak RSS growth after 300 failed logins with 200 KB usernames: {grown:.1} MiB");
    assert!(grown < 16.0, "grew by {grown:.0} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_outrun_the_lockout() {
    let stack = Stack::start("hardening_lockout", None, "").await;
    let guesses = (0..10).map(|i| {
        let http = &stack.http;
        async move {
            http.post(
                "/api/v1/auth/login",
                None,
                &json!({"username": "root", "password": format!("guess {i}")}),
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let checked = stack.ch.count(&format!(
        "SELECT count() FROM {}.security_events WHERE username = 'root' AND kind = 'login_failed'",
        stack.database
    ));
    assert_eq!(
        checked, 5,
        "passwords checked: the lockout's number, {statuses:?}"
    );
    assert_eq!(refused, 5, "{statuses:?}");
    // The right password is refused too while locked out.
    let r = stack
        .http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "root", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Whether the server closed the connection within `within`.
fn closed_within(
    mut conn: TcpStream,
    within: Duration,
    mut dribble: impl FnMut(&mut TcpStream),
) -> bool {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        dribble(&mut conn);
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or other answer before closing is fine too.
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let stack = Stack::start("hardening_slow", None, "header_read_timeout_ms = 2000\n").await;
    let addr = ("127.0.0.1", stack.collector.http_port);
    // Idle: connects and sends nothing.
    let idle = TcpStream::connect(addr).expect("connect");
    // Partial headers, then nothing.
    let mut partial = TcpStream::connect(addr).expect("connect");
    partial
        .write_all(b"GET /api/v1/logs/search HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    // A byte every 500 ms, never finishing the headers.
    let dribbler = TcpStream::connect(addr).expect("connect");
    dribbler
        .try_clone()
        .expect("clone")
        .write_all(b"GET / HTTP/1.1\r\n")
        .expect("write");
    // Idle connections to the gRPC ports: ingest and queries.
    let idle_ingest = TcpStream::connect(("127.0.0.1", stack.collector.port)).expect("connect");
    let idle_query = TcpStream::connect(("127.0.0.1", stack.collector.grpc_port)).expect("connect");
    let limit = Duration::from_secs(8);
    let (a, b, c) = tokio::task::spawn_blocking(move || {
        assert!(
            closed_within(idle_ingest, limit, |_| {}),
            "an idle ingest connection stayed open"
        );
        assert!(
            closed_within(idle_query, limit, |_| {}),
            "an idle gRPC query connection stayed open"
        );
        let a = closed_within(idle, limit, |_| {});
        let b = closed_within(partial, limit, |_| {});
        let mut last = Instant::now();
        let c = closed_within(dribbler, limit, |conn| {
            if last.elapsed() >= Duration::from_millis(500) {
                let _ = conn.write_all(b"X");
                last = Instant::now();
            }
        });
        (a, b, c)
    })
    .await
    .expect("joins");
    assert!(a, "an idle connection stayed open");
    assert!(b, "a connection with partial headers stayed open");
    assert!(c, "a dribbling connection stayed open");
    // The API still answers.
    assert_eq!(
        stack.http.get("/api/v1/openapi.json", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_speak_the_callers_terms_and_metrics_stay_bounded() {
    let token_dir = logferry_e2e::TempDir::new().expect("tempdir");
    let token_file = token_dir.path().join("metrics.token");
    std::fs::write(&token_file, "metrics-scrape-token-0123456789\n").expect("token");
    let stack = Stack::start(
        "hardening_errors",
        None,
        &format!("metrics_token_file = \"{}\"\n", token_file.display()),
    )
    .await;
    let http = &stack.http;
    let admin = &stack.admin;
    let scrape = |token: Option<&'static str>| {
        let mut req = http.client.get(format!("{}/metrics", http.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        scrape(None).await.expect("sent").status(),
        StatusCode::UNAUTHORIZED,
        "/metrics needs its token"
    );
    assert_eq!(
        scrape(Some("wrong-token-0123456789"))
            .await
            .expect("sent")
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Invented methods make no new series.
    for i in 0..20 {
        let method =
            reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        http.client
            .request(method, format!("{}/api/v1/logs/search", http.base))
            .send()
            .await
            .expect("sent");
    }
    let metrics = scrape(Some("metrics-scrape-token-0123456789"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("text");
    assert!(!text.contains("INVENTED"), "a series per invented method");
    assert!(
        text.contains("method=\"other\""),
        "invented methods count as `other`"
    );

    // Long queries: a clean 400 naming the limit, no SQL.
    let services = vec!["svc"; 1_000].join(",");
    let long_text = "a".repeat(5_000);
    for (name, params) in [
        ("services", vec![("service", services.as_str())]),
        ("text", vec![("text", long_text.as_str())]),
    ] {
        let r = http.search(admin, &params).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {:?}", r.body);
        let message = r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains("at most"), "{name}: {message}");
        assert!(
            !message.contains("SELECT") && !message.contains("Code:"),
            "{name}: {message}"
        );
    }
    let mut grpc = QueryServiceClient::connect(stack.collector.grpc_url())
        .await
        .expect("grpc");
    let authed = |search: SearchRequest| {
        let mut request = tonic::Request::new(search);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {admin}").parse().expect("ascii"),
        );
        request
    };
    let status = grpc
        .search(authed(SearchRequest {
            trace_id: (0..20_000)
                .map(|i| format!("{i:032x}"))
                .collect::<Vec<_>>()
                .join(","),
            ..Default::default()
        }))
        .await
        .expect_err("too many trace ids");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most"), "{status:?}");
    // A 300 KB text term, which no URL carries, over gRPC.
    let status = grpc
        .search(authed(SearchRequest {
            text: "a".repeat(300_000),
            ..Default::default()
        }))
        .await
        .expect_err("a 300 KB term");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("text: 300000 characters, at most"),
        "{status:?}"
    );

    // An internal failure answers with an id, and its text stays in the log.
    stack
        .ch
        .query(&format!("DROP TABLE {}.logs", stack.database));
    let r = http.search(admin, &[("q", "level:error")]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let message = r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let id = r.body["error"]["request_id"]
        .as_str()
        .expect("a request id")
        .to_string();
    assert!(message.contains(&id), "{message}");
    assert!(
        !message.contains("Code:") && !message.contains("SELECT") && !message.contains("logs"),
        "{message}"
    );
    assert!(
        logferry_e2e::wait_until(Duration::from_secs(5), || stack
            .collector
            .proc
            .log_text()
            .contains(&id)),
        "the log has the request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_filters_by_host_and_counts_only_the_callers_tenants() {
    let stack = Stack::start("hardening_health", None, "").await;
    let now = now_ns();
    let rows: Vec<Value> = (0..50u64)
        .map(|i| {
            let tenant = if i < 10 { "acme" } else { "globex" };
            let host = if i % 2 == 0 { "web-1" } else { "web-2" };
            let ns = now - 60_000_000_000 + i;
            json!({"tenant": tenant, "timestamp": ns / 1_000_000_000, "time_unix_nano": ns,
                   "observed_unix_nano": ns, "body": "ok", "service": "api", "host": host,
                   "agent_id": format!("agent-{host}"), "seq": i})
        })
        .collect();
    insert_rows(&stack.ch.url(), &stack.database, &rows).await;

    let ana = stack.http.login("ana", USER_PASSWORD).await;
    let r = stack
        .http
        .get("/api/v1/logs/health?last=15m", Some(&ana))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["records"], 10, "acme's records in the window");
    assert_eq!(
        r.body["clickhouse"]["rows"], 10,
        "acme's rows, not the database's 50"
    );

    let r = stack
        .http
        .get(
            &format!("/api/v1/logs/health?last=15m&host={}", urlencode("web-1")),
            Some(&ana),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["records"], 5);
    let agents: Vec<&str> = r.body["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["host"].as_str())
        .collect();
    assert_eq!(agents, vec!["web-1"]);

    // The global admin sees every tenant.
    let r = stack
        .http
        .get("/api/v1/logs/health?last=15m", Some(&stack.admin))
        .await;
    assert_eq!(r.body["records"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_api_tokens_stop_working() {
    let stack = Stack::start("hardening_tokens", None, "").await;
    let ada = stack.http.login("ada", USER_PASSWORD).await;
    let r = stack
        .http
        .post(
            "/api/v1/auth/tokens",
            Some(&ada),
            &json!({"name": "ada-ci", "role": "analyst", "tenants": ["acme"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.body["secret"].as_str().expect("secret").to_string();
    assert_eq!(r.body["created_by"], "ada", "the API shows who minted it");
    assert_eq!(stack.http.search(&token, &[]).await.status, StatusCode::OK);

    let r = stack
        .http
        .call(
            reqwest::Method::DELETE,
            "/api/v1/users/ada",
            Some(&stack.admin),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let r = stack.http.search(&token, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
}
