//! Search, live tail and the field catalogue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use super::{ApiError, Service};
use crate::auth::Principal;
use crate::clock::{now_ns, rfc3339_ns};
use crate::query::sql::Sql;
use crate::query::{self, Key, SearchParams};
use crate::record::LogRow;

const TAIL_PAGE: usize = 5000;

/// One stored record, as both APIs return it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Entry {
    pub tenant: String,
    /// RFC 3339, nanoseconds.
    pub time: String,
    pub time_unix_nano: u64,
    pub severity: String,
    pub severity_number: u8,
    pub service: String,
    pub host: String,
    pub environment: String,
    pub source: String,
    pub file_path: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub request_id: String,
    pub http_method: String,
    pub http_path: String,
    pub http_status: u16,
    pub duration_ms: f64,
    pub client_ip: String,
    pub user_agent: String,
    pub user_id: String,
    pub event_type: String,
    pub logger: String,
    pub module: String,
    pub function: String,
    pub line: u32,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    pub agent_id: String,
    pub seq: u64,
    /// Resumes a search or a tail after this record.
    pub cursor: String,
}

fn key_of(r: &LogRow) -> Key {
    Key {
        time_unix_nano: r.time_unix_nano,
        agent_id: r.agent_id.clone(),
        seq: r.seq,
    }
}

fn entry(r: LogRow, cursor: String) -> Entry {
    let time = rfc3339_ns(r.time_unix_nano, chrono::SecondsFormat::Nanos);
    Entry {
        tenant: r.tenant,
        time,
        time_unix_nano: r.time_unix_nano,
        severity: r.severity_text,
        severity_number: r.severity_number,
        service: r.service,
        host: r.host,
        environment: r.environment,
        source: r.source,
        file_path: r.file_path,
        body: r.body,
        trace_id: r.trace_id,
        span_id: r.span_id,
        request_id: r.request_id,
        http_method: r.http_method,
        http_path: r.http_path,
        http_status: r.http_status,
        duration_ms: r.duration_ms,
        client_ip: r.client_ip,
        user_agent: r.user_agent,
        user_id: r.user_id,
        event_type: r.event_type,
        logger: r.logger,
        module: r.module,
        function: r.function,
        line: r.line,
        attributes: r.attr_keys.into_iter().zip(r.attr_values).collect(),
        resource: r.resource_keys.into_iter().zip(r.resource_values).collect(),
        agent_id: r.agent_id,
        seq: r.seq,
        cursor,
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchPage {
    pub records: Vec<Entry>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The time range searched, RFC 3339 (fixed by the first page).
    pub from: String,
    pub to: String,
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldInfo {
    pub name: String,
    /// `column` (first-class) or `attribute` (query it as `attr.<name>`).
    pub kind: &'static str,
    pub top_values: Vec<FieldValue>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FieldsParams {
    pub service: Option<String>,
    pub tenant: Option<String>,
    /// Window of the catalogue, like `24h` or `7d` (default `7d`).
    pub last: Option<String>,
}

impl Service {
    pub async fn search(
        &self,
        p: &Principal,
        params: &SearchParams,
    ) -> Result<SearchPage, ApiError> {
        p.require_reader()?;
        let store = self.store()?;
        let plan = params.plan(now_ns(), store.dialect())?;
        let scope = p.scope.sql(plan.tenant.as_deref())?;
        let rows = store.search(&plan, &scope, self.limits()).await?;
        let next_cursor = (rows.len() == plan.limit as usize)
            .then(|| rows.last().map(|r| plan.cursor(&key_of(r))))
            .flatten();
        let records = rows
            .into_iter()
            .map(|r| {
                let c = plan.cursor(&key_of(&r));
                entry(r, c)
            })
            .collect();
        let rfc = |ns: u64| rfc3339_ns(ns, chrono::SecondsFormat::Millis);
        Ok(SearchPage {
            records,
            next_cursor,
            from: rfc(plan.from_ns),
            to: rfc(plan.to_ns),
            from_unix_ms: (plan.from_ns / 1_000_000) as i64,
            to_unix_ms: (plan.to_ns / 1_000_000) as i64,
        })
    }

    /// Records matching `params` as they are stored, from now or after the
    /// cursor, in batches, until the stream is dropped.
    ///
    /// Records reach ClickHouse out of time order (agents ship in batches,
    /// a retried batch lands late), so once caught up each poll looks
    /// `tail_lookback_ms` behind the present and skips the records already
    /// sent. At most `api.max_tails` run at once on a collector.
    pub fn tail(
        self: &Arc<Self>,
        p: &Principal,
        params: &SearchParams,
    ) -> Result<ReceiverStream<Result<Vec<Entry>, ApiError>>, ApiError> {
        p.require_reader()?;
        let store = self.store()?;
        let now = now_ns();
        let plan = SearchParams {
            limit: None,
            order: None,
            ..params.clone()
        }
        .plan(now, store.dialect())?;
        let filter = Sql::and(vec![
            p.scope.sql(plan.tenant.as_deref())?,
            plan.filter.clone(),
        ]);
        let start = plan.after.clone().unwrap_or(Key {
            time_unix_nano: now,
            agent_id: String::new(),
            seq: 0,
        });
        // A tail's cursors resume a tail; given to a search, they page
        // through the hour before the tail started.
        let range = (plan.from_ns, plan.to_ns);
        let (tx, rx) = mpsc::channel(4);
        let permit = Arc::clone(&self.tails).try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "this collector already serves {} live tails; try again later",
                self.config.max_tails
            ))
        })?;
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            let poll = Duration::from_millis(service.config.tail_poll_interval_ms);
            let lookback = service.config.tail_lookback_ms * 1_000_000;
            let mut since = start.time_unix_nano.saturating_sub(lookback);
            let mut sent: BTreeSet<Key> = BTreeSet::new();
            loop {
                let rows = match store
                    .tail_poll(&filter, since, TAIL_PAGE, service.limits())
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = rows.len() == TAIL_PAGE;
                let last_time = rows.last().map(|r| r.time_unix_nano);
                let mut batch = Vec::new();
                for r in rows {
                    let key = key_of(&r);
                    if key <= start || sent.contains(&key) {
                        continue;
                    }
                    let cursor = query::encode_cursor(&key, range.0, range.1);
                    sent.insert(key);
                    batch.push(entry(r, cursor));
                }
                if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
                    return;
                }
                since = match (full, last_time) {
                    // More than a page waits: go on from its last record.
                    (true, Some(t)) => t,
                    // Caught up: look `lookback` behind the present for
                    // records that land late.
                    _ => now_ns().saturating_sub(lookback).max(since),
                };
                sent.retain(|k| k.time_unix_nano >= since);
                if full {
                    continue;
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    pub async fn fields(
        &self,
        p: &Principal,
        params: &FieldsParams,
    ) -> Result<Vec<FieldInfo>, ApiError> {
        p.require_reader()?;
        let span = match params.last.as_deref() {
            Some(l) => query::parse_span(l)?,
            None => 7 * 86_400 * 1_000_000_000,
        };
        let mut filter = vec![p.scope.sql(params.tenant.as_deref())?];
        if let Some(s) = params.service.as_deref().filter(|s| !s.is_empty()) {
            filter.push(Sql::new(
                "service = ?",
                vec![query::sql::Value::Str(s.into())],
            ));
        }
        let since_s = now_ns().saturating_sub(span) / 1_000_000_000;
        let rows = self
            .store()?
            .catalogue(&Sql::and(filter), since_s, 10, 500, self.limits())
            .await?;
        let mut fields: Vec<FieldInfo> = query::sql::FIELDS
            .iter()
            .map(|(name, _)| FieldInfo {
                name: (*name).into(),
                kind: "column",
                top_values: Vec::new(),
            })
            .collect();
        for r in rows {
            if fields
                .last()
                .is_none_or(|f| f.kind != "attribute" || f.name != r.attr_key)
            {
                fields.push(FieldInfo {
                    name: r.attr_key.clone(),
                    kind: "attribute",
                    top_values: Vec::new(),
                });
            }
            if let Some(f) = fields.last_mut() {
                f.top_values.push(FieldValue {
                    value: r.attr_value,
                    count: r.n,
                });
            }
        }
        Ok(fields)
    }

    // --- tokens -----------------------------------------------------------
}
