//! The analytics views through the APIs: who may read them, and the window
//! and filters a request means (`AnalyticsParams`). The views themselves
//! are computed by `crate::analytics`.

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::service::Service;
use super::ApiError;
use crate::analytics::*;
use crate::auth::Principal;
use crate::clock::{now_ns, NS};
use crate::query::sql::{Sql, Value};
use crate::query::{parse_span, parse_time};
use crate::store::analytics::Window;

/// Window and filters, as both APIs receive them.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// Start: RFC 3339 or Unix milliseconds. Default: `to` minus 24 hours
    /// (15 minutes for health).
    pub from: Option<String>,
    /// End: RFC 3339 or Unix milliseconds. Default: now.
    pub to: Option<String>,
    /// Instead of `from`: a span back from `to`, like `15m`, `2h` or `7d`.
    pub last: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this host.
    pub host: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this tenant (one of the caller's).
    pub tenant: Option<String>,
    /// Users: inactivity that ends a session, like `30m` (the default).
    pub session_gap: Option<String>,
    /// Daily report: the day, `YYYY-MM-DD` (UTC). Default: yesterday.
    pub day: Option<String>,
}

impl AnalyticsParams {
    /// The window: `[from, to)` in whole seconds, `default_span_s` back
    /// from `to` when neither `from` nor `last` is given.
    pub(crate) fn window(&self, p: &Principal, default_span_s: u64) -> Result<Window, ApiError> {
        let to_ns = match self.to.as_deref() {
            Some(t) => parse_time(t)?,
            None => now_ns(),
        };
        let from_ns = match (self.from.as_deref(), self.last.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give `from` or `last`, not both".into(),
                ))
            }
            (Some(f), None) => parse_time(f)?,
            (None, Some(l)) => to_ns.saturating_sub(parse_span(l)?),
            (None, None) => to_ns.saturating_sub(default_span_s * NS),
        };
        if from_ns >= to_ns {
            return Err(ApiError::BadRequest("`from` must be before `to`".into()));
        }
        Ok(Window {
            from_s: from_ns / NS,
            to_s: to_ns.div_ceil(NS),
            tenants: p.scope.sql(self.tenant.as_deref())?,
            only: self.only(),
        })
    }

    /// The service, host and environment filters.
    fn only(&self) -> Sql {
        let mut parts = Vec::new();
        for (column, value) in [
            ("service", &self.service),
            ("host", &self.host),
            ("environment", &self.environment),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                parts.push(Sql::new(
                    format!("{column} = ?"),
                    vec![Value::Str(v.into())],
                ));
            }
        }
        Sql::and(parts)
    }
}

impl Service {
    fn reader_window(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
        default_span_s: u64,
    ) -> Result<Window, ApiError> {
        p.require_reader()?;
        params.window(p, default_span_s)
    }

    pub async fn errors(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<ErrorsView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        Ok(self.analytics.errors(&self.store()?, &w).await?)
    }

    pub async fn performance(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<PerformanceView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        Ok(self.analytics.performance(&self.store()?, &w).await?)
    }

    pub async fn security(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<SecurityView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        Ok(self.analytics.security(&self.store()?, &w).await?)
    }

    pub async fn users(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<UsersView, ApiError> {
        let w = self.reader_window(p, params, 86_400)?;
        let gap = match params.session_gap.as_deref() {
            Some(g) => parse_span(g)? / NS,
            None => 1800,
        };
        if gap == 0 {
            return Err(ApiError::BadRequest(
                "`session_gap` must be at least 1s".into(),
            ));
        }
        Ok(self.analytics.users(&self.store()?, &w, gap).await?)
    }

    pub async fn health(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<HealthView, ApiError> {
        let w = self.reader_window(p, params, 900)?;
        match self.store() {
            Ok(store) => Ok(self.analytics.health(&store, &w).await?),
            Err(e) => Ok(HealthView::unreachable(&w, e.to_string())),
        }
    }

    pub async fn daily_report(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<DailyReport, ApiError> {
        p.require_reader()?;
        if params.from.is_some() || params.to.is_some() || params.last.is_some() {
            return Err(ApiError::BadRequest(
                "the daily report takes `day`, not `from`, `to` or `last`".into(),
            ));
        }
        let start = match params.day.as_deref() {
            Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ApiError::BadRequest(format!("`day` must be YYYY-MM-DD, not `{d}`"))
            })?,
            None => (chrono::Utc::now() - chrono::Duration::days(1)).date_naive(),
        };
        let day_s = start
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0)
            .max(0) as u64;
        let day = Window {
            from_s: day_s,
            to_s: day_s + 86_400,
            tenants: p.scope.sql(params.tenant.as_deref())?,
            only: params.only(),
        };
        Ok(self.analytics.daily_report(&self.store()?, &day).await?)
    }

    /// A view by its path under `/api/v1/logs/`, as JSON (the gRPC
    /// `Analytics` call).
    pub async fn analytics_json(
        &self,
        p: &Principal,
        view: &str,
        params: &AnalyticsParams,
    ) -> Result<String, ApiError> {
        fn json<T: Serialize>(v: T) -> Result<String, ApiError> {
            Ok(serde_json::to_string(&v)
                .expect("views hold only strings, numbers, booleans and lists"))
        }
        match view {
            "health" => json(self.health(p, params).await?),
            "errors" => json(self.errors(p, params).await?),
            "performance" => json(self.performance(p, params).await?),
            "security" => json(self.security(p, params).await?),
            "users/activity" => json(self.users(p, params).await?),
            "report/daily" => json(self.daily_report(p, params).await?),
            "alerts/active" => json(self.active_alerts(p, params).await?),
            "alerts/history" => json(self.alert_history(p, params).await?),
            other => Err(ApiError::BadRequest(format!(
                "unknown view `{other}`: one of health, errors, performance, security, users/activity, report/daily, alerts/active, alerts/history"
            ))),
        }
    }
}
