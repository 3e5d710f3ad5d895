//! The exactly-once promise under fire: a writer appends 200,000 lines to two
//! files while they are rotated three times by rename and once by
//! copytruncate; the agent is SIGKILLed three times at random moments, the
//! collector once, and ClickHouse is stopped for 10 seconds. ClickHouse must
//! end up with every line exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logferry_e2e::{seed_line, wait_until, Agent, ClickHouse, Collector, TempDir};
use rand::Rng;

const PER_FILE: u64 = 100_000;

fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

/// Writes both files in bursts over about 20 seconds, rotating `a` by
/// rename at 25%, 50% and 75% and `b` by copytruncate at 50%.
fn write_with_rotations(dir: PathBuf) {
    let (pa, pb) = (dir.join("a.log"), dir.join("b.log"));
    let (mut a, mut b) = (open_append(&pa), open_append(&pb));
    let burst = 250;
    let mut n = 0;
    while n < PER_FILE {
        let (mut ba, mut bb) = (String::new(), String::new());
        for i in n..(n + burst).min(PER_FILE) {
            ba.push_str(&seed_line("a", i));
            ba.push('\n');
            bb.push_str(&seed_line("b", i));
            bb.push('\n');
        }
        a.write_all(ba.as_bytes()).expect("write a");
        b.write_all(bb.as_bytes()).expect("write b");
        n += burst;
        if n % (PER_FILE / 4) == 0 && n < PER_FILE {
            std::fs::rename(&pa, dir.join(format!("a.log.{}", n / (PER_FILE / 4))))
                .expect("rotate a");
            a = open_append(&pa);
        }
        if n == PER_FILE / 2 {
            std::fs::copy(&pb, dir.join("b.log.1")).expect("copy b");
            b.set_len(0).expect("truncate b");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sleep_ms(rng: &mut impl Rng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(lo..hi)));
}

#[test]
fn every_line_arrives_exactly_once_through_rotations_crashes_and_outages() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let mut ch = ClickHouse::start();
    let mut collector = Collector::new(dir.path(), "collector", &ch, "chaos", "");
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nservice = \"chaos\"\n",
        logs.display()
    );
    let mut agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    let started = Instant::now();
    let writer = std::thread::spawn(move || write_with_rotations(logs));

    let mut rng = rand::rng();
    let mut events = Vec::new();
    let crash_agent =
        |agent: &mut Agent, events: &mut Vec<String>, rng: &mut rand::rngs::ThreadRng| {
            agent.proc.kill9();
            events.push(format!(
                "{:>5.1}s agent SIGKILL",
                started.elapsed().as_secs_f64()
            ));
            sleep_ms(rng, 100, 1500);
            agent.proc.start();
        };
    sleep_ms(&mut rng, 1000, 4000);
    crash_agent(&mut agent, &mut events, &mut rng);
    sleep_ms(&mut rng, 500, 2500);
    collector.proc.kill9();
    events.push(format!(
        "{:>5.1}s collector SIGKILL",
        started.elapsed().as_secs_f64()
    ));
    sleep_ms(&mut rng, 200, 1500);
    collector.proc.start();
    sleep_ms(&mut rng, 500, 2500);
    crash_agent(&mut agent, &mut events, &mut rng);
    sleep_ms(&mut rng, 500, 2000);
    ch.stop();
    events.push(format!(
        "{:>5.1}s clickhouse stopped for 10 s",
        started.elapsed().as_secs_f64()
    ));
    std::thread::sleep(Duration::from_secs(10));
    ch.resume();
    sleep_ms(&mut rng, 200, 2000);
    crash_agent(&mut agent, &mut events, &mut rng);
    writer.join().expect("writer");
    events.push(format!(
        "{:>5.1}s writer done",
        started.elapsed().as_secs_f64()
    ));

    let total = 2 * PER_FILE;
    let arrived = wait_until(Duration::from_secs(240), || {
        ch.count("SELECT count() FROM chaos.logs") >= total
    });
    events.push(format!(
        "{:>5.1}s all lines in clickhouse",
        started.elapsed().as_secs_f64()
    ));
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("{}", events.join("\n"));
    let log = agent.proc.log_text();
    let notable = [
        "truncated",
        "copy",
        "rotated while",
        "batch not delivered",
        "completing a batch",
    ];
    for line in log
        .lines()
        .filter(|l| notable.iter().any(|n| l.contains(n)))
        .take(20)
    {
        eprintln!("agent: {line}");
    }
    assert!(
        arrived,
        "only {} of {total} lines arrived\n{}",
        ch.count("SELECT count() FROM chaos.logs"),
        agent.proc.log_text()
    );
    for file in ["a", "b"] {
        let got = ch.query(&format!(
            "SELECT count(), uniqExact(body), sum(cityHash64(body)), countIf(http_status = 500) FROM chaos.logs WHERE body LIKE '{file} line %'"
        ));
        let want = ch.query(&format!(
            "SELECT {PER_FILE}, {PER_FILE}, sum(cityHash64(concat('{file} line ', toString(number)))), {} FROM numbers({PER_FILE})",
            PER_FILE / 10
        ));
        assert_eq!(got, want, "file {file}: count, distinct, checksum, errors");
    }
    assert_eq!(
        ch.count("SELECT count() FROM chaos.logs"),
        total,
        "no duplicates, nothing else"
    );
    assert!(!agent.proc.log_text().contains("panicked"));
    let took = agent.proc.terminate();
    assert!(
        took < Duration::from_secs(6),
        "graceful shutdown took {took:?}"
    );
}
