//! Analytics latency on a realistic volume: ROWS rows (default 10,000,000)
//! over the last 24 hours, in a private ClickHouse behind a real collector.
//! Every analytics endpoint is called RUNS times over HTTP for the last
//! 24 hours, as an analyst of one tenant; the first call and the median
//! and 95th percentile of the following RUNS are printed (the daily report
//! of a day that is over is cached, so its first call is the computation).
//!
//! Rows: `fill_bench_logs`.
//!
//! Usage: analytics-bench [ROWS] [RUNS] (defaults 10000000 and 20). Build
//! with --release.

use std::time::{Duration, Instant};

use logferry_e2e::api::{bench_args, fill_bench_logs, quantile_ms, Stack, USER_PASSWORD};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, runs) = bench_args(20)?;
    let stack = Stack::start("bench", None, "").await;
    let started = Instant::now();
    fill_bench_logs(&stack, rows)?;
    println!(
        "{rows} rows over 24 h inserted and merged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let http = &stack.http;
    let ana = http.login("ana", USER_PASSWORD).await;
    let views = [
        ("health", "last=24h"),
        ("errors", "last=24h"),
        ("performance", "last=24h"),
        ("security", "last=24h"),
        ("users/activity", "last=24h"),
        ("alerts/active", ""),
        // Yesterday (UTC), which the last 24 hours overlap.
        ("report/daily", ""),
    ];
    println!("| endpoint (acme, 24 h) | first call ms | p50 ms | p95 ms |\n|---|---:|---:|---:|");
    for (view, query) in views {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut first = Duration::ZERO;
        for run in 0..=runs {
            let t = Instant::now();
            let reply = http
                .get(&format!("/api/v1/logs/{view}?{query}"), Some(&ana))
                .await;
            let elapsed = t.elapsed();
            anyhow::ensure!(
                reply.status.is_success(),
                "{view}: {} {}",
                reply.status,
                reply.body
            );
            if run > 0 {
                times.push(elapsed);
            } else {
                first = elapsed;
            }
        }
        times.sort();

        println!(
            "| {view} | {:.0} | {:.0} | {:.0} |",
            first.as_secs_f64() * 1000.0,
            quantile_ms(&times, 0.5),
            quantile_ms(&times, 0.95)
        );
    }
    Ok(())
}
