//! Many agents catching up at once: the collector stores a bounded number
//! of batches at a time and answers the rest RESOURCE_EXHAUSTED with a
//! retry-after hint; agents that follow the hint get every batch stored,
//! once; and the batches that wait at the same moment share INSERTs.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_e2e::api::{export_batch, ship};
use logferry_e2e::{
    free_port, metric, scrape, wait_until, Agent, ClickHouse, Collector, Security, TempDir, OPEN,
};
use logferry_proto::RETRY_AFTER_MS_KEY;

const AGENTS: u64 = 50;
const BATCHES: u64 = 10;
const LINES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_catching_up_are_admitted_a_few_at_a_time_and_lose_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let limits = Security {
        ingest: "max_concurrent_batches = 4\nadmission_wait_ms = 200",
        ..OPEN
    };
    let collector = Collector::start(
        free_port(),
        dir.path(),
        "collector",
        &ch,
        "crowd",
        limits,
        "",
    );
    collector.wait_connected();
    let endpoint = collector.endpoint();
    let deferred = Arc::new(AtomicU64::new(0));

    // Each agent has its backlog ready and sends two batches at a time, as
    // `forward.max_in_flight` does, each until it is stored.
    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let (endpoint, deferred) = (endpoint.clone(), deferred.clone());
        agents.push(tokio::spawn(async move {
            let send = |b: u64| {
                let (endpoint, deferred) = (endpoint.clone(), deferred.clone());
                async move {
                    let first = b * LINES;
                    let lines: Vec<String> = (first..first + LINES)
                        .map(|n| format!("agent {agent} line {n}"))
                        .collect();
                    let req = export_batch(&format!("agent-{agent}"), first, &lines);
                    loop {
                        match ship(&endpoint, "", req.clone()).await {
                            Ok(_) => return,
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                let hint = s
                                    .metadata()
                                    .get(RETRY_AFTER_MS_KEY)
                                    .and_then(|v| v.to_str().ok()?.parse().ok())
                                    .unwrap_or_else(|| panic!("no retry-after hint: {s:?}"));
                                deferred.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(hint)).await;
                            }
                            Err(s) => panic!("only back-pressure is expected: {s:?}"),
                        }
                    }
                }
            };
            for pair in 0..BATCHES / 2 {
                tokio::join!(send(2 * pair), send(2 * pair + 1));
            }
        }));
    }
    for a in agents {
        a.await.expect("agent task");
    }

    let want = AGENTS * BATCHES * LINES;
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body) FROM crowd.logs"),
        format!("{want}\t{want}\n")
    );
    let deferred = deferred.load(Ordering::Relaxed);
    assert!(
        deferred > 0,
        "100 batches at once against 4 slots were all admitted"
    );
    let metrics = scrape(&collector.http_url());
    let overloaded = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "logferry_collector_ingest_refused_batches_total{reason=\"overloaded\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the refusals are counted");
    assert_eq!(overloaded as u64, deferred);
}

/// Parts of `db.table` that INSERTs wrote (level 0), merged away or not:
/// a merged part stays listed, inactive, for minutes.
fn inserted_parts(ch: &ClickHouse, db: &str, table: &str) -> u64 {
    ch.count(&format!(
        "SELECT count() FROM system.parts WHERE database = '{db}' AND table = '{table}' AND level = 0"
    ))
}

fn append(path: &std::path::Path, agent: usize, lines: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    let text: String = lines
        .map(|n| format!("{{\"level\": \"INFO\", \"message\": \"agent {agent} line {n}\"}}\n"))
        .collect();
    f.write_all(text.as_bytes()).expect("write");
}

/// 50 real agents, each with its own queue, write through a 2-minute
/// collector outage and catch up together when it returns: every line is
/// stored once, and the catch-up's batches share INSERTs (group commit),
/// so ClickHouse sees a fraction of the statements and new parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_catch_up_after_a_two_minute_outage_in_shared_inserts() {
    const AGENTS: usize = 50;
    const BEFORE: u64 = 100;
    const BURSTS: u64 = 10;
    const BURST: u64 = 200;
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let mut collector =
        Collector::on_port(free_port(), dir.path(), "collector", &ch, "catchup", "");
    collector.wait_connected();
    let endpoint = collector.endpoint();

    let mut agents = Vec::new();
    let mut files = Vec::new();
    for a in 0..AGENTS {
        let home = dir.path().join(format!("agent-{a}"));
        let logs = home.join("logs");
        std::fs::create_dir_all(&logs).expect("agent dirs");
        let file = logs.join("app.log");
        append(&file, a, 0..BEFORE);
        let sources = logferry_e2e::json_source(&logs, "");
        agents.push(Agent::new(
            &home,
            std::slice::from_ref(&endpoint),
            &sources,
            "",
        ));
        files.push(file);
    }
    let before = AGENTS as u64 * BEFORE;
    assert!(
        wait_until(Duration::from_secs(120), || ch
            .count("SELECT count() FROM catchup.logs")
            >= before),
        "the agents never shipped their first lines: {} rows",
        ch.count("SELECT count() FROM catchup.logs")
    );

    // The outage: every agent keeps reading into its queue, in bursts
    // that become batches of their own.
    collector.proc.terminate();
    let down = Instant::now();
    for burst in 0..BURSTS {
        let first = BEFORE + burst * BURST;
        for (a, file) in files.iter().enumerate() {
            append(file, a, first..first + BURST);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(down.elapsed())).await;
    let queued: f64 = agents
        .iter()
        .map(|a| metric(&scrape(&a.metrics_url()), "logferry_agent_queue_records").unwrap_or(0.0))
        .sum();
    let want = AGENTS as u64 * (BEFORE + BURSTS * BURST);
    assert_eq!(
        queued as u64,
        want - before,
        "every line written in the outage is queued"
    );

    let batches_before = ch.count("SELECT count() FROM catchup.ingest_batches WHERE state = 2");
    let parts_before = [
        inserted_parts(&ch, "catchup", "logs"),
        inserted_parts(&ch, "catchup", "ingest_batches"),
    ];
    collector.proc.start();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(300), || ch
            .count("SELECT count() FROM catchup.logs")
            >= want),
        "the backlog never arrived: {} of {want} rows",
        ch.count("SELECT count() FROM catchup.logs")
    );
    let caught_up = back.elapsed();
    // Let any stray duplicate land before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let per_agent = ch.query(
        "SELECT count(), min(c), max(c), sum(u) FROM \
         (SELECT agent_id, count() AS c, uniqExact(body) AS u FROM catchup.logs GROUP BY agent_id) FORMAT TSV",
    );
    let per = BEFORE + BURSTS * BURST;
    assert_eq!(
        per_agent.trim(),
        format!("{AGENTS}\t{per}\t{per}\t{want}"),
        "agents, fewest and most rows of one agent, distinct lines"
    );
    // The ledger: one committed entry per batch, covering every line.
    let ledger = ch.query(
        "SELECT count(), uniqExact(agent_id, first_seq), sum(records) FROM catchup.ingest_batches \
         WHERE state = 2 FORMAT TSV",
    );
    let fields: Vec<u64> = ledger
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    assert_eq!(fields[0], fields[1], "no batch committed twice: {ledger}");
    assert_eq!(fields[2], want, "the ledger's records: {ledger}");
    for a in &agents {
        let m = scrape(&a.metrics_url());
        for name in [
            "logferry_agent_queue_dead_letter_batches",
            "logferry_agent_queue_lost_records_total",
        ] {
            assert_eq!(metric(&m, name), Some(0.0), "{name}");
        }
    }

    // Group commit: the catch-up's batches shared INSERTs.
    let batches = fields[0] - batches_before;
    let m = scrape(&collector.http_url());
    let groups = metric(&m, "logferry_collector_clickhouse_insert_batches_count").expect("inserts");
    let grouped = metric(&m, "logferry_collector_clickhouse_insert_batches_sum").expect("batches");
    let log_parts = inserted_parts(&ch, "catchup", "logs") - parts_before[0];
    let ledger_parts = inserted_parts(&ch, "catchup", "ingest_batches") - parts_before[1];
    println!(
        "catch-up of {batches} batches ({} lines) in {:.1} s: {groups} log INSERTs \
         ({:.1} batches each), {log_parts} new parts of logs, {ledger_parts} of the ledger",
        want - before,
        caught_up.as_secs_f64(),
        grouped / groups,
    );
    assert_eq!(
        grouped as u64, batches,
        "every batch's rows went through one group"
    );
    assert!(
        groups * 2.0 <= batches as f64,
        "{batches} batches in {groups} INSERTs: catching up, batches should share them"
    );
    // One part per group INSERT (the lines are of one day), and one
    // pending and one committed INSERT of the ledger per group: without
    // groups, a part each per batch.
    assert_eq!(log_parts, groups as u64, "parts of logs");
    assert!(
        ledger_parts <= 2 * groups as u64,
        "{ledger_parts} ledger parts for {groups} groups"
    );
    drop(agents);
}
