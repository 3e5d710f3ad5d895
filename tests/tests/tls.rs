//! TLS on every listener: agents over TLS and mTLS, plain-text clients and
//! wrong certificates refused; and the collector's own way to ClickHouse:
//! HTTPS verified against a CA, a password-protected user, and a one-line
//! cause for each refusal.

use std::path::Path;
use std::time::Duration;

use logferry_e2e::api::{Certs, Http, Stack};
use logferry_e2e::{seed_line, wait_until, Agent, Collector, Security};

/// An agent shipping `lines` lines of `name`.log to `endpoint`.
fn agent(dir: &Path, name: &str, endpoint: &str, lines: u64, forward: &str) -> Agent {
    let logs = dir.join(format!("{name}-logs"));
    std::fs::create_dir_all(&logs).expect("dir");
    let text: String = (0..lines).map(|n| seed_line(name, n) + "\n").collect();
    std::fs::write(logs.join(format!("{name}.log")), text).expect("log");
    let agent_dir = dir.join(name);
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let sources = format!(
        "[[sources]]\nname = \"{name}\"\ninclude = [\"{}/*.log\"]\nformat = \"json\"\n",
        logs.display()
    );
    Agent::with_forward(&agent_dir, &[endpoint.to_string()], &sources, "", forward)
}

fn forward_tls(token: &Path, ca: &Path, client: Option<&Certs>) -> String {
    let mut s = format!(
        "token_file = \"{}\"\n[forward.tls]\nca_file = \"{}\"\n",
        token.display(),
        ca.display()
    );
    if let Some(c) = client {
        s.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            c.client_cert.display(),
            c.client_key.display()
        ));
    }
    s
}

/// A second collector on the stack's ClickHouse that requires client
/// certificates signed by `certs`' CA.
fn strict_collector(stack: &Stack, certs: &Certs, database: &str) -> Collector {
    let tls = certs.collector_tls(true, true);
    Collector::start(
        logferry_e2e::free_port(),
        stack.dir.path(),
        "strict",
        &stack.ch,
        database,
        Security {
            require_credentials: true,
            tls: &tls,
            api: "",
            ingest: "",
        },
        "",
    )
}

fn stored(stack: &Stack, name: &str) -> u64 {
    stack.ch.count(&format!(
        "SELECT count() FROM {}.logs WHERE file_path LIKE '%/{name}.log'",
        stack.database
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_ship_over_tls_and_mtls() {
    let certs_dir = tempfile::TempDir::new().expect("tempdir");
    let certs = Certs::generate(certs_dir.path(), "good");
    let stack = Stack::start("tls", Some(&certs), "").await;
    let (_, token) = stack.agent_token_file("acme").await;
    let dir = stack.dir.path();

    // TLS; the client CA is optional on this collector.
    let _a = agent(
        dir,
        "tls",
        &stack.collector.endpoint(),
        500,
        &forward_tls(&token, &certs.ca, None),
    );
    assert!(
        wait_until(Duration::from_secs(20), || stored(&stack, "tls") == 500),
        "TLS: {}",
        stored(&stack, "tls")
    );

    // A second collector that requires client certificates.
    let strict = strict_collector(&stack, &certs, "tls");
    let mut without = agent(
        dir,
        "nocert",
        &strict.endpoint(),
        100,
        &forward_tls(&token, &certs.ca, None),
    );
    let _with = agent(
        dir,
        "mtls",
        &strict.endpoint(),
        300,
        &forward_tls(&token, &certs.ca, Some(&certs)),
    );
    assert!(
        wait_until(Duration::from_secs(20), || stored(&stack, "mtls") == 300),
        "mTLS: {}",
        stored(&stack, "mtls")
    );
    assert!(
        wait_until(Duration::from_secs(10), || without
            .proc
            .log_text()
            .contains("not delivered")),
        "{}",
        without.proc.log_text()
    );
    assert_eq!(
        stored(&stack, "nocert"),
        0,
        "no client certificate, nothing stored"
    );
    without.proc.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_and_wrong_certificates_are_refused() {
    let certs_dir = tempfile::TempDir::new().expect("tempdir");
    let certs = Certs::generate(certs_dir.path(), "good");
    let other = Certs::generate(certs_dir.path(), "other");
    let stack = Stack::start("wrong", Some(&certs), "").await;
    let (_, token) = stack.agent_token_file("acme").await;

    // The right CA works (the Stack logged in over HTTPS already).
    let ok = stack.http.get("/api/v1/auth/me", Some(&stack.admin)).await;
    assert!(ok.status.is_success());

    // Plain HTTP to the TLS port: no answer.
    let plain = Http::new(&stack.collector.http_url().replace("https://", "http://"));
    let r = plain
        .client
        .get(format!("{}/api/v1/auth/me", plain.base))
        .send()
        .await;
    assert!(
        r.is_err() || !r.expect("response").status().is_success(),
        "plain HTTP must not be served"
    );

    // A client trusting another CA refuses the collector's certificate.
    let wrong = Http::with_ca(
        &stack.collector.http_url(),
        &std::fs::read(&other.ca).expect("ca"),
    );
    let r = wrong
        .client
        .get(format!("{}/api/v1/auth/me", wrong.base))
        .send()
        .await;
    assert!(r.is_err(), "handshake must fail with the wrong CA");

    // Plain-text gRPC to the TLS query and ingest ports fails.
    for url in [stack.collector.grpc_url(), stack.collector.endpoint()] {
        let plain = url.replace("https://", "http://");
        let refused =
            match logferry_proto::query_service_client::QueryServiceClient::connect(plain.clone())
                .await
            {
                Err(_) => true,
                Ok(mut c) => c
                    .search(logferry_proto::SearchRequest::default())
                    .await
                    .is_err(),
            };
        assert!(refused, "{plain}");
    }

    // An agent trusting another CA ships nothing; a client certificate from
    // another CA is refused by an mTLS collector.
    let dir = stack.dir.path();
    let mut a = agent(
        dir,
        "wrongca",
        &stack.collector.endpoint(),
        50,
        &forward_tls(&token, &other.ca, None),
    );
    assert!(
        wait_until(Duration::from_secs(10), || a
            .proc
            .log_text()
            .contains("not delivered")),
        "{}",
        a.proc.log_text()
    );
    assert_eq!(stored(&stack, "wrongca"), 0);
    a.proc.terminate();
    let strict = strict_collector(&stack, &certs, "wrong");
    let mut b = agent(
        dir,
        "foreigncert",
        &strict.endpoint(),
        50,
        &forward_tls(&token, &certs.ca, Some(&other)),
    );
    assert!(
        wait_until(Duration::from_secs(10), || b
            .proc
            .log_text()
            .contains("not delivered")),
        "{}",
        b.proc.log_text()
    );
    assert_eq!(stored(&stack, "foreigncert"), 0);
    b.proc.terminate();
    // The collectors are still serving after all of that.
    assert!(stack
        .http
        .get("/api/v1/auth/me", Some(&stack.admin))
        .await
        .status
        .is_success());
}

/// The collector reaches ClickHouse over HTTPS, verified against a
/// configured CA bundle, and ships through it; a server certificate it
/// cannot verify and a plain-text port given as `https://` each keep it
/// from connecting, with a log line that names the cause.
#[test]
fn the_collector_reaches_clickhouse_over_https_and_refuses_what_it_cannot_verify() {
    let dir = logferry_e2e::TempDir::new().expect("tempdir");
    let certs = Certs::generate(dir.path(), "clickhouse");
    let ch = logferry_e2e::ClickHouse::start_https(&certs.server_cert, &certs.server_key);
    let https = format!(
        "https://127.0.0.1:{}",
        ch.https_port.expect("an HTTPS port")
    );
    let open = logferry_e2e::OPEN;
    let port = logferry_e2e::free_port();
    let trusted = Collector::with_clickhouse(
        port,
        dir.path(),
        "trusted",
        &format!(
            "url = \"{https}\"\ndatabase = \"over_tls\"\nca_file = \"{}\"",
            certs.ca.display()
        ),
        open,
        "",
    );
    trusted.wait_connected();
    let _agent = agent(dir.path(), "tls", &trusted.endpoint(), 200, "");
    assert!(
        wait_until(Duration::from_secs(30), || ch
            .count("SELECT count() FROM over_tls.logs")
            == 200),
        "{}",
        trusted.proc.log_text()
    );

    // The same server with the system roots only: its test CA is unknown.
    let untrusted = Collector::with_clickhouse(
        logferry_e2e::free_port(),
        dir.path(),
        "untrusted",
        &format!("url = \"{https}\"\ndatabase = \"untrusted\""),
        open,
        "",
    );
    // A plain-text port named https://.
    let plain = Collector::with_clickhouse(
        logferry_e2e::free_port(),
        dir.path(),
        "plain",
        &format!(
            "url = \"https://127.0.0.1:{}\"\ndatabase = \"plain\"\nca_file = \"{}\"",
            ch.http_port,
            certs.ca.display()
        ),
        open,
        "",
    );
    for (collector, cause) in [(&untrusted, "certificate"), (&plain, "TLS")] {
        assert!(
            wait_until(Duration::from_secs(20), || {
                collector
                    .proc
                    .log_text()
                    .lines()
                    .any(|l| l.contains("cannot reach clickhouse") && l.contains(cause))
            }),
            "a log line naming the cause ({cause}): {}",
            collector.proc.log_text()
        );
    }
    assert_eq!(
        ch.count("SELECT count() FROM system.databases WHERE name IN ('untrusted', 'plain')"),
        0,
        "neither reached the server"
    );
}

#[test]
fn a_password_protected_user_stores_and_a_wrong_password_is_named() {
    let dir = logferry_e2e::TempDir::new().expect("tempdir");
    let ch = logferry_e2e::ClickHouse::start();
    let with_password = |name: &str, password: &str| {
        Collector::with_clickhouse(
            logferry_e2e::free_port(),
            dir.path(),
            name,
            &format!(
                "url = \"{}\"\ndatabase = \"{name}\"\nuser = \"logferry\"\npassword = \"{password}\"",
                ch.url()
            ),
            logferry_e2e::OPEN,
            "",
        )
    };
    let right = with_password("right", logferry_e2e::CLICKHOUSE_PASSWORD);
    right.wait_connected();
    let _agent = agent(dir.path(), "pw", &right.endpoint(), 100, "");
    assert!(
        wait_until(Duration::from_secs(30), || ch
            .count("SELECT count() FROM right.logs")
            == 100),
        "{}",
        right.proc.log_text()
    );

    let wrong = with_password("wrong", "not the password");
    assert!(
        wait_until(Duration::from_secs(20), || {
            wrong
                .proc
                .log_text()
                .lines()
                .any(|l| l.contains("cannot reach clickhouse") && l.contains("user or password"))
        }),
        "a log line naming the cause: {}",
        wrong.proc.log_text()
    );
    assert_eq!(
        ch.count("SELECT count() FROM system.databases WHERE name = 'wrong'"),
        0
    );
}
