//! Sentry: a local HTTP endpoint plays Sentry and receives real envelopes:
//! a panic report from each program (`--sentry-test`, DSN from
//! `SENTRY_DSN`), and events for new error groups forwarded by the
//! collector from the logs it ingests, rate-limited.

use std::process::Command;
use std::time::Duration;

use logferry_e2e::receiver::{Received, Receiver};
use logferry_e2e::{bin, wait_until, write_config, Agent, ClickHouse, Collector, TempDir};
use serde_json::Value;

/// The event of an envelope, which Sentry's own parser (sentry-types)
/// must accept, as JSON.
fn event(r: &Received) -> Value {
    let envelope = sentry::Envelope::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "not a Sentry envelope ({e}): {}",
            String::from_utf8_lossy(&r.body)
        )
    });
    let event = envelope.event().expect("the envelope holds an event");
    serde_json::to_value(event).expect("event JSON")
}

fn sentry_test(program: &str, config: &std::path::Path, dsn: &str) -> std::process::Output {
    Command::new(bin(program))
        .args(["--config", &config.display().to_string(), "--sentry-test"])
        .env("SENTRY_DSN", dsn)
        .env("SENTRY_ENVIRONMENT", "e2e")
        .output()
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_programs_report_panics_and_the_collector_forwards_new_error_groups() {
    let dir = TempDir::new().expect("tempdir");
    let sentry = Receiver::start().await;

    // Panics, one per program.
    let agent_cfg = write_config(
        dir.path(),
        "agent-only.toml",
        &format!(
            "data_dir = \"{}\"\n[forward]\nendpoints = [\"http://127.0.0.1:9\"]\n[metrics]\nlisten = \"\"\n",
            dir.path().join("agent-data").display()
        ),
    );
    let collector_cfg = write_config(
        dir.path(),
        "collector-only.toml",
        "[tls]\nplaintext = true\n",
    );
    for (program, cfg, project) in [
        ("logferry-agent", &agent_cfg, "7"),
        ("logferry-collector", &collector_cfg, "8"),
    ] {
        let out = sentry_test(
            program,
            cfg,
            &sentry
                .url(&format!("/{project}"))
                .replacen("http://", "http://key@", 1),
        );
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = sentry.at(&format!("/api/{project}/envelope/"));
        assert_eq!(got.len(), 1, "{program}: one report");
        assert!(got[0].header("x-sentry-auth").contains("sentry_key=key"));
        let e = event(&got[0]);
        let exception = &e["exception"]["values"][0];
        assert_eq!(exception["type"], "panic", "{e}");
        assert!(
            exception["value"]
                .as_str()
                .unwrap_or_default()
                .contains("--sentry-test: a deliberate panic"),
            "{e}"
        );
        assert_eq!(
            e["release"],
            format!("{program}@{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(e["environment"], "e2e");
        assert_eq!(e["tags"]["program"], program);
        assert!(
            !e["tags"]["host"].as_str().unwrap_or_default().is_empty(),
            "{e}"
        );
    }
    // Without a DSN the check says so and fails.
    let out = Command::new(bin("logferry-agent"))
        .args([
            "--config",
            &agent_cfg.display().to_string(),
            "--sentry-test",
        ])
        .env_remove("SENTRY_DSN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Sentry configured"));

    // New error groups in ingested logs, at most 2 a minute.
    let ch = ClickHouse::start();
    let dsn = sentry.url("/9").replacen("http://", "http://key@", 1);
    let collector = Collector::new(
        dir.path(),
        "collector",
        &ch,
        "sentry",
        &format!(
            "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\ndefault_rules = false\n\
             sentry_forward_dsn = \"{dsn}\"\nsentry_forward_max_per_minute = 2\n"
        ),
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let now = logferry_e2e::now_rfc3339();
    let lines: String = [
        "Payment provider timed out after 30 s",
        "Cannot connect to database replica db-2",
        "Template render failed for invoice",
    ]
    .iter()
    .map(|m| {
        format!(
            "{{\"timestamp\": \"{now}\", \"level\": \"ERROR\", \"service\": \"billing\", \"message\": \"{m}\", \"request_id\": \"r-1\"}}\n"
        )
    })
    .collect();
    std::fs::write(logs.join("app.log"), lines).expect("log");
    let sources = logferry_e2e::json_source(&logs, "");
    let _agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    assert!(
        wait_until(Duration::from_secs(30), || sentry
            .at("/api/9/envelope/")
            .len()
            >= 2),
        "forwarded error groups"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            ch.count(
            "SELECT count() FROM sentry.alert_history WHERE event = 'failed' AND error LIKE '%rate limit%'"
        ) == 1
        }),
        "the third group is held back by the rate limit, and recorded"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = sentry.at("/api/9/envelope/");
    assert_eq!(got.len(), 2, "rate-limited to 2 a minute");
    for r in &got {
        let e = event(r);
        let message = e["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("timed out")
                || message.contains("Cannot connect")
                || message.contains("render failed"),
            "the sample message: {e}"
        );
        assert_eq!(e["extra"]["attributes"]["services"][0], "billing", "{e}");
        assert_eq!(e["tags"]["tenant"], "default");
        // One Sentry issue per group: the fingerprint is the alert's key.
        let fingerprint = e["fingerprint"][0].as_str().unwrap_or_default();
        assert!(
            fingerprint.starts_with("logferry/default/config-all-sentry-forward/"),
            "{e}"
        );
    }
}
