//! What alert evaluation costs on a realistic volume: ROWS rows (default
//! 10,000,000) over the last 24 hours (`fill_bench_logs`, two tenants), and
//! a collector evaluating the four default rules for every tenant once a
//! second. After a first round (which also reads the tenants), the next
//! ROUNDS rounds are timed by the collector's own histogram
//! (`logferry_collector_alerts_evaluation_duration_seconds`); the mean per
//! round and the alerts they raised are printed.
//!
//! Usage: alerts-bench [ROWS] [ROUNDS] (defaults 10000000 and 20). Build
//! with --release.

use std::time::{Duration, Instant};

use logferry_e2e::api::{bench_args, fill_bench_logs, Stack};
use logferry_e2e::{wait_until, Collector};

/// (evaluations that succeeded, failed, seconds spent in all of them).
fn evaluations(collector: &Collector) -> (f64, f64, f64) {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", collector.http_url())])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let value = |series: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("logferry_collector_alerts_evaluations_total{outcome=\"ok\"}"),
        value("logferry_collector_alerts_evaluations_total{outcome=\"failed\"}"),
        value("logferry_collector_alerts_evaluation_duration_seconds_sum"),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, rounds) = bench_args(20)?;
    // The stack's own collector does not evaluate alerts.
    let stack = Stack::start("alertbench", None, "").await;
    let started = Instant::now();
    fill_bench_logs(&stack, rows)?;
    println!(
        "{rows} rows over 24 h inserted and merged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let evaluator = Collector::new(
        stack.dir.path(),
        "evaluator",
        &stack.ch,
        &stack.database,
        "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\n",
    );
    anyhow::ensure!(
        wait_until(Duration::from_secs(120), || evaluations(&evaluator).0
            >= 1.0),
        "no evaluation round finished"
    );
    let (ok0, failed0, sum0) = evaluations(&evaluator);
    anyhow::ensure!(
        wait_until(Duration::from_secs(600), || evaluations(&evaluator).0
            >= ok0 + rounds as f64),
        "the rounds did not finish"
    );
    let (ok, failed, sum) = evaluations(&evaluator);
    let firing = stack.ch.query(&format!(
        "SELECT rule, count() FROM {}.alert_states FINAL WHERE state = 'firing' GROUP BY rule ORDER BY rule FORMAT TSV",
        stack.database
    ));
    println!(
        "default rules, 2 tenants: {:.0} rounds, mean {:.0} ms per round ({} failed)",
        ok - ok0,
        (sum - sum0) / (ok - ok0) * 1000.0,
        failed - failed0
    );
    println!("firing after the rounds (rule, alerts):\n{firing}");
    let gauge = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", evaluator.http_url())])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("logferry_collector_alerts_firing ")
                .map(String::from)
        })
        .unwrap_or_default();
    println!("logferry_collector_alerts_firing {gauge}");
    Ok(())
}
