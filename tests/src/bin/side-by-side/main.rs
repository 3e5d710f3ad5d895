//! Side by side on the same files, the same ClickHouse and the same
//! machine, alternating: logferry (agent with its durable queue, fsync on,
//! → collector with every default on → ClickHouse), Fluent Bit (tail →
//! out_http → ClickHouse's HTTP interface, filesystem buffering; when its
//! build is found) and ClickHouse's own insert of the file over HTTP in
//! 10 MiB batches. Each run ends only when every line is stored, and is
//! checked: as many rows as lines, each line's unique token once.
//!
//! Shapes of log: `request` (JSON lines with separate `method`, `path` with
//! query strings, `status_code` and browser and client user agents, as
//! request-logging middleware writes them), `seed` (the seed's middleware
//! JSON), `nginx` (combined format) and `text` (free text with a
//! timestamp). logferry reads nginx and text lines as text; Fluent Bit
//! parses nginx lines with the regex of its shipped `nginx` parser.
//!
//! Prints, per shape, the medians over the runs with their ranges: lines/s,
//! CPU seconds of each process (ClickHouse's included) and peak RSS; and
//! the ratios of logferry's rate to Fluent Bit's and to the direct insert,
//! paired run by run.
//!
//! `--latency RATE` measures instead how long a line takes from its file to
//! a search, at a steady RATE of request-shaped lines a second for
//! `--seconds` (default 30), for logferry and Fluent Bit (`latency.rs`).
//!
//! Usage: side-by-side [LINES] [--runs N] [--shapes request,seed,nginx,text]
//!        [--fluent-bit DIR] [--no-references]
//!        [--agent TABLE.KEY=VALUE]... [--collector TABLE.KEY=VALUE]...
//!        [--latency RATE [--seconds S]]
//! (default 1,000,000 lines, 3 runs, every shape; DIR holds `fluent-bit`,
//! `fb-clickhouse.conf` and `fb-parsers.conf`, by default
//! `$LOGFERRY_FLUENT_BIT` or `../shared/peers/fluent-bit` from the
//! workspace; `--no-references`: logferry alone; `--agent` and
//! `--collector` change a setting of logferry's, as in
//! `--agent forward.max_in_flight=4`). `LOGFERRY_CLICKHOUSE` picks the
//! server. Build with --release.

mod latency;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logferry_e2e::{
    bin, free_port, request_line, seed_line, wait_until, write_config, ClickHouse, Proc, TempDir,
};

/// ClickHouse's own insert: bodies of at most this many bytes.
const DIRECT_BATCH_BYTES: usize = 10 << 20;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    line: fn(u64) -> String,
    json: bool,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "request",
        line: request_line,
        json: true,
    },
    Shape {
        name: "seed",
        line: seed_app_line,
        json: true,
    },
    Shape {
        name: "nginx",
        line: nginx_line,
        json: false,
    },
    Shape {
        name: "text",
        line: text_line,
        json: false,
    },
];

fn seed_app_line(n: u64) -> String {
    seed_line("app", n)
}

/// nginx's combined format; `rid=` makes each line's path unique.
fn nginx_line(n: u64) -> String {
    const AGENTS: [&str; 3] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "python-httpx/0.27.0",
    ];
    let path = match n % 3 {
        0 => format!("/api/v1/orders?page={}&limit=50&rid={n:x}", n % 40),
        1 => format!("/api/v1/users/{}/profile?rid={n:x}", n % 25_000),
        _ => format!("/static/app.{}.js?rid={n:x}", n % 7),
    };
    format!(
        "10.1.{}.{} - - [21/Aug/2026:00:{:02}:{:02} +0000] \"{} {path} HTTP/1.1\" {} {} \"-\" \"{}\"",
        n % 250,
        n % 254 + 1,
        (n / 60) % 60,
        n % 60,
        if n.is_multiple_of(4) { "POST" } else { "GET" },
        if n.is_multiple_of(25) { 503 } else { 200 },
        200 + n % 9000,
        AGENTS[n as usize % AGENTS.len()]
    )
}

/// An application's free-text line with a timestamp and a unique job id.
fn text_line(n: u64) -> String {
    format!(
        "2026-08-21 00:{:02}:{:02},{:03} {} [worker-{}] app.jobs: processed job {n:x} for tenant t{} in {} ms",
        (n / 60) % 60,
        n % 60,
        n % 1000,
        if n.is_multiple_of(20) { "ERROR" } else { "INFO" },
        n % 8,
        n % 40,
        n % 900
    )
}

/// What one contender did in one run.
#[derive(Clone, Copy, Default)]
struct Run {
    secs: f64,
    /// CPU seconds of the shipper's processes (agent, collector) or (Fluent
    /// Bit), and of ClickHouse.
    cpu: [f64; 2],
    clickhouse_cpu: f64,
    /// Peak RSS in MiB of the shipper's processes.
    rss: [f64; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Logferry,
    FluentBit,
    Direct,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Logferry => "logferry (agent, collector)",
            Contender::FluentBit => "Fluent Bit, filesystem buffer, fadvise off",
            Contender::Direct => "ClickHouse HTTP insert, 10 MiB batches",
        }
    }
}

struct Options {
    lines: u64,
    runs: usize,
    shapes: Vec<Shape>,
    fluent_bit: Option<PathBuf>,
    /// `--no-references`: logferry alone, to iterate on it.
    references: bool,
    /// `--agent` and `--collector` settings, `table.key=value` each.
    agent: Vec<String>,
    collector: Vec<String>,
    /// `--latency RATE`: the latency run instead, for `seconds`.
    latency: Option<u64>,
    seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        lines: 1_000_000,
        runs: 3,
        shapes: SHAPES.to_vec(),
        fluent_bit: std::env::var_os("LOGFERRY_FLUENT_BIT")
            .map(PathBuf::from)
            .or_else(|| {
                let d = logferry_e2e::package_dir().join("../../shared/peers/fluent-bit");
                d.join("fluent-bit").exists().then_some(d)
            }),
        references: true,
        agent: Vec::new(),
        collector: Vec::new(),
        latency: None,
        seconds: 30,
    };
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--runs" => o.runs = value()?.parse()?,
            "--fluent-bit" => o.fluent_bit = Some(PathBuf::from(value()?)),
            "--no-references" => o.references = false,
            "--agent" => o.agent.push(value()?),
            "--collector" => o.collector.push(value()?),
            "--latency" => o.latency = Some(value()?.parse()?),
            "--seconds" => seconds = Some(value()?.parse()?),
            "--shapes" => {
                let names = value()?;
                o.shapes = names
                    .split(',')
                    .map(|n| {
                        SHAPES.iter().find(|s| s.name == n).copied().ok_or_else(|| {
                            anyhow::anyhow!("unknown shape `{n}`: request, seed, nginx or text")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            _ if !a.starts_with("--") => o.lines = a.replace('_', "").parse()?,
            _ => anyhow::bail!("unknown option {a}"),
        }
    }
    anyhow::ensure!(o.runs > 0 && o.lines > 0, "lines and runs must be positive");
    match (o.latency, seconds) {
        (None, Some(_)) => anyhow::bail!("--seconds goes with --latency"),
        (rate, seconds) => {
            o.seconds = seconds.unwrap_or(o.seconds);
            anyhow::ensure!(
                rate != Some(0) && o.seconds > 0,
                "rate and seconds must be positive"
            );
        }
    }
    for setting in o.agent.iter().chain(&o.collector) {
        setting_of(setting)?;
    }
    if let Some(d) = &o.fluent_bit {
        anyhow::ensure!(
            d.join("fluent-bit").exists(),
            "no fluent-bit in {}",
            d.display()
        );
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let dir = TempDir::new()?;
    let ch = ClickHouse::start();
    if let Some(rate) = o.latency {
        let fluent_bit = o.fluent_bit.as_deref().filter(|_| o.references);
        return latency::run(&ch, dir.path(), &o, rate, fluent_bit);
    }
    let version = ch.query("SELECT version()").trim().to_string();
    let mut contenders = vec![Contender::Logferry, Contender::Direct];
    match &o.fluent_bit {
        _ if !o.references => contenders.truncate(1),
        Some(d) => {
            contenders.insert(1, Contender::FluentBit);
            println!("Fluent Bit: {}", d.display());
        }
        None => println!("Fluent Bit: not found (--fluent-bit DIR); compared with ClickHouse only"),
    }
    println!(
        "ClickHouse {version}; {} lines a file; {} runs; contenders alternate",
        o.lines, o.runs
    );
    let mut report = Vec::new();
    for shape in &o.shapes {
        let file = dir.path().join(format!("{}.log", shape.name));
        let bytes = generate(&file, *shape, o.lines)?;
        println!(
            "\n== {}: {:.1} MiB, {:.0} B a line",
            shape.name,
            bytes as f64 / f64::from(1 << 20),
            bytes as f64 / o.lines as f64
        );
        let mut results: Vec<(Contender, Vec<Run>)> =
            contenders.iter().map(|c| (*c, Vec::new())).collect();
        for run in 0..o.runs {
            // Each run starts with another contender.
            for i in 0..contenders.len() {
                let c = contenders[(i + run) % contenders.len()];
                let work = dir.path().join(format!("{}-{run}-{i}", shape.name));
                std::fs::create_dir(&work)?;
                let db = format!("b_{}_{run}_{i}", shape.name);
                let r = match c {
                    Contender::Logferry => logferry(&ch, &work, &db, &file, *shape, &o)?,
                    Contender::FluentBit => fluent_bit(
                        &ch,
                        o.fluent_bit.as_deref().expect("found"),
                        &work,
                        &db,
                        &file,
                        *shape,
                        o.lines,
                    )?,
                    Contender::Direct => direct(&ch, &db, &file, *shape, o.lines)?,
                };
                ch.query(&format!("DROP DATABASE IF EXISTS {db}"));
                std::fs::remove_dir_all(&work)?;
                println!(
                    "run {}: {:<44} {:>8.0} lines/s  CPU {:.1} + {:.1}, ClickHouse {:.1}  RSS {:.0} + {:.0} MiB",
                    run + 1,
                    c.label(),
                    o.lines as f64 / r.secs,
                    r.cpu[0],
                    r.cpu[1],
                    r.clickhouse_cpu,
                    r.rss[0],
                    r.rss[1]
                );
                results
                    .iter_mut()
                    .find(|(x, _)| *x == c)
                    .expect("listed")
                    .1
                    .push(r);
            }
        }
        report.push((shape.name, bytes, results));
    }

    println!(
        "\nClickHouse {version}, {} lines a file, medians over {} runs (range):",
        o.lines, o.runs
    );
    for (shape, bytes, results) in &report {
        println!(
            "\n{shape} ({:.0} B a line)\n",
            *bytes as f64 / o.lines as f64
        );
        println!("| path | lines/s | CPU s: shipper | ClickHouse CPU s | peak RSS MiB |");
        println!("|---|---:|---:|---:|---:|");
        for (c, runs) in results {
            let rate: Vec<f64> = runs.iter().map(|r| o.lines as f64 / r.secs).collect();
            let cpu = |k: usize| spread(&runs.iter().map(|r| r.cpu[k]).collect::<Vec<_>>());
            let rss = |k: usize| spread(&runs.iter().map(|r| r.rss[k]).collect::<Vec<_>>());
            let (shipper_cpu, shipper_rss) = match c {
                Contender::Logferry => (
                    format!("{} / {}", cpu(0).show(1), cpu(1).show(1)),
                    format!("{} + {}", rss(0).show(0), rss(1).show(0)),
                ),
                Contender::FluentBit => (cpu(0).show(1), rss(0).show(0)),
                Contender::Direct => ("–".into(), "–".into()),
            };
            println!(
                "| {} | {} | {shipper_cpu} | {} | {shipper_rss} |",
                c.label(),
                spread(&rate).show(0),
                spread(&runs.iter().map(|r| r.clickhouse_cpu).collect::<Vec<_>>()).show(1)
            );
        }
        let of = |c: Contender| results.iter().find(|(x, _)| *x == c).map(|(_, r)| r);
        let ours = of(Contender::Logferry).expect("always runs");
        for (c, name) in [
            (Contender::FluentBit, "Fluent Bit"),
            (Contender::Direct, "the direct insert"),
        ] {
            let Some(theirs) = of(c) else { continue };
            let rate: Vec<f64> = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| b.secs / a.secs)
                .collect();
            let ch: Vec<f64> = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| a.clickhouse_cpu / b.clickhouse_cpu.max(1e-3))
                .collect();
            print!(
                "\nlogferry against {name}, run by run: lines/s ×{}; ClickHouse CPU ×{}",
                spread(&rate).show(2),
                spread(&ch).show(2)
            );
            if c == Contender::FluentBit {
                let cpu: Vec<f64> = ours
                    .iter()
                    .zip(theirs)
                    .map(|(a, b)| (a.cpu[0] + a.cpu[1]) / b.cpu[0].max(1e-3))
                    .collect();
                print!("; shipper CPU ×{}", spread(&cpu).show(2));
            }
        }
        println!();
    }
    Ok(())
}

/// Median and range of a few figures.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

fn spread(values: &[f64]) -> Spread {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn generate(file: &Path, shape: Shape, lines: u64) -> anyhow::Result<u64> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(file)?);
    for n in 0..lines {
        writeln!(w, "{}", (shape.line)(n))?;
    }
    w.flush()?;
    Ok(std::fs::metadata(file)?.len())
}

/// Polls the stored row count until it reaches `lines`, sampling the
/// processes' CPU and peak RSS while they run; then checks that each line
/// is there once (`unique`: an expression with one value per line).
fn wait_stored(
    ch: &ClickHouse,
    table: &str,
    unique: &str,
    lines: u64,
    started: Instant,
    procs: &[&Proc],
) -> anyhow::Result<(f64, [f64; 2], [f64; 2])> {
    // CPU spent before the clock started (a collector's start-up).
    let mut base = [0.0; 2];
    for (i, p) in procs.iter().enumerate() {
        base[i] = p.usage().map_or(0.0, |u| u.0);
    }
    let mut cpu = [0.0; 2];
    let mut rss = [0.0; 2];
    let mut exited = None;
    let done = wait_until(Duration::from_secs(3600), || {
        for (i, p) in procs.iter().enumerate() {
            match p.usage() {
                Some((c, r)) => {
                    cpu[i] = c - base[i];
                    rss[i] = r;
                }
                None => exited = Some(*p),
            }
        }
        exited.is_some() || ch.count(&format!("SELECT count() FROM {table}")) >= lines
    });
    if let Some(p) = exited {
        anyhow::bail!("a process exited: {}", p.log_text());
    }
    let secs = started.elapsed().as_secs_f64();
    let stored = ch.count(&format!("SELECT count() FROM {table}"));
    anyhow::ensure!(done, "timed out with {stored} of {lines} rows in {table}");
    let distinct = ch.count(&format!("SELECT uniqExact({unique}) FROM {table}"));
    anyhow::ensure!(
        stored == lines && distinct == lines,
        "{table}: {stored} rows, {distinct} distinct lines, for {lines} lines"
    );
    Ok((secs, cpu, rss))
}

fn clickhouse_cpu(ch: &ClickHouse) -> f64 {
    ch.usage().map_or(0.0, |u| u.0)
}

/// logferry shipping `file` into `db`: the run, from the agent's start to
/// the last line stored.
fn logferry(
    ch: &ClickHouse,
    work: &Path,
    db: &str,
    file: &Path,
    shape: Shape,
    o: &Options,
) -> anyhow::Result<Run> {
    let collector = start_collector(ch, work, db, o)?;
    let mut agent = agent_for(work, file, shape, collector.ingest, o)?;
    let ch_before = clickhouse_cpu(ch);
    let started = Instant::now();
    agent.start();
    let unique = if shape.json { "request_id" } else { "body" };
    let (secs, cpu, rss) = wait_stored(
        ch,
        &format!("{db}.logs"),
        unique,
        o.lines,
        started,
        &[&agent, &collector.proc],
    )?;
    let clickhouse_cpu = clickhouse_cpu(ch) - ch_before;
    agent.terminate();
    let mut collector = collector;
    collector.proc.terminate();
    Ok(Run {
        secs,
        cpu,
        clickhouse_cpu,
        rss,
    })
}

/// A running collector and the port agents send to.
struct Collector {
    proc: Proc,
    ingest: u16,
}

/// The collector with its defaults, but for ports, plain text and a
/// retention long enough for the files' fixed dates; once it reaches
/// ClickHouse.
fn start_collector(
    ch: &ClickHouse,
    work: &Path,
    db: &str,
    o: &Options,
) -> anyhow::Result<Collector> {
    let (ingest, http, grpc) = (free_port(), free_port(), free_port());
    let tables = [
        (
            "ingest",
            format!("listen = \"127.0.0.1:{ingest}\"\nrequire_credentials = false"),
        ),
        (
            "api",
            format!("http_listen = \"127.0.0.1:{http}\"\ngrpc_listen = \"127.0.0.1:{grpc}\""),
        ),
        ("tls", "plaintext = true".into()),
        (
            "clickhouse",
            format!("url = \"{}\"\ndatabase = \"{db}\"", ch.url()),
        ),
        ("retention", "days = 3650".into()),
    ];
    let config = write_config(
        work,
        "collector.toml",
        &config_text("", &tables, &o.collector, "")?,
    );
    let mut collector = Proc::new(
        "collector",
        bin("logferry-collector"),
        vec!["--config".into(), config.display().to_string()],
        work.join("collector.log"),
    );
    collector.start();
    let ready = wait_until(Duration::from_secs(60), || {
        logferry_e2e::collector_connected(http)
    });
    anyhow::ensure!(
        ready,
        "the collector did not start: {}",
        collector.log_text()
    );
    Ok(Collector {
        proc: collector,
        ingest,
    })
}

/// The agent with its defaults, reading `file` (hard-linked into its own
/// directory) as `shape` and sending to the collector on `ingest`; not
/// started.
fn agent_for(
    work: &Path,
    file: &Path,
    shape: Shape,
    ingest: u16,
    o: &Options,
) -> anyhow::Result<Proc> {
    let logs = work.join("logs");
    std::fs::create_dir(&logs)?;
    let tables = [
        (
            "forward",
            format!("endpoints = [\"http://127.0.0.1:{ingest}\"]"),
        ),
        ("metrics", format!("listen = \"127.0.0.1:{}\"", free_port())),
    ];
    let sources = format!(
        "[[sources]]\nname = \"bench\"\ninclude = [\"{}/*.log\"]\nservice = \"bench\"\nformat = \"{}\"\n",
        logs.display(),
        if shape.json { "json" } else { "text" }
    );
    let config = write_config(
        work,
        "agent.toml",
        &config_text(
            &format!("data_dir = \"{}\"", work.join("agent-data").display()),
            &tables,
            &o.agent,
            &sources,
        )?,
    );
    // A hard link: the agent reads the same file, not a copy in the cache.
    std::fs::hard_link(file, logs.join("bench.log"))?;
    Ok(Proc::new(
        "agent",
        bin("logferry-agent"),
        vec!["--config".into(), config.display().to_string()],
        work.join("agent.log"),
    ))
}

/// A TOML config: `top` keys, then `tables` with the `extra` settings
/// (`table.key=value`) added to theirs or as tables of their own, then
/// `tail` (arrays of tables).
fn config_text(
    top: &str,
    tables: &[(&str, String)],
    extra: &[String],
    tail: &str,
) -> anyhow::Result<String> {
    let mut tables: Vec<(String, String)> = tables
        .iter()
        .map(|(n, keys)| ((*n).to_string(), keys.clone()))
        .collect();
    for e in extra {
        let (table, line) = setting_of(e)?;
        match tables.iter_mut().find(|(n, _)| n == table) {
            Some((_, keys)) => {
                keys.push('\n');
                keys.push_str(&line);
            }
            None => tables.push((table.to_string(), line)),
        }
    }
    let mut text = format!("{top}\n");
    for (name, keys) in tables {
        text.push_str(&format!("[{name}]\n{keys}\n"));
    }
    text.push_str(tail);
    Ok(text)
}

/// A `--agent` or `--collector` setting: its table, and its TOML line.
fn setting_of(setting: &str) -> anyhow::Result<(&str, String)> {
    let (key, value) = setting
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("`{setting}` is not TABLE.KEY=VALUE"))?;
    let (table, key) = key
        .trim()
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("`{setting}` names no table"))?;
    Ok((table, format!("{key} = {}", value.trim())))
}

/// The table Fluent Bit and the direct insert fill for a shape, and the
/// expression unique per line.
fn peer_table(db: &str, shape: Shape) -> (String, &'static str) {
    let columns = match (shape.json, shape.name) {
        (true, _) => {
            "timestamp String, level String, logger String, message String, module String, function String, \
             line UInt32, request_id String, duration_ms Float64, status_code UInt16, client_ip String, \
             user_agent String, event_type String, method String, path String, user_id String"
        }
        (false, "nginx") => {
            "remote String, host String, user String, method String, path String, code String, size String, \
             referer String, agent String, log String"
        }
        _ => "log String",
    };
    let unique = match (shape.json, shape.name) {
        (true, _) => "request_id",
        (false, "nginx") => "if(path = '', log, path)",
        _ => "log",
    };
    (
        format!("CREATE TABLE {db}.logs ({columns}) ENGINE = MergeTree ORDER BY tuple()"),
        unique,
    )
}

/// Fluent Bit shipping `file` into `db`: the run, from its start to the
/// last line stored.
fn fluent_bit(
    ch: &ClickHouse,
    fb: &Path,
    work: &Path,
    db: &str,
    file: &Path,
    shape: Shape,
    lines: u64,
) -> anyhow::Result<Run> {
    let (mut proc, unique) = fluent_bit_for(ch, fb, work, db, file, shape)?;
    let ch_before = clickhouse_cpu(ch);
    let started = Instant::now();
    proc.start();
    let (secs, cpu, rss) =
        wait_stored(ch, &format!("{db}.logs"), unique, lines, started, &[&proc])?;
    let clickhouse_cpu = clickhouse_cpu(ch) - ch_before;
    proc.terminate();
    Ok(Run {
        secs,
        cpu,
        clickhouse_cpu,
        rss,
    })
}

/// Fluent Bit configured as `fb-clickhouse.conf` says, reading `file` as
/// `shape` into a new table in `db`, not started; and the expression unique
/// per line.
fn fluent_bit_for(
    ch: &ClickHouse,
    fb: &Path,
    work: &Path,
    db: &str,
    file: &Path,
    shape: Shape,
) -> anyhow::Result<(Proc, &'static str)> {
    ch.query(&format!("CREATE DATABASE {db}"));
    let (create, unique) = peer_table(db, shape);
    ch.query(&create);
    let template = std::fs::read_to_string(fb.join("fb-clickhouse.conf"))?;
    let parser = match (shape.json, shape.name) {
        (true, _) => Some("json"),
        (false, "nginx") => Some("nginx"),
        _ => None,
    };
    let storage = work.join("fb");
    std::fs::create_dir(&storage)?;
    let mut conf = String::new();
    for l in template.lines() {
        // Text lines go unparsed, as `{"log": ...}`.
        if parser.is_none() && l.trim_start().starts_with("Parser ") {
            continue;
        }
        let l = l
            .replace("{{INPUT}}", &file.display().to_string())
            .replace("{{WORKDIR}}", &storage.display().to_string())
            .replace(
                "{{CONFIG1}}",
                &fb.join("fb-parsers.conf").display().to_string(),
            )
            .replace("{{METRICS_PORT}}", &free_port().to_string())
            .replace("{{CH_HTTP_PORT}}", &ch.http_port.to_string())
            .replace("{{CH_DB}}", db)
            .replace("{{CH_TABLE}}", "logs")
            .replace("{{PARSER}}", parser.unwrap_or(""))
            .replace("{{STORAGE}}", "filesystem")
            .replace("{{FADVISE}}", "off");
        conf.push_str(&l);
        conf.push('\n');
    }
    anyhow::ensure!(!conf.contains("{{"), "a placeholder left in {conf}");
    let conf_path = work.join("fb.conf");
    std::fs::write(&conf_path, conf)?;
    let proc = Proc::new(
        "fluent-bit",
        fb.join("fluent-bit"),
        vec!["-c".into(), conf_path.display().to_string()],
        work.join("fluent-bit.log"),
    );
    Ok((proc, unique))
}

/// ClickHouse inserting the file itself: JSON lines as JSONEachRow, other
/// lines as one string column (TSV; the generated lines hold no tab or
/// backslash), in bodies of at most 10 MiB cut at line ends.
fn direct(ch: &ClickHouse, db: &str, file: &Path, shape: Shape, lines: u64) -> anyhow::Result<Run> {
    ch.query(&format!("CREATE DATABASE {db}"));
    let (create, unique) = peer_table(db, shape);
    ch.query(&create);
    let (insert, unique) = if shape.json {
        (format!("INSERT INTO {db}.logs FORMAT JSONEachRow"), unique)
    } else {
        (
            format!("INSERT INTO {db}.logs (log) FORMAT TabSeparated"),
            "log",
        )
    };
    let ch_before = clickhouse_cpu(ch);
    let started = Instant::now();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut body = Vec::with_capacity(DIRECT_BATCH_BYTES + (1 << 16));
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || body.len() + line.len() > DIRECT_BATCH_BYTES {
            if !body.is_empty() {
                post(ch, &insert, &body)?;
                body.clear();
            }
            if n == 0 {
                break;
            }
        }
        body.extend_from_slice(&line);
    }
    let (secs, _, _) = wait_stored(ch, &format!("{db}.logs"), unique, lines, started, &[])?;
    Ok(Run {
        secs,
        clickhouse_cpu: clickhouse_cpu(ch) - ch_before,
        ..Run::default()
    })
}

/// One INSERT over HTTP/1.0 with the rows as its body.
fn post(ch: &ClickHouse, insert: &str, body: &[u8]) -> anyhow::Result<()> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ch.http_port))?;
    write!(
        s,
        "POST /?query={} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        logferry_e2e::api::urlencode(insert),
        body.len()
    )?;
    s.write_all(body)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    anyhow::ensure!(
        answer.split(' ').nth(1) == Some("200"),
        "the insert failed: {answer}"
    );
    Ok(())
}
