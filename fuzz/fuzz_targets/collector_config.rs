//! The collector's TOML configuration: parsed, every unknown key and bad
//! value reported, validated. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_collector::config::Config;
use logferry_daemon::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((config, _unknown)) = logferry_daemon::parse::<Config>(text) {
        let _ = config.problems();
    }
});
