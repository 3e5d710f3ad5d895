//! What ingest adds to each record before it is stored: the message's
//! pattern id and, for HTTP requests, the route (ids folded), the security
//! class and the rules that matched (`logferry_analysis`). The templates
//! themselves go to the `patterns` table once per collector, so that rows
//! stay narrow.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::record::LogRow;
use crate::store::PatternRow;
use logferry_analysis::{patterns, security};

/// Stamps a row; returns its template so the caller can register it.
pub fn stamp(row: &mut LogRow) -> patterns::Template {
    let template = patterns::template(&row.body);
    row.pattern_id = template.id;
    if row.http_path.is_empty() && (row.http_status != 0 || row.duration_ms > 0.0) {
        // A request record that names its request only in the message,
        // as the seed's middleware does: "API call: GET /docs".
        if let Some((method, path)) = request_line(&row.body) {
            row.http_method = method.to_string();
            row.http_path = path.to_string();
        }
    }
    if !row.http_path.is_empty() {
        row.http_route = route(&row.http_path);
        let (path, query) = row
            .http_path
            .split_once('?')
            .unwrap_or((&row.http_path, ""));
        let verdict = security::classify(&security::Request {
            method: &row.http_method,
            path,
            query,
            user_agent: (!row.user_agent.is_empty()).then_some(row.user_agent.as_str()),
            ..security::Request::default()
        });
        row.security_class = verdict.class.as_str().to_string();
        row.security_rules = verdict.rules.iter().map(|r| r.to_string()).collect();
    }
    template
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The first `METHOD /path` in a message.
fn request_line(body: &str) -> Option<(&str, &str)> {
    let mut words = body.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if METHODS.contains(&w) {
            if let Some(path) = words.peek().filter(|p| p.starts_with('/')) {
                return Some((w, path));
            }
        }
    }
    None
}

/// The endpoint of a path: the query dropped, and every segment with a
/// digit (numbers, UUIDs, hashes; not a `v2`-style version) replaced by
/// `{id}`, so `/items/42` and `/items/43` are one route.
pub fn route(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_id(segment: &str) -> bool {
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let version = segment.len() <= 3
        && segment.starts_with(['v', 'V'])
        && segment[1..].bytes().all(|b| b.is_ascii_digit());
    !version
}

/// The templates this collector has already written to `patterns`. The
/// set is bounded: past `CAPACITY` it starts again, which costs a few
/// repeated (harmless) rows, never a missing one.
#[derive(Debug, Default)]
pub struct Registry {
    seen: Mutex<HashSet<(String, u64)>>,
}

const CAPACITY: usize = 200_000;

impl Registry {
    /// The rows of `batch` whose (tenant, pattern) this collector has not
    /// written yet, marked as written; call [`Registry::forget`] with them
    /// if the write fails.
    pub fn fresh(&self, batch: Vec<PatternRow>) -> Vec<PatternRow> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > CAPACITY {
            seen.clear();
        }
        batch
            .into_iter()
            .filter(|p| seen.insert((p.tenant.clone(), p.pattern_id)))
            .collect()
    }

    pub fn forget(&self, rows: &[PatternRow]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for p in rows {
            seen.remove(&(p.tenant.clone(), p.pattern_id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_patterns_and_http_classes() {
        let mut row = LogRow {
            body: "GET /search?q=1 took 12 ms".into(),
            http_method: "GET".into(),
            http_path: "/search?q=%27%20OR%201%3D1--".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into(),
            ..LogRow::default()
        };
        let t = stamp(&mut row);
        assert_eq!(t.text, "GET <*> took <*>");
        assert_eq!(row.http_route, "/search");
        assert_eq!(row.pattern_id, t.id);
        assert_eq!(row.security_class, "sqli");
        assert!(!row.security_rules.is_empty());

        let mut plain = LogRow {
            body: "cache warmed".into(),
            ..LogRow::default()
        };
        stamp(&mut plain);
        assert_eq!(plain.security_class, "", "no HTTP request, no class");
    }

    #[test]
    fn routes_fold_ids() {
        assert_eq!(route("/api/v1/items/42?x=1"), "/api/v1/items/{id}");
        assert_eq!(
            route("/users/9f1c2e7a-4b1d-4c7e-9a53-0d5b2f3c8e11/orders/7"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(route("/docs"), "/docs");
        assert_eq!(route(""), "/");
    }

    #[test]
    fn request_records_named_only_in_the_message_get_their_path() {
        let mut row = LogRow {
            body: "API call: GET /items/42".into(),
            http_status: 200,
            duration_ms: 9.2,
            ..LogRow::default()
        };
        stamp(&mut row);
        assert_eq!(
            (
                row.http_method.as_str(),
                row.http_path.as_str(),
                row.http_route.as_str()
            ),
            ("GET", "/items/42", "/items/{id}")
        );
        assert_eq!(row.security_class, "benign");
    }

    #[test]
    fn registry_writes_each_template_once_unless_forgotten() {
        let r = Registry::default();
        let row = |id| PatternRow {
            tenant: "t".into(),
            pattern_id: id,
            template: "x".into(),
            first_seen: 0,
            collector_id: "c".into(),
        };
        assert_eq!(r.fresh(vec![row(1), row(2), row(1)]).len(), 2);
        assert!(r.fresh(vec![row(1)]).is_empty());
        r.forget(&[row(1)]);
        assert_eq!(r.fresh(vec![row(1)]).len(), 1);
    }
}
