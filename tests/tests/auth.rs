//! Authentication and authorization through the real collector: the
//! authorization matrix, tenant isolation, brute-force lockout, injection
//! attempts, and agents shipping with credentials.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use logferry_e2e::api::{insert_rows, Stack, ADMIN_PASSWORD, USER_PASSWORD};
use logferry_e2e::{seed_line, wait_until, Agent};
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::{FieldsRequest, SearchRequest, TailRequest};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Two rows per tenant, each body naming its tenant.
async fn seed_tenants(stack: &Stack) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let rows: Vec<Value> = ["acme", "acme", "globex", "globex"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ns = now - 60_000_000_000 + i as u64;
            json!({"tenant": t, "timestamp": ns / 1_000_000_000, "time_unix_nano": ns,
                   "body": format!("secret of {t}"), "service": "api", "agent_id": "x", "seq": i,
                   "attr_keys": ["owner"], "attr_values": [t]})
        })
        .collect();
    insert_rows(&stack.ch.url(), &stack.database, &rows).await;
}

/// A correctly signed session token for `user` that expired a minute ago,
/// made with the collector's own key.
fn expired_session(stack: &Stack, user: &str) -> String {
    let key = stack.ch.query(&format!(
        "SELECT key FROM {}.signing_keys ORDER BY created_unix_nano, key LIMIT 1",
        stack.database
    ));
    let key = hex::decode(key.trim()).expect("hex key");
    let body =
        B64.encode(json!({"sub": user, "iat": now_s() - 3600, "exp": now_s() - 60}).to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(body.as_bytes());
    format!("lfs.{body}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let stack = Stack::start("matrix", None, "").await;
    seed_tenants(&stack).await;
    let http = &stack.http;
    let admin = stack.admin.clone();
    let ana = http.login("ana", USER_PASSWORD).await;
    let ada = http.login("ada", USER_PASSWORD).await;
    let expired = expired_session(&stack, "ana");
    // Sanity: the forged-expired token is rejected for expiry, not signature.
    let r = http.get("/api/v1/auth/me", Some(&expired)).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{}",
        r.body
    );

    let token = http
        .post(
            "/api/v1/auth/tokens",
            Some(&admin),
            &json!({"name": "ci", "role": "analyst", "tenants": ["acme"]}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    let revoked = token.body["secret"].as_str().expect("secret").to_string();
    let id = token.body["id"].as_str().expect("id").to_string();
    let r = http
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, agent_file) = stack.agent_token_file("acme").await;
    let agent = std::fs::read_to_string(agent_file).expect("agent token");

    // Callers: (name, token, is admin of all, reads acme, reads globex, is admin of acme)
    let callers: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("garbage", Some("lft_not-a-token".into())),
        ("expired", Some(expired)),
        ("revoked", Some(revoked)),
        ("agent", Some(agent)),
        ("analyst", Some(ana.clone())),
        ("tenant-admin", Some(ada.clone())),
        ("admin", Some(admin.clone())),
    ];
    let reads = "/api/v1/logs/search";
    let endpoints: Vec<(Method, &str, Option<Value>, &str)> = vec![
        // (method, path, body, who may: "read" = analysts and admins,
        //  "admin" = any admin, "global" = admin of all tenants)
        (Method::GET, "/api/v1/auth/me", None, "any"),
        (Method::GET, reads, None, "read"),
        (Method::GET, "/api/v1/logs/fields", None, "read"),
        (Method::GET, "/api/v1/tenants", None, "read"),
        (Method::GET, "/api/v1/auth/tokens", None, "admin"),
        (
            Method::POST,
            "/api/v1/auth/tokens",
            Some(json!({"name": "t", "role": "analyst", "tenants": ["acme"]})),
            "admin",
        ),
        (
            Method::DELETE,
            "/api/v1/auth/tokens/00000000-0000-0000-0000-000000000000",
            None,
            "admin",
        ),
        (Method::GET, "/api/v1/users", None, "global"),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "u", "password": "short", "role": "analyst"})),
            "global",
        ),
        (
            Method::PATCH,
            "/api/v1/users/nobody",
            Some(json!({})),
            "global",
        ),
        (Method::DELETE, "/api/v1/users/nobody", None, "global"),
        (
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "bad name!"})),
            "global",
        ),
        (
            Method::DELETE,
            "/api/v1/tenants/nonexistent",
            None,
            "global",
        ),
        (Method::GET, "/api/v1/agents", None, "global"),
        (
            Method::POST,
            "/api/v1/agents",
            Some(json!({"name": "a", "tenant": "nonexistent"})),
            "global",
        ),
        (
            Method::DELETE,
            "/api/v1/agents/00000000-0000-0000-0000-000000000000",
            None,
            "global",
        ),
        (Method::GET, "/api/v1/alerts/rules", None, "read"),
        (
            Method::GET,
            "/api/v1/alerts/rules/nonexistent",
            None,
            "read",
        ),
        (Method::GET, "/api/v1/logs/alerts/active", None, "read"),
        (Method::GET, "/api/v1/logs/alerts/history", None, "read"),
        (
            Method::POST,
            "/api/v1/alerts/rules",
            Some(json!({"name": "", "tenant": "acme", "kind": "count"})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/alerts/rules/nonexistent",
            Some(json!({"name": "r", "tenant": "acme", "kind": "count"})),
            "admin",
        ),
        (
            Method::DELETE,
            "/api/v1/alerts/rules/nonexistent",
            None,
            "admin",
        ),
        (
            Method::POST,
            "/api/v1/alerts/rules/nonexistent/silence",
            Some(json!({"for": "1h"})),
            "admin",
        ),
        (
            Method::DELETE,
            "/api/v1/alerts/rules/nonexistent/silence",
            None,
            "admin",
        ),
    ];
    for (method, path, body, who) in &endpoints {
        for (caller, token) in &callers {
            let r = http
                .call(method.clone(), path, token.as_deref(), body.as_ref())
                .await;
            let authenticated = matches!(*caller, "agent" | "analyst" | "tenant-admin" | "admin");
            let allowed = match *who {
                "any" => authenticated,
                "read" => matches!(*caller, "analyst" | "tenant-admin" | "admin"),
                "admin" => matches!(*caller, "tenant-admin" | "admin"),
                _ => *caller == "admin",
            };
            let ok = if !authenticated {
                r.status == StatusCode::UNAUTHORIZED
            } else if !allowed {
                r.status == StatusCode::FORBIDDEN
            } else {
                // Allowed: success, or the deliberate 400/404 of the probe body.
                r.status.is_success()
                    || r.status == StatusCode::BAD_REQUEST
                    || r.status == StatusCode::NOT_FOUND
            };
            assert!(ok, "{method} {path} as {caller}: {} {}", r.status, r.body);
            assert_eq!(
                r.body["error"]["code"].is_string(),
                !r.status.is_success(),
                "{method} {path} as {caller}: error body"
            );
            // Never another tenant's row: only the global admin sees globex.
            let text = r.body.to_string();
            if *caller != "admin" {
                assert!(
                    !text.contains("secret of globex"),
                    "{method} {path} as {caller} leaked globex"
                );
            }
        }
    }

    // Alert rules: an admin of acme manages acme's rules only; rules for
    // every tenant need an admin of all; analysts see their tenants' rules.
    let rule = |tenant: &str| {
        json!({"name": format!("errors of {tenant}"), "tenant": tenant, "kind": "count",
               "query": "level:error", "threshold": 3})
    };
    let r = http
        .post("/api/v1/alerts/rules", Some(&ada), &rule("globex"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = http
        .post("/api/v1/alerts/rules", Some(&ada), &rule("*"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = http
        .post("/api/v1/alerts/rules", Some(&ada), &rule("acme"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = http
        .post("/api/v1/alerts/rules", Some(&admin), &rule("globex"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let globex_rule = r.body["id"].as_str().expect("id").to_string();
    let r = http
        .post(
            &format!("/api/v1/alerts/rules/{globex_rule}/silence"),
            Some(&ada),
            &json!({"for": "1h"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another tenant's rule does not exist for ada"
    );
    let names = |body: &Value| -> Vec<String> {
        body.as_array()
            .expect("rules")
            .iter()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect()
    };
    let seen = names(&http.get("/api/v1/alerts/rules", Some(&ana)).await.body);
    assert!(seen.contains(&"errors of acme".to_string()), "{seen:?}");
    assert!(
        seen.contains(&"errors".to_string()),
        "the defaults: {seen:?}"
    );
    assert!(!seen.contains(&"errors of globex".to_string()), "{seen:?}");
    // A silence of a rule for every tenant, for globex, is globex's business.
    let r = http
        .post(
            "/api/v1/alerts/rules/default-errors/silence",
            Some(&admin),
            &json!({"for": "1h", "tenant": "globex", "reason": "globex maintenance"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["silenced"][0]["tenant"], "globex");
    let r = http
        .get("/api/v1/alerts/rules/default-errors", Some(&ana))
        .await;
    assert_eq!(r.body["silenced"], json!([]), "{}", r.body);

    // The same callers on the gRPC QueryService: UNAUTHENTICATED,
    // PERMISSION_DENIED or an answer without the other tenant's rows.
    let mut grpc = QueryServiceClient::connect(stack.collector.grpc_url())
        .await
        .expect("grpc");
    for (caller, token) in &callers {
        let search = grpc
            .search(authed(SearchRequest::default(), token.as_deref()))
            .await
            .map(|r| format!("{:?}", r.into_inner()));
        let fields = grpc
            .fields(authed(FieldsRequest::default(), token.as_deref()))
            .await
            .map(|r| format!("{:?}", r.into_inner()));
        let tail = grpc
            .tail(authed(TailRequest::default(), token.as_deref()))
            .await
            .map(|_| String::new());
        for (rpc, result) in [("Search", search), ("Fields", fields), ("Tail", tail)] {
            let expected = match *caller {
                "none" | "garbage" | "expired" | "revoked" => Some(tonic::Code::Unauthenticated),
                "agent" => Some(tonic::Code::PermissionDenied),
                _ => None,
            };
            match (&result, expected) {
                (Err(status), Some(code)) => assert_eq!(status.code(), code, "{rpc} as {caller}"),
                (Ok(text), None) => {
                    if *caller != "admin" {
                        assert!(
                            !text.contains("secret of globex"),
                            "{rpc} as {caller} leaked globex"
                        );
                    }
                }
                (r, e) => panic!("{rpc} as {caller}: {r:?}, expected {e:?}"),
            }
        }
    }

    // Tenant isolation in every read.
    for (token, sees_globex) in [(&ana, false), (&ada, false), (&admin, true)] {
        let r = http.search(token, &[("limit", "100")]).await;
        let bodies: Vec<&str> = r.body["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|x| x["body"].as_str().expect("body"))
            .collect();
        assert!(bodies.contains(&"secret of acme"));
        assert_eq!(bodies.contains(&"secret of globex"), sees_globex);
    }
    let r = http.search(&ana, &[("tenant", "globex")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = http.search(&ana, &[("q", "tenant:globex")]).await;
    assert_eq!(
        r.body["records"].as_array().map(Vec::len),
        Some(0),
        "the scope is ANDed with the query"
    );
    let r = http
        .search(&ana, &[("q", "tenant:globex OR tenant:acme")])
        .await;
    assert!(
        !r.body.to_string().contains("globex\""),
        "OR cannot escape the scope: {}",
        r.body
    );
    let r = http.get("/api/v1/logs/fields", Some(&ana)).await;
    assert!(
        !r.body.to_string().contains("globex"),
        "catalogue is scoped: {}",
        r.body
    );

    // A new password ends the sessions opened with the old one.
    let gus = http.login("gus", USER_PASSWORD).await;
    let r = http
        .call(
            Method::PATCH,
            "/api/v1/users/gus",
            Some(&admin),
            Some(&json!({"password": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = http.get("/api/v1/auth/me", Some(&gus)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body.to_string().contains("password changed"),
        "{}",
        r.body
    );
    http.login("gus", "a brand new passphrase").await;

    // A deleted user's session stops working.
    let r = http
        .call(Method::DELETE, "/api/v1/users/ana", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        http.get("/api/v1/auth/me", Some(&ana)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_locked_out_and_recorded() {
    let stack = Stack::start("lockout", None, "").await;
    let http = &stack.http;
    for i in 0..5 {
        let r = http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": "root", "password": format!("guess {i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(r.body["error"]["message"], "invalid username or password");
    }
    // Now even the right password is refused, as form fields too.
    let resp = http
        .client
        .post(format!("{}/api/v1/auth/login", http.base))
        .form(&[("username", "root"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    // Another user is not locked out by root's failures; form login works.
    let resp = http
        .client
        .post(format!("{}/api/v1/auth/login", http.base))
        .form(&[("username", "ana"), ("password", USER_PASSWORD)])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let events = stack.ch.query(&format!(
        "SELECT kind, count() FROM {}.security_events WHERE username = 'root' GROUP BY kind ORDER BY kind FORMAT TSV",
        stack.database
    ));
    assert!(events.contains("login_failed\t5"), "{events}");
    assert!(events.contains("login_locked\t1"), "{events}");
    // An unknown user fails the same way (no user enumeration).
    let r = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "nobody", "password": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("invalid username or password")
        )
    );
    // Per-user rate limit on one collector: the 11th attempt in a minute.
    let mut last = StatusCode::OK;
    for _ in 0..11 {
        last = http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": "gus", "password": USER_PASSWORD}),
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_are_refused_or_harmless() {
    let stack = Stack::start("inject", None, "").await;
    seed_tenants(&stack).await;
    let http = &stack.http;
    let gus = http.login("gus", USER_PASSWORD).await;
    let payloads = [
        "' OR 1=1 --",
        "x' OR tenant='acme",
        "\\' OR 1=1 --",
        "'); DROP TABLE logs; --",
        "1; DROP TABLE inject.logs",
        "acme' UNION ALL SELECT * FROM inject.users --",
        "%' OR '1'='1",
        "*",
        "\u{0}",
        "${jndi:ldap://x}",
    ];
    let params = [
        "q",
        "from",
        "to",
        "last",
        "level",
        "service",
        "host",
        "environment",
        "text",
        "request_id",
        "trace_id",
        "tenant",
        "order",
        "cursor",
    ];
    let mut refused = 0;
    for param in params {
        for p in payloads {
            for value in [
                p.to_string(),
                format!("service:\"{p}\""),
                format!("attr.{p}=1"),
            ] {
                let r = http
                    .search(&gus, &[(param, value.as_str()), ("limit", "1000")])
                    .await;
                let text = r.body.to_string();
                assert!(
                    !text.contains("secret of acme"),
                    "{param}={value}: leaked acme: {text}"
                );
                assert!(!text.contains("argon2"), "{param}={value}: leaked a hash");
                match r.status {
                    StatusCode::OK => {}
                    StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => refused += 1,
                    s => panic!("{param}={value}: {s} {text}"),
                }
            }
        }
    }
    assert!(refused > 0);
    // The tables are intact.
    assert_eq!(stack.ch.count("SELECT count() FROM inject.logs"), 4);
    assert_eq!(
        stack
            .ch
            .count("SELECT count() FROM inject.users FINAL WHERE deleted = 0"),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_ship_with_credentials_into_their_tenant_and_tail_sees_lines_within_two_seconds() {
    let stack = Stack::start("shipping", None, "").await;
    let http = &stack.http;
    let ana = http.login("ana", USER_PASSWORD).await;
    let logs = stack.dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("app.log");
    std::fs::write(&file, format!("{}\n", seed_line("app.log", 0))).expect("log file");
    let sources = logferry_e2e::json_source(&logs, "");

    // Without a credential, the collector refuses the agent's batches.
    let bare_dir = stack.dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).expect("dir");
    let mut bare = Agent::new(&bare_dir, &[stack.collector.endpoint()], &sources, "");
    assert!(
        wait_until(Duration::from_secs(15), || bare
            .proc
            .log_text()
            .contains("agent credential")),
        "{}",
        bare.proc.log_text()
    );
    bare.proc.terminate();

    // The SSE tail, opened before anything is written.
    let resp = http
        .client
        .get(format!("{}/api/v1/logs/tail?service=checkout", http.base))
        .bearer_auth(&ana)
        .send()
        .await
        .expect("tail");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = resp.bytes_stream();
    // And the gRPC tail, with the same filter.
    let mut grpc = logferry_proto::query_service_client::QueryServiceClient::connect(
        stack.collector.grpc_url(),
    )
    .await
    .expect("grpc");
    let mut request = tonic::Request::new(logferry_proto::TailRequest {
        filter: Some(logferry_proto::SearchRequest {
            service: "checkout".into(),
            ..Default::default()
        }),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ana}").parse().expect("ascii"),
    );
    let mut grpc_tail = grpc.tail(request).await.expect("grpc tail").into_inner();

    let (cred_id, token_file) = stack.agent_token_file("acme").await;
    let agent_dir = stack.dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let _agent = Agent::with_forward(
        &agent_dir,
        &[stack.collector.endpoint()],
        &sources,
        "",
        &format!("token_file = \"{}\"", token_file.display()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::new();
    let mut buffer = String::new();
    for i in 0..5u64 {
        // The record claims another tenant; the collector ignores it.
        let line = json!({"timestamp": chrono_now(), "level": "INFO", "service": "checkout", "tenant": "globex",
                          "message": format!("tail probe {i}")});
        let written = Instant::now();
        append(&file, &format!("{line}\n"));
        let needle = format!("tail probe {i}");
        while !buffer.contains(&needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap_or_else(|_| panic!("no tail event for probe {i}; got {buffer}"))
                .expect("stream open")
                .expect("chunk");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
        latencies.push(written.elapsed());
    }
    latencies.sort();
    eprintln!("tail latencies: {latencies:?}");
    assert!(
        latencies[latencies.len() - 1] < Duration::from_secs(2),
        "{latencies:?}"
    );
    assert!(buffer.contains("event: log"));
    let mut grpc_bodies = Vec::new();
    while grpc_bodies.len() < 5 {
        let batch = tokio::time::timeout(Duration::from_secs(5), grpc_tail.message())
            .await
            .expect("grpc tail answers")
            .expect("grpc tail open")
            .expect("a batch");
        grpc_bodies.extend(batch.records.into_iter().map(|r| r.body));
    }
    assert_eq!(
        grpc_bodies,
        (0..5)
            .map(|i| format!("tail probe {i}"))
            .collect::<Vec<_>>()
    );
    // A tail resumed after probe 1 (as a browser does with Last-Event-ID)
    // gets the later probes at once.
    let id = buffer
        .split("\n\n")
        .find(|event| event.contains("tail probe 1"))
        .and_then(|event| event.lines().find_map(|l| l.strip_prefix("id: ")))
        .expect("probe 1 has an id")
        .to_string();
    let resp = http
        .client
        .get(format!("{}/api/v1/logs/tail?service=checkout", http.base))
        .bearer_auth(&ana)
        .header("Last-Event-ID", &id)
        .send()
        .await
        .expect("tail");
    let mut resumed = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("tail probe 4") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .expect("resumed tail answers")
            .expect("open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !text.contains("tail probe 1") && !text.contains("tail probe 0"),
        "{text}"
    );
    assert!(text.contains("tail probe 2") && text.contains("tail probe 3"));

    let stored = stack
        .ch
        .query("SELECT DISTINCT tenant FROM shipping.logs FORMAT TSV");
    assert_eq!(
        stored.trim(),
        "acme",
        "the credential's tenant, not the record's"
    );

    // Revoking the credential stops the agent's shipping.
    let r = http
        .call(
            Method::DELETE,
            &format!("/api/v1/agents/{cred_id}"),
            Some(&stack.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = stack.ch.count("SELECT count() FROM shipping.logs");
    append(&file, &format!("{}\n", seed_line("app.log", 1)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.ch.count("SELECT count() FROM shipping.logs"),
        before,
        "a revoked credential ships nothing"
    );
}

/// A gRPC request with the bearer token, if any.
fn authed<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    req
}

fn chrono_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tails_are_bounded_per_collector() {
    let stack = Stack::start("tails", None, "max_tails = 1").await;
    let http = &stack.http;
    let open = |token: String| {
        let client = http.client.clone();
        let url = format!("{}/api/v1/logs/tail", http.base);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("tail")
        }
    };
    let first = open(stack.admin.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(stack.admin.clone()).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    // The slot frees once the first tail's client has gone.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let status = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(open(stack.admin.clone()))
            })
            .status();
            status == StatusCode::OK
        }),
        "the tail slot was never released"
    );
}
