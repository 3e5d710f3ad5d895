//! The analytics views over HTTP and gRPC, against a real ClickHouse fed
//! through real agents (so ingest's stamping is part of what is tested),
//! with constructed data whose answers are known exactly: a latency
//! distribution with a known p95, failed logins per address, sessions, an
//! error group that appears mid-window beside one that spikes, attacks,
//! scanners, 404 bursts and rate limits, in two tenants.

use std::time::Duration;

use logferry_e2e::api::{Stack, USER_PASSWORD};
use logferry_e2e::{wait_until, Agent};
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::AnalyticsRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// 2026-11-20T10:00:00Z: the window is [BASE, BASE + 1h).
const BASE: u64 = 1_795_168_800;
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

fn at(offset_s: i64) -> String {
    format!("{}.000000", BASE as i64 + offset_s)
}

struct Lines(Vec<String>);

impl Lines {
    fn push(&mut self, v: Value) {
        self.0.push(v.to_string());
    }

    fn request(
        &mut self,
        t: i64,
        (method, path): (&str, &str),
        status: u16,
        ms: f64,
        ip: &str,
        extra: Value,
    ) {
        let mut v = json!({"timestamp": at(t), "level": if status >= 500 { "ERROR" } else { "INFO" },
            "service": "shop", "message": format!("API call: {method} {path}"), "method": method, "path": path,
            "status_code": status, "duration_ms": ms, "client_ip": ip, "user_agent": BROWSER,
            "event_type": "api_performance"});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        self.push(v);
    }

    fn error(&mut self, t: i64, service: &str, message: &str, extra: Value) {
        let mut v = json!({"timestamp": at(t), "level": "ERROR", "service": service, "message": message,
            "module": "payments", "function": "charge"});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        self.push(v);
    }
}

/// What acme's agent ships. Every expected figure in the test follows
/// from this function.
fn acme() -> Vec<String> {
    let mut l = Lines(Vec::new());
    // Latency: GET /items/1..100 taking 1..100 ms: p50 51, p95 96, p99 100.
    for i in 1..=100 {
        l.request(
            i,
            ("GET", &format!("/items/{i}")),
            200,
            i as f64,
            "10.1.1.1",
            json!({}),
        );
    }
    // POST /orders failing: 10 requests with status 500 (request ids req-o-N).
    for i in 0..10 {
        l.request(
            200 + i,
            ("POST", "/orders"),
            500,
            200.0,
            "10.1.1.2",
            json!({"request_id": format!("req-o-{i}")}),
        );
    }
    // Error group A: 3 times in the previous hour, 6 times in the window
    // (a spike), sharing request ids with the failing orders.
    for i in 0..3 {
        l.error(
            -1800 + i,
            "shop",
            &format!("payment failed for order {} code=E42", 100 + i),
            json!({"exception.type": "TimeoutError"}),
        );
    }
    for i in 0..6 {
        l.error(
            200 + i,
            "shop",
            &format!("payment failed for order {} code=E42", 200 + i),
            json!({"exception.type": "TimeoutError", "request_id": format!("req-o-{i}")}),
        );
    }
    // Error group B: new, in the second half of the window.
    for i in 0..4 {
        l.error(
            2400 + 60 * i,
            "shop",
            &format!("cache node cache-{i} unreachable: connection refused"),
            json!({}),
        );
    }
    // Error group C: one template once user names vary enough.
    for user in ["alice", "bob", "carol"] {
        l.error(
            300,
            "shop",
            &format!("login rejected for user {user} by policy"),
            json!({}),
        );
    }
    // Another service's errors, in production (for the service and
    // environment filters).
    for i in 0..2 {
        l.error(
            400 + i,
            "billing",
            &format!("invoice {i} could not be rendered"),
            json!({"environment": "prod"}),
        );
    }
    // Failed logins: 7 from 10.9.9.1 as mallory, 2 from 10.9.9.2 as bob.
    for i in 0..7 {
        l.request(
            600 + 60 * i,
            ("POST", "/api/v1/auth/login"),
            401,
            5.0,
            "10.9.9.1",
            json!({"user_id": "mallory"}),
        );
    }
    for i in 0..2 {
        l.request(
            600 + 60 * i,
            ("POST", "/api/v1/auth/login"),
            401,
            5.0,
            "10.9.9.2",
            json!({"user_id": "bob"}),
        );
    }
    // Sessions: alice at 0, 10, 20 min, then 90 and 100 min (two sessions,
    // 30 min active); carol once.
    for m in [0, 10, 20] {
        l.request(
            60 * m,
            ("GET", "/account"),
            200,
            3.0,
            "10.2.2.2",
            json!({"user_id": "alice"}),
        );
    }
    // Outside the one-hour window but inside a two-hour one.
    for m in [90, 100] {
        l.request(
            60 * m,
            ("GET", "/cart"),
            200,
            3.0,
            "10.2.2.2",
            json!({"user_id": "alice"}),
        );
    }
    l.request(
        1000,
        ("GET", "/account"),
        200,
        3.0,
        "10.2.2.3",
        json!({"user_id": "carol"}),
    );
    // Attacks, scanners, bots, 404 bursts, rate limits.
    for i in 0..3 {
        l.request(
            1200 + i,
            ("GET", "/search?q=1%27%20OR%20%271%27%3D%271"),
            200,
            4.0,
            "10.6.6.6",
            json!({}),
        );
    }
    for i in 0..2 {
        l.request(
            1300 + i,
            ("GET", "/.git/config"),
            404,
            1.0,
            "10.7.7.7",
            json!({}),
        );
    }
    l.request(
        1400,
        ("GET", "/feed"),
        200,
        2.0,
        "10.4.4.4",
        json!({"user_agent": "curl/8.5.0"}),
    );
    for i in 0..12 {
        l.request(
            1500 + i,
            ("GET", &format!("/nope/page{i}")),
            404,
            1.0,
            "10.8.8.8",
            json!({}),
        );
    }
    for i in 0..3 {
        l.request(
            1600 + i,
            ("GET", "/api/search"),
            429,
            1.0,
            "10.5.5.5",
            json!({}),
        );
    }
    l.0
}

/// globex: its own errors and failed logins from an address acme also saw.
fn globex() -> Vec<String> {
    let mut l = Lines(Vec::new());
    for i in 0..5 {
        l.error(
            100 + i,
            "shop",
            &format!("payment failed for order {} code=E42", 900 + i),
            json!({}),
        );
    }
    for i in 0..3 {
        l.request(
            700 + i,
            ("POST", "/login"),
            401,
            5.0,
            "10.9.9.1",
            json!({"user_id": "root"}),
        );
    }
    // From a public address that the GeoIP database places in the US.
    for i in 0..2 {
        l.request(
            800 + i,
            ("POST", "/login"),
            401,
            5.0,
            "8.8.8.8",
            json!({"user_id": "root"}),
        );
    }
    l.0
}

async fn ship(stack: &Stack, tenant: &str, lines: &[String]) -> Agent {
    let dir = stack.dir.path().join(format!("agent-{tenant}"));
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    std::fs::write(logs.join("app.log"), lines.join("\n") + "\n").expect("log file");
    let (_, token_file) = stack.agent_token_file(tenant).await;
    let sources = logferry_e2e::json_source(&logs, "");
    Agent::with_forward(
        &dir,
        &[stack.collector.endpoint()],
        &sources,
        "",
        &format!("token_file = \"{}\"", token_file.display()),
    )
}

fn stored(stack: &Stack, tenant: &str) -> u64 {
    stack.ch.count(&format!(
        "SELECT count() FROM {}.logs WHERE tenant = '{tenant}'",
        stack.database
    ))
}

const WINDOW: &str = "from=2026-11-20T10:00:00Z&to=2026-11-20T11:00:00Z";

async fn view(stack: &Stack, token: &str, path: &str, query: &str) -> Value {
    let r = stack
        .http
        .get(&format!("/api/v1/logs/{path}?{query}"), Some(token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{path}?{query}: {}", r.body);
    r.body
}

fn counts(list: &Value, key: &str) -> Vec<(String, u64)> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|x| {
            (
                x[key].as_str().expect("key").to_string(),
                x["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

/// The host acme's agent reports, from the health view.
async fn health_host(stack: &Stack, token: &str) -> String {
    let health = view(stack, token, "health", WINDOW).await;
    health["agents"][0]["host"]
        .as_str()
        .expect("an agent's host")
        .to_string()
}

fn group<'a>(errors: &'a Value, template_start: &str) -> &'a Value {
    errors["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| {
            g["template"]
                .as_str()
                .is_some_and(|t| t.starts_with(template_start))
        })
        .unwrap_or_else(|| panic!("no group `{template_start}…` in {}", errors["groups"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_answer_exactly_per_tenant_over_http_and_grpc() {
    // The country database the README's test command downloads.
    let mmdb = std::env::var("LOGFERRY_GEOIP_MMDB").expect(
        "LOGFERRY_GEOIP_MMDB: a MaxMind-format country database (scripts/test.sh fetches one)",
    );
    let stack = Stack::start("analytics", None, &format!("geoip_mmdb = \"{mmdb}\"")).await;
    let (acme_lines, globex_lines) = (acme(), globex());
    let _acme = ship(&stack, "acme", &acme_lines).await;
    let _globex = ship(&stack, "globex", &globex_lines).await;
    assert!(
        wait_until(Duration::from_secs(60), || stored(&stack, "acme")
            == acme_lines.len() as u64
            && stored(&stack, "globex") == globex_lines.len() as u64),
        "records did not arrive: acme {} of {}, globex {} of {}",
        stored(&stack, "acme"),
        acme_lines.len(),
        stored(&stack, "globex"),
        globex_lines.len()
    );
    let ana = stack.http.login("ana", USER_PASSWORD).await;
    let gus = stack.http.login("gus", USER_PASSWORD).await;
    let admin = stack.admin.clone();

    // --- performance -------------------------------------------------------
    let perf = view(&stack, &ana, "performance", WINDOW).await;
    assert_eq!(perf["window"]["from"], "2026-11-20T10:00:00Z");
    assert_eq!(perf["window"]["to"], "2026-11-20T11:00:00Z");
    let endpoints = perf["endpoints"].as_array().expect("endpoints");
    let items = endpoints
        .iter()
        .find(|e| e["route"] == "/items/{id}")
        .expect("/items/{id} is one route");
    assert_eq!(items["method"], "GET");
    assert_eq!(items["count"], 100);
    assert_eq!(
        (
            items["p50_ms"].as_f64(),
            items["p95_ms"].as_f64(),
            items["p99_ms"].as_f64(),
            items["max_ms"].as_f64()
        ),
        (Some(51.0), Some(96.0), Some(100.0), Some(100.0))
    );
    assert_eq!(items["error_rate"], 0.0);
    let orders = endpoints
        .iter()
        .find(|e| e["route"] == "/orders")
        .expect("/orders");
    assert_eq!(
        (orders["count"].as_u64(), orders["error_rate"].as_f64()),
        (Some(10), Some(1.0))
    );
    assert_eq!(perf["slowest"][0]["route"], "/orders");
    assert_eq!(perf["server_errors"], 10);
    // In the window: 100 items, 10 orders, 9 logins, 3 alice, 1 carol,
    // 3 sqli, 2 probes, 1 curl, 12 not-found, 3 rate-limited.
    assert_eq!(perf["requests"], 144);
    let statuses = counts(&perf["status_codes"], "key");
    assert!(
        statuses.contains(&("401".into(), 9))
            && statuses.contains(&("404".into(), 14))
            && statuses.contains(&("429".into(), 3)),
        "{statuses:?}"
    );
    assert_eq!(perf["slow_requests"][0]["duration_ms"], 200.0);

    // --- errors ------------------------------------------------------------
    let errors = view(&stack, &ana, "errors", WINDOW).await;
    // 10 failing orders + 6 A + 4 B + 3 C + 2 billing.
    assert_eq!(errors["errors"], 25);
    let a = group(&errors, "payment failed for order");
    assert_eq!(
        (a["count"].as_u64(), a["previous_count"].as_u64()),
        (Some(6), Some(3))
    );
    assert_eq!(
        (a["new"].as_bool(), a["spike"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        counts(&a["endpoints"], "key"),
        vec![("POST /orders".to_string(), 6)]
    );
    assert_eq!(a["first_seen_ever"], "2026-11-20T09:30:00Z");
    let b = group(&errors, "cache node");
    assert_eq!(
        (
            b["count"].as_u64(),
            b["new"].as_bool(),
            b["spike"].as_bool()
        ),
        (Some(4), Some(true), Some(false))
    );
    assert_eq!(b["first_seen"], "2026-11-20T10:40:00Z");
    let c = group(&errors, "login rejected for user");
    assert_eq!(c["template"], "login rejected for user <*> by policy");
    assert_eq!(c["count"], 3);
    assert!(counts(&errors["exception_types"], "key").contains(&("TimeoutError".into(), 6)));
    assert!(counts(&errors["by_service"], "key").contains(&("billing".into(), 2)));
    let series_errors: u64 = errors["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| p["errors"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(series_errors, 25);
    // Filters: the service filter drops billing; an unknown host has nothing.
    let shop = view(&stack, &ana, "errors", &format!("{WINDOW}&service=shop")).await;
    assert_eq!(shop["errors"], 23);
    let nowhere = view(
        &stack,
        &ana,
        "errors",
        &format!("{WINDOW}&host=no-such-host"),
    )
    .await;
    assert_eq!(nowhere["errors"], 0);
    let prod = view(
        &stack,
        &ana,
        "errors",
        &format!("{WINDOW}&environment=prod"),
    )
    .await;
    assert_eq!(prod["errors"], 2);
    // The agent's host is every record's host.
    let host = health_host(&stack, &ana).await;
    let on_host = view(&stack, &ana, "errors", &format!("{WINDOW}&host={host}")).await;
    assert_eq!(on_host["errors"], 25);
    // Tenants: gus sees only globex's 5; the admin sees both, or one.
    let globex_errors = view(&stack, &gus, "errors", WINDOW).await;
    assert_eq!(globex_errors["errors"], 5);
    assert_eq!(
        group(&globex_errors, "payment failed")["new"],
        true,
        "globex saw it first in this window"
    );
    assert_eq!(view(&stack, &admin, "errors", WINDOW).await["errors"], 30);
    assert_eq!(
        view(&stack, &admin, "errors", &format!("{WINDOW}&tenant=globex")).await["errors"],
        5
    );
    let r = stack
        .http
        .get(
            &format!("/api/v1/logs/errors?{WINDOW}&tenant=globex"),
            Some(&ana),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // --- security ----------------------------------------------------------
    let sec = view(&stack, &ana, "security", WINDOW).await;
    let by_ip: Vec<(String, u64)> = sec["failed_auth_by_ip"]
        .as_array()
        .expect("by ip")
        .iter()
        .map(|x| {
            (
                x["ip"].as_str().expect("ip").to_string(),
                x["count"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        by_ip,
        vec![("10.9.9.1".to_string(), 7), ("10.9.9.2".to_string(), 2)]
    );
    assert_eq!(
        counts(&sec["failed_auth_by_user"], "key"),
        vec![("mallory".to_string(), 7), ("bob".to_string(), 2)]
    );
    assert_eq!(sec["brute_force_ips"], json!(["10.9.9.1"]));
    assert_eq!(sec["brute_force_users"], json!(["mallory"]));
    let classes: Vec<(String, u64)> = sec["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| {
            (
                c["class"].as_str().expect("class").to_string(),
                c["count"].as_u64().expect("n"),
            )
        })
        .collect();
    assert!(
        classes.contains(&("sqli".into(), 3))
            && classes.contains(&("scanner".into(), 2))
            && classes.contains(&("bot".into(), 1)),
        "{classes:?}"
    );
    let top = &sec["suspicious_ips"][0];
    assert_eq!(
        top["ip"], "10.6.6.6",
        "the attacker scores highest: {}",
        sec["suspicious_ips"]
    );
    assert_eq!(
        counts(&sec["not_found_bursts"], "key"),
        vec![("10.8.8.8".to_string(), 12)]
    );
    assert_eq!(
        counts(&sec["rate_limited"], "key"),
        vec![("10.5.5.5".to_string(), 3)]
    );
    let globex_sec = view(&stack, &gus, "security", WINDOW).await;
    assert_eq!(
        globex_sec["failed_auth_by_ip"][0]["count"], 3,
        "globex's own failures only"
    );
    let countries: Vec<(String, u64)> = globex_sec["countries"]
        .as_array()
        .expect("countries with a GeoIP database")
        .iter()
        .map(|c| {
            (
                c["country"].as_str().expect("code").to_string(),
                c["failed_auth"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        countries,
        vec![("--".to_string(), 3), ("US".to_string(), 2)],
        "private addresses are `--`"
    );

    // --- users -------------------------------------------------------------
    let two_hours = "from=2026-11-20T10:00:00Z&to=2026-11-20T12:00:00Z";
    let users = view(&stack, &ana, "users/activity", two_hours).await;
    let alice = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == "alice")
        .expect("alice");
    assert_eq!(
        (
            alice["requests"].as_u64(),
            alice["sessions"].as_u64(),
            alice["active_s"].as_u64()
        ),
        (Some(5), Some(2), Some(1800))
    );
    assert_eq!(alice["endpoints"].as_array().map(Vec::len), Some(2));
    // alice 2, carol 1, mallory 1 (7 tries a minute apart), bob 1.
    assert_eq!(
        (users["active_users"].as_u64(), users["sessions"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(users["new_users"], 4);
    // A 2-hour gap makes alice's visits one session.
    let long_gap = view(
        &stack,
        &ana,
        "users/activity",
        &format!("{two_hours}&session_gap=2h"),
    )
    .await;
    assert_eq!(
        long_gap["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["user"] == "alice")
            .expect("alice")["sessions"],
        1
    );
    let adoption = counts(&users["feature_adoption"], "key");
    assert!(adoption.contains(&("/account".into(), 2)), "{adoption:?}");

    // --- health, report, alerts --------------------------------------------
    let health = view(&stack, &ana, "health", WINDOW).await;
    assert_eq!(health["clickhouse"]["reachable"], true);
    assert_eq!(
        health["agents"].as_array().map(Vec::len),
        Some(1),
        "acme's agent only"
    );
    // An analyst of acme sees acme's rows, not the database's.
    assert_eq!(
        health["clickhouse"]["rows"].as_u64(),
        Some(stack.ch.count(&format!(
            "SELECT count() FROM {}.logs WHERE tenant = 'acme'",
            stack.database
        )))
    );
    assert!(
        stack
            .ch
            .count(&format!("SELECT count() FROM {}.logs", stack.database))
            > health["clickhouse"]["rows"].as_u64().unwrap_or(0),
        "globex's rows are in the database too"
    );
    let report = view(&stack, &ana, "report/daily", "day=2026-11-20").await;
    assert_eq!(report["day"]["day"], "2026-11-20");
    assert_eq!(
        report["day"]["records"].as_u64(),
        Some(acme_lines.len() as u64)
    );
    assert_eq!(report["previous_day"]["records"], 0);
    assert_eq!(report["change"]["records"], Value::Null);
    assert_eq!(report["day"]["failed_auth"], 9);
    let r = stack
        .http
        .get("/api/v1/logs/report/daily?day=20-11-2026", Some(&ana))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        view(&stack, &ana, "alerts/active", "").await["alerts"],
        json!([])
    );
    stack.ch.query(&format!(
        "INSERT INTO {}.alert_states VALUES ('acme', 'r1', 'errors > 10 in 5m', '', 'firing', 'critical', '12 errors', 12, now(), now(), now(), 1)",
        stack.database
    ));
    assert_eq!(
        view(&stack, &ana, "alerts/active", "").await["alerts"][0]["rule"],
        "errors > 10 in 5m"
    );
    assert_eq!(
        view(&stack, &gus, "alerts/active", "").await["alerts"],
        json!([])
    );

    // --- bad input and authorization -----------------------------------------
    for bad in [
        "from=yesterday",
        "last=15x",
        "from=2026-11-20T11:00:00Z&to=2026-11-20T10:00:00Z",
        "from=1&last=1h",
    ] {
        let r = stack
            .http
            .get(&format!("/api/v1/logs/errors?{bad}"), Some(&ana))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    let r = stack
        .http
        .get(&format!("/api/v1/logs/errors?{WINDOW}"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // --- gRPC: the same views ------------------------------------------------
    let mut grpc = QueryServiceClient::connect(stack.collector.grpc_url())
        .await
        .expect("grpc");
    for (path, token) in [
        ("errors", &ana),
        ("performance", &ana),
        ("security", &gus),
        ("users/activity", &ana),
    ] {
        let mut request = tonic::Request::new(AnalyticsRequest {
            view: path.into(),
            from: "2026-11-20T10:00:00Z".into(),
            to: "2026-11-20T11:00:00Z".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        let reply = grpc
            .analytics(request)
            .await
            .expect("grpc analytics")
            .into_inner();
        let over_grpc: Value = serde_json::from_str(&reply.json).expect("json");
        assert_eq!(
            over_grpc,
            view(&stack, token, path, WINDOW).await,
            "{path} differs between the APIs"
        );
    }
    let mut request = tonic::Request::new(AnalyticsRequest {
        view: "nope".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ana}").parse().expect("ascii"),
    );
    assert_eq!(
        grpc.analytics(request)
            .await
            .expect_err("unknown view")
            .code(),
        tonic::Code::InvalidArgument
    );
    let request = tonic::Request::new(AnalyticsRequest {
        view: "errors".into(),
        ..Default::default()
    });
    assert_eq!(
        grpc.analytics(request).await.expect_err("anonymous").code(),
        tonic::Code::Unauthenticated
    );
}
