//! Delivery guarantees, one failure at a time: pushes acknowledged before a
//! crash, lost acknowledgements and failover, a full queue, and bad input.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use logferry_e2e::{
    free_port, json_source, request_line, seed_line, wait_until, AckDropProxy, Agent, ClickHouse,
    Collector, TempDir,
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
