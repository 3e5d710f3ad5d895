//! What operators touch: config checking through the real binaries, and
//! retention dropping old day partitions.

use std::process::Command;
use std::time::Duration;

use logferry_collector::store::schema::{ServerVersion, MIGRATIONS};
use logferry_e2e::{bin, wait_until, write_config, ClickHouse, Collector, TempDir};

#[test]
fn check_config_reports_every_problem_and_exits_non_zero() {
    let dir = TempDir::new().expect("tempdir");
    let bad = write_config(
        dir.path(),
        "agent.toml",
        "colour = \"red\"\n[[sources]]\nname = \"app\"\ninclude = [\"relative/*.log\"]\n[forward]\nendpoints = [\"ftp://x\"]\nmax_in_flight = 0\n",
    );
    let out = Command::new(bin("logferry-agent"))
        .args(["--config", &bad.display().to_string(), "--check-config"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "colour: unknown key",
        "sources[0].include",
        "forward.endpoints",
        "forward.max_in_flight",
    ] {
        assert!(err.contains(problem), "{problem} missing from: {err}");
    }

    let good = write_config(
        dir.path(),
        "collector.toml",
        include_str!("../../deploy/collector.toml"),
    );
    let out = Command::new(bin("logferry-collector"))
        .args(["--config", &good.display().to_string(), "--check-config"])
        .output()
        .expect("run collector");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = Command::new(bin("logferry-collector"))
        .arg("--version")
        .output()
        .expect("version");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("logferry-collector "));
}

#[test]
fn retention_drops_day_partitions_older_than_configured() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let collector = Collector::new(
        dir.path(),
        "collector",
        &ch,
        "ret",
        "[retention]\ndays = 2\ncheck_interval_s = 1\n",
    );
    // Every migration has run once the collector serves (the logs table
    // comes first, the alerting tables later).
    collector.wait_connected();
    // Rows 10 days old, 1 day old and from today; alert history and agent
    // reports 70 days old (month partitions, kept a month past the logs)
    // and from today.
    ch.query(
        "INSERT INTO ret.logs (tenant, timestamp, body) VALUES \
         ('default', now() - 10 * 86400, 'old'), ('default', now() - 86400, 'recent'), ('default', now(), 'today')",
    );
    for table in ["alert_history", "agent_reports"] {
        ch.query(&format!(
            "INSERT INTO ret.{table} (tenant, time) VALUES ('old', now() - 70 * 86400), ('new', now())"
        ));
    }
    let dropped = wait_until(Duration::from_secs(30), || {
        ch.count("SELECT count() FROM ret.logs WHERE body = 'old'") == 0
    });
    assert!(dropped, "{}", collector.proc.log_text());
    assert_eq!(
        ch.count("SELECT count() FROM ret.logs"),
        2,
        "newer partitions stay"
    );
    for table in ["alert_history", "agent_reports"] {
        assert!(
            wait_until(Duration::from_secs(10), || ch.count(&format!(
                "SELECT count() FROM ret.{table} WHERE tenant = 'old'"
            )) == 0),
            "{table}: old months are dropped"
        );
        assert_eq!(ch.count(&format!("SELECT count() FROM ret.{table}")), 1);
    }
}

#[test]
fn a_new_file_is_picked_up_within_a_second() {
    let dir = TempDir::new().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs");
    let ch = ClickHouse::start();
    let collector = Collector::new(dir.path(), "collector", &ch, "pickup", "");
    let sources = format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\n",
        logs.display()
    );
    let agent = logferry_e2e::Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    // The pipeline is up once a first file's line is stored.
    std::fs::write(logs.join("first.log"), "{\"message\": \"first\"}\n").expect("write");
    assert!(
        wait_until(Duration::from_secs(30), || ch
            .count("SELECT count() FROM pickup.logs")
            == 1),
        "{}",
        agent.proc.log_text()
    );
    for i in 0..3 {
        let started = std::time::Instant::now();
        std::fs::write(
            logs.join(format!("new-{i}.log")),
            format!("{{\"message\": \"new {i}\"}}\n"),
        )
        .expect("write");
        let seen = wait_until(Duration::from_secs(10), || {
            ch.count(&format!(
                "SELECT count() FROM pickup.logs WHERE body = 'new {i}'"
            )) == 1
        });
        let took = started.elapsed();
        assert!(seen, "{}", agent.proc.log_text());
        // Pickup (filesystem event, or the one-second rescan) plus batching
        // (100 ms here) and the insert.
        assert!(
            took < Duration::from_millis(2500),
            "new file {i} took {took:?}"
        );
    }
}

#[test]
fn collectors_starting_together_on_a_new_database_all_migrate_it() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    // Started at once, they run the same migrations at the same time; a
    // column one of them added is what the others wanted (on 26.9 that
    // answer is DUPLICATE_COLUMN, which once stopped `run-local.sh`).
    let collectors: Vec<Collector> = (0..4)
        .map(|n| Collector::new(dir.path(), &format!("c{n}"), &ch, "together", ""))
        .collect();
    for c in &collectors {
        c.wait_connected();
        let log = c.proc.log_text();
        assert!(!log.contains("cannot reach clickhouse"), "{log}");
    }
    let server = ServerVersion::parse(&ch.query("SELECT version()")).expect("a version");
    let expected = MIGRATIONS
        .iter()
        .filter(|m| m.requires.is_none_or(|r| server >= r))
        .count() as u64;
    assert_eq!(
        ch.count("SELECT uniqExact(version) FROM together.schema_migrations"),
        expected
    );
}
