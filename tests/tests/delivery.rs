//! Delivery guarantees, one failure at a time: pushes acknowledged before a
//! crash, lost acknowledgements and failover, a full queue, and bad input.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use logferry_e2e::{
    bin, free_port, json_source, metric, request_line, scrape, seed_line, wait_until, AckDropProxy,
    Agent, ClickHouse, Collector, Security, TempDir, OPEN,
};
use logferry_proto::push_service_client::PushServiceClient;
use logferry_proto::{KeyValue, LogRecord, PushRequest};

fn records(batch: usize, n: usize) -> PushRequest {
    PushRequest {
        resource: vec![KeyValue::string("service.name", "pusher")],
        records: (0..n)
            .map(|i| LogRecord {
                severity_text: if i % 5 == 0 {
                    "ERROR".into()
                } else {
                    "INFO".into()
                },
                body: format!("push {batch}-{i}"),
                attributes: vec![KeyValue::string("status_code", "201")],
                ..Default::default()
            })
            .collect(),
    }
}

async fn push_client(agent: &Agent) -> PushServiceClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(c) = PushServiceClient::connect(agent.push_endpoint()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("agent push port never opened: {}", agent.proc.log_text());
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("write");
}

fn seed_lines(file: &str, from: u64, to: u64) -> String {
    (from..to).map(|n| seed_line(file, n) + "\n").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_pushes_survive_a_sigkill() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let _collector = Collector::new(dir.path(), "collector", &ch, "push", "");
    // The collector is not consulted: pushes are acknowledged by the queue.
    let mut agent = Agent::new(dir.path(), &[_collector.endpoint()], "", "");
    let mut client = push_client(&agent).await;
    let mut acked = 0;
    for b in 0..20 {
        acked += client
            .push(records(b, 250))
            .await
            .expect("push")
            .into_inner()
            .accepted;
    }
    let stream = tokio_stream::iter((20..30).map(|b| records(b, 250)));
    acked += client
        .push_stream(stream)
        .await
        .expect("stream")
        .into_inner()
        .accepted;
    agent.proc.kill9();
    assert_eq!(acked, 7500);
    agent.proc.start();
    let arrived = wait_until(Duration::from_secs(60), || {
        ch.count("SELECT count() FROM push.logs") >= 7500
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(arrived, "{}", agent.proc.log_text());
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body), countIf(severity_number = 17), any(service), min(http_status) FROM push.logs"),
        "7500\t7500\t1500\tpusher\t201\n"
    );
}

#[test]
fn a_lost_acknowledgement_never_duplicates_rows() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let c1 = Collector::new(dir.path(), "collector1", &ch, "acks", "");
    let c2 = Collector::new(dir.path(), "collector2", &ch, "acks", "");
    // Both ready before the agent ships: a batch refused while a collector
    // is still connecting would send the agent to the other one, past the
    // proxy, and no acknowledgement would be lost.
    c1.wait_connected();
    c2.wait_connected();
    let proxy = AckDropProxy::start(c1.port, 3);
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\n",
        logs.display()
    );
    let extra = "[log]\nlevel = \"info,logferry_agent::forward=debug\"";
    let agent = Agent::new(
        dir.path(),
        &[proxy.endpoint(), c2.endpoint()],
        &sources,
        extra,
    );
    for burst in 0..5 {
        append(
            &logs.join("app.log"),
            &seed_lines("app", burst * 1000, (burst + 1) * 1000),
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let arrived = wait_until(Duration::from_secs(60), || {
        ch.count("SELECT count() FROM acks.logs") >= 5000
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(arrived, "{}", agent.proc.log_text());
    assert!(
        proxy.dropped.load(Ordering::SeqCst) >= 1,
        "the proxy lost no acknowledgement"
    );
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body) FROM acks.logs"),
        "5000\t5000\n"
    );
    assert!(
        agent.proc.log_text().contains("duplicate=true"),
        "the resent batch was recognised as stored: {}",
        agent.proc.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_pauses_tailing_refuses_pushes_and_loses_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let port = free_port();
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\n",
        logs.display()
    );
    let extra = "[queue]\nmax_bytes = 1048576";
    let agent = Agent::new(
        dir.path(),
        &[format!("http://127.0.0.1:{port}")],
        &sources,
        extra,
    );
    // About 9 MiB of lines against a 1 MiB queue, with no collector yet.
    append(&logs.join("app.log"), &seed_lines("app", 0, 20_000));
    let mut client = push_client(&agent).await;
    let mut accepted = 0;
    let mut refused = false;
    for b in 0..200 {
        match client.push(records(b, 100)).await {
            Ok(r) => accepted += r.into_inner().accepted,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s}");
                refused = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a full queue must refuse pushes");
    assert!(wait_until(Duration::from_secs(5), || agent
        .proc
        .log_text()
        .contains("tailing paused")));
    let _collector = Collector::on_port(port, dir.path(), "collector", &ch, "full", "");
    let want = 20_000 + accepted;
    let arrived = wait_until(Duration::from_secs(120), || {
        ch.count("SELECT count() FROM full.logs") >= want
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(arrived, "{}", agent.proc.log_text());
    assert_eq!(ch.count("SELECT uniqExact(body) FROM full.logs"), want);
    assert_eq!(ch.count("SELECT count() FROM full.logs"), want);
    assert!(agent.proc.log_text().contains("tailing resumed"));
}

#[test]
fn bad_input_is_kept_marked_and_never_crashes_the_agent() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "bad", "");
    let sources = logferry_e2e::json_source(&logs, "");
    let mut agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");

    // Binary garbage: 50 lines of bytes that are not UTF-8.
    let mut garbage = Vec::new();
    for i in 0..50u32 {
        garbage.extend(
            (0..1000u32)
                .map(|j| ((i * 7919 + j * 31) % 255) as u8)
                .map(|b| if b == b'\n' { 0xff } else { b }),
        );
        garbage.push(b'\n');
    }
    std::fs::write(logs.join("garbage.log"), &garbage).expect("garbage");
    // A 10 MiB line between two good ones.
    append(
        &logs.join("huge.log"),
        &format!(
            "{{\"message\": \"before huge\"}}\n{}\n{{\"message\": \"after huge\"}}\n",
            "x".repeat(10 << 20)
        ),
    );
    // Malformed JSON.
    append(
        &logs.join("malformed.log"),
        "{\"message\": \"unclosed\"\n[1, 2\n{\"level\": \"ERROR\", \"message\": \"fine\"}\n",
    );
    std::fs::write(logs.join("empty.log"), "").expect("empty");
    // A backfill spanning 120 days: more day partitions than one INSERT may
    // touch on modern servers.
    let backfill: String = (0..120)
        .map(|d| {
            format!(
                "{{\"timestamp\": {}, \"message\": \"backfill {d}\"}}\n",
                1_700_000_000 + d * 86_400
            )
        })
        .collect();
    append(&logs.join("backfill.log"), &backfill);
    // A file deleted while its writer still writes to it.
    let mut doomed = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join("doomed.log"))
        .expect("doomed");
    doomed
        .write_all(seed_lines("doomed", 0, 1000).as_bytes())
        .expect("write");
    let seen = wait_until(Duration::from_secs(30), || {
        ch.count("SELECT count() FROM bad.logs WHERE body LIKE 'doomed%'") > 0
    });
    assert!(seen, "{}", agent.proc.log_text());
    std::fs::remove_file(logs.join("doomed.log")).expect("delete");
    doomed
        .write_all(seed_lines("doomed", 1000, 2000).as_bytes())
        .expect("write after delete");
    drop(doomed);

    let want = 50 + 3 + 3 + 120 + 2000;
    let arrived = wait_until(Duration::from_secs(60), || {
        ch.count("SELECT count() FROM bad.logs") >= want
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        arrived,
        "only {} rows: {}",
        ch.count("SELECT count() FROM bad.logs"),
        agent.proc.log_text()
    );
    assert_eq!(
        ch.count("SELECT count() FROM bad.logs"),
        want,
        "rows per file: {}\nrecords stored twice: {}\nbodies stored twice: {}\n{}\n{}",
        ch.query("SELECT file_path, count() FROM bad.logs GROUP BY file_path ORDER BY file_path FORMAT TSV"),
        ch.query("SELECT agent_id, seq, count() FROM bad.logs GROUP BY agent_id, seq HAVING count() > 1 FORMAT TSV"),
        ch.query("SELECT substring(body, 1, 60), count() FROM bad.logs GROUP BY body HAVING count() > 1 LIMIT 20 FORMAT TSV"),
        agent.proc.log_text(),
        collector.proc.log_text()
    );
    assert_eq!(
        ch.count("SELECT uniqExact(body) FROM bad.logs WHERE body LIKE 'doomed%'"),
        2000
    );
    assert_eq!(
        ch.count("SELECT count() FROM bad.logs WHERE file_path LIKE '%garbage.log' AND has(attr_keys, 'logferry.parse_error') AND position(body, '\u{fffd}') > 0"),
        50,
        "garbage is kept, replaced and marked"
    );
    assert_eq!(
        ch.query("SELECT length(body), has(attr_keys, 'logferry.truncated') FROM bad.logs WHERE body LIKE 'xxx%'"),
        "1048576\t1\n",
        "the huge line is cut at max_line_bytes and marked"
    );
    assert_eq!(
        ch.count("SELECT count() FROM bad.logs WHERE body IN ('before huge', 'after huge')"),
        2
    );
    assert_eq!(ch.count("SELECT count() FROM bad.logs WHERE has(attr_keys, 'logferry.parse_error') AND file_path LIKE '%malformed.log'"), 2);
    assert_eq!(
        ch.count("SELECT count() FROM bad.logs WHERE body = 'fine' AND severity_number = 17"),
        1
    );
    assert!(agent.proc.is_running(), "{}", agent.proc.log_text());
    assert!(agent.proc.terminate() < Duration::from_secs(6));
}

/// An agent that finds a backlog of request-shaped lines, with every
/// default on (stamping included), delivers all of it: no batch takes
/// longer to store than its deadline, so none is retried for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_request_shaped_lines_drains_with_every_default() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    const LINES: u64 = 150_000;
    let mut text = String::new();
    for n in 0..LINES {
        text.push_str(&request_line(n));
        text.push('\n');
    }
    append(&logs.join("api.log"), &text);
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "backlog", "");
    let agent = Agent::new(
        dir.path(),
        &[collector.endpoint()],
        &json_source(&logs, ""),
        "",
    );
    let stored = || ch.count("SELECT count() FROM backlog.logs");
    assert!(
        wait_until(Duration::from_secs(240), || stored() >= LINES),
        "stored {} of {LINES}: {}\n{}",
        stored(),
        collector.proc.log_text(),
        agent.proc.log_text()
    );
    assert_eq!(
        ch.query("SELECT count(), uniqExact(seq) FROM backlog.logs FORMAT TSV")
            .trim(),
        format!("{LINES}\t{LINES}"),
        "every line once"
    );
    let stamped = ch.count("SELECT count() FROM backlog.logs WHERE security_class != ''");
    eprintln!("{stamped} of {LINES} rows stamped with a security class");
}

/// The small hosts' memory settings (README): a 42 MiB budget, with
/// batches of 5 MiB to fit it.
const SMALL_HOST_MEMORY: &str = "[memory]\nbudget_bytes = 44040192";
const SMALL_HOST_BATCHES: &str = "batch_max_bytes = 5242880";
/// The agent's resident memory under a burst of lines with them: the
/// budget and what the program itself takes beside it (its code's pages,
/// about 16 MiB of the 19 MiB it holds idle).
const AGENT_RSS_MIB: f64 = 64.0;
/// The same with pushes arriving besides: each open push connection may
/// send 256 KiB ahead of its turn, and the pushes take up to about 6 MiB
/// more than their share of the budget (`push.max_concurrent` x
/// `max_message_bytes` x 5). Measured 59.0 to 62.9 MiB (five runs).
const AGENT_RSS_WITH_PUSHES_MIB: f64 = 72.0;

/// Bursts, with the small hosts' memory settings: 200,000 request-shaped
/// lines (80 MB) written to a file at once; once they are stored, eight
/// clients pushing 160,000 records in messages of almost 1 MiB
/// (`push.max_message_bytes`) while another 200,000 lines are written.
/// The agent's peak resident memory (VmHWM, read from /proc) stays within
/// `AGENT_RSS_MIB`, then `AGENT_RSS_WITH_PUSHES_MIB`, and every record
/// arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn bursts_of_lines_and_pushes_stay_within_the_memory_budget() {
    const LINES: u64 = 200_000;
    const CLIENTS: usize = 8;
    const MESSAGES: usize = 10;
    const RECORDS: usize = 2_000;
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "burst", "");
    let agent = Agent::with_forward(
        dir.path(),
        &[collector.endpoint()],
        &json_source(&logs, ""),
        SMALL_HOST_MEMORY,
        SMALL_HOST_BATCHES,
    );
    agent.wait_metrics();
    let stored = || ch.count("SELECT count() FROM burst.logs");
    let wait_stored = |total: u64| {
        assert!(
            wait_until(Duration::from_secs(300), || stored() >= total),
            "stored {} of {total}: {}",
            stored(),
            agent.proc.log_text()
        );
        assert_eq!(
            ch.query("SELECT count(), uniqExact(seq) FROM burst.logs FORMAT TSV")
                .trim(),
            format!("{total}\t{total}"),
            "every record once"
        );
        agent.proc.usage().expect("the agent runs").1
    };
    let burst = |from: u64| {
        let text: String = (from..from + LINES)
            .map(|n| request_line(n) + "\n")
            .collect();
        append(&logs.join("api.log"), &text);
    };

    burst(0);
    let peak_mib = wait_stored(LINES);
    eprintln!("agent peak RSS {peak_mib:.1} MiB after a burst of lines");
    assert!(
        peak_mib <= AGENT_RSS_MIB,
        "the agent's peak RSS was {peak_mib:.1} MiB, above {AGENT_RSS_MIB} MiB"
    );

    burst(LINES);
    let mut pushers = Vec::new();
    for c in 0..CLIENTS {
        let mut client = push_client(&agent).await;
        pushers.push(tokio::spawn(async move {
            for m in 0..MESSAGES {
                let mut req = records(c * MESSAGES + m, RECORDS);
                for r in &mut req.records {
                    r.body.push_str(&" padding".repeat(55));
                }
                let size = prost::Message::encoded_len(&req);
                assert!((900 << 10..1 << 20).contains(&size), "{size} B");
                // Pushes beyond push.max_concurrent wait for their turn.
                client.push(req).await.expect("push accepted");
            }
        }));
    }
    for p in pushers {
        p.await.expect("pusher");
    }
    let peak_mib = wait_stored(2 * LINES + (CLIENTS * MESSAGES * RECORDS) as u64);
    eprintln!("agent peak RSS {peak_mib:.1} MiB after pushes besides");
    assert!(
        peak_mib <= AGENT_RSS_WITH_PUSHES_MIB,
        "the agent's peak RSS was {peak_mib:.1} MiB, above {AGENT_RSS_WITH_PUSHES_MIB} MiB"
    );
}

/// `logferry-agent --config <the test agent's> dead-letters <args>`.
fn dead_letters(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let config = dir.join("agent.toml");
    std::process::Command::new(bin("logferry-agent"))
        .arg("--config")
        .arg(&config)
        .arg("dead-letters")
        .args(args)
        .output()
        .expect("run logferry-agent dead-letters")
}

/// Batches both collectors refuse for good (more records than they take in
/// one batch) are set aside, more of them than `max_in_flight`, and lines
/// written afterwards still arrive; replayed against a collector that takes
/// them, every line is stored exactly once.
#[test]
fn batches_every_collector_refuses_are_set_aside_and_replayed_once() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let strict = Security {
        ingest: "max_batch_records = 1000",
        ..OPEN
    };
    let c1 = Collector::start(
        free_port(),
        dir.path(),
        "strict1",
        &ch,
        "poison",
        strict,
        "",
    );
    let c2 = Collector::start(
        free_port(),
        dir.path(),
        "strict2",
        &ch,
        "poison",
        strict,
        "",
    );
    c1.wait_connected();
    c2.wait_connected();
    let mut agent = Agent::new(
        dir.path(),
        &[c1.endpoint(), c2.endpoint()],
        &json_source(&logs, ""),
        "",
    );
    agent.wait_metrics();
    let file = logs.join("app.log");
    let stored = || ch.count("SELECT count() FROM poison.logs");
    let gauge = |url: &str, name: &str| metric(&scrape(url), name).unwrap_or(0.0) as u64;
    let url = agent.metrics_url();
    let dead = |name: &str| gauge(&url, name);

    // Three bursts of 1,500 lines: each read in one go, each a batch of
    // more than 1,000 records. Then a trickle of small batches.
    let mut written = 0;
    for _ in 0..3 {
        append(&file, &seed_lines("app", written, written + 1500));
        written += 1500;
        let set_aside = wait_until(Duration::from_secs(30), || {
            dead("logferry_agent_queue_dead_letter_records") + stored() == written
        });
        assert!(set_aside, "{}", agent.proc.log_text());
    }
    let poisoned = dead("logferry_agent_queue_dead_letter_batches");
    assert!(
        poisoned >= 2,
        "at least as many refused batches as batches in flight: {poisoned}"
    );
    for _ in 0..20 {
        append(&file, &seed_lines("app", written, written + 10));
        written += 10;
        std::thread::sleep(Duration::from_millis(150));
    }
    let unblocked = wait_until(Duration::from_secs(30), || {
        dead("logferry_agent_queue_dead_letter_records") + stored() == written && stored() >= 200
    });
    assert!(
        unblocked,
        "the trickle arrived past the refused batches: {} stored\n{}",
        stored(),
        agent.proc.log_text()
    );
    let held = dead("logferry_agent_queue_dead_letter_records");
    assert!(held >= 2000, "{held} records set aside");
    let log = agent.proc.log_text();
    assert!(
        log.contains("every collector refused a batch for good") && log.contains("too-large"),
        "one clear line per batch set aside: {log}"
    );
    let reported = wait_until(Duration::from_secs(20), || {
        ch.count("SELECT argMax(dead_letter_records, time) FROM poison.agent_reports") == held
    });
    assert!(reported, "the agent's report carries its dead letters");

    let busy = dead_letters(dir.path(), &["list"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop the agent first"),
        "{busy:?}"
    );
    agent.proc.terminate();
    let list = dead_letters(dir.path(), &["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert!(
        text.contains(&format!("{poisoned} batches, {held} records"))
            && text.contains("max_batch_records"),
        "{text}"
    );
    let unknown = dead_letters(dir.path(), &["replay", "--first-seq", "1"]);
    assert!(!unknown.status.success(), "{unknown:?}");
    let replay = dead_letters(dir.path(), &["replay"]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        String::from_utf8_lossy(&replay.stdout)
            .contains(&format!("{poisoned} batches ({held} records)")),
        "{replay:?}"
    );

    // The cause fixed: a collector that takes batches of the default size.
    let c3 = Collector::new(dir.path(), "lenient", &ch, "poison", "");
    c3.wait_connected();
    let agent = Agent::new(dir.path(), &[c3.endpoint()], &json_source(&logs, ""), "");
    agent.wait_metrics();
    let replayed = wait_until(Duration::from_secs(60), || stored() >= written);
    assert!(
        replayed,
        "{} of {written}: {}",
        stored(),
        agent.proc.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body) FROM poison.logs"),
        format!("{written}\t{written}\n")
    );
    assert_eq!(
        gauge(
            &agent.metrics_url(),
            "logferry_agent_queue_dead_letter_batches"
        ),
        0
    );
}

/// A memory budget whose queue share keeps the damage test's records in
/// the write buffer, so they live only in the WAL the test damages. With
/// the default budget the queue's write buffers are 2 MiB, and the test's
/// WAL holds about 2 MiB (2,084,332 bytes measured): RocksDB may flush the
/// records to a table file while they are queued; the flipped bytes then
/// land on writes already flushed, and nothing is left to read again from
/// the file (which the agent handles just as well, but this test would not
/// see the refill it is about).
const UNFLUSHED_QUEUE: &str = "[memory]\nbudget_bytes = 268435456";

/// A queue damaged while the agent was down (bytes flipped in the middle
/// of its WAL) never stops the agent: `check-state` says so, the agent
/// quarantines it at start, keeps what survives, reads the lines the damage
/// took again from the file, and goes on shipping; every line is stored
/// once and the agent reports no loss.
#[test]
fn a_damaged_queue_is_quarantined_refilled_and_shipping_goes_on() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let port = free_port();
    let mut collector = Collector::on_port(port, dir.path(), "collector", &ch, "damage", "");
    collector.wait_connected();
    let sources = json_source(&logs, "");
    let mut agent = Agent::new(
        dir.path(),
        &[collector.endpoint()],
        &sources,
        UNFLUSHED_QUEUE,
    );
    agent.wait_metrics();
    let file = logs.join("app.log");
    let stored = || ch.count("SELECT count() FROM damage.logs");
    append(&file, &seed_lines("app", 0, 2000));
    assert!(wait_until(Duration::from_secs(30), || stored() == 2000));

    // Queued, not shipped: the collector is down.
    collector.proc.terminate();
    for burst in 0..4 {
        append(
            &file,
            &seed_lines("app", 2000 + burst * 1000, 3000 + burst * 1000),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let queued = wait_until(Duration::from_secs(30), || {
        metric(
            &scrape(&agent.metrics_url()),
            "logferry_agent_queue_records",
        ) == Some(4000.0)
    });
    assert!(queued, "{}", agent.proc.log_text());
    agent.proc.terminate();
    let queue = agent.data_dir.join("queue");
    let wal = std::fs::read_dir(&queue)
        .expect("queue dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("a WAL");
    let mut bytes = std::fs::read(&wal).expect("read WAL");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, bytes).expect("write WAL");

    let check = std::process::Command::new(bin("logferry-agent"))
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .arg("check-state")
        .output()
        .expect("check-state");
    assert!(!check.status.success(), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("logferry-agent repair"),
        "{check:?}"
    );

    collector.proc.start();
    collector.wait_connected();
    let agent = Agent::new(
        dir.path(),
        &[collector.endpoint()],
        &sources,
        UNFLUSHED_QUEUE,
    );
    agent.wait_metrics();
    append(&file, &seed_lines("app", 6000, 7000));
    let lost = || {
        metric(
            &scrape(&agent.metrics_url()),
            "logferry_agent_queue_lost_records_total",
        )
        .unwrap_or(0.0) as u64
    };
    let settled = wait_until(Duration::from_secs(60), || stored() + lost() == 7000);
    let log = agent.proc.log_text();
    assert!(settled, "{} stored, {} lost: {log}", stored(), lost());
    assert!(
        log.contains("the queue was damaged and has been recovered"),
        "{log}"
    );
    // The records the damage took are read again from the file, which
    // still holds them: nothing is lost.
    let refilled: u64 = log
        .split_once(" of them read again from their files")
        .and_then(|(before, _)| before.rsplit('(').next()?.parse().ok())
        .unwrap_or(0);
    eprintln!("recovery: {refilled} of 4000 queued records read again from the file");
    assert!(refilled > 0 && refilled < 4000, "{log}");
    assert_eq!(lost(), 0, "{log}");
    assert!(
        std::fs::read_dir(agent.data_dir.join("quarantine"))
            .expect("quarantine")
            .count()
            == 1
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ch.query("SELECT count() = uniqExact(body) FROM damage.logs"),
        "1\n",
        "no line twice"
    );
    assert!(
        ch.count("SELECT countIf(body LIKE '%app line 6999%') FROM damage.logs") == 1,
        "shipping went on"
    );
    let reported = wait_until(Duration::from_secs(20), || {
        ch.count("SELECT count() FROM damage.agent_reports WHERE queue_lost_records = 0") > 0
    });
    assert!(reported, "the agent reports no loss");
    assert_eq!(
        ch.count("SELECT max(queue_lost_records) FROM damage.agent_reports"),
        0
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (as root): {out:?}"
        );
        SmallDisk(at.to_path_buf())
    }

    fn available(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's answer")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The agent's data directory on a small filesystem that fills up while
/// the collector is down: tailing pauses and pushes are refused before
/// RocksDB runs out of space, the agent says why, and once space returns
/// it resumes by itself with nothing lost and nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_pauses_the_queue_and_shipping_resumes_by_itself() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let disk = SmallDisk::mount(&dir.path().join("agent-data"), "96m");
    let ch = ClickHouse::start();
    let port = free_port();
    let mut collector = Collector::on_port(port, dir.path(), "collector", &ch, "disk", "");
    collector.wait_connected();
    let agent = Agent::new(
        dir.path(),
        &[collector.endpoint()],
        &json_source(&logs, ""),
        "[queue]\nmin_free_bytes = 33554432",
    );
    agent.wait_metrics();
    let file = logs.join("app.log");
    let stored = || ch.count("SELECT count() FROM disk.logs");
    append(&file, &seed_lines("app", 0, 1000));
    assert!(wait_until(Duration::from_secs(30), || stored() == 1000));

    // The collector down; a ballast leaves 40 MiB free, and 13 MiB of lines
    // take the queue below its 32 MiB reserve.
    collector.proc.terminate();
    let ballast = disk.0.join("ballast");
    let size = disk.available().saturating_sub(40 << 20);
    std::fs::write(&ballast, vec![0u8; size as usize]).expect("ballast");
    for burst in 0..30 {
        append(
            &file,
            &seed_lines("app", 1000 + burst * 1000, 2000 + burst * 1000),
        );
    }
    let paused = wait_until(Duration::from_secs(30), || {
        agent
            .proc
            .log_text()
            .contains("tailing paused: the queue's disk has")
    });
    assert!(paused, "{}", agent.proc.log_text());
    let free = metric(
        &scrape(&agent.metrics_url()),
        "logferry_agent_queue_disk_free_bytes",
    )
    .expect("the free-space gauge");
    assert!(free < 33554432.0 && free > 8e6, "{free}");
    let refused = push_client(&agent)
        .await
        .push(records(0, 10))
        .await
        .expect_err("a push below the reserve");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("min_free_bytes"), "{refused}");

    // Space returns and the collector with it.
    std::fs::remove_file(&ballast).expect("ballast");
    collector.proc.start();
    let all = wait_until(Duration::from_secs(90), || stored() >= 31_000);
    std::thread::sleep(Duration::from_secs(1));
    assert!(all, "{} of 31000: {}", stored(), agent.proc.log_text());
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body) FROM disk.logs"),
        "31000\t31000\n"
    );
    let log = agent.proc.log_text();
    assert!(log.contains("tailing resumed"), "{log}");
    assert!(
        !log.contains("No space left"),
        "RocksDB never ran out: {log}"
    );
}

/// The query id prefix of an INSERT that writes the batch (tenant, agent
/// id, first seq), as every collector names it: `lf-`, a 16-digit xxh3 of
/// the three, `-` (ARCHITECTURE, "Exactly once").
fn insert_query_prefix(tenant: &str, agent_id: &str, first_seq: u64) -> String {
    let key = format!("{tenant}\0{agent_id}\0{first_seq}");
    format!("lf-{:016x}-", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// A statement that runs until killed, under `query_id`, standing in for an
/// INSERT that its collector gave up on while the server still writes it.
fn hold_query(ch: &ClickHouse, query_id: &str) -> std::process::Child {
    let child = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            &format!("{}/?query_id={query_id}", ch.url()),
            "--data-binary",
            "SELECT count() FROM numbers(1000000000000)",
        ])
        .spawn()
        .expect("run curl");
    let running = wait_until(Duration::from_secs(10), || {
        ch.count(&format!(
            "SELECT count() FROM system.processes WHERE query_id = '{query_id}'"
        )) == 1
    });
    assert!(
        running,
        "the stand-in statement never showed in system.processes"
    );
    child
}

fn kill_query(ch: &ClickHouse, mut held: std::process::Child, query_id: &str) {
    ch.query(&format!("KILL QUERY WHERE query_id = '{query_id}' SYNC"));
    let _ = held.wait();
}

/// Recovery of a batch whose earlier attempt expired first asks the server
/// whether an INSERT of it still runs (`Store::inserts_running`): while one
/// does, the retry is answered UNAVAILABLE and writes nothing (rows it
/// wrote then would be stored twice); one of another batch does not hold
/// it up; once the statement is over, the retry stores the batch, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_waits_while_an_insert_of_its_batch_still_runs_on_the_server() {
    use logferry_e2e::api::{export_batch, ship};
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "running", "");
    collector.wait_connected();
    let lines = |first: u64| -> Vec<String> {
        (first..first + 100)
            .map(|n| format!("running line {n}"))
            .collect()
    };
    // Two batches whose earlier attempts, on a collector since gone, ran
    // out of time: their pending entries expired a minute ago. They are
    // recorded now, as a collector records them: an entry dated 1970 lies
    // in a partition the collector's retention drops at its first run.
    let expired = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 60_000;
    for first in [1, 101] {
        ch.query(&format!(
            "INSERT INTO running.ingest_batches (tenant, agent_id, first_seq, last_seq, state, collector_id, deadline_ms, records, recorded_at) \
             VALUES ('default', 'agent-r', {first}, {}, 1, 'gone', {expired}, 100, now())",
            first + 99
        ));
    }
    let stored = || ch.count("SELECT count() FROM running.logs");

    // An INSERT of batch 1 still runs: batch 1 waits, batch 101 does not.
    let id = format!(
        "{}0123456789abcdef",
        insert_query_prefix("default", "agent-r", 1)
    );
    let held = hold_query(&ch, &id);
    let busy = ship(
        &collector.endpoint(),
        "",
        export_batch("agent-r", 1, &lines(1)),
    )
    .await;
    let other = ship(
        &collector.endpoint(),
        "",
        export_batch("agent-r", 101, &lines(101)),
    )
    .await;
    kill_query(&ch, held, &id);
    let busy = busy.expect_err("batch 1 must wait for its running insert");
    assert_eq!(busy.code(), tonic::Code::Unavailable, "{busy:?}");
    assert!(
        busy.message()
            .contains("still being stored by the clickhouse server"),
        "{busy:?}"
    );
    assert_eq!(other.expect("batch 101 is not held up").stored, 100);
    assert_eq!(stored(), 100, "batch 1 wrote nothing while its insert ran");

    // The same when the running statement names batch 1 second among the
    // members of a group INSERT.
    let id = format!(
        "{}{}0123456789abcdef",
        insert_query_prefix("default", "agent-r", 101),
        &insert_query_prefix("default", "agent-r", 1)[3..]
    );
    let held = hold_query(&ch, &id);
    let busy = ship(
        &collector.endpoint(),
        "",
        export_batch("agent-r", 1, &lines(1)),
    )
    .await;
    kill_query(&ch, held, &id);
    assert_eq!(
        busy.expect_err("batch 1 must wait").code(),
        tonic::Code::Unavailable
    );

    // Once it is over, the retry stores the batch, and only once.
    let done = ship(
        &collector.endpoint(),
        "",
        export_batch("agent-r", 1, &lines(1)),
    )
    .await
    .expect("stored once nothing runs");
    assert_eq!((done.stored, done.duplicate), (100, false));
    let again = ship(
        &collector.endpoint(),
        "",
        export_batch("agent-r", 1, &lines(1)),
    )
    .await
    .expect("a resend is answered");
    assert!(again.duplicate);
    assert_eq!(
        ch.query("SELECT count(), uniqExact(body) FROM running.logs"),
        "200\t200\n"
    );
}
