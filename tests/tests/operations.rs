//! What operators touch: config checking and reloading through the real
//! binaries, and retention dropping old day partitions.

use std::process::Command;
use std::time::Duration;

use logferry_collector::store::schema::{ServerVersion, MIGRATIONS};
use logferry_e2e::{
    bin, seed_line, wait_until, write_config, Agent, ClickHouse, Collector, TempDir,
};

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

/// `--check-config` reads the whole set: the file, its `.d` directory, and
/// the variables they use.
#[test]
fn check_config_covers_the_d_directory_and_variables() {
    let dir = TempDir::new().expect("tempdir");
    let main = write_config(
        dir.path(),
        "agent.toml",
        include_str!("../../deploy/agent.toml"),
    );
    std::fs::create_dir(dir.path().join("agent.d")).expect("agent.d");
    std::fs::write(
        dir.path().join("agent.d/10-web.toml"),
        "[[sources]]\nname = \"web\"\ninclude = [\"${WEB_LOGS:-/var/log/nginx}/*.log\"]\n",
    )
    .expect("write");
    let check = |env: &[(&str, &str)]| {
        Command::new(bin("logferry-agent"))
            .args(["--config", &main.display().to_string(), "--check-config"])
            .envs(env.iter().copied())
            .output()
            .expect("run agent")
    };
    let out = check(&[("WEB_LOGS", "/srv/web")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The source's name must be unique across the set: a second "app".
    std::fs::write(
        dir.path().join("agent.d/20-dup.toml"),
        "[[sources]]\nname = \"app\"\ninclude = [\"${APP_LOGS}/*.log\"]\n",
    )
    .expect("write");
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("20-dup.toml: line 3: ${APP_LOGS} is not set"),
        "{err}"
    );
    let out = check(&[("APP_LOGS", "/srv/app")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sources[2].name"), "{err}");
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
    let agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
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

/// SIGHUP reloads the agent's configuration in the same process: a source
/// added is followed, the old one goes on where it was, every line is stored
/// once; an invalid file is refused with its problems and the running
/// configuration goes on. A change to the file reloads without a signal.
/// The collector reloads the same way.
#[test]
fn sighup_reloads_without_losing_or_repeating_a_line() {
    let dir = TempDir::new().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).expect("a");
    std::fs::create_dir(&b).expect("b");
    let ch = ClickHouse::start();
    let mut collector = Collector::new(dir.path(), "collector", &ch, "reload", "");
    let source = |name: &str, at: &std::path::Path| {
        format!(
            "[[sources]]\nname = \"{name}\"\ninclude = [\"{}/*.log\"]\n",
            at.display()
        )
    };
    let mut agent = Agent::new(dir.path(), &[collector.endpoint()], &source("a", &a), "");
    let pid = agent.proc.pid();
    let stored = || ch.count("SELECT count() FROM reload.logs");
    let append = |at: &std::path::Path, from: u64, to: u64| {
        let text: String = (from..to).map(|n| seed_line("app", n) + "\n").collect();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(at.join("app.log"))
            .expect("open");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("append");
    };
    append(&a, 0, 1000);
    assert!(wait_until(Duration::from_secs(30), || stored() == 1000));

    // The same agent.toml with a second source; lines keep coming meanwhile.
    let config = dir.path().join("agent.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}\n{}", source("b", &b))).expect("rewrite");
    append(&a, 1000, 2000);
    agent.proc.hangup();
    append(&a, 2000, 3000);
    append(&b, 3000, 3500);
    let all = wait_until(Duration::from_secs(30), || stored() == 3500);
    let log = agent.proc.log_text();
    assert!(all, "{} of 3500 stored: {log}", stored());
    assert!(log.contains("reloading the configuration"), "{log}");
    assert!(agent.proc.is_running() && agent.proc.pid() == pid, "{log}");
    assert_eq!(
        ch.query("SELECT count() = uniqExact(body) FROM reload.logs"),
        "1\n",
        "no line twice"
    );

    // An invalid file: refused, and the agent goes on with what it runs.
    std::fs::write(&config, format!("{text}\nbogus_key = 1\n")).expect("rewrite");
    agent.proc.hangup();
    let refused = wait_until(Duration::from_secs(10), || {
        agent.proc.log_text().contains("configuration not reloaded")
    });
    let log = agent.proc.log_text();
    assert!(refused && log.contains("bogus_key"), "{log}");
    append(&b, 3500, 3600);
    assert!(wait_until(Duration::from_secs(30), || stored() == 3600));
    assert!(agent.proc.is_running() && agent.proc.pid() == pid);

    // A change to the file is enough, without a signal: a third source.
    let c = dir.path().join("c");
    std::fs::create_dir(&c).expect("c");
    let reloads = || {
        agent
            .proc
            .log_text()
            .matches("reloading the configuration")
            .count()
    };
    let before = reloads();
    let three = format!("{text}\n{}\n{}", source("b", &b), source("c", &c));
    std::fs::write(&config, three).expect("rewrite");
    assert!(
        wait_until(Duration::from_secs(10), || reloads() > before),
        "{}",
        agent.proc.log_text()
    );
    append(&c, 3600, 3700);
    assert!(wait_until(Duration::from_secs(30), || stored() == 3700));

    // The collector reloads the same way, and ingest goes on through it.
    let collector_pid = collector.proc.pid();
    collector.proc.hangup();
    append(&a, 3700, 4700);
    let all = wait_until(Duration::from_secs(30), || stored() == 4700);
    let log = collector.proc.log_text();
    assert!(all, "{} of 4700 stored: {log}", stored());
    assert!(log.contains("reloading the configuration"), "{log}");
    assert!(collector.proc.is_running() && collector.proc.pid() == collector_pid);
    assert_eq!(
        ch.query("SELECT count() = uniqExact(body) FROM reload.logs"),
        "1\n"
    );
}
