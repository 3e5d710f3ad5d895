//! `--latency RATE`: how long a line written to a file takes to become
//! searchable, under a steady rate of request-shaped lines.
//!
//! A writer appends `RATE` lines a second for `--seconds` in small bursts
//! (every `TICK`). Every `PROBE_EVERY`th line is a probe: its `request_id`
//! is `p`, the wall-clock nanoseconds just before its burst was written, a
//! dash and its line number.
//! A poller asks ClickHouse for the probes stored every `POLL`; a probe's
//! latency is the time the first query that returned it was sent, less its
//! write time. So each figure is an upper bound, at most one `POLL` above
//! the moment the row became visible. Each run ends when every line is
//! stored, and is checked as the throughput runs are: as many rows as
//! lines, each `request_id` once.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logferry_e2e::{request_line, wait_until, ClickHouse, Proc};

use crate::{agent_for, fluent_bit_for, spread, start_collector, Options, SHAPES};

/// How often the writer appends a burst.
const TICK: Duration = Duration::from_millis(5);
/// Every this many lines, one probe.
const PROBE_EVERY: u64 = 100;
/// How often the poller asks for the stored probes.
const POLL: Duration = Duration::from_millis(100);

/// One contender's run: every probe's latency in milliseconds, and the CPU
/// seconds of its processes over the run.
struct Latencies {
    ms: Vec<f64>,
    cpu: f64,
    secs: f64,
}

/// Runs logferry and, with `fluent_bit`, Fluent Bit in turn, `o.runs`
/// times each, and prints each run and the medians over them.
pub fn run(
    ch: &ClickHouse,
    dir: &Path,
    o: &Options,
    rate: u64,
    fluent_bit: Option<&Path>,
) -> anyhow::Result<()> {
    let seconds = o.seconds;
    let shape = SHAPES[0];
    let names: Vec<&str> = match fluent_bit {
        Some(d) => {
            println!("Fluent Bit: {}", d.display());
            vec!["logferry (agent, collector)", "Fluent Bit"]
        }
        None => vec!["logferry (agent, collector)"],
    };
    println!(
        "latency: {rate} {} lines/s for {seconds} s, a probe every {PROBE_EVERY} lines, polled every {} ms",
        shape.name,
        POLL.as_millis()
    );
    let mut results: Vec<Vec<Latencies>> = names.iter().map(|_| Vec::new()).collect();
    for run in 0..o.runs {
        for i in 0..names.len() {
            let c = (i + run) % names.len();
            let work = dir.join(format!("latency-{run}-{c}"));
            std::fs::create_dir(&work)?;
            let file = work.join("written.log");
            std::fs::File::create(&file)?;
            let db = format!("l_{run}_{c}");
            let table = format!("{db}.logs");
            let l = if c == 0 {
                let mut collector = start_collector(ch, &work, &db, o)?;
                let mut agent = agent_for(&work, &file, shape, collector.ingest, o)?;
                agent.start();
                let l = measure(ch, &table, &file, rate, seconds, &[&agent, &collector.proc]);
                agent.terminate();
                collector.proc.terminate();
                l?
            } else {
                let fb = fluent_bit.expect("listed");
                let (mut proc, _) = fluent_bit_for(ch, fb, &work, &db, &file, shape)?;
                proc.start();
                let l = measure(ch, &table, &file, rate, seconds, &[&proc]);
                proc.terminate();
                l?
            };
            ch.query(&format!("DROP DATABASE IF EXISTS {db}"));
            std::fs::remove_dir_all(&work)?;
            let s = spread(&l.ms);
            println!(
                "run {}: {:<28} median {:.0} ms, p99 {:.0} ms, max {:.0} ms; CPU {:.0}% of a core",
                run + 1,
                names[c],
                s.median,
                quantile(&l.ms, 0.99),
                s.max,
                100.0 * l.cpu / l.secs
            );
            results[c].push(l);
        }
    }
    println!(
        "\nClickHouse {}, {rate} lines/s for {seconds} s, medians over {} runs (range):\n",
        ch.query("SELECT version()").trim(),
        o.runs
    );
    println!("| path | median ms | p99 ms | max ms | CPU % of a core |");
    println!("|---|---:|---:|---:|---:|");
    for (name, runs) in names.iter().zip(&results) {
        let of = |f: &dyn Fn(&Latencies) -> f64| spread(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "| {name} | {} | {} | {} | {} |",
            of(&|l| spread(&l.ms).median).show(0),
            of(&|l| quantile(&l.ms, 0.99)).show(0),
            of(&|l| spread(&l.ms).max).show(0),
            of(&|l| 100.0 * l.cpu / l.secs).show(0)
        );
    }
    Ok(())
}

/// Writes the lines while polling for the probes; then waits for every
/// line and checks each is stored once.
fn measure(
    ch: &ClickHouse,
    table: &str,
    file: &Path,
    rate: u64,
    seconds: u64,
    procs: &[&Proc],
) -> anyhow::Result<Latencies> {
    let cpu_before: f64 = procs.iter().filter_map(|p| p.usage()).map(|u| u.0).sum();
    let started = Instant::now();
    let total = rate * seconds;
    let writer = {
        let file = file.to_path_buf();
        std::thread::spawn(move || write_steadily(&file, rate, total))
    };
    let mut seen = HashSet::new();
    let mut ms = Vec::new();
    let probes = total.div_ceil(PROBE_EVERY);
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    while (seen.len() as u64) < probes && Instant::now() < deadline {
        if let Some(p) = procs.iter().find(|p| p.usage().is_none()) {
            anyhow::bail!("a process exited: {}", p.log_text());
        }
        let asked = now_ns();
        let rows = ch
            .try_query(&format!(
                "SELECT request_id FROM {table} WHERE request_id LIKE 'p%'"
            ))
            .unwrap_or_default();
        for id in rows.lines() {
            if seen.insert(id.to_string()) {
                let written: u64 = id[1..].split('-').next().unwrap_or("").parse()?;
                ms.push(asked.saturating_sub(written) as f64 / 1e6);
            }
        }
        std::thread::sleep(POLL);
    }
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    anyhow::ensure!(
        seen.len() as u64 == probes,
        "{} of {probes} probes stored in time",
        seen.len()
    );
    let count = || ch.count(&format!("SELECT count() FROM {table}"));
    let all = wait_until(Duration::from_secs(120), || count() >= written);
    let secs = started.elapsed().as_secs_f64();
    let cpu_after: f64 = procs.iter().filter_map(|p| p.usage()).map(|u| u.0).sum();
    let distinct = ch.count(&format!("SELECT uniqExact(request_id) FROM {table}"));
    anyhow::ensure!(
        all && count() == written && distinct == written,
        "{table}: {} rows, {distinct} distinct, for {written} lines",
        count()
    );
    Ok(Latencies {
        ms,
        cpu: cpu_after - cpu_before,
        secs,
    })
}

/// Appends `total` lines to `file` at `rate` a second, a burst every
/// `TICK`; returns how many it wrote.
fn write_steadily(file: &Path, rate: u64, total: u64) -> anyhow::Result<u64> {
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    let started = Instant::now();
    let mut n = 0;
    let mut burst = String::new();
    while n < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        burst.clear();
        let at = now_ns();
        while n < due {
            let line = request_line(n);
            if n.is_multiple_of(PROBE_EVERY) {
                let id = format!("\"request_id\":\"{n:08x}a1b2c3d4e5f6\"");
                anyhow::ensure!(line.contains(&id), "request_line changed its ids");
                burst.push_str(&line.replace(&id, &format!("\"request_id\":\"p{at}-{n}\"")));
            } else {
                burst.push_str(&line);
            }
            burst.push('\n');
            n += 1;
        }
        f.write_all(burst.as_bytes())?;
        std::thread::sleep(TICK);
    }
    Ok(n)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The `q` quantile of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}
