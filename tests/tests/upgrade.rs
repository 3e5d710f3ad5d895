//! A database made by an older collector, before the modern layout
//! existed, keeps every row when the current collector starts on it, and
//! gains the modern layout's names, column types and TTL where the server
//! has them (issue 11).

use std::time::Duration;

use logferry_collector::store::schema::{ServerVersion, MIGRATIONS};
use logferry_e2e::api::{insert_rows, Stack, USER_PASSWORD};
use logferry_e2e::{now_ns, seed_line, wait_until, Agent, ClickHouse};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DB: &str = "upgrade";
const ROWS: u64 = 300;

/// What a collector with migrations 1 to 8 made: their baseline
/// statements, whatever the server.
fn create_as_an_older_collector(ch: &ClickHouse) -> ServerVersion {
    let version = ServerVersion::parse(&ch.query("SELECT version()")).expect("a version");
    ch.query(&format!("CREATE DATABASE {DB}"));
    ch.query(&format!(
        "CREATE TABLE {DB}.schema_migrations (version UInt32, name String, applied_at DateTime) \
         ENGINE = MergeTree ORDER BY version"
    ));
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version <= 8 && m.requires.is_none_or(|r| version >= r))
    {
        for statement in m.statements {
            ch.query(&statement.replace("{db}", DB));
        }
        ch.query(&format!(
            "INSERT INTO {DB}.schema_migrations VALUES ({}, '{}', now())",
            m.version,
            m.name.replace('\'', "\\'")
        ));
    }
    version
}

fn row(now: u64, i: u64) -> Value {
    json!({
        "tenant": "acme",
        "timestamp": (now - i * 1_000_000_000) / 1_000_000_000,
        "time_unix_nano": now - i * 1_000_000_000,
        "severity_number": 9,
        "severity_text": "INFO",
        "service": "api",
        "host": "h1",
        "body": if i.is_multiple_of(10) { format!("payment Declined for order {i}") } else { format!("request {i} handled") },
        "attr_keys": ["order_id", "region"],
        "attr_values": [(i % 7).to_string(), "eu"],
        "agent_id": "old-agent",
        "seq": i,
    })
}

fn seqs(reply: &Value) -> Vec<u64> {
    let mut seqs: Vec<u64> = reply["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {reply}"))
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_database_keeps_every_row_and_gains_the_modern_capabilities() {
    let ch = ClickHouse::start();
    let version = create_as_an_older_collector(&ch);
    let now = now_ns();
    let rows: Vec<Value> = (0..ROWS).map(|i| row(now, i)).collect();
    insert_rows(&ch.url(), DB, &rows).await;
    assert!(!ch.has_maps_layout(DB), "the baseline layout");

    let stack = Stack::start_on(ch, DB, None, "", "[alerts]\nenabled = false\n").await;
    let http = &stack.http;
    let ana = http.login("ana", USER_PASSWORD).await;
    let search = |q: &'static str| {
        let ana = ana.clone();
        async move {
            let reply = http
                .search(&ana, &[("q", q), ("last", "1h"), ("limit", "1000")])
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{q}: {}", reply.body);
            seqs(&reply.body)
        }
    };
    assert_eq!(search("").await, (0..ROWS).collect::<Vec<_>>(), "every row");
    assert_eq!(
        search("order_id:3").await,
        (0..ROWS).filter(|i| i % 7 == 3).collect::<Vec<_>>(),
        "attributes"
    );
    assert_eq!(
        search("declined").await,
        (0..ROWS)
            .filter(|i| i.is_multiple_of(10))
            .collect::<Vec<_>>(),
        "text"
    );

    // The current collector writes into the upgraded table.
    let (_, token) = stack.agent_token_file("acme").await;
    let logs = stack.dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let lines: String = (0..50).map(|n| seed_line("new", n) + "\n").collect();
    std::fs::write(logs.join("new.log"), lines).expect("log file");
    let agent_dir = stack.dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let _agent = Agent::with_forward(
        &agent_dir,
        &[stack.collector.endpoint()],
        &logferry_e2e::json_source(&logs, ""),
        "",
        &format!("token_file = \"{}\"", token.display()),
    );
    assert!(
        wait_until(Duration::from_secs(30), || stack.ch.count(&format!(
            "SELECT count() FROM {DB}.logs WHERE file_path LIKE '%/new.log'"
        )) == 50),
        "{}",
        stack.collector.proc.log_text()
    );
    let reply = http
        .search(
            &ana,
            &[("q", "\"new line 7\""), ("from", "0"), ("limit", "10")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["records"].as_array().map(Vec::len),
        Some(1),
        "{}",
        reply.body
    );

    let ddl = stack.ch.query(&format!("SHOW CREATE TABLE {DB}.logs"));
    let modern = version >= logferry_collector::store::schema::MODERN;
    for feature in [
        "`service` LowCardinality(String)",
        "`time` DateTime64(9) ALIAS",
        "`attributes` Map(String, String) ALIAS",
        "ttl_only_drop_parts = 1",
    ] {
        assert_eq!(ddl.contains(feature), modern, "{feature} in {ddl}");
    }
    assert_eq!(
        ddl.contains("idx_body_ngrams"),
        version >= logferry_collector::store::schema::BODY_NGRAMS,
        "{ddl}"
    );
    assert!(!stack.ch.has_maps_layout(DB), "the arrays stay physical");
    if modern {
        // The aliases read the stored columns.
        assert_eq!(
            stack.ch.query(&format!(
                "SELECT toUnixTimestamp64Nano(time) = time_unix_nano, attributes['order_id'] \
                 FROM {DB}.logs WHERE seq = 10"
            )),
            "1\t3\n"
        );
        // Retention's TTL, once its first check ran.
        assert!(
            wait_until(Duration::from_secs(20), || stack
                .ch
                .query(&format!("SHOW CREATE TABLE {DB}.logs"))
                .contains("TTL timestamp + toIntervalDay(")),
            "no TTL"
        );
    }
}
