//! The agent's TOML configuration: parsed, every unknown key and bad value
//! reported, validated. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_daemon::Settings;

// The agent's own source, compiled here: the agent crate links RocksDB's
// C++, which this instrumented build would compile again (10 to 25 min).
#[allow(dead_code)]
#[path = "../../agent/src/config.rs"]
mod config;
// What config.rs validates sources' redaction with.
#[allow(dead_code)]
#[path = "../../agent/src/redact.rs"]
mod redact;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((config, _unknown)) = logferry_daemon::parse::<config::Config>(text) {
        let _ = config.problems();
    }
});
