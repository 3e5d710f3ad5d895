//! Redaction before anything leaves the host: a source's lines pass
//! through its detectors before they are queued, and what a detector finds
//! is replaced with `[REDACTED:<detector>]`. Only counts are kept
//! (`logferry_agent_redactions_total`); what was found is never logged.
//!
//! One pass of a `RegexSet` tells which detectors match a line at all, so
//! a line with nothing to hide costs one scan. A detector's pattern may
//! have one capture group: then only the group is replaced (the password
//! of a URL, not the URL). Card numbers must also pass the Luhn check.

use std::borrow::Cow;

use regex::bytes::{Regex, RegexSet};

/// The built-in detectors, by the name a source's `redact` list uses.
const BUILT_IN: [(&str, &str); 6] = [
    ("card", r"\b(?:\d[ -]?){12,18}\d\b"),
    (
        "email",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    ),
    ("bearer", r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)"),
    (
        "api_key",
        r"\b(?:(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})\b",
    ),
    (
        "url_password",
        r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@",
    ),
    ("aws_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
];

/// The names of the built-in detectors.
pub fn built_in_names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|(name, _)| *name)
}

struct Detector {
    name: String,
    re: Regex,
    marker: Vec<u8>,
}

/// A source's detectors, compiled.
pub struct Redactor {
    set: RegexSet,
    detectors: Vec<Detector>,
}

impl Redactor {
    /// The built-in detectors named in `names`, then `patterns` (custom
    /// regexes, named `custom.<index>`). `None` when there are none.
    pub fn new(names: &[String], patterns: &[String]) -> Result<Option<Redactor>, String> {
        let mut sources = Vec::new();
        for name in names {
            let (_, pattern) = BUILT_IN.iter().find(|(n, _)| n == name).ok_or_else(|| {
                format!(
                    "`{name}` is not a detector (one of: {})",
                    built_in_names().collect::<Vec<_>>().join(", ")
                )
            })?;
            sources.push((name.clone(), (*pattern).to_string()));
        }
        for (i, p) in patterns.iter().enumerate() {
            sources.push((format!("custom.{i}"), p.clone()));
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let mut detectors = Vec::new();
        for (name, pattern) in &sources {
            let re = Regex::new(pattern).map_err(|e| format!("`{pattern}`: {e}"))?;
            if re.captures_len() > 2 {
                return Err(format!(
                    "`{pattern}`: at most one capture group (the part to replace)"
                ));
            }
            detectors.push(Detector {
                marker: format!("[REDACTED:{name}]").into_bytes(),
                name: name.clone(),
                re,
            });
        }
        let set = RegexSet::new(sources.iter().map(|(_, p)| p)).map_err(|e| e.to_string())?;
        Ok(Some(Redactor { set, detectors }))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| d.name.as_str())
    }

    /// Every line of `data` (each ending with its newline) through `redact`.
    pub fn redact_lines(&self, data: &[u8], found: &mut [u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for line in data.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(&self.redact(line, found));
        }
        out
    }

    /// `line` with what the detectors find replaced; `found[i]` grows by
    /// the replacements of detector `i`.
    pub fn redact<'a>(&self, line: &'a [u8], found: &mut [u64]) -> Cow<'a, [u8]> {
        let hits = self.set.matches(line);
        if !hits.matched_any() {
            return Cow::Borrowed(line);
        }
        let mut text = line.to_vec();
        for i in hits.iter() {
            let d = &self.detectors[i];
            let mut out = Vec::with_capacity(text.len());
            let mut last = 0;
            for caps in d.re.captures_iter(&text) {
                let whole = caps.get(0).expect("group 0");
                let part = caps.get(1).unwrap_or(whole);
                if d.name == "card" && !luhn(part.as_bytes()) {
                    continue;
                }
                out.extend_from_slice(&text[last..part.start()]);
                out.extend_from_slice(&d.marker);
                last = part.end();
                found[i] += 1;
            }
            if last > 0 {
                out.extend_from_slice(&text[last..]);
                text = out;
            }
        }
        Cow::Owned(text)
    }
}

/// The Luhn check over the digits of `candidate` (13 to 19 of them).
fn luhn(candidate: &[u8]) -> bool {
    let digits: Vec<u32> = candidate
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, twice) if twice > 9 => twice - 9,
            (true, twice) => twice,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        let names: Vec<String> = built_in_names().map(str::to_string).collect();
        Redactor::new(&names, &[r"session=(\w+)".into()])
            .expect("valid")
            .expect("some")
    }

    fn redact(r: &Redactor, line: &str) -> (String, Vec<u64>) {
        let mut found = vec![0; r.detectors.len()];
        let out = r.redact(line.as_bytes(), &mut found);
        (String::from_utf8_lossy(&out).into_owned(), found)
    }

    #[test]
    fn each_detector_replaces_what_it_finds_and_counts_it() {
        let r = all();
        let cases = [
            (
                "paid with 4111 1111 1111 1111 today",
                "paid with [REDACTED:card] today",
                "card",
            ),
            (
                "mail bob.smith+x@example.co.uk now",
                "mail [REDACTED:email] now",
                "email",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
                "Authorization: Bearer [REDACTED:bearer]",
                "bearer",
            ),
            (
                "key=sk_live_abcdefghijklmnop1234",
                "key=[REDACTED:api_key]",
                "api_key",
            ),
            (
                "db postgres://app:s3cret!@db:5432/x",
                "db postgres://app:[REDACTED:url_password]@db:5432/x",
                "url_password",
            ),
            (
                "aws AKIAIOSFODNN7EXAMPLE used",
                "aws [REDACTED:aws_key] used",
                "aws_key",
            ),
            (
                "GET /?session=abc123 200",
                "GET /?session=[REDACTED:custom.0] 200",
                "custom.0",
            ),
        ];
        for (line, want, detector) in cases {
            let (got, found) = redact(&r, line);
            assert_eq!(got, want);
            let i = r.names().position(|n| n == detector).expect("named");
            assert_eq!(found[i], 1, "{detector}: {found:?}");
            assert_eq!(found.iter().sum::<u64>(), 1, "only {detector}: {found:?}");
        }
    }

    #[test]
    fn lookalikes_are_left_alone() {
        let r = all();
        for line in [
            "order 4111 1111 1111 1112 shipped",
            "trace id 1234567890123456789 done",
            "user@localhost logged in",
            "bearer of bad news",
            "https://example.com/a:b@c",
            "{\"status\":200,\"duration_ms\":12}",
        ] {
            let (got, found) = redact(&r, line);
            assert_eq!(got, line, "{found:?}");
        }
    }

    #[test]
    fn bad_detectors_are_refused_with_the_reason() {
        let err = Redactor::new(&["ssn".into()], &[]).err().expect("unknown");
        assert!(
            err.contains("not a detector") && err.contains("card"),
            "{err}"
        );
        let err = Redactor::new(&[], &["(a)(b)".into()])
            .err()
            .expect("two groups");
        assert!(err.contains("one capture group"), "{err}");
        assert!(Redactor::new(&[], &["(".into()]).is_err());
        assert!(Redactor::new(&[], &[]).expect("fine").is_none());
    }

    #[test]
    fn luhn_accepts_valid_numbers_only() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"5500 0000 0000 0004"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"123"));
    }
}
