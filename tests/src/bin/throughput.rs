//! End-to-end throughput: N lines in the seed's JSON format, shipped by a
//! real agent (durable queue, fsync on) through a real collector into a
//! private ClickHouse, all on this machine. Prints lines/s, MiB/s, the
//! agent's and collector's CPU seconds and peak RSS, and two references on
//! the same file: `cat` reading it, and clickhouse-client inserting it
//! directly (JSONEachRow, one statement).
//!
//! Usage: throughput [LINES] [--no-analyze] (default 1,000,000 lines, with
//! ingest's stamping on). Build with --release.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logferry_e2e::{seed_line, wait_until, Agent, ClickHouse, Collector, TempDir};

fn main() -> anyhow::Result<()> {
    let lines: u64 = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(a) => a.replace('_', "").parse()?,
        None => 1_000_000,
    };
    // `--no-analyze`: ingest without pattern and security stamping, to
    // measure what it costs.
    let analyze = !std::env::args().any(|a| a == "--no-analyze");
    let dir = TempDir::new()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let file = logs.join("app.log");
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
        for n in 0..lines {
            writeln!(w, "{}", seed_line("app", n))?;
        }
        w.flush()?;
    }
    let bytes = std::fs::metadata(&file)?.len();
    let mib = bytes as f64 / (1 << 20) as f64;
    println!("{lines} lines, {mib:.1} MiB in the seed's JSON format");

    // Reference 1: cat.
    let started = Instant::now();
    Command::new("cat")
        .arg(&file)
        .stdout(Stdio::null())
        .status()?;
    let cat = started.elapsed();

    let ch = ClickHouse::start();
    // Reference 2: ClickHouse inserting the same rows directly.
    ch.query("CREATE DATABASE direct");
    ch.query(
        "CREATE TABLE direct.logs (timestamp String, level String, logger String, message String, module String, \
         function String, line UInt32, request_id String, duration_ms Float64, status_code UInt16, client_ip String, \
         user_agent String, event_type String) ENGINE = MergeTree ORDER BY tuple()",
    );
    let started = Instant::now();
    let status = Command::new("clickhouse-client")
        .args([
            "--port",
            &ch.tcp_port.to_string(),
            "--query",
            "INSERT INTO direct.logs FORMAT JSONEachRow",
        ])
        .stdin(std::fs::File::open(&file)?)
        .status()?;
    anyhow::ensure!(status.success(), "direct insert failed");
    let direct = started.elapsed();

    // logferry.
    let mut collector = Collector::start(
        logferry_e2e::free_port(),
        dir.path(),
        "collector",
        &ch,
        "bench",
        logferry_e2e::Security {
            ingest: if analyze { "" } else { "analyze = false" },
            ..logferry_e2e::OPEN
        },
        "",
    );
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nservice = \"bench\"\n",
        logs.display()
    );
    let ch_cpu_before = ch.usage().map_or(0.0, |u| u.0);
    let events_before = events(&ch);
    let started = Instant::now();
    let mut agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    let mut peak = (0.0, 0.0, 0.0, 0.0);
    let mut polls = 0;
    let done = wait_until(Duration::from_secs(1800), || {
        if let (Some(a), Some(c)) = (agent.proc.usage(), collector.proc.usage()) {
            peak = (a.0, a.1, c.0, c.1);
        }
        polls += 1;
        ch.count("SELECT count() FROM bench.logs") >= lines
    });
    let shipped = started.elapsed();
    anyhow::ensure!(
        done,
        "timed out with {} rows",
        ch.count("SELECT count() FROM bench.logs")
    );
    let ch_cpu = ch.usage().map_or(0.0, |u| u.0) - ch_cpu_before;
    let stored = ch.count("SELECT count() FROM bench.logs");
    anyhow::ensure!(stored == lines, "expected {lines} rows, found {stored}");
    agent.proc.terminate();
    collector.proc.terminate();
    let events_after = events(&ch);
    let delta = |e: &str| {
        let get = |m: &std::collections::HashMap<String, u64>| m.get(e).copied().unwrap_or(0);
        get(&events_after).saturating_sub(get(&events_before))
    };
    let batches = ch.count("SELECT count() FROM bench.ingest_batches WHERE state = 2");
    // This tool's own statements: one count per poll, and the two reads of
    // the counters.
    let statements = delta("Query").saturating_sub(polls + 2);
    let per_batch = |n: u64| n as f64 / batches.max(1) as f64;

    let secs = shipped.as_secs_f64();
    println!();
    println!("| path | seconds | lines/s | MiB/s | CPU s | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| logferry agent -> collector -> ClickHouse | {secs:.2} | {:.0} | {:.1} | agent {:.2}, collector {:.2}, ClickHouse {ch_cpu:.2} | agent {:.0}, collector {:.0} |",
        lines as f64 / secs,
        mib / secs,
        peak.0,
        peak.2,
        peak.1,
        peak.3
    );
    println!(
        "| clickhouse-client JSONEachRow, one statement | {:.2} | {:.0} | {:.1} | | |",
        direct.as_secs_f64(),
        lines as f64 / direct.as_secs_f64(),
        mib / direct.as_secs_f64()
    );
    println!(
        "| cat > /dev/null | {:.3} | {:.0} | {:.0} | | |",
        cat.as_secs_f64(),
        lines as f64 / cat.as_secs_f64(),
        mib / cat.as_secs_f64()
    );
    println!();
    println!(
        "ClickHouse {}: {batches} batches; per batch {:.2} statements ({:.2} INSERT, {:.2} SELECT), \
         {:.2} new parts; {:.1} CPU s per million lines",
        ch.query("SELECT version()").trim(),
        per_batch(statements),
        per_batch(delta("InsertQuery")),
        per_batch(delta("SelectQuery").saturating_sub(polls)),
        per_batch(delta("MergeTreeDataWriterBlocks")),
        ch_cpu / lines as f64 * 1e6
    );
    storage(&ch, lines)?;
    Ok(())
}

/// Bytes on disk per million lines of `bench.logs`, merged, and, on a
/// modern layout, of the same rows in the baseline's column types (a copy
/// with no codecs, `LowCardinality` or maps).
fn storage(ch: &ClickHouse, lines: u64) -> anyhow::Result<()> {
    let bytes = |table: &str| -> anyhow::Result<(f64, f64)> {
        ch.query(&format!("OPTIMIZE TABLE bench.{table} FINAL"));
        // 18.16 has no skip indexes, nor the column that sizes them.
        let parts = |indexes: &str| {
            ch.try_query(&format!(
                "SELECT sum(data_compressed_bytes), {indexes} \
                 FROM system.parts WHERE database = 'bench' AND table = '{table}' AND active"
            ))
        };
        let row = parts("sum(secondary_indices_compressed_bytes)")
            .or_else(|_| parts("0"))
            .map_err(anyhow::Error::msg)?;
        let mut it = row.split_whitespace().map(str::parse::<f64>);
        let per_m = 1e6 / lines as f64 / (1 << 20) as f64;
        Ok((
            it.next().unwrap_or(Ok(0.0))? * per_m,
            it.next().unwrap_or(Ok(0.0))? * per_m,
        ))
    };
    let (columns, indexes) = bytes("logs")?;
    let layout = if ch.has_maps_layout("bench") {
        "modern"
    } else {
        "baseline"
    };
    println!(
        "storage, {layout} layout: {columns:.1} MiB of columns and {indexes:.1} MiB of skip indexes per million lines"
    );
    if layout == "modern" {
        // The baseline's types: strings for `LowCardinality`, the arrays
        // and nanoseconds the aliases compute, default compression.
        let columns: Vec<String> = ch
            .query(
                "SELECT name, type FROM system.columns WHERE database = 'bench' AND table = 'logs' \
                 AND name NOT IN ('time', 'attributes', 'resource') ORDER BY position",
            )
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, ty)| {
                let ty = ty.replace("LowCardinality(String)", "String");
                format!("CAST({name} AS {ty}) AS {name}")
            })
            .collect();
        ch.query(&format!(
            "CREATE TABLE bench.logs_baseline ENGINE = MergeTree PARTITION BY toYYYYMMDD(timestamp) \
             ORDER BY (tenant, service, timestamp) AS SELECT {} FROM bench.logs",
            columns.join(", ")
        ));
        let (columns, _) = bytes("logs_baseline")?;
        println!("storage, the same rows in the baseline's types: {columns:.1} MiB of columns per million lines");
    }
    Ok(())
}

/// The server's cumulative counters (`system.events`) that say what it
/// was asked to do: statements, and blocks written (a new part each).
fn events(ch: &ClickHouse) -> std::collections::HashMap<String, u64> {
    ch.query(
        "SELECT event, value FROM system.events \
         WHERE event IN ('Query', 'InsertQuery', 'SelectQuery', 'MergeTreeDataWriterBlocks')",
    )
    .lines()
    .filter_map(|l| {
        let (name, value) = l.split_once('\t')?;
        Some((name.to_string(), value.parse().ok()?))
    })
    .collect()
}
