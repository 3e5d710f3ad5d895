//! The wall clock, and times as the APIs write them (RFC 3339, UTC). Code
//! computes on Unix numbers; text is made only where a response is shaped.

use chrono::{DateTime, SecondsFormat};

pub const NS: u64 = 1_000_000_000;

/// Now, in Unix nanoseconds (0 on a clock set before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

pub fn now_s() -> u64 {
    now_ns() / NS
}

/// Unix seconds as RFC 3339 to the second, like `2026-12-07T19:40:00Z`;
/// empty when out of chrono's range.
pub fn rfc3339_s(s: u64) -> String {
    i64::try_from(s)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Unix nanoseconds as RFC 3339 with `digits` of the second.
pub fn rfc3339_ns(ns: u64, digits: SecondsFormat) -> String {
    DateTime::from_timestamp_nanos(ns.min(i64::MAX as u64) as i64).to_rfc3339_opts(digits, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc_to_the_digits_asked() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(1_765_000_000), "2025-12-06T05:46:40Z");
        assert_eq!(rfc3339_s(u64::MAX), "");
        assert_eq!(
            rfc3339_ns(1_765_000_000_123_456_789, SecondsFormat::Millis),
            "2025-12-06T05:46:40.123Z"
        );
        assert_eq!(
            rfc3339_ns(1_765_000_000_123_456_789, SecondsFormat::Nanos),
            "2025-12-06T05:46:40.123456789Z"
        );
    }
}
