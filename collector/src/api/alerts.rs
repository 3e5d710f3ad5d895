//! Alert rules through the API: list, create, read, replace, delete,
//! silence for a while; the alerts firing now and the alert history. Rules
//! of the config file are listed and can be silenced, but are changed in
//! the file.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::analytics::AnalyticsParams;
use super::service::Service;
use super::ApiError;
use crate::alerts::rules::{RuleSpec, EVERY_TENANT};
use crate::alerts::{Rule, Source};
use crate::auth::{AuthError, Principal, Scope};
use crate::clock::{now_ns, rfc3339_ns, rfc3339_s};
use crate::query::parse_span;
use crate::store::alerts::{HistoryRow, RuleRow, SilenceRow};

/// A rule and, when silenced, until when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleInfo {
    #[serde(flatten)]
    pub rule: Rule,
    /// Silences in force: tenant (`*`: all) → until, RFC 3339.
    pub silenced: Vec<SilenceInfo>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceInfo {
    pub tenant: String,
    pub until: String,
    pub reason: String,
    pub by: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// How long, like `30m`, `2h` or `1d`. `DELETE` on the same path ends it.
    #[serde(rename = "for")]
    pub duration: String,
    /// For a rule of every tenant: silence it for this tenant only
    /// (default: yours, if you have one; `*` for all, global admins only).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEvent {
    pub time: String,
    pub tenant: String,
    pub rule_id: String,
    pub rule: String,
    pub group: String,
    /// `pending`, `firing`, `repeat`, `resolved`, `inactive`, `deleted`
    /// (alert states); `sent`, `failed`, `silenced`, `abandoned` (a
    /// delivery still retrying when its collector shut down)
    /// (notifications).
    pub event: String,
    pub severity: String,
    pub value: f64,
    pub summary: String,
    /// Notifications: the channel.
    pub channel: String,
    pub attempts: u32,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    pub events: Vec<HistoryEvent>,
}

const HISTORY_LIMIT: u32 = 1000;

/// Whether `p` may change rules of `tenant`.
fn require_rule_admin(p: &Principal, tenant: &str) -> Result<(), ApiError> {
    p.require_admin()?;
    if tenant == EVERY_TENANT {
        p.require_global_admin()?;
    } else if !p.scope.contains(tenant) {
        return Err(ApiError::Auth(AuthError::Forbidden(format!(
            "tenant `{tenant}` is not one of yours"
        ))));
    }
    Ok(())
}

fn visible(p: &Principal, tenant: &str) -> bool {
    tenant == EVERY_TENANT || p.scope.contains(tenant)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveAlert {
    pub tenant: String,
    pub rule_id: String,
    /// The rule's name.
    pub rule: String,
    /// What the rule groups by (an address, a host, an error group), or empty.
    pub group: String,
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub value: f64,
    pub since: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertsView {
    pub alerts: Vec<ActiveAlert>,
}

impl Service {
    pub async fn active_alerts(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<AlertsView, ApiError> {
        p.require_reader()?;
        let scope = p.scope.sql(params.tenant.as_deref())?;
        let rows = self.store()?.firing_alerts(&scope, self.limits()).await?;
        Ok(AlertsView {
            alerts: rows
                .into_iter()
                .map(|r| ActiveAlert {
                    tenant: r.tenant,
                    rule_id: r.rule_id,
                    rule: r.rule,
                    group: r.group_key,
                    state: r.state,
                    severity: r.severity,
                    summary: r.summary,
                    value: r.value,
                    since: rfc3339_s(u64::from(r.since)),
                })
                .collect(),
        })
    }

    /// The rules `p` may see (their tenants' and every tenant's), each with
    /// the silences `p` may see.
    async fn rule_infos(&self, p: &Principal) -> Result<Vec<RuleInfo>, ApiError> {
        p.require_reader()?;
        let store = self.store()?;
        let rules = self.alerts.rules(&store).await?;
        let silences = store.silences().await?;
        Ok(rules
            .into_iter()
            .filter(|r| visible(p, &r.spec.tenant))
            .map(|rule| RuleInfo {
                silenced: silences
                    .iter()
                    .filter(|s| s.rule_id == rule.id && visible(p, &s.tenant))
                    .map(|s| SilenceInfo {
                        tenant: s.tenant.clone(),
                        until: rfc3339_s(u64::from(s.until)),
                        reason: s.reason.clone(),
                        by: s.created_by.clone(),
                    })
                    .collect(),
                rule,
            })
            .collect())
    }

    pub async fn list_rules(&self, p: &Principal) -> Result<Vec<RuleInfo>, ApiError> {
        self.rule_infos(p).await
    }

    pub async fn get_rule(&self, p: &Principal, id: &str) -> Result<RuleInfo, ApiError> {
        self.rule_infos(p)
            .await?
            .into_iter()
            .find(|r| r.rule.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("no alert rule `{id}`")))
    }

    fn check_spec(&self, p: &Principal, spec: &mut RuleSpec) -> Result<(), ApiError> {
        p.require_admin()?;
        if spec.tenant.is_empty() {
            if let Scope::Tenants(t) = &p.scope {
                if let [only] = t.as_slice() {
                    spec.tenant = only.clone();
                }
            }
        }
        spec.name = spec.name.trim().to_string();
        let problems = spec.problems(&self.alerts.channels);
        if !problems.is_empty() {
            return Err(ApiError::BadRequest(problems.join("; ")));
        }
        require_rule_admin(p, &spec.tenant)
    }

    async fn check_unique(&self, spec: &RuleSpec, except: Option<&str>) -> Result<(), ApiError> {
        let store = self.store()?;
        let clash = self.alerts.rules(&store).await?.into_iter().any(|r| {
            Some(r.id.as_str()) != except
                && r.spec.name == spec.name
                && (r.spec.tenant == spec.tenant || r.spec.tenant == EVERY_TENANT)
        });
        if clash {
            return Err(ApiError::Conflict(format!(
                "tenant `{}` already has a rule named `{}`",
                spec.tenant, spec.name
            )));
        }
        Ok(())
    }

    pub async fn create_rule(
        &self,
        p: &Principal,
        mut spec: RuleSpec,
    ) -> Result<RuleInfo, ApiError> {
        self.check_spec(p, &mut spec)?;
        self.check_unique(&spec, None).await?;
        let id = hex::encode(crate::auth::secrets::random_bytes::<8>());
        self.put_rule(p, &id, &spec, false).await?;
        tracing::info!(rule = %id, name = %spec.name, tenant = %spec.tenant, by = %p.name, "alert rule created");
        Ok(RuleInfo {
            rule: Rule {
                id,
                source: Source::Api,
                spec,
            },
            silenced: Vec::new(),
        })
    }

    async fn api_rule(&self, p: &Principal, id: &str) -> Result<RuleInfo, ApiError> {
        p.require_admin()?;
        let existing = self.get_rule(p, id).await?;
        if existing.rule.source != Source::Api {
            return Err(ApiError::Conflict(format!(
                "rule `{id}` comes from the collector's config file; change it there (it can be silenced here)"
            )));
        }
        require_rule_admin(p, &existing.rule.spec.tenant)?;
        Ok(existing)
    }

    pub async fn update_rule(
        &self,
        p: &Principal,
        id: &str,
        mut spec: RuleSpec,
    ) -> Result<RuleInfo, ApiError> {
        let existing = self.api_rule(p, id).await?;
        self.check_spec(p, &mut spec)?;
        self.check_unique(&spec, Some(id)).await?;
        self.put_rule(p, id, &spec, false).await?;
        tracing::info!(rule = %id, by = %p.name, "alert rule updated");
        Ok(RuleInfo {
            rule: Rule {
                spec,
                ..existing.rule
            },
            silenced: existing.silenced,
        })
    }

    pub async fn delete_rule(&self, p: &Principal, id: &str) -> Result<(), ApiError> {
        let existing = self.api_rule(p, id).await?;
        self.put_rule(p, id, &existing.rule.spec, true).await?;
        tracing::info!(rule = %id, by = %p.name, "alert rule deleted");
        Ok(())
    }

    async fn put_rule(
        &self,
        p: &Principal,
        id: &str,
        spec: &RuleSpec,
        deleted: bool,
    ) -> Result<(), ApiError> {
        let row = RuleRow {
            id: id.to_string(),
            tenant: spec.tenant.clone(),
            body: serde_json::to_string(spec).expect("a rule serializes"),
            deleted: u8::from(deleted),
            updated_by: p.name.clone(),
            version: now_ns(),
        };
        Ok(self.store()?.put_alert_rule(&row).await?)
    }

    /// Silences a rule for `req.duration` (empty: ends its silence).
    pub async fn silence_rule(
        &self,
        p: &Principal,
        id: &str,
        req: SilenceRequest,
    ) -> Result<RuleInfo, ApiError> {
        p.require_admin()?;
        let rule = self.get_rule(p, id).await?.rule;
        let span = if req.duration.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_nanos(parse_span(&req.duration)?)
        };
        if span > Duration::from_secs(90 * 86_400) {
            return Err(ApiError::BadRequest("`for`: at most 90d".into()));
        }
        let tenant =
            match (rule.spec.tenant.as_str(), req.tenant) {
                (EVERY_TENANT, Some(t)) => t,
                (EVERY_TENANT, None) => match &p.scope {
                    Scope::Tenants(t) if t.len() == 1 => t[0].clone(),
                    _ => return Err(ApiError::BadRequest(
                        "this rule applies to every tenant: say which in `tenant` (`*` for all)"
                            .into(),
                    )),
                },
                (own, Some(t)) if t != own => {
                    return Err(ApiError::BadRequest(format!(
                        "`tenant`: this rule is for tenant `{own}`"
                    )))
                }
                (own, _) => own.to_string(),
            };
        require_rule_admin(p, &tenant)?;
        let now_s = now_ns() / 1_000_000_000;
        let row = SilenceRow {
            rule_id: id.to_string(),
            tenant,
            until: (now_s + span.as_secs()) as u32,
            reason: req.reason,
            created_by: p.name.clone(),
            version: now_ns(),
        };
        self.store()?.put_silence(&row).await?;
        tracing::info!(rule = %id, tenant = %row.tenant, until = row.until, by = %p.name, "alert rule silenced");
        self.get_rule(p, id).await
    }

    pub async fn alert_history(
        &self,
        p: &Principal,
        params: &AnalyticsParams,
    ) -> Result<HistoryView, ApiError> {
        p.require_reader()?;
        let w = params.window(p, 86_400)?;
        let rows: Vec<HistoryRow> = self
            .store()?
            .alert_history(&w.tenants, w.from_s, w.to_s, HISTORY_LIMIT, self.limits())
            .await?;
        Ok(HistoryView {
            events: rows
                .into_iter()
                .map(|r| HistoryEvent {
                    time: rfc3339_ns(r.time_ns, chrono::SecondsFormat::Millis),
                    tenant: r.tenant,
                    rule_id: r.rule_id,
                    rule: r.rule,
                    group: r.group_key,
                    event: r.event,
                    severity: r.severity,
                    value: r.value,
                    summary: r.summary,
                    channel: r.channel,
                    attempts: r.attempts,
                    error: r.error,
                })
                .collect(),
        })
    }
}
