//! What ingest adds to each record before it is stored: the message's
//! pattern id and, for HTTP requests, the security class and the rules
//! that matched (`logferry_analysis`). The templates themselves go to the
//! `patterns` table once per collector, so that rows stay narrow.

use std::collections::HashSet;
use std::sync::Mutex;

use logferry_analysis::{patterns, security};
use serde::Serialize;

use crate::record::LogRow;

/// A template as stored in `patterns`.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct PatternRow {
    pub tenant: String,
    pub pattern_id: u64,
    pub template: String,
    pub first_seen: u32,
    pub collector_id: String,
}

/// Stamps a row; returns its template so the caller can register it.
pub fn stamp(row: &mut LogRow) -> patterns::Template {
    let template = patterns::template(&row.body);
    row.pattern_id = template.id;
    if !row.http_path.is_empty() {
        let (path, query) = row
            .http_path
            .split_once('?')
            .unwrap_or((&row.http_path, ""));
        let verdict = security::classify(&security::Request {
            method: &row.http_method,
            path,
            query,
            user_agent: &row.user_agent,
            ..security::Request::default()
        });
        row.security_class = verdict.class.as_str().to_string();
        row.security_rules = verdict.rules.iter().map(|r| r.to_string()).collect();
    }
    template
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
