//! The exactly-once promise under fire. A writer appends
//! `LOGFERRY_CHAOS_LINES` lines (200,000 by default; the full run takes
//! 1,000,000) to four files over a minute at least (at most 10,000 lines a
//! second), rotating them by rename and by copytruncate, both while the
//! agent runs and while it is down, and once, while it is down, by rename
//! and gzip as logrotate's `compress` does. Meanwhile, in a random order and at random moments: the agent is
//! SIGKILLed ten times, each of the two collectors is SIGKILLed and
//! restarted, ClickHouse is stopped for 10 s and started again, and the
//! network between the agent and both collectors is partitioned twice for
//! 5 s (one partition ends by letting the stalled connections go on, the
//! other by resetting them). The agent's queue (8 MiB) fills while
//! ClickHouse is stopped. Every file must end up in ClickHouse exactly
//! once: its count, its distinct lines and a checksum.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use logferry_e2e::{seed_line, wait_until, Agent, ClickHouse, Collector, PartitionProxy, TempDir};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const FILES: [&str; 4] = ["a", "b", "c", "d"];
/// Most lines a second, all files together.
const MAX_RATE: u64 = 10_000;
/// The least time the lines are written over, so that the faults meet them.
const MIN_SPAN: Duration = Duration::from_secs(60);
/// What the faults themselves take, about: the ClickHouse outage (10 s,
/// and up to 20 s for 18.16 to stop), two partitions, the time processes
/// are down.
const FAULT_TIME: Duration = Duration::from_secs(50);
/// Writes happen in bursts this far apart.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
enum Rotation {
    Rename,
    CopyTruncate,
    /// logrotate's `compress` without `delaycompress`: renamed, a new file
    /// created, the old one gzipped and removed.
    RenameCompress,
}

/// A file being written: its path, the open handle, lines written so far
/// and rotations done.
struct Written {
    path: PathBuf,
    file: std::fs::File,
    next: u64,
    rotations: u32,
}

fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

impl Written {
    fn rotate(&mut self, how: Rotation) {
        self.rotations += 1;
        let old = self.path.with_extension(format!("log.{}", self.rotations));
        match how {
            Rotation::Rename => {
                std::fs::rename(&self.path, old).expect("rotate by rename");
                self.file = open_append(&self.path);
            }
            Rotation::CopyTruncate => {
                std::fs::copy(&self.path, old).expect("copy");
                self.file.set_len(0).expect("truncate");
            }
            Rotation::RenameCompress => {
                std::fs::rename(&self.path, &old).expect("rotate by rename");
                self.file = open_append(&self.path);
                let data = std::fs::read(&old).expect("read the rotated file");
                let gz = std::fs::File::create(format!("{}.gz", old.display()))
                    .expect("create the copy");
                let mut gz = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
                gz.write_all(&data).expect("compress");
                gz.finish().expect("finish the copy");
                std::fs::remove_file(&old).expect("remove the rotated file");
            }
        }
    }
}

/// Writes `per_file` lines to each file, evenly over `span`. File `a` is
/// renamed at a quarter, half and three quarters, `b` copytruncated at
/// half; other rotations come from `orders` (file index, how, and whom to
/// tell when done), so that the driver can rotate while the agent is down,
/// until the driver lets go of them.
fn write(
    dir: PathBuf,
    per_file: u64,
    span: Duration,
    orders: mpsc::Receiver<(usize, Rotation, mpsc::Sender<()>)>,
) {
    let mut files: Vec<Written> = FILES
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.log"));
            Written {
                file: open_append(&path),
                path,
                next: 0,
                rotations: 0,
            }
        })
        .collect();
    let ticks_in_span = (span.as_millis() / TICK.as_millis()) as u64;
    let burst = per_file.div_ceil(ticks_in_span).max(1);
    let start = Instant::now();
    let mut ticks = 0u32;
    while files.iter().any(|f| f.next < per_file) {
        while let Ok((i, how, done)) = orders.try_recv() {
            files[i].rotate(how);
            let _ = done.send(());
        }
        for (i, f) in files.iter_mut().enumerate() {
            let end = (f.next + burst).min(per_file);
            let mut text = String::new();
            for n in f.next..end {
                text.push_str(&seed_line(FILES[i], n));
                text.push('\n');
            }
            f.file.write_all(text.as_bytes()).expect("write");
            let before = f.next;
            f.next = end;
            let crossed = |share: u64| before < per_file * share / 4 && end >= per_file * share / 4;
            if i == 0 && (crossed(1) || crossed(2) || crossed(3)) && end < per_file {
                f.rotate(Rotation::Rename);
            }
            if i == 1 && crossed(2) && end < per_file {
                f.rotate(Rotation::CopyTruncate);
            }
        }
        ticks += 1;
        if let Some(wait) = (TICK * ticks).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    for (i, how, done) in orders {
        files[i].rotate(how);
        let _ = done.send(());
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL the agent; while it is down, rotate a file if asked.
    KillAgent(Option<(usize, Rotation)>),
    RestartCollector(usize),
    StopClickHouse,
    Partition {
        reset: bool,
    },
}

#[test]
fn every_line_arrives_exactly_once_through_rotations_crashes_partitions_and_outages() {
    let lines: u64 = std::env::var("LOGFERRY_CHAOS_LINES")
        .ok()
        .map_or(200_000, |v| {
            v.parse().expect("LOGFERRY_CHAOS_LINES is a number")
        });
    let per_file = lines / FILES.len() as u64;
    let total = per_file * FILES.len() as u64;
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let mut ch = ClickHouse::start();
    let mut collectors: Vec<Collector> = (0..2)
        .map(|i| {
            let c = Collector::new(dir.path(), &format!("collector{i}"), &ch, "chaos", "");
            c.wait_connected();
            c
        })
        .collect();
    let proxies: Vec<PartitionProxy> = collectors
        .iter()
        .map(|c| PartitionProxy::start(c.port))
        .collect();
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nservice = \"chaos\"\n",
        logs.display()
    );
    let endpoints: Vec<String> = proxies.iter().map(PartitionProxy::endpoint).collect();
    let mut agent = Agent::new(
        dir.path(),
        &endpoints,
        &sources,
        "[queue]\nmax_bytes = 8388608\n",
    );
    let span = Duration::from_millis(total * 1000 / MAX_RATE).max(MIN_SPAN);
    let started = Instant::now();
    let (orders, orders_rx) = mpsc::channel();
    let writer = {
        let logs = logs.clone();
        std::thread::spawn(move || write(logs, per_file, span, orders_rx))
    };

    let mut faults = vec![
        Fault::KillAgent(Some((2, Rotation::Rename))),
        Fault::KillAgent(Some((3, Rotation::CopyTruncate))),
        Fault::KillAgent(Some((1, Rotation::RenameCompress))),
        Fault::RestartCollector(0),
        Fault::RestartCollector(1),
        Fault::StopClickHouse,
        Fault::Partition { reset: false },
        Fault::Partition { reset: true },
    ];
    faults.extend(std::iter::repeat_n(Fault::KillAgent(None), 7));
    // The schedule (order, moments, how long processes stay down) follows
    // from one seed, printed so that a failing schedule can be run again.
    let seed: u64 = std::env::var("LOGFERRY_CHAOS_SEED")
        .ok()
        .map_or_else(rand::random, |v| {
            v.parse().expect("LOGFERRY_CHAOS_SEED is a number")
        });
    eprintln!("fault schedule: LOGFERRY_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    faults.shuffle(&mut rng);
    // The queue must fill while ClickHouse is away: lines are still
    // being written then.
    let stop = faults
        .iter()
        .position(|f| matches!(f, Fault::StopClickHouse))
        .expect("in the list");
    let early = rng.random_range(0..faults.len() / 2);
    faults.swap(stop, early);
    // Spread over the writing time, so most faults meet lines in flight.
    let gap_ms =
        (2 * span.saturating_sub(FAULT_TIME).as_millis() as u64 / faults.len() as u64).max(200);
    let note = |what: String| eprintln!("{:>6.1}s {what}", started.elapsed().as_secs_f64());
    for fault in faults {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..gap_ms)));
        match fault {
            Fault::KillAgent(rotation) => {
                agent.proc.kill9();
                let down = Duration::from_millis(rng.random_range(100..1500));
                let mut what = format!("agent SIGKILL, down {} ms", down.as_millis());
                if let Some((file, how)) = rotation {
                    let (done, rotated) = mpsc::channel();
                    orders.send((file, how, done)).expect("writer takes orders");
                    rotated
                        .recv_timeout(Duration::from_secs(5))
                        .expect("writer rotated");
                    what += &format!(", {} rotated by {how:?} meanwhile", FILES[file]);
                }
                std::thread::sleep(down);
                agent.proc.start();
                note(what);
            }
            Fault::RestartCollector(i) => {
                collectors[i].proc.kill9();
                std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
                collectors[i].proc.start();
                note(format!("collector{i} SIGKILL and restart"));
            }
            Fault::StopClickHouse => {
                ch.stop();
                std::thread::sleep(Duration::from_secs(10));
                ch.resume();
                note("clickhouse stopped for 10 s and started again".into());
            }
            Fault::Partition { reset } => {
                for p in &proxies {
                    p.partition();
                }
                std::thread::sleep(Duration::from_secs(5));
                for p in &proxies {
                    p.heal(reset);
                }
                note(format!(
                    "agent cut off from both collectors for 5 s, then {}",
                    if reset {
                        "connections reset"
                    } else {
                        "stalled connections went on"
                    }
                ));
            }
        }
    }
    drop(orders);
    writer.join().expect("writer");
    note("writer done".into());

    let count = || ch.count("SELECT count() FROM chaos.logs");
    let arrived = wait_until(Duration::from_secs(240 + total / 2000), || count() >= total);
    note(format!("{} lines in clickhouse", count()));
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.proc.log_text();
    let per_file_sums: Vec<(String, String)> = FILES
        .iter()
        .map(|file| {
            let got = ch.query(&format!(
                "SELECT count(), uniqExact(body), sum(cityHash64(body)), countIf(http_status = 500) FROM chaos.logs WHERE body LIKE '{file} line %'"
            ));
            let want = ch.query(&format!(
                "SELECT {per_file}, {per_file}, sum(cityHash64(concat('{file} line ', toString(number)))), {} FROM numbers({per_file})",
                per_file.div_ceil(10)
            ));
            (got, want)
        })
        .collect();
    if !arrived || count() != total || per_file_sums.iter().any(|(got, want)| got != want) {
        for file in FILES {
            eprintln!("{file}: {}", gaps(&ch, file, per_file));
        }
        // What the agent still holds, set aside or counted as lost.
        eprintln!("agent running: {}", agent.proc.is_running());
        let metrics = std::process::Command::new("curl")
            .args(["-sf", &agent.metrics_url()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in metrics.lines().filter(|l| {
            !l.starts_with('#')
                && ["queue", "dead_letter", "abandoned", "truncations", "lost"]
                    .iter()
                    .any(|k| l.contains(k))
        }) {
            eprintln!("agent: {line}");
        }
    }
    assert!(arrived, "only {} of {total} lines arrived\n{log}", count());
    for (file, (got, want)) in FILES.iter().zip(&per_file_sums) {
        assert_eq!(got, want, "file {file}: count, distinct, checksum, errors");
    }
    assert_eq!(count(), total, "no duplicates, nothing else");
    eprintln!(
        "ledger: {} (committed batches, their records)",
        ch.query("SELECT count(), sum(records) FROM chaos.ingest_batches WHERE state = 2")
            .trim()
    );
    assert!(
        log.contains("tailing paused: queue is full"),
        "the queue never filled: the test did not test that"
    );
    assert!(!log.contains("panicked"), "{log}");
    let took = agent.proc.terminate();
    assert!(
        took < Duration::from_secs(6),
        "graceful shutdown took {took:?}"
    );
}

/// Which of a file's line numbers are missing and which are stored more
/// than once, as ranges, to tell a failure's cause from its shape.
fn gaps(ch: &ClickHouse, file: &str, per_file: u64) -> String {
    let rows = ch.query(&format!(
        "SELECT toUInt64(substring(body, {})) AS n, count() FROM chaos.logs \
         WHERE body LIKE '{file} line %' GROUP BY n ORDER BY n",
        format!("{file} line ").len() + 1
    ));
    let mut seen = vec![0u32; per_file as usize];
    for row in rows.lines() {
        let mut cols = row.split('\t');
        let (Some(n), Some(c)) = (cols.next(), cols.next()) else {
            continue;
        };
        if let (Ok(n), Ok(c)) = (n.parse::<usize>(), c.parse::<u32>()) {
            if n < seen.len() {
                seen[n] = c;
            }
        }
    }
    let ranges = |pick: &dyn Fn(u32) -> bool| {
        let mut out = Vec::new();
        let mut start = None;
        for n in 0..=seen.len() {
            match (seen.get(n).is_some_and(|c| pick(*c)), start) {
                (true, None) => start = Some(n),
                (false, Some(s)) => {
                    out.push(format!("{s}..={}", n - 1));
                    start = None;
                }
                _ => {}
            }
        }
        out.join(", ")
    };
    format!(
        "missing [{}], stored twice or more [{}]",
        ranges(&|c| c == 0),
        ranges(&|c| c > 1)
    )
}
