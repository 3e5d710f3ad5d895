//! Logins, users, tenants, API tokens and agent credentials.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Service};
use crate::auth::secrets::{self, Secret, AGENT_TOKEN_PREFIX, API_TOKEN_PREFIX};
use crate::auth::{AuthError, Principal, Role, Scope};
use crate::clock::{now_ns, now_s};
use crate::store::accounts::{CredentialRow, TenantRow, UserRow};
use crate::store::Store;

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

impl Service {
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
