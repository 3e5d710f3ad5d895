//! The collector's `/metrics`: Prometheus text that `promtool check metrics`
//! (Debian's prometheus package) accepts, with counters that match what a
//! real agent shipped and API latencies labelled by route template.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use logferry_e2e::{seed_line, wait_until, Agent, ClickHouse, Collector, TempDir};

fn scrape(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("{url}/metrics")])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "GET /metrics failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

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
async fn collector_metrics_count_what_was_shipped_and_pass_promtool() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "metrics", "");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let lines: String = (0..300).map(|n| seed_line("app.log", n) + "\n").collect();
    std::fs::write(logs.join("app.log"), lines).expect("log file");
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nformat = \"json\"\n",
        logs.display()
    );
    let _agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
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
}
