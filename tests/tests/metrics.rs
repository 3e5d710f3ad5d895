//! `/metrics` of both programs during an end-to-end run: Prometheus text
//! that `promtool check metrics` (Debian's prometheus package) accepts,
//! with counters that match what a real agent shipped, and API latencies
//! labelled by route template.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use logferry_e2e::{scrape, seed_line, wait_until, Agent, ClickHouse, Collector, TempDir};

/// The value of a sample line, by its name and labels as exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; the README's test command does it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_programs_metrics_count_what_was_shipped_and_pass_promtool() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "metrics", "");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let lines: String = (0..300).map(|n| seed_line("app.log", n) + "\n").collect();
    std::fs::write(logs.join("app.log"), lines).expect("log file");
    let sources = logferry_e2e::json_source(&logs, "");
    let agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    assert!(
        wait_until(Duration::from_secs(60), || ch
            .count("SELECT count() FROM metrics.logs")
            == 300),
        "the lines did not arrive"
    );

    let url = collector.http_url();
    // One API call that is refused, to label a route with its status.
    let refused = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/api/v1/auth/me"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");

    let text = scrape(&url);
    assert_eq!(
        sample(
            &text,
            "logferry_collector_ingest_records_total{tenant=\"default\"}"
        ),
        Some(300.0),
        "{text}"
    );
    let batches = sample(
        &text,
        "logferry_collector_ingest_batches_total{tenant=\"default\"}",
    )
    .unwrap_or(0.0);
    assert!(batches >= 1.0, "{text}");
    let inserts = sample(
        &text,
        "logferry_collector_clickhouse_insert_duration_seconds_count",
    )
    .unwrap_or(0.0);
    assert_eq!(inserts, batches, "one insert timing per stored batch");
    assert_eq!(
        sample(
            &text,
            "logferry_collector_api_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/auth/me\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("route=\"/nope"),
        "raw paths never become labels"
    );

    let (ok, report) = promtool(&text);
    assert!(ok, "promtool check metrics: {report}");

    // The agent's side of the same run.
    let bytes: usize = (0..300).map(|n| seed_line("app.log", n).len() + 1).sum();
    let agent_url = agent.metrics_url();
    assert!(
        wait_until(Duration::from_secs(10), || sample(
            &scrape(&agent_url),
            "logferry_agent_queue_records"
        ) == Some(0.0)),
        "the queue drains once the collector acknowledged"
    );
    let text = scrape(&agent_url);
    for (series, value) in [
        ("logferry_agent_tail_lines_total{source=\"app\"}", 300.0),
        (
            "logferry_agent_tail_bytes_total{source=\"app\"}",
            bytes as f64,
        ),
        ("logferry_agent_tail_files{source=\"app\"}", 1.0),
        ("logferry_agent_tail_unread_bytes{source=\"app\"}", 0.0),
        (
            "logferry_agent_tail_parse_errors_total{source=\"app\"}",
            0.0,
        ),
        ("logferry_agent_queue_oldest_unacked_age_seconds", 0.0),
        (
            "logferry_agent_forward_batches_total{outcome=\"acknowledged\"}",
            batches,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}: {text}");
    }
    let roundtrips = sample(
        &text,
        "logferry_agent_forward_roundtrip_duration_seconds_count",
    )
    .unwrap_or(0.0);
    assert!(roundtrips >= batches, "{text}");
    let (ok, report) = promtool(&text);
    assert!(ok, "promtool check metrics (agent): {report}");
}
