//! Analytics latency on a realistic volume: ROWS rows (default 10,000,000)
//! over the last 24 hours, in a private ClickHouse behind a real collector.
//! Every analytics endpoint is called RUNS times over HTTP for the last
//! 24 hours, as an analyst of one tenant; the first call and the median
//! and 95th percentile of the following RUNS are printed (the daily report
//! of a day that is over is cached, so its first call is the computation).
//!
//! Rows are generated inside ClickHouse (`INSERT … SELECT FROM numbers`)
//! with the columns ingest stamps filled as it would: 200 error patterns
//! (registered in `patterns`), 40 routes, one request in 20 failing, 5,000
//! users, failed logins, attack classes, scanners and bots.
//!
//! Usage: analytics-bench [ROWS] [RUNS] (defaults 10000000 and 20). Build
//! with --release.

use std::time::{Duration, Instant};

use logferry_e2e::api::{bench_args, quantile_ms, Stack, USER_PASSWORD};

const DAY_S: u64 = 86_400;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, runs) = bench_args(20)?;
    let stack = Stack::start("bench", None, "").await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let start = now_s - DAY_S;

    let started = Instant::now();
    let step = DAY_S * 1_000_000_000 / rows;
    let insert = format!(
        "INSERT INTO bench.logs (tenant, timestamp, time_unix_nano, observed_unix_nano, severity_number, severity_text, \
         service, host, environment, body, request_id, http_method, http_path, http_route, http_status, duration_ms, \
         client_ip, user_agent, user_id, event_type, module, function, attr_keys, attr_values, agent_id, seq, \
         pattern_id, security_class, security_rules) \
         SELECT if(number % 10 = 9, 'globex', 'acme'), toDateTime(intDiv(t, 1000000000)), t, t + 2000000, \
           if(number % 20 = 0, 17, 9), if(number % 20 = 0, 'ERROR', 'INFO'), \
           ['api', 'checkout', 'search', 'auth', 'billing', 'catalog', 'cart', 'web'][intDiv(number, 3) % 8 + 1], \
           concat('host-', toString(number % 20)), if(number % 3 = 0, 'staging', 'prod'), \
           if(number % 20 = 0, concat('upstream timeout ', toString(number % 200), ' after ', toString(number % 3000), ' ms'), \
              concat('API call: GET /api/v1/r', toString(number % 40), '/', toString(number % 10000))), \
           concat('req-', toString(intDiv(number, 2))), \
           ['GET', 'POST', 'PUT', 'DELETE'][number % 4 + 1], \
           concat('/api/v1/r', toString(number % 40), '/', toString(number % 10000)), \
           if(number % 97 = 5, '/api/v1/auth/login', concat('/api/v1/r', toString(number % 40), '/{{id}}')), \
           if(number % 97 = 5, 401, if(number % 20 = 0, 500, if(number % 50 = 1, 404, if(number % 211 = 3, 429, 200)))), \
           (number % 2000) / 2, concat('10.0.', toString(number % 250), '.', toString(number % 200)), \
           if(number % 101 = 7, 'curl/8.5.0', 'Mozilla/5.0 (X11; Linux x86_64)'), \
           concat('user-', toString(number % 5000)), 'api_performance', 'handlers', 'dispatch', \
           if(number % 20 = 0, ['exception.type'], emptyArrayString()), if(number % 20 = 0, [['TimeoutError', 'ValueError'][number % 2 + 1]], emptyArrayString()), \
           concat('bench-agent-', toString(number % 4)), number, \
           if(number % 20 = 0, number % 200, 1000 + number % 40), \
           multiIf(number % 997 = 11, 'sqli', number % 991 = 13, 'xss', number % 983 = 17, 'scanner', number % 101 = 7, 'bot', 'benign'), \
           if(number % 997 = 11, ['sqli_tautology'], emptyArrayString()) \
         FROM (SELECT number, {start} * 1000000000 + number * {step} AS t FROM numbers({rows}))"
    );
    stack.ch.query(&insert);
    stack.ch.query(&format!(
        "INSERT INTO bench.patterns SELECT tenant, number AS pattern_id, \
         concat('upstream timeout ', toString(number), ' after <*> ms'), toDateTime({start} - 3600), 'bench' \
         FROM numbers(200) ARRAY JOIN ['acme', 'globex'] AS tenant"
    ));
    stack.ch.query("OPTIMIZE TABLE bench.logs FINAL");
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
