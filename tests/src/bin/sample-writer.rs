//! Appends log lines in the format of our users' applications (the seed's
//! JSON request logs, with errors, slow requests and the odd attack) to a
//! file, at a steady rate, until stopped. Like Python's WatchedFileHandler,
//! it reopens the file when it is renamed or deleted, so rotating it by
//! hand behaves as with a real application. Used by `scripts/run-local.sh`.
//!
//! Usage: sample-writer FILE [LINES_PER_SECOND] (default 50).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PATHS: &[&str] = &[
    "/api/v1/users",
    "/api/v1/users/42",
    "/api/v1/orders",
    "/api/v1/orders/7/items",
    "/docs",
    "/health",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.31.0",
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: sample-writer FILE [LINES_PER_SECOND]"))?;
    let rate: u64 = args.next().map_or(Ok(50), |r| r.parse())?;
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
    };
    let mut file = open()?;
    let mut n: u64 = 0;
    loop {
        let rotated = match std::fs::metadata(&path) {
            Ok(on_disk) => on_disk.ino() != file.metadata()?.ino(),
            Err(_) => true,
        };
        if rotated {
            file = open()?;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let secs = now.as_secs();
        let route = PATHS[(n % PATHS.len() as u64) as usize];
        let (level, status, message) = match n % 50 {
            0 => (
                "ERROR",
                500,
                format!("Unhandled exception on {route}: database timeout after 5000 ms"),
            ),
            1 => (
                "WARNING",
                401,
                "Failed login attempt for user admin".to_string(),
            ),
            2 => ("WARNING", 404, "Not found: /.git/config".to_string()),
            _ => ("INFO", 200, format!("API call: GET {route}")),
        };
        let line = format!(
            "{{\"timestamp\": \"{}.{:06}+00:00\", \"level\": \"{level}\", \"logger\": \"Fast Users API\", \"message\": \"{message}\", \
             \"module\": \"logging_middleware\", \"function\": \"dispatch\", \"line\": 41, \"request_id\": \"req-{n}\", \
             \"duration_ms\": {}.{}, \"status_code\": {status}, \"client_ip\": \"192.0.2.{}\", \"user_agent\": \"{}\", \
             \"event_type\": \"api_performance\", \"user_id\": \"user-{}\", \"method\": \"GET\", \"path\": \"{route}\"}}\n",
            rfc3339_seconds(secs),
            now.subsec_micros(),
            5 + (n * 37) % 900,
            n % 10,
            n % 200,
            AGENTS[(n % AGENTS.len() as u64) as usize],
            n % 25
        );
        file.write_all(line.as_bytes())?;
        n += 1;
        std::thread::sleep(Duration::from_micros(1_000_000 / rate.max(1)));
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for Unix seconds (UTC), without a date library.
fn rfc3339_seconds(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
