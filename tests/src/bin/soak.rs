//! A long run at a steady rate with periodic faults, outside CI: a writer
//! appends request-shaped JSON lines stamped with the time they are written,
//! a real agent ships them to two collectors over a private ClickHouse, and
//! every `--fault-every-s` one fault happens, in turn, lasting one sample
//! (10 s): the agent SIGKILLed, collector 0 SIGKILLed, ClickHouse stopped,
//! collector 1 SIGKILLed; each is started again at the next sample. The file is rotated by rename
//! every 5 minutes.
//!
//! Every 10 s a row goes to `OUT/soak.csv`: resident memory and CPU seconds
//! of each process, the agent's queue, the lines written and stored, and the
//! delivery lag (now less the newest stored line's time, in whole seconds). At the end the
//! writer stops, every line must arrive once (count and distinct lines), and
//! a summary gives each series' median, maximum and trend per hour over the
//! run's second half, and each process's CPU (median and maximum share of
//! a core). `scripts/soak.sh` runs this and plots the CSV.
//!
//! Usage: soak [--minutes 120] [--rate 2000] [--fault-every-s 600] [--out DIR]
//! Build with --release.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use logferry_e2e::{metric, now_rfc3339, wait_until, Agent, ClickHouse, Collector, TempDir};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const ROTATE_EVERY: Duration = Duration::from_secs(300);

struct Args {
    minutes: u64,
    rate: u64,
    fault_every: Duration,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 120,
        rate: 2000,
        fault_every: Duration::from_secs(600),
        out: PathBuf::from("soak-out"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--fault-every-s" => a.fault_every = Duration::from_secs(value.parse()?),
            "--out" => a.out = PathBuf::from(value),
            other => bail!(
                "unknown flag {other}; usage: soak [--minutes N] [--rate LINES_PER_S] [--fault-every-s S] [--out DIR]"
            ),
        }
    }
    if a.rate == 0 || a.minutes == 0 {
        bail!("--rate and --minutes must be positive");
    }
    Ok(a)
}

fn line(n: u64) -> String {
    const PATHS: [&str; 4] = [
        "/api/v1/users/{}",
        "/api/v1/orders?page={}&sort=desc",
        "/api/v1/search?q=item+{}",
        "/healthz",
    ];
    let path = PATHS[(n % 4) as usize].replace("{}", &(n % 997).to_string());
    let status = if n.is_multiple_of(50) { 500 } else { 200 };
    format!(
        "{{\"timestamp\": \"{}\", \"level\": \"{}\", \"message\": \"soak line {n}\", \"method\": \"GET\", \
         \"path\": \"{path}\", \"status_code\": {status}, \"duration_ms\": {}.{}, \"client_ip\": \"10.1.{}.{}\", \
         \"user_agent\": \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\"}}",
        now_rfc3339(),
        if status == 500 { "ERROR" } else { "INFO" },
        n % 300,
        n % 10,
        (n / 256) % 256,
        n % 256
    )
}

/// Appends `rate` lines a second to `app.log` until `stop`, renaming it
/// away every `ROTATE_EVERY`; counts what it wrote in `written`.
fn write(dir: &Path, rate: u64, stop: &AtomicBool, written: &AtomicU64) -> anyhow::Result<()> {
    let path = dir.join("app.log");
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    };
    let mut file = open(&path)?;
    let tick = Duration::from_millis(100);
    let per_tick = rate.div_ceil(10);
    let (start, mut rotated_at, mut rotations) = (Instant::now(), Instant::now(), 0);
    let mut ticks = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let first = written.load(Ordering::Relaxed);
        let mut text = String::new();
        for n in first..first + per_tick {
            text.push_str(&line(n));
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        written.store(first + per_tick, Ordering::Relaxed);
        if rotated_at.elapsed() >= ROTATE_EVERY {
            rotations += 1;
            std::fs::rename(&path, dir.join(format!("app.log.{rotations}")))?;
            file = open(&path)?;
            rotated_at = Instant::now();
        }
        ticks += 1;
        if let Some(wait) = (tick * ticks).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// A Prometheus text from `url`, or nothing while the process is down.
fn try_scrape(url: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Copy)]
enum Fault {
    KillAgent,
    RestartCollector(usize),
    StopClickHouse,
}

const FAULTS: [Fault; 4] = [
    Fault::KillAgent,
    Fault::RestartCollector(0),
    Fault::StopClickHouse,
    Fault::RestartCollector(1),
];

const COLUMNS: &[&str] = &[
    "t_s",
    "written",
    "stored",
    "lag_s",
    "queue_records",
    "agent_rss_mib",
    "collector0_rss_mib",
    "collector1_rss_mib",
    "clickhouse_rss_mib",
    "agent_cpu_s",
    "collector0_cpu_s",
    "collector1_cpu_s",
    "clickhouse_cpu_s",
    "fault",
];

fn main() -> anyhow::Result<()> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    let dir = TempDir::new()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let mut ch = ClickHouse::start();
    let mut collectors: Vec<Collector> = (0..2)
        .map(|i| {
            let c = Collector::new(dir.path(), &format!("collector{i}"), &ch, "soak", "");
            c.wait_connected();
            c
        })
        .collect();
    let endpoints: Vec<String> = collectors.iter().map(Collector::endpoint).collect();
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nservice = \"soak\"\nformat = \"json\"\n",
        logs.display()
    );
    let mut agent = Agent::new(dir.path(), &endpoints, &sources, "");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, logs, rate) = (stop.clone(), written.clone(), logs.clone(), args.rate);
        std::thread::spawn(move || write(&logs, rate, &stop, &written))
    };
    let csv_path = args.out.join("soak.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
    writeln!(csv, "{}", COLUMNS.join(","))?;
    let started = Instant::now();
    let run = Duration::from_secs(args.minutes * 60);
    let (mut next_fault, mut faults_done) = (args.fault_every, 0usize);
    let mut ongoing: Option<Fault> = None;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    while started.elapsed() < run {
        std::thread::sleep(SAMPLE_EVERY.saturating_sub(Duration::from_millis(
            (started.elapsed().as_millis() % SAMPLE_EVERY.as_millis()) as u64,
        )));
        // A fault begins at one sample and ends at the next, so that
        // sampling goes on through it.
        let fault = if let Some(f) = ongoing.take() {
            match f {
                Fault::KillAgent => agent.proc.start(),
                Fault::RestartCollector(i) => collectors[i].proc.start(),
                Fault::StopClickHouse => ch.resume(),
            }
            "back".to_string()
        } else if started.elapsed() >= next_fault {
            let f = FAULTS[faults_done % FAULTS.len()];
            ongoing = Some(f);
            faults_done += 1;
            next_fault += args.fault_every;
            match f {
                Fault::KillAgent => {
                    agent.proc.kill9();
                    "agent SIGKILL".to_string()
                }
                Fault::RestartCollector(i) => {
                    collectors[i].proc.kill9();
                    format!("collector{i} SIGKILL")
                }
                Fault::StopClickHouse => {
                    ch.stop();
                    "clickhouse stopped".to_string()
                }
            }
        } else {
            String::new()
        };
        let stored_and_newest = ch
            .try_query("SELECT count(), toUnixTimestamp(max(timestamp)) FROM soak.logs")
            .ok();
        let (stored, newest) = stored_and_newest
            .as_deref()
            .and_then(|r| r.trim().split_once('\t'))
            .map_or((f64::NAN, f64::NAN), |(c, t)| {
                (c.parse().unwrap_or(f64::NAN), t.parse().unwrap_or(f64::NAN))
            });
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let queue = try_scrape(&agent.metrics_url())
            .and_then(|t| metric(&t, "logferry_agent_queue_records"))
            .unwrap_or(f64::NAN);
        let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let cpu = |u: Option<(f64, f64)>| u.map_or(f64::NAN, |u| u.0);
        let row = vec![
            started.elapsed().as_secs_f64(),
            written.load(Ordering::Relaxed) as f64,
            stored,
            if stored > 0.0 {
                now_s - newest
            } else {
                f64::NAN
            },
            queue,
            or_nan(agent.proc.rss_mib()),
            or_nan(collectors[0].proc.rss_mib()),
            or_nan(collectors[1].proc.rss_mib()),
            or_nan(ch.rss_mib()),
            cpu(agent.proc.usage()),
            cpu(collectors[0].proc.usage()),
            cpu(collectors[1].proc.usage()),
            cpu(ch.usage()),
        ];
        let text: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
        writeln!(csv, "{},{fault}", text.join(","))?;
        csv.flush()?;
        rows.push(row);
    }
    match ongoing {
        Some(Fault::KillAgent) => agent.proc.start(),
        Some(Fault::RestartCollector(i)) => collectors[i].proc.start(),
        Some(Fault::StopClickHouse) => ch.resume(),
        None => {}
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer")?;
    let total = written.load(Ordering::Relaxed);
    let arrived = wait_until(Duration::from_secs(600), || {
        ch.try_query("SELECT count() FROM soak.logs")
            .ok()
            .and_then(|r| r.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= total)
    });
    std::thread::sleep(Duration::from_secs(3));
    let got = ch.query("SELECT count(), uniqExact(body) FROM soak.logs");
    println!(
        "{} min at {} lines/s, {faults_done} faults: {total} lines written; stored (count, distinct): {}",
        args.minutes,
        args.rate,
        got.trim()
    );
    println!("samples in {}", csv_path.display());
    summarize(&rows);
    if !arrived || got.trim() != format!("{total}\t{total}") {
        bail!(
            "lines lost or duplicated: {total} written, {} stored",
            got.trim()
        );
    }
    Ok(())
}

/// Median and maximum of each series, and its least-squares trend per
/// hour over the second half of the run (after warm-up).
fn summarize(rows: &[Vec<f64>]) {
    println!(
        "{:<20} {:>10} {:>10} {:>14}",
        "series", "median", "max", "trend/hour"
    );
    for (c, name) in COLUMNS.iter().enumerate().skip(3).take(6) {
        let series: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r[0], r[c]))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let mut values: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let (Some(max), Some(median)) = (values.last(), values.get(values.len() / 2)) else {
            continue;
        };
        let half = &series[series.len() / 2..];
        let n = half.len() as f64;
        let (mt, mv) = (
            half.iter().map(|p| p.0).sum::<f64>() / n,
            half.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let cov: f64 = half.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
        let var: f64 = half.iter().map(|(t, _)| (t - mt).powi(2)).sum();
        let slope = if var > 0.0 { cov / var * 3600.0 } else { 0.0 };
        println!("{name:<20} {median:>10.1} {max:>10.1} {slope:>+14.2}");
    }
    // CPU as a share of one core between samples (a restart resets the
    // cumulative figure: that interval is left out).
    for (c, name) in COLUMNS.iter().enumerate().skip(9).take(4) {
        let mut shares: Vec<f64> = rows
            .windows(2)
            .map(|w| (w[1][c] - w[0][c]) / (w[1][0] - w[0][0]) * 100.0)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .collect();
        shares.sort_by(f64::total_cmp);
        if let (Some(max), Some(median)) = (shares.last(), shares.get(shares.len() / 2)) {
            let name = name.replace("_cpu_s", " cpu %");
            println!("{name:<20} {median:>10.1} {max:>10.1}");
        }
    }
}
