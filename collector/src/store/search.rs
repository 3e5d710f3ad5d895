//! Reads for the query API: search pages, tail polls and the attribute
//! catalogue.
//!
//! ClickHouse 18.16 has no skip indexes, and `logs` is sorted by (tenant,
//! service, timestamp): a newest-first search that asked for the whole range
//! at once would read and sort all of it to return a page. So a search looks
//! at a narrow window next to its starting point first (five minutes), and
//! widens the window eightfold each time a page is not yet full, until it
//! reaches the end of the range. Each window's rows all sort before the next
//! window's, so the pages come out in order. On servers with the bloom
//! filter indexes (migration 2), id lookups skip granules inside each window.
//!
//! Every read runs under `max_execution_time` and `max_rows_to_read`: a
//! query that would scan too much fails fast with `StoreError::TooExpensive`.

use std::time::Duration;

use super::{Store, StoreError};
use crate::query::sql::{Sql, Value};
use crate::query::{Order, Plan};
use crate::record::LogRow;

const NS: u64 = 1_000_000_000;
const FIRST_WINDOW_S: u64 = 300;
const WIDEN: u64 = 8;

/// Bounds on one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_execution_time: Duration,
    pub max_rows_to_read: u64,
}

/// A key/value pair from the attribute catalogue, with its count.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, clickhouse::Row)]
pub struct CatalogueEntry {
    pub attr_key: String,
    pub attr_value: String,
    pub n: u64,
}

impl Store {
    /// A query bounded by `limits` (every API read is).
    pub(super) fn limited(&self, sql: &str, limits: ReadLimits) -> clickhouse::query::Query {
        self.client
            .query(sql)
            .with_setting(
                "max_execution_time",
                limits.max_execution_time.as_secs().max(1).to_string(),
            )
            .with_setting("max_rows_to_read", limits.max_rows_to_read.to_string())
    }

    /// One page of `plan`, within `scope` (the caller's tenants).
    pub async fn search(
        &self,
        plan: &Plan,
        scope: &Sql,
        limits: ReadLimits,
    ) -> Result<Vec<LogRow>, StoreError> {
        let (from_s, to_s) = (plan.from_ns / NS, plan.to_ns / NS + 1);
        let mut base = vec![
            scope.clone(),
            Sql::new(
                "time_unix_nano >= ? AND time_unix_nano <= ?",
                vec![Value::U64(plan.from_ns), Value::U64(plan.to_ns)],
            ),
        ];
        let (cmp, direction) = match plan.order {
            Order::Newest => ("<", "DESC"),
            Order::Oldest => (">", "ASC"),
        };
        let mut edge = (from_s, to_s);
        if let Some(key) = &plan.after {
            base.push(Sql::new(
                format!(
                    "time_unix_nano {cmp} ? OR (time_unix_nano = ? AND (agent_id {cmp} ? \
                     OR (agent_id = ? AND seq {cmp} ?)))"
                ),
                vec![
                    Value::U64(key.time_unix_nano),
                    Value::U64(key.time_unix_nano),
                    Value::Str(key.agent_id.clone()),
                    Value::Str(key.agent_id.clone()),
                    Value::U64(key.seq),
                ],
            ));
            let at = key.time_unix_nano / NS;
            edge = match plan.order {
                Order::Newest => (from_s, (at + 1).min(to_s)),
                Order::Oldest => (at.max(from_s), to_s),
            };
        }
        let base = Sql::and(base);
        // The user's filter goes to PREWHERE: it is what narrows a search,
        // and ClickHouse's own choice (the smallest column) would often be
        // the time bound, reading every column of every row in the window.
        let prewhere = if plan.filter.text.is_empty() {
            String::new()
        } else {
            format!("PREWHERE {}", plan.filter.text)
        };
        let mut rows = Vec::new();
        let mut window = FIRST_WINDOW_S;
        let (mut lo, mut hi) = edge;
        loop {
            // [lo, hi) in whole seconds of `timestamp`, the sort key column.
            let (w_lo, w_hi) = match plan.order {
                Order::Newest => (hi.saturating_sub(window).max(lo), hi),
                Order::Oldest => (lo, lo.saturating_add(window).min(hi)),
            };
            let need = plan.limit as usize - rows.len();
            let sql = format!(
                "SELECT ?fields FROM logs {prewhere} WHERE timestamp >= toDateTime(?) AND timestamp < toDateTime(?) \
                 AND {} ORDER BY time_unix_nano {direction}, agent_id {direction}, seq {direction} LIMIT {need}",
                base.text
            );
            let query = plan.filter.bind_to(self.limited(&sql, limits));
            let query = base.bind_to(query.bind(w_lo).bind(w_hi));
            let page: Vec<LogRow> = query.fetch_all().await.map_err(classify)?;
            rows.extend(page);
            match plan.order {
                Order::Newest => hi = w_lo,
                Order::Oldest => lo = w_hi,
            }
            if rows.len() >= plan.limit as usize || lo >= hi {
                return Ok(rows);
            }
            window = window.saturating_mul(WIDEN);
        }
    }

    /// Records at or after `since_ns` matching `filter`, oldest first.
    pub async fn tail_poll(
        &self,
        filter: &Sql,
        since_ns: u64,
        limit: usize,
        limits: ReadLimits,
    ) -> Result<Vec<LogRow>, StoreError> {
        let sql =
            format!(
            "SELECT ?fields FROM logs WHERE timestamp >= toDateTime(?) AND time_unix_nano >= ? {} \
             ORDER BY time_unix_nano, agent_id, seq LIMIT {limit}",
            if filter.text.is_empty() { String::new() } else { format!("AND {}", filter.text) }
        );
        let query = self
            .limited(&sql, limits)
            .bind(since_ns / NS)
            .bind(since_ns);
        filter.bind_to(query).fetch_all().await.map_err(classify)
    }

    /// The most frequent values of each attribute key since `since_s`, at
    /// most `per_key` values for each of at most `max_keys` keys.
    pub async fn catalogue(
        &self,
        filter: &Sql,
        since_s: u64,
        per_key: u32,
        max_keys: u32,
        limits: ReadLimits,
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        let sql = format!(
            "SELECT attr_key, attr_value, sum(n) AS n FROM attr_catalogue \
             WHERE day >= toDate(toDateTime(?)) {} \
             GROUP BY attr_key, attr_value ORDER BY attr_key, n DESC, attr_value \
             LIMIT {per_key} BY attr_key LIMIT {}",
            if filter.text.is_empty() {
                String::new()
            } else {
                format!("AND {}", filter.text)
            },
            u64::from(per_key) * u64::from(max_keys)
        );
        let query = self.limited(&sql, limits).bind(since_s);
        filter.bind_to(query).fetch_all().await.map_err(classify)
    }
}

/// ClickHouse's "too many rows", "timeout exceeded" and "estimated time too
/// long" (codes 158, 159, 160) become `TooExpensive`.
pub(super) fn classify(e: clickhouse::error::Error) -> StoreError {
    if let clickhouse::error::Error::BadResponse(msg) = &e {
        if ["Code: 158", "Code: 159", "Code: 160"]
            .iter()
            .any(|c| msg.contains(c))
        {
            return StoreError::TooExpensive;
        }
    }
    StoreError::ClickHouse(e)
}
