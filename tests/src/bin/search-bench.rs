//! Search latency on a realistic volume: ROWS rows (default 10,000,000)
//! spread over the last 24 hours, in a private ClickHouse behind a real
//! collector; each query is sent RUNS times over HTTP, as an analyst would,
//! and the median and 95th percentile are printed.
//!
//! Rows are generated inside ClickHouse (`INSERT … SELECT FROM numbers`):
//! 8 services, 20 hosts, one error in 20, statuses, durations, paths with
//! ids, and a unique request id per row.
//!
//! Usage: search-bench [ROWS] [RUNS] (defaults 10000000 and 30). Build with
//! --release.

use std::time::Instant;

use logferry_e2e::api::{bench_args, quantile_ms, Stack, USER_PASSWORD};

const DAY_S: u64 = 86_400;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, runs) = bench_args(30)?;
    let stack = Stack::start("bench", None, "").await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let start = now_s - DAY_S;

    let started = Instant::now();
    // Row n is at start + n * step, in nanoseconds.
    let step = DAY_S * 1_000_000_000 / rows;
    let columns = "tenant, timestamp, time_unix_nano, severity_number, severity_text, service, host, \
         environment, body, request_id, trace_id, http_method, http_path, http_status, duration_ms, client_ip, \
         user_agent, user_id, logger, module, function, attr_keys, attr_values, agent_id, seq";
    let select = format!(
        "SELECT if(number % 10 = 9, 'globex', 'acme') AS tenant, \
           toDateTime(intDiv(t, 1000000000)), t, \
           if(number % 20 = 0, 17, if(number % 20 = 1, 13, 9)), \
           if(number % 20 = 0, 'ERROR', if(number % 20 = 1, 'WARNING', 'INFO')), \
           ['api', 'checkout', 'search', 'auth', 'billing', 'catalog', 'cart', 'web'][intDiv(number, 3) % 8 + 1], \
           concat('host-', toString(number % 20)), if(number % 3 = 0, 'staging', 'prod'), \
           if(number % 20 = 0, concat('upstream timeout after ', toString(number % 3000), ' ms calling payments'), \
              concat('request completed in ', toString(number % 900), ' ms for user ', toString(number % 5000))), \
           concat('req-', toString(number)), lower(hex(cityHash64(number))), \
           ['GET', 'POST', 'PUT', 'DELETE'][number % 4 + 1], concat('/api/v1/items/', toString(number % 10000)), \
           if(number % 20 = 0, 500, if(number % 50 = 1, 404, 200)), (number % 2000) / 2, \
           concat('10.0.', toString(number % 250), '.', toString(number % 200)), 'Mozilla/5.0', \
           concat('user-', toString(number % 5000)), 'app', 'handlers', 'dispatch', \
           ['order_id', 'region'], [toString(number % 100000), ['eu', 'us', 'ap'][number % 3 + 1]], \
           'bench-agent', number \
         FROM (SELECT number, {start} * 1000000000 + number * {step} AS t \
               FROM numbers({rows}))"
    );
    stack.ch.seed_logs("bench", columns, &select);
    stack.ch.query("OPTIMIZE TABLE bench.logs FINAL");
    println!(
        "{rows} rows over 24 h inserted and merged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let http = &stack.http;
    let ana = http.login("ana", USER_PASSWORD).await;
    let queries: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "errors of one service, last hour (first page)",
            vec![("q", "service:checkout level:error".into())],
        ),
        (
            "free text, last hour (first page)",
            vec![("q", "\"timeout\"".into())],
        ),
        (
            "status >= 500 on a path prefix, last 24 h",
            vec![
                ("q", "status:>=500 path:/api/v1/items/42*".into()),
                ("last", "24h".into()),
            ],
        ),
        (
            "everything, last 24 h (first page)",
            vec![("last", "24h".into())],
        ),
        (
            "oldest first, last 24 h (first page)",
            vec![("last", "24h".into()), ("order", "oldest".into())],
        ),
        (
            "request id lookup, last 24 h",
            vec![("request_id", "req-{n}".into()), ("last", "24h".into())],
        ),
        (
            "trace id lookup, last 24 h",
            vec![("trace_id", "{trace}".into()), ("last", "24h".into())],
        ),
    ];
    println!(
        "{:<48} {:>9} {:>9} {:>7}",
        "query", "p50 ms", "p95 ms", "rows"
    );
    for (name, params) in &queries {
        let mut times = Vec::with_capacity(runs);
        let mut count = 0;
        for run in 0..=runs {
            // A different id each run, anywhere in the day, in acme.
            let n = (run as u64 * 7_368_787 + 1_234_567) % rows / 10 * 10 + 3;
            let trace = stack
                .ch
                .query(&format!("SELECT lower(hex(cityHash64(toUInt64({n}))))"));
            let p: Vec<(&str, String)> = params
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        v.replace("{n}", &n.to_string())
                            .replace("{trace}", trace.trim()),
                    )
                })
                .collect();
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = Instant::now();
            let reply = http.search(&ana, &p).await;
            let elapsed = t.elapsed();
            anyhow::ensure!(
                reply.status.is_success(),
                "{name}: {} {}",
                reply.status,
                reply.body
            );
            count = reply.body["records"].as_array().map_or(0, Vec::len);
            if name.contains("lookup") {
                anyhow::ensure!(count == 1, "{name}: expected the one row, got {count}");
            }
            if run > 0 {
                times.push(elapsed);
            }
        }
        times.sort();
        println!(
            "{name:<48} {:>9.1} {:>9.1} {count:>7}",
            quantile_ms(&times, 0.5),
            quantile_ms(&times, 0.95)
        );
    }
    Ok(())
}
