//! Tables of alerting (migration 7): rules made through the API, silences,
//! each alert's state, the history of what happened and was sent, and the
//! lease that makes one collector the evaluator. Also the aggregations that
//! rule kinds are checked with.

use serde::{Deserialize, Serialize};

use super::analytics::Window;
use super::search::ReadLimits;
use super::{Store, StoreError};
use crate::query::sql::{Sql, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct RuleRow {
    pub id: String,
    pub tenant: String,
    /// The `RuleSpec` as JSON.
    pub body: String,
    pub deleted: u8,
    pub updated_by: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct SilenceRow {
    pub rule_id: String,
    /// The tenant silenced (`*`: every tenant of a rule for each tenant).
    pub tenant: String,
    pub until: u32,
    pub reason: String,
    pub created_by: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct StateRow {
    pub tenant: String,
    pub rule_id: String,
    pub rule: String,
    pub group_key: String,
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub value: f64,
    pub since: u32,
    pub fired_at: u32,
    pub notified_at: u32,
    pub updated_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct HistoryRow {
    pub tenant: String,
    pub time: u32,
    pub time_ns: u64,
    pub rule_id: String,
    pub rule: String,
    pub group_key: String,
    /// `pending`, `firing`, `repeat`, `resolved` (transitions), `sent`,
    /// `failed`, `silenced`, `abandoned` (notifications).
    pub event: String,
    pub severity: String,
    pub value: f64,
    pub summary: String,
    pub channel: String,
    pub attempts: u32,
    pub error: String,
    pub collector_id: String,
}

/// An agent's loss report (`AgentReport` of the protocol), as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AgentReportRow {
    pub tenant: String,
    pub agent_id: String,
    pub host: String,
    /// Read back as `reported_s` (an alias may not shadow the column).
    #[serde(alias = "reported_s")]
    pub time: u32,
    pub abandoned_bytes: u64,
    pub truncated_lines: u64,
    pub parse_errors: u64,
    pub unread_bytes: u64,
    pub queue_records: u64,
    pub oldest_unacked_s: u64,
    pub started_s: u64,
    pub dead_letter_batches: u64,
    pub dead_letter_records: u64,
    pub queue_lost_records: u64,
    pub unread_age_s: u64,
}

/// A group for which a rule's condition holds now.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Observation {
    pub key: String,
    pub value: f64,
    /// A sample record's message or what the group is, for the summary.
    #[serde(default)]
    pub sample: String,
    /// More about the group (an error group's template, services, hosts,
    /// request ids and endpoints), passed on to notifications.
    #[serde(default)]
    pub attributes: serde_json::Value,
}

/// The current holder of a lease as the server sees it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LeaseView {
    pub now_s: u64,
    pub term: u64,
    pub holder: String,
    pub expires_s: u64,
}

/// Reads of alerting's own small tables.
const SMALL: ReadLimits = ReadLimits {
    max_execution_time: std::time::Duration::from_secs(10),
    max_rows_to_read: 100_000_000,
};

impl Store {
    pub async fn alert_rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        let rows: Vec<RuleRow> = self
            .client
            .query("SELECT ?fields FROM alert_rules FINAL ORDER BY tenant, id")
            .fetch_all()
            .await?;
        Ok(rows.into_iter().filter(|r| r.deleted == 0).collect())
    }

    pub async fn put_alert_rule(&self, row: &RuleRow) -> Result<(), StoreError> {
        self.insert_one("alert_rules", row).await
    }

    /// Silences that have not ended.
    pub async fn silences(&self) -> Result<Vec<SilenceRow>, StoreError> {
        Ok(self
            .client
            .query("SELECT ?fields FROM alert_silences FINAL WHERE until > now()")
            .fetch_all()
            .await?)
    }

    pub async fn put_silence(&self, row: &SilenceRow) -> Result<(), StoreError> {
        self.insert_one("alert_silences", row).await
    }

    /// Alerts firing or pending within `scope`, the latest first.
    pub async fn firing_alerts(
        &self,
        scope: &Sql,
        limits: ReadLimits,
    ) -> Result<Vec<StateRow>, StoreError> {
        let filter = if scope.text.is_empty() {
            "1"
        } else {
            &scope.text
        };
        let sql = format!(
            "SELECT ?fields FROM alert_states FINAL WHERE {filter} AND state IN ('firing', 'pending') \
             ORDER BY since DESC, rule"
        );
        Ok(scope
            .bind_to(self.limited(&sql, limits))
            .fetch_all()
            .await?)
    }

    /// Every stored alert state that is not inactive.
    pub async fn alert_states(&self) -> Result<Vec<StateRow>, StoreError> {
        Ok(self
            .client
            .query("SELECT ?fields FROM alert_states FINAL WHERE state != 'inactive'")
            .fetch_all()
            .await?)
    }

    pub async fn put_alert_states(&self, rows: &[StateRow]) -> Result<(), StoreError> {
        self.insert_all("alert_states", rows).await
    }

    pub async fn insert_history(&self, rows: &[HistoryRow]) -> Result<(), StoreError> {
        self.insert_all("alert_history", rows).await
    }

    /// History within `[from_s, to_s)` and scope, newest first.
    pub async fn alert_history(
        &self,
        scope: &Sql,
        from_s: u64,
        to_s: u64,
        limit: u32,
        limits: ReadLimits,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let window = Sql::new(
            "time >= toDateTime(?) AND time < toDateTime(?)",
            vec![Value::U64(from_s), Value::U64(to_s)],
        );
        let sql = format!(
            "SELECT tenant, toUInt32(time) AS time, time_ns, rule_id, rule, group_key, event, severity, \
             value, summary, channel, attempts, error, collector_id FROM alert_history \
             WHERE {{w}} AND {{w}} ORDER BY time_ns DESC LIMIT {limit}"
        );
        self.json_rows(&sql, &[&window, scope], limits).await
    }

    async fn insert_all<T>(&self, table: &str, rows: &[T]) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The lease's holder with the highest term (ties: the lowest holder
    /// id), with the server's clock.
    pub async fn lease(&self, name: &str) -> Result<LeaseView, StoreError> {
        let rows: Vec<LeaseView> = self
            .json_rows(
                "SELECT toUInt64(now()) AS now_s, term, holder, max(expires_s) AS expires_s \
                 FROM leases WHERE {w} GROUP BY term, holder ORDER BY term DESC, holder LIMIT 1",
                &[&Sql::new("name = ?", vec![Value::Str(name.into())])],
                SMALL,
            )
            .await?;
        match rows.into_iter().next() {
            Some(view) => Ok(view),
            None => {
                let now_s: u64 = self
                    .client
                    .query("SELECT toUInt64(now())")
                    .fetch_one()
                    .await?;
                Ok(LeaseView {
                    now_s,
                    term: 0,
                    holder: String::new(),
                    expires_s: 0,
                })
            }
        }
    }

    /// Claims or renews `term` of the lease for `holder` until
    /// `now() + ttl_s` on the server's clock.
    pub async fn put_lease(
        &self,
        name: &str,
        term: u64,
        holder: &str,
        ttl_s: u64,
    ) -> Result<(), StoreError> {
        self.client
            .query("INSERT INTO leases (name, term, holder, expires_s) SELECT ?, ?, ?, toUInt64(now()) + ?")
            .bind(name)
            .bind(term)
            .bind(holder)
            .bind(ttl_s)
            .execute()
            .await?;
        Ok(())
    }

    pub async fn insert_agent_report(&self, row: &AgentReportRow) -> Result<(), StoreError> {
        self.insert_one("agent_reports", row).await
    }

    /// Each agent's latest report in the window, within scope.
    pub async fn agent_reports(
        &self,
        w: &Window,
        limits: ReadLimits,
    ) -> Result<Vec<AgentReportRow>, StoreError> {
        let filter = Sql::and(vec![
            Sql::new(
                "time >= toDateTime(?) AND time < toDateTime(?)",
                vec![Value::U64(w.from_s), Value::U64(w.to_s)],
            ),
            w.tenants.clone(),
        ]);
        self.json_rows(
            "SELECT tenant, agent_id, argMax(host, time) AS host, toUInt32(max(time)) AS reported_s, \
             argMax(abandoned_bytes, time) AS abandoned_bytes, argMax(truncated_lines, time) AS truncated_lines, \
             argMax(parse_errors, time) AS parse_errors, argMax(unread_bytes, time) AS unread_bytes, \
             argMax(queue_records, time) AS queue_records, argMax(oldest_unacked_s, time) AS oldest_unacked_s, \
             argMax(started_s, time) AS started_s, argMax(dead_letter_batches, time) AS dead_letter_batches, \
             argMax(dead_letter_records, time) AS dead_letter_records, argMax(queue_lost_records, time) AS queue_lost_records, \
             argMax(unread_age_s, time) AS unread_age_s \
             FROM agent_reports WHERE {w} GROUP BY tenant, agent_id ORDER BY tenant, host, agent_id LIMIT 10000",
            &[&filter],
            limits,
        )
        .await
    }

    /// Tenants with records since `since_s`.
    pub async fn active_tenants(&self, since_s: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT DISTINCT tenant FROM logs WHERE timestamp >= toDateTime(?) ORDER BY tenant",
            )
            .bind(since_s)
            .fetch_all()
            .await?)
    }

    /// Runs an alert rule's aggregation (built by `alerts`): `sql`, whose
    /// `{w}` placeholders take `parts` in order, answering `key`, `value`
    /// and `sample` per group.
    pub async fn observations(
        &self,
        sql: &str,
        parts: &[Sql],
        limits: ReadLimits,
    ) -> Result<Vec<Observation>, StoreError> {
        let refs: Vec<&Sql> = parts.iter().collect();
        self.json_rows(sql, &refs, limits).await
    }
}
