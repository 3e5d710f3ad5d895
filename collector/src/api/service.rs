//! The service layer both APIs call: every operation authorizes its caller,
//! validates its input and talks to the store here, so HTTP and gRPC answer
//! the same question the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use super::ApiError;
use crate::alerts::Catalog;
use crate::analytics::Analytics;
use crate::auth::secrets::{self, Secret, AGENT_TOKEN_PREFIX, API_TOKEN_PREFIX};
use crate::auth::{Auth, AuthError, Principal, Role, Scope};
use crate::clock::{now_ns, now_s, rfc3339_ns};
use crate::config::ApiConfig;
use crate::query::sql::Sql;
use crate::query::{self, Key, SearchParams};
use crate::record::LogRow;
use crate::store::accounts::{CredentialRow, TenantRow, UserRow};
use crate::store::search::ReadLimits;
use crate::store::Store;

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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginResponse {
    #[schema(value_type = String)]
    pub access_token: Secret,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: u64,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub role: Role,
    /// Absent for a global caller (all tenants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewUser {
    pub username: String,
    #[schema(value_type = String)]
    pub password: Secret,
    pub role: Role,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// A global user sees every tenant.
    #[serde(default)]
    pub all_tenants: bool,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UserUpdate {
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
    pub role: Option<Role>,
    pub tenants: Option<Vec<String>>,
    pub all_tenants: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserInfo {
    pub username: String,
    pub role: String,
    pub tenants: Vec<String>,
    pub all_tenants: bool,
    pub created_at: u32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewTenant {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantInfo {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewToken {
    pub name: String,
    /// `admin` or `analyst`.
    pub role: Role,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub all_tenants: bool,
    /// Lifetime in days; absent: no expiry.
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewAgentCredential {
    pub name: String,
    /// The tenant every record shipped with it is stored under.
    pub tenant: String,
}

/// An API token or agent credential. `secret` is shown once, at creation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CredentialInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub tenants: Vec<String>,
    pub all_tenants: bool,
    pub created_by: String,
    pub created_at: u32,
    /// Unix seconds; 0: never.
    pub expires_at: u32,
    pub revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<Secret>,
}

fn credential_info(c: CredentialRow, secret: Option<Secret>) -> CredentialInfo {
    CredentialInfo {
        id: c.id,
        name: c.name,
        role: c.role,
        tenants: c.tenants,
        all_tenants: c.all_tenants != 0,
        created_by: c.created_by,
        created_at: c.created_at,
        expires_at: c.expires_at,
        revoked: c.revoked != 0,
        secret,
    }
}

fn user_info(u: UserRow) -> UserInfo {
    UserInfo {
        username: u.username,
        role: u.role,
        tenants: u.tenants,
        all_tenants: u.all_tenants != 0,
        created_at: u.created_at,
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

pub const MIN_PASSWORD_CHARS: usize = 12;

fn check_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "passwords need at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    // A login considers no longer password: one could never be used.
    if p.len() > crate::auth::MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest(format!(
            "passwords are at most {} bytes",
            crate::auth::MAX_PASSWORD_BYTES
        )));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Service {
    store: watch::Receiver<Option<Store>>,
    auth: Arc<Auth>,
    config: ApiConfig,
    tails: Arc<tokio::sync::Semaphore>,
    pub(super) analytics: Arc<Analytics>,
    /// The config file's alert rules and channel names.
    pub(super) alerts: Arc<Catalog>,
}

impl Service {
    pub fn new(
        store: watch::Receiver<Option<Store>>,
        auth: Arc<Auth>,
        config: ApiConfig,
        analytics: Arc<Analytics>,
        alerts: Arc<Catalog>,
    ) -> Service {
        Service {
            store,
            auth,
            tails: Arc::new(tokio::sync::Semaphore::new(config.max_tails)),
            config,
            analytics,
            alerts,
        }
    }

    pub fn store(&self) -> Result<Store, ApiError> {
        self.store.borrow().clone().ok_or(ApiError::Starting)
    }

    pub(crate) fn limits(&self) -> ReadLimits {
        self.analytics.limits()
    }

    /// The caller, from the value of an `Authorization` header.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "missing `Authorization: Bearer <token>`; log in at POST /api/v1/auth/login"
                        .into(),
                )
            })?;
        Ok(self.auth.authenticate(&self.store()?, token).await?)
    }

    pub fn me(&self, p: &Principal) -> Me {
        Me {
            name: p.name.clone(),
            role: p.role,
            tenants: match &p.scope {
                Scope::All => None,
                Scope::Tenants(t) => Some(t.clone()),
            },
        }
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_ip: &str,
    ) -> Result<LoginResponse, ApiError> {
        let session = self
            .auth
            .login(&self.store()?, username, password, client_ip)
            .await?;
        Ok(LoginResponse {
            access_token: Secret(session.token),
            token_type: "bearer",
            expires_at: session.expires_at_s,
            role: session.role,
        })
    }

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

    async fn check_tenants(&self, store: &Store, tenants: &[String]) -> Result<(), ApiError> {
        let known: BTreeSet<String> = store.tenants().await?.into_iter().map(|t| t.name).collect();
        for t in tenants {
            if !known.contains(t) {
                return Err(ApiError::BadRequest(format!(
                    "tenant `{t}` does not exist; create it with POST /api/v1/tenants"
                )));
            }
        }
        Ok(())
    }

    pub async fn create_token(
        &self,
        p: &Principal,
        req: NewToken,
    ) -> Result<CredentialInfo, ApiError> {
        p.require_admin()?;
        if req.role == Role::Agent {
            return Err(ApiError::BadRequest(
                "agent credentials are made with POST /api/v1/agents".into(),
            ));
        }
        if !valid_name(&req.name, 128) {
            return Err(ApiError::BadRequest(
                "name: 1 to 128 letters, digits and `_-.@`".into(),
            ));
        }
        let within = match &p.scope {
            Scope::All => true,
            Scope::Tenants(_) => {
                !req.all_tenants && req.tenants.iter().all(|t| p.scope.contains(t))
            }
        };
        if !within {
            return Err(AuthError::Forbidden(
                "a token cannot reach beyond its creator's tenants".into(),
            )
            .into());
        }
        let store = self.store()?;
        self.check_tenants(&store, &req.tenants).await?;
        let expires_at = match req.expires_in_days {
            Some(0) => {
                return Err(ApiError::BadRequest(
                    "expires_in_days must be positive".into(),
                ))
            }
            Some(d) => (now_s() as u32).saturating_add(d.saturating_mul(86_400)),
            None => 0,
        };
        let row = CredentialRow {
            kind: "api".into(),
            name: req.name,
            role: req.role.as_str().into(),
            ..CredentialRow::default()
        };
        let (tenants, all_tenants) = tenant_columns(req.all_tenants, req.tenants);
        let row = CredentialRow {
            tenants,
            all_tenants,
            expires_at,
            ..row
        };
        self.issue(&store, p, API_TOKEN_PREFIX, row).await
    }

    pub async fn create_agent(
        &self,
        p: &Principal,
        req: NewAgentCredential,
    ) -> Result<CredentialInfo, ApiError> {
        p.require_global_admin()?;
        if !valid_name(&req.name, 128) {
            return Err(ApiError::BadRequest(
                "name: 1 to 128 letters, digits and `_-.@`".into(),
            ));
        }
        let store = self.store()?;
        self.check_tenants(&store, std::slice::from_ref(&req.tenant))
            .await?;
        let row = CredentialRow {
            kind: "agent".into(),
            name: req.name,
            role: Role::Agent.as_str().into(),
            tenants: vec![req.tenant],
            ..CredentialRow::default()
        };
        self.issue(&store, p, AGENT_TOKEN_PREFIX, row).await
    }

    /// Stores `row` with a new id and secret; the secret is returned once.
    async fn issue(
        &self,
        store: &Store,
        p: &Principal,
        prefix: &str,
        mut row: CredentialRow,
    ) -> Result<CredentialInfo, ApiError> {
        let (secret, secret_hash) = secrets::new_secret(prefix);
        row.id = uuid::Uuid::new_v4().to_string();
        row.secret_hash = secret_hash;
        row.created_by = p.name.clone();
        row.created_at = now_s() as u32;
        row.version = now_ns();
        store.put_credential(&row).await?;
        tracing::info!(id = %row.id, kind = %row.kind, name = %row.name, by = %p.name, "credential created");
        Ok(credential_info(row, Some(Secret(secret))))
    }

    pub async fn list_credentials(
        &self,
        p: &Principal,
        kind: &str,
    ) -> Result<Vec<CredentialInfo>, ApiError> {
        match kind {
            "agent" => p.require_global_admin()?,
            _ => p.require_admin()?,
        }
        let rows = self.store()?.credentials(kind).await?;
        Ok(rows
            .into_iter()
            .filter(|c| visible(p, c))
            .map(|c| credential_info(c, None))
            .collect())
    }

    pub async fn revoke_credential(
        &self,
        p: &Principal,
        kind: &str,
        id: &str,
    ) -> Result<CredentialInfo, ApiError> {
        match kind {
            "agent" => p.require_global_admin()?,
            _ => p.require_admin()?,
        }
        let store = self.store()?;
        let mut row = store
            .credential(id)
            .await?
            .filter(|c| c.kind == kind && visible(p, c))
            .ok_or_else(|| ApiError::NotFound(format!("no {kind} credential `{id}`")))?;
        row.revoked = 1;
        row.version = now_ns().max(row.version + 1);
        store.put_credential(&row).await?;
        self.auth.invalidate();
        tracing::info!(id, kind, by = %p.name, "credential revoked");
        Ok(credential_info(row, None))
    }

    // --- users and tenants --------------------------------------------------

    pub async fn list_users(&self, p: &Principal) -> Result<Vec<UserInfo>, ApiError> {
        p.require_global_admin()?;
        Ok(self
            .store()?
            .users()
            .await?
            .into_iter()
            .map(user_info)
            .collect())
    }

    pub async fn create_user(&self, p: &Principal, req: NewUser) -> Result<UserInfo, ApiError> {
        p.require_global_admin()?;
        let store = self.store()?;
        if store.user(&req.username).await?.is_some() {
            return Err(ApiError::Conflict(format!(
                "user `{}` exists",
                req.username
            )));
        }
        let row = tokio::task::block_in_place(|| new_user_row(req))?;
        self.check_tenants(&store, &row.tenants).await?;
        store.put_user(&row).await?;
        self.auth.invalidate();
        tracing::info!(username = %row.username, role = %row.role, by = %p.name, "user created");
        Ok(user_info(row))
    }

    pub async fn update_user(
        &self,
        p: &Principal,
        username: &str,
        req: UserUpdate,
    ) -> Result<UserInfo, ApiError> {
        p.require_global_admin()?;
        let store = self.store()?;
        let mut row = existing_user(&store, username).await?;
        if let Some(Secret(pw)) = req.password {
            check_password(&pw)?;
            // argon2 is slow on purpose; keep it off the other tasks' way.
            row.password_hash = tokio::task::block_in_place(|| secrets::hash_password(&pw));
        }
        if let Some(role) = req.role {
            if role == Role::Agent {
                return Err(ApiError::BadRequest(
                    "users are `admin` or `analyst`".into(),
                ));
            }
            row.role = role.as_str().into();
        }
        if let Some(t) = req.tenants {
            self.check_tenants(&store, &t).await?;
            row.tenants = t;
        }
        if let Some(all) = req.all_tenants {
            row.all_tenants = u8::from(all);
        }
        row.version = now_ns().max(row.version + 1);
        store.put_user(&row).await?;
        self.auth.invalidate();
        Ok(user_info(row))
    }

    pub async fn delete_user(&self, p: &Principal, username: &str) -> Result<(), ApiError> {
        p.require_global_admin()?;
        let store = self.store()?;
        let mut row = existing_user(&store, username).await?;
        row.deleted = 1;
        row.version = now_ns().max(row.version + 1);
        store.put_user(&row).await?;
        // The API tokens the user minted go with the user; agent
        // credentials belong to their tenant's hosts and stay.
        let mut revoked = 0;
        for mut token in store.credentials("api").await? {
            if token.created_by == username && token.revoked == 0 {
                token.revoked = 1;
                token.version = now_ns().max(token.version + 1);
                store.put_credential(&token).await?;
                revoked += 1;
            }
        }
        self.auth.invalidate();
        tracing::info!(username, by = %p.name, tokens_revoked = revoked, "user deleted");
        Ok(())
    }

    pub async fn list_tenants(&self, p: &Principal) -> Result<Vec<TenantInfo>, ApiError> {
        p.require_reader()?;
        Ok(self
            .store()?
            .tenants()
            .await?
            .into_iter()
            .filter(|t| p.scope.contains(&t.name))
            .map(|t| TenantInfo {
                name: t.name,
                description: t.description,
            })
            .collect())
    }

    pub async fn create_tenant(
        &self,
        p: &Principal,
        req: NewTenant,
    ) -> Result<TenantInfo, ApiError> {
        p.require_global_admin()?;
        if !valid_name(&req.name, 64) || req.name.contains('@') {
            return Err(ApiError::BadRequest(
                "tenant names are 1 to 64 letters, digits and `_-.`".into(),
            ));
        }
        let store = self.store()?;
        if store.tenants().await?.iter().any(|t| t.name == req.name) {
            return Err(ApiError::Conflict(format!("tenant `{}` exists", req.name)));
        }
        store
            .put_tenant(&tenant_row(&req.name, &req.description))
            .await?;
        tracing::info!(tenant = %req.name, by = %p.name, "tenant created");
        Ok(TenantInfo {
            name: req.name,
            description: req.description,
        })
    }

    /// Deletes a tenant's account entry; its stored logs stay until
    /// retention drops them.
    pub async fn delete_tenant(&self, p: &Principal, name: &str) -> Result<(), ApiError> {
        p.require_global_admin()?;
        let store = self.store()?;
        if !store.tenants().await?.iter().any(|t| t.name == name) {
            return Err(ApiError::NotFound(format!("no tenant `{name}`")));
        }
        let mut row = tenant_row(name, "");
        row.deleted = 1;
        store.put_tenant(&row).await?;
        Ok(())
    }
}

/// The stored form of a scope: a global account lists no tenants.
fn tenant_columns(all_tenants: bool, tenants: Vec<String>) -> (Vec<String>, u8) {
    if all_tenants {
        (Vec::new(), 1)
    } else {
        (tenants, 0)
    }
}

async fn existing_user(store: &Store, username: &str) -> Result<UserRow, ApiError> {
    store
        .user(username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user `{username}`")))
}

fn visible(p: &Principal, c: &CredentialRow) -> bool {
    match &p.scope {
        Scope::All => true,
        Scope::Tenants(_) => c.all_tenants == 0 && c.tenants.iter().all(|t| p.scope.contains(t)),
    }
}

pub fn tenant_row(name: &str, description: &str) -> TenantRow {
    TenantRow {
        name: name.into(),
        description: description.into(),
        deleted: 0,
        version: now_ns(),
    }
}

/// A validated user record with its password hashed.
pub fn new_user_row(req: NewUser) -> Result<UserRow, ApiError> {
    if !valid_name(&req.username, 64) {
        return Err(ApiError::BadRequest(
            "usernames are 1 to 64 letters, digits and `_-.@`".into(),
        ));
    }
    if req.role == Role::Agent {
        return Err(ApiError::BadRequest(
            "users are `admin` or `analyst`; agents get credentials from POST /api/v1/agents"
                .into(),
        ));
    }
    check_password(req.password.expose())?;
    let (tenants, all_tenants) = tenant_columns(req.all_tenants, req.tenants);
    Ok(UserRow {
        username: req.username,
        password_hash: secrets::hash_password(req.password.expose()),
        role: req.role.as_str().into(),
        tenants,
        all_tenants,
        deleted: 0,
        created_at: now_s() as u32,
        version: now_ns(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_long_enough_and_short_enough_to_log_in_with() {
        assert!(check_password("short").is_err());
        assert!(check_password("a long passphrase").is_ok());
        assert!(check_password(&"x".repeat(crate::auth::MAX_PASSWORD_BYTES)).is_ok());
        let e = check_password(&"x".repeat(crate::auth::MAX_PASSWORD_BYTES + 1))
            .expect_err("longer than a login reads");
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
