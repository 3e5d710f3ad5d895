//! What operators touch: config checking through the real binaries, and
//! retention dropping old day partitions.

use std::process::Command;
use std::time::Duration;

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
    assert!(wait_until(Duration::from_secs(30), || ch
        .try_query("SELECT count() FROM ret.logs")
        .is_ok()));
    // Rows 10 days old, 1 day old and from today.
    ch.query(
        "INSERT INTO ret.logs (tenant, timestamp, body) VALUES \
         ('default', now() - 10 * 86400, 'old'), ('default', now() - 86400, 'recent'), ('default', now(), 'today')",
    );
    let dropped = wait_until(Duration::from_secs(30), || {
        ch.count("SELECT count() FROM ret.logs WHERE body = 'old'") == 0
    });
    assert!(dropped, "{}", collector.proc.log_text());
    assert_eq!(
        ch.count("SELECT count() FROM ret.logs"),
        2,
        "newer partitions stay"
    );
}
