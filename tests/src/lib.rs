//! The end-to-end harness: a private ClickHouse per test (own directory, own
//! ports), the real `logferry-agent` and `logferry-collector` binaries on
//! free ports, and helpers to break them on purpose.
//!
//! The binaries are taken from the target directory this test binary was
//! built in (`cargo build --release --bins` first; the README's test command
//! does it).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod api;
pub mod receiver;

/// Whether the plain-text collector whose HTTP API listens on `http_port`
/// has connected to ClickHouse: it answers an unknown token with 401 then
/// (503 before).
pub fn collector_connected(http_port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http_port)) else {
        return false;
    };
    let _ = s.write_all(
        b"GET /api/v1/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer lft_probe\r\nConnection: close\r\n\r\n",
    );
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    answer.starts_with("HTTP/1.1 401")
}

/// A port nothing listens on, below the kernel's ephemeral range
/// (32768-60999 on Linux): a port the kernel handed out for listening
/// could be given next to an outgoing connection before the test's server
/// binds it. Each test process walks its own stretch of 20000-32767, from
/// a point set by its pid, and skips ports in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + SPAN - 1)
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// A binary of this workspace, from the target directory of this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --release --bins` (the README's test command does)",
        path.display()
    );
    path
}

/// Sends a signal by name (`TERM`, `STOP`, ...) with kill(1): the
/// workspace forbids `unsafe`, and this is test code.
fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status();
}

/// A child process with its log file, restartable with the same arguments.
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Proc {
        Proc {
            name: name.into(),
            program,
            args,
            env: Vec::new(),
            log,
            child: None,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Proc {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits; returns how long the process took to exit.
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        started.elapsed()
    }

    /// SIGHUP: reload the configuration.
    pub fn hangup(&self) {
        if let Some(c) = &self.child {
            signal(c, "HUP");
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds (user + system) and peak resident memory in MiB, read
    /// from /proc while the process runs.
    pub fn usage(&self) -> Option<(f64, f64)> {
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let hwm_kib = status_kib(pid, "VmHWM:")?;
        Some((ticks / clock_ticks_per_second(), hwm_kib / 1024.0))
    }

    /// Resident memory now, in MiB, while the process runs.
    pub fn rss_mib(&self) -> Option<f64> {
        Some(status_kib(self.pid()?, "VmRSS:")? / 1024.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A private ClickHouse server.
pub struct ClickHouse {
    pub dir: TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
    /// With `start_https`: the HTTPS port.
    pub https_port: Option<u16>,
    proc: Proc,
}

/// The password of the user `logferry` on every test server (the user
/// `default` has none).
pub const CLICKHOUSE_PASSWORD: &str = "clickhouse test password";

/// The users of an 18.16 test server: Debian's `default`, and `logferry`
/// with `CLICKHOUSE_PASSWORD`.
fn users_xml_18() -> String {
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>10000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <logferry>
            <password>{CLICKHOUSE_PASSWORD}</password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </logferry>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#
    )
}

/// This package's directory in the checkout being tested: cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a test, and a target directory shared
/// by several clones can hold a binary built from another one.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Which ClickHouse the tests start: `LOGFERRY_CLICKHOUSE` is `18.16`
/// (Debian's server, the default) or `26.9` (PyPI's chdb-core, run by
/// `clickhouse/serve26.py` with the Python of `LOGFERRY_CHDB_PYTHON`).
pub fn clickhouse_generation() -> &'static str {
    match std::env::var("LOGFERRY_CLICKHOUSE").as_deref() {
        Ok("26.9") => "26.9",
        Ok("18.16") | Err(_) => "18.16",
        Ok(other) => panic!("LOGFERRY_CLICKHOUSE is `{other}`; use 18.16 or 26.9"),
    }
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        ClickHouse::start_with(None)
    }

    /// An 18.16 server that also serves HTTPS with this certificate and
    /// key, whichever generation `LOGFERRY_CLICKHOUSE` names: the 26.9 of
    /// chdb-core (clickhouse-local) cannot listen on HTTPS.
    pub fn start_https(cert: &Path, key: &Path) -> ClickHouse {
        ClickHouse::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> ClickHouse {
        let https_port = tls.map(|_| free_port());
        let dir = tempfile::Builder::new()
            .prefix("logferry-ch-")
            .tempdir()
            .expect("tempdir");
        let (http_port, tcp_port, inter_port) = (free_port(), free_port(), free_port());
        let d = dir.path().display();
        let (program, args) = if clickhouse_generation() == "26.9" && tls.is_none() {
            let python = std::env::var("LOGFERRY_CHDB_PYTHON")
                .unwrap_or_else(|_| "/var/tmp/logferry-chdb/bin/python".into());
            assert!(
                Path::new(&python).exists(),
                "{python} is missing: the README's test command installs chdb-core into it"
            );
            let script = package_dir().join("clickhouse/serve26.py");
            let args = vec![
                script.display().to_string(),
                d.to_string(),
                http_port.to_string(),
                tcp_port.to_string(),
                CLICKHOUSE_PASSWORD.to_string(),
            ];
            (PathBuf::from(python), args)
        } else {
            let server = which("clickhouse-server").unwrap_or_else(|| {
                panic!("clickhouse-server is not installed: apt-get install -y clickhouse-server clickhouse-client (the README's test command does it)")
            });
            std::fs::write(dir.path().join("users.xml"), users_xml_18()).expect("users.xml");
            let mut args = vec![
                "--config-file=/etc/clickhouse-server/config.xml".to_string(),
                "--".into(),
                format!("--users_config={d}/users.xml"),
                format!("--path={d}/data/"),
                format!("--tmp_path={d}/tmp/"),
                format!("--user_files_path={d}/user_files/"),
                format!("--format_schema_path={d}/fs/"),
                format!("--http_port={http_port}"),
                format!("--tcp_port={tcp_port}"),
                format!("--interserver_http_port={inter_port}"),
                format!("--logger.log={d}/log.txt"),
                format!("--logger.errorlog={d}/err.txt"),
            ];
            if let (Some(port), Some((cert, key))) = (https_port, tls) {
                args.extend([
                    format!("--https_port={port}"),
                    format!("--openSSL.server.certificateFile={}", cert.display()),
                    format!("--openSSL.server.privateKeyFile={}", key.display()),
                    "--openSSL.server.dhParamsFile=".to_string(),
                ]);
            }
            (server, args)
        };
        let proc = Proc::new("clickhouse", program, args, dir.path().join("stdout.txt"));
        let mut ch = ClickHouse {
            dir,
            http_port,
            tcp_port,
            https_port,
            proc,
        };
        ch.resume();
        ch
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server again on the same data and ports.
    pub fn resume(&mut self) {
        self.proc.start();
        let ready = wait_until(Duration::from_secs(30), || {
            self.try_query("SELECT 1").is_ok()
        });
        assert!(ready, "clickhouse did not start: {}", self.proc.log_text());
    }

    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// The server's CPU seconds so far and peak RSS in MiB.
    pub fn usage(&self) -> Option<(f64, f64)> {
        self.proc.usage()
    }

    /// The server's resident memory now, in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.proc.rss_mib()
    }

    /// Runs one statement over the HTTP interface, which both generations
    /// serve alike (Debian's 18.16 `clickhouse-client` cannot parse the
    /// DDL of a 26.9 table to send an INSERT to it). HTTP/1.0, so that the
    /// answer is never chunked.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .map_err(|e| format!("cannot connect to clickhouse: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        )
        .map_err(|e| format!("cannot send the query: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP answer: {answer}"))?;
        if head.split(' ').nth(1) == Some("200") {
            Ok(body.to_string())
        } else {
            Err(body.to_string())
        }
    }

    /// Inserts into `db.logs` the rows that `select` returns under the
    /// baseline's column names (`columns`, comma-separated), whichever
    /// layout the table has: a modern table is filled from a staging copy
    /// through its own names (`seed_statements`).
    pub fn seed_logs(&self, db: &str, columns: &str, select: &str) {
        if !self.has_maps_layout(db) {
            self.query(&format!("INSERT INTO {db}.logs ({columns}) {select}"));
            return;
        }
        let seed = seed_statements(db, "logs_seed", columns);
        self.query(&seed.create);
        self.query(&format!("INSERT INTO {db}.logs_seed ({columns}) {select}"));
        self.query(&seed.transfer);
        self.query(&seed.drop);
    }

    /// Whether `db.logs` stores `time` and `attributes` (a database
    /// created on a modern server) rather than the baseline's arrays.
    pub fn has_maps_layout(&self, db: &str) -> bool {
        self.count(&maps_layout_query(db)) > 0
    }

    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"))
    }

    /// A number from a one-value query, 0 while the table does not exist.
    pub fn count(&self, sql: &str) -> u64 {
        self.try_query(sql)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A `kB` figure of `/proc/PID/status`, by its key.
fn status_kib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

/// 1 when `db.logs` stores `time` (the modern layout), else 0.
pub fn maps_layout_query(db: &str) -> String {
    format!(
        "SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'logs' \
         AND name = 'time' AND default_kind = ''"
    )
}

/// The statements that move rows written under the baseline's names into
/// a modern `logs` table: a `Memory` table `seed` with those columns, then
/// one INSERT that converts the nanoseconds and the key and value arrays.
pub struct SeedStatements {
    pub create: String,
    pub transfer: String,
    pub drop: String,
}

pub fn seed_statements(db: &str, seed: &str, columns: &str) -> SeedStatements {
    let columns: Vec<&str> = columns.split(',').map(str::trim).collect();
    let (mut targets, mut exprs) = (Vec::new(), Vec::new());
    for c in &columns {
        let (target, expr) = match *c {
            "time_unix_nano" => (
                "time",
                "fromUnixTimestamp64Nano(toInt64(time_unix_nano))".to_string(),
            ),
            "attr_keys" => (
                "attributes",
                "mapFromArrays(attr_keys, attr_values)".to_string(),
            ),
            "resource_keys" => (
                "resource",
                "mapFromArrays(resource_keys, resource_values)".to_string(),
            ),
            "attr_values" | "resource_values" => continue,
            c => (c, c.to_string()),
        };
        targets.push(target);
        exprs.push(expr);
    }
    SeedStatements {
        create: format!(
            "CREATE TABLE {db}.{seed} ENGINE = Memory AS SELECT {} FROM {db}.logs LIMIT 0",
            columns.join(", ")
        ),
        transfer: format!(
            "INSERT INTO {db}.logs ({}) SELECT {} FROM {db}.{seed}",
            targets.join(", "),
            exprs.join(", ")
        ),
        drop: format!("DROP TABLE {db}.{seed}"),
    }
}

/// The wall clock in nanoseconds since 1970.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// The Prometheus text at `url` (`/metrics` appended when missing).
pub fn scrape(url: &str) -> String {
    let url = if url.ends_with("/metrics") {
        url.to_string()
    } else {
        format!("{url}/metrics")
    };
    let out = std::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "GET {url} failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The value of the unlabelled series `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("config file");
    f.write_all(text.as_bytes()).expect("write config");
    path
}

pub struct Collector {
    /// The ingest port.
    pub port: u16,
    pub http_port: u16,
    pub grpc_port: u16,
    pub config: PathBuf,
    pub tls: bool,
    pub proc: Proc,
}

/// How a test collector guards its ports.
#[derive(Debug, Clone, Copy)]
pub struct Security<'a> {
    /// `ingest.require_credentials`.
    pub require_credentials: bool,
    /// The body of the `[tls]` table.
    pub tls: &'a str,
    /// More keys for the `[api]` table.
    pub api: &'a str,
    /// More keys for the `[ingest]` table.
    pub ingest: &'a str,
}

/// Plain text, and agents ship without credentials into tenant `default`.
pub const OPEN: Security = Security {
    require_credentials: false,
    tls: "plaintext = true",
    api: "",
    ingest: "",
};

impl Collector {
    /// An open collector on a free port, storing into `database` of `ch`.
    pub fn new(dir: &Path, name: &str, ch: &ClickHouse, database: &str, extra: &str) -> Collector {
        Collector::start(free_port(), dir, name, ch, database, OPEN, extra)
    }

    pub fn on_port(
        port: u16,
        dir: &Path,
        name: &str,
        ch: &ClickHouse,
        database: &str,
        extra: &str,
    ) -> Collector {
        Collector::start(port, dir, name, ch, database, OPEN, extra)
    }

    pub fn start(
        port: u16,
        dir: &Path,
        name: &str,
        ch: &ClickHouse,
        database: &str,
        security: Security,
        extra: &str,
    ) -> Collector {
        let clickhouse = format!("url = \"{}\"\ndatabase = \"{database}\"", ch.url());
        Collector::with_clickhouse(port, dir, name, &clickhouse, security, extra)
    }

    /// A collector whose `[clickhouse]` table holds `clickhouse` (its
    /// `url`, `database` and TLS keys).
    pub fn with_clickhouse(
        port: u16,
        dir: &Path,
        name: &str,
        clickhouse: &str,
        security: Security,
        extra: &str,
    ) -> Collector {
        let (http_port, grpc_port) = (free_port(), free_port());
        // Test lines carry fixed dates, which a modern server's TTL would
        // drop at insert once they are older than the default 30 days.
        let retention = if extra.contains("[retention]") {
            ""
        } else {
            "[retention]\ndays = 3650\n"
        };
        let config = write_config(
            dir,
            &format!("{name}.toml"),
            &format!(
                "shutdown_timeout_ms = 5000\n[ingest]\nlisten = \"127.0.0.1:{port}\"\nbatch_deadline_ms = 4000\n\
                 require_credentials = {}\n{}\n\
                 [api]\nhttp_listen = \"127.0.0.1:{http_port}\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\
                 tail_poll_interval_ms = 200\n{}\n[tls]\n{}\n\
                 [clickhouse]\n{clickhouse}\n[log]\nlevel = \"info\"\n{extra}\n{retention}",
                security.require_credentials,
                security.ingest,
                security.api,
                security.tls,
            ),
        );
        let proc = Proc::new(
            name,
            bin("logferry-collector"),
            vec!["--config".into(), config.display().to_string()],
            dir.join(format!("{name}.log")),
        );
        let mut c = Collector {
            port,
            http_port,
            grpc_port,
            config,
            tls: !security.tls.contains("plaintext = true"),
            proc,
        };
        c.proc.start();
        c
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Waits until the collector has connected to ClickHouse
    /// (`collector_connected`). Plain-text collectors only.
    pub fn wait_connected(&self) {
        let connected = wait_until(Duration::from_secs(60), || {
            collector_connected(self.http_port)
        });
        assert!(
            connected,
            "the collector never connected to ClickHouse: {}",
            self.proc.log_text()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    pub fn http_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.http_port)
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.grpc_port)
    }

    /// Runs `logferry-collector bootstrap`, the password on standard input.
    pub fn bootstrap(
        &self,
        username: &str,
        password: &str,
        tenant: Option<&str>,
    ) -> std::process::Output {
        let mut args = vec![
            "--config".to_string(),
            self.config.display().to_string(),
            "bootstrap".into(),
            "--username".into(),
            username.into(),
        ];
        if let Some(t) = tenant {
            args.extend(["--tenant".to_string(), t.to_string()]);
        }
        let mut child = Command::new(bin("logferry-collector"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bootstrap starts");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{password}");
        }
        child.wait_with_output().expect("bootstrap runs")
    }
}

pub struct Agent {
    pub data_dir: PathBuf,
    pub push_port: u16,
    pub metrics_port: u16,
    pub proc: Proc,
}

impl Agent {
    /// An agent following `sources` (TOML `[[sources]]` tables) and shipping
    /// to `endpoints`, with test-friendly timings.
    pub fn new(dir: &Path, endpoints: &[String], sources: &str, extra: &str) -> Agent {
        Agent::with_forward(dir, endpoints, sources, extra, "")
    }

    /// `new`, with more keys for the `[forward]` table (`forward_extra`).
    pub fn with_forward(
        dir: &Path,
        endpoints: &[String],
        sources: &str,
        extra: &str,
        forward_extra: &str,
    ) -> Agent {
        let (push_port, metrics_port) = (free_port(), free_port());
        let data_dir = dir.join("agent-data");
        let endpoints = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let cfg = write_config(
            dir,
            "agent.toml",
            &format!(
                "data_dir = \"{}\"\nshutdown_timeout_ms = 5000\n{extra}\n\
                 [push]\nlisten = \"127.0.0.1:{push_port}\"\n\
                 [forward]\nendpoints = [{endpoints}]\nbatch_timeout_ms = 100\nrequest_timeout_ms = 6000\n\
                 backoff_initial_ms = 50\nbackoff_max_ms = 500\n{forward_extra}\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[tail]\nrotated_grace_ms = 500\n{sources}",
                data_dir.display()
            ),
        );
        let proc = Proc::new(
            "agent",
            bin("logferry-agent"),
            vec!["--config".into(), cfg.display().to_string()],
            dir.join("agent.log"),
        );
        let mut a = Agent {
            data_dir,
            push_port,
            metrics_port,
            proc,
        };
        a.proc.start();
        a
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Waits until the agent serves its metrics (its queue is open).
    pub fn wait_metrics(&self) {
        let url = self.metrics_url();
        let up = wait_until(Duration::from_secs(30), || {
            std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "agent metrics never served: {}", self.proc.log_text());
    }

    pub fn push_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.push_port)
    }
}

/// A `[[sources]]` table named `app` following `dir/*.log` as JSON lines,
/// with `extra` keys.
pub fn json_source(dir: &Path, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"app\"\ninclude = [\"{}/*.log\"]\nformat = \"json\"\n{extra}",
        dir.display()
    )
}

/// Now, as RFC 3339 with microseconds (UTC), for log lines written now.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A JSON line in the format of our users' applications.
pub fn seed_line(file: &str, n: u64) -> String {
    format!(
        "{{\"timestamp\": \"2026-11-27T10:{:02}:{:02}.{:06}+00:00\", \"level\": \"{}\", \"logger\": \"Fast Users API\", \
         \"message\": \"{file} line {n}\", \"module\": \"logging_middleware\", \"function\": \"dispatch\", \"line\": 41, \
         \"request_id\": \"req-{n}\", \"duration_ms\": {}.5, \"status_code\": {}, \"client_ip\": \"10.0.0.{}\", \
         \"user_agent\": \"Mozilla/5.0\", \"event_type\": \"api_performance\"}}",
        (n / 60) % 60,
        n % 60,
        n % 1_000_000,
        if n.is_multiple_of(10) { "ERROR" } else { "INFO" },
        n % 500,
        if n.is_multiple_of(10) { 500 } else { 200 },
        n % 250
    )
}

/// A request-shaped JSON line, as request-logging middleware and
/// nginx-derived logs carry them: separate `method` and `path` (with query
/// strings), `status_code`, and real browser and client user agents.
pub fn request_line(n: u64) -> String {
    const AGENTS: [&str; 5] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "python-httpx/0.27.0",
        "okhttp/4.12.0",
    ];
    let path = match n % 4 {
        0 => format!("/api/v1/orders?page={}&limit=50", n % 40),
        1 => format!("/api/v1/users/{n}/profile"),
        2 => format!("/api/v1/products/search?q=item{}&sort=price", n % 97),
        _ => "/healthz".to_string(),
    };
    format!(
        "{{\"timestamp\":\"2026-08-21T00:{:02}:{:02}.{:03}Z\",\"level\":\"INFO\",\"logger\":\"app.api\",\
         \"message\":\"request completed\",\"request_id\":\"{n:08x}a1b2c3d4e5f6\",\"duration_ms\":{}.125,\
         \"status_code\":{},\"client_ip\":\"10.1.{}.{}\",\"user_agent\":\"{}\",\"event_type\":\"http_request\",\
         \"method\":\"{}\",\"path\":\"{path}\",\"user_id\":\"user_{}\"}}",
        (n / 60) % 60,
        n % 60,
        n % 1000,
        n % 300,
        if n.is_multiple_of(25) { 503 } else { 200 },
        n % 250,
        n % 254 + 1,
        AGENTS[n as usize % AGENTS.len()],
        if n.is_multiple_of(4) { "POST" } else { "GET" },
        n % 25_000
    )
}

/// A TCP proxy in front of a collector that loses acknowledgements: it
/// forwards HTTP/2 frames both ways, and the first `drops` times the
/// HEADERS of a successful reply come back (the collector has finished the
/// call: the batch is stored) it cuts the connection instead, so the agent
/// never hears of it. Refusals (trailers-only replies) pass through.
pub struct AckDropProxy {
    pub port: u16,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AckDropProxy {
    pub fn start(target: u16, drops: usize) -> AckDropProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("addr").port();
        let budget = Arc::new(AtomicUsize::new(drops));
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (budget, counter) = (budget.clone(), counter.clone());
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    let mut header = [0u8; 9];
                    while std::io::Read::read_exact(&mut from, &mut header).is_ok() {
                        let len = (usize::from(header[0]) << 16)
                            | (usize::from(header[1]) << 8)
                            | usize::from(header[2]);
                        let stream =
                            u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                                & 0x7fff_ffff;
                        let mut payload = vec![0u8; len];
                        if std::io::Read::read_exact(&mut from, &mut payload).is_err() {
                            break;
                        }
                        // The HEADERS of a successful reply: the call has
                        // finished and its batch is stored. An error is a
                        // trailers-only reply (END_STREAM set on its
                        // HEADERS): passed on, so every drop loses a real
                        // acknowledgement.
                        let end_stream = header[4] & 0x1 != 0;
                        let is_ack = header[3] == 0x1 && stream != 0 && !end_stream;
                        if is_ack
                            && budget
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                                    b.checked_sub(1)
                                })
                                .is_ok()
                        {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if to
                            .write_all(&header)
                            .and_then(|()| to.write_all(&payload))
                            .is_err()
                        {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        AckDropProxy { port, dropped }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A TCP proxy that a test can cut off, as a network partition does:
/// while `partition`ed it forwards nothing either way, holding what it
/// reads (the connections stall, as when packets are dropped, instead of
/// closing) and leaving new connections unanswered. `heal` either lets the
/// stalled connections go on, delivering what they held late, or resets
/// them.
pub struct PartitionProxy {
    pub port: u16,
    state: std::sync::Arc<PartitionState>,
}

#[derive(Default)]
struct PartitionState {
    cut: std::sync::atomic::AtomicBool,
    /// Bumped by a heal that resets: connections opened before it close.
    generation: std::sync::atomic::AtomicU64,
}

impl PartitionProxy {
    pub fn start(target: u16) -> PartitionProxy {
        let listener = TcpListener::bind(("127.0.0.1", free_port())).expect("proxy listener");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(PartitionState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let generation = state.wait_connected();
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let (c2, s2) = (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    let up = state.clone();
                    std::thread::spawn(move || pump(client, server, &up, generation));
                    pump(s2, c2, &state, generation);
                });
            }
        });
        PartitionProxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn partition(&self) {
        self.state
            .cut
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends the partition; with `reset`, the connections it stalled close.
    pub fn heal(&self, reset: bool) {
        if reset {
            self.state
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl PartitionState {
    /// Waits out a partition; the generation the connection belongs to.
    fn wait_connected(&self) -> u64 {
        while self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either end closes, holding each read while
/// the proxy is partitioned, and closing both when a reset outdates them.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    state: &PartitionState,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match std::io::Read::read(&mut from, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.wait_connected() != generation || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
