//! Tenants, users, credentials, the signing key and security events.
//!
//! Each change to a tenant, user or credential inserts a whole new row with
//! a higher `version`; readers ask for `FINAL` and filter in Rust (a `WHERE`
//! on a mutable column could see an old version before the merge picks the
//! latest). The tables hold hundreds of rows, not millions.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct TenantRow {
    pub name: String,
    pub description: String,
    pub deleted: u8,
    pub version: u64,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub tenants: Vec<String>,
    pub all_tenants: u8,
    pub deleted: u8,
    pub created_at: u32,
    pub version: u64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("tenants", &self.tenants)
            .field("all_tenants", &self.all_tenants)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// An API token (`kind = "api"`) or an agent credential (`kind = "agent"`).
/// Only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct CredentialRow {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub secret_hash: String,
    pub role: String,
    pub tenants: Vec<String>,
    pub all_tenants: u8,
    pub created_by: String,
    pub created_at: u32,
    /// 0: never.
    pub expires_at: u32,
    pub revoked: u8,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct SecurityEvent {
    pub tenant: String,
    pub time: u32,
    pub time_unix_nano: u64,
    pub kind: String,
    pub username: String,
    pub client_ip: String,
    pub detail: String,
    pub collector_id: String,
}

impl Store {
    pub async fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        let rows: Vec<TenantRow> = self
            .client
            .query("SELECT ?fields FROM tenants FINAL ORDER BY name")
            .fetch_all()
            .await?;
        Ok(rows.into_iter().filter(|t| t.deleted == 0).collect())
    }

    pub async fn put_tenant(&self, row: &TenantRow) -> Result<(), StoreError> {
        self.insert_one("tenants", row).await
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows: Vec<UserRow> = self
            .client
            .query("SELECT ?fields FROM users FINAL ORDER BY username")
            .fetch_all()
            .await?;
        Ok(rows.into_iter().filter(|u| u.deleted == 0).collect())
    }

    pub async fn user(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let rows: Vec<UserRow> = self
            .client
            .query("SELECT ?fields FROM users FINAL WHERE username = ?")
            .bind(username)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().find(|u| u.deleted == 0))
    }

    pub async fn put_user(&self, row: &UserRow) -> Result<(), StoreError> {
        self.insert_one("users", row).await
    }

    pub async fn credentials(&self, kind: &str) -> Result<Vec<CredentialRow>, StoreError> {
        let rows: Vec<CredentialRow> = self
            .client
            .query("SELECT ?fields FROM credentials FINAL WHERE kind = ? ORDER BY created_at, id")
            .bind(kind)
            .fetch_all()
            .await?;
        Ok(rows)
    }

    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StoreError> {
        let rows: Vec<CredentialRow> = self
            .client
            .query("SELECT ?fields FROM credentials FINAL WHERE id = ?")
            .bind(id)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The credential whose secret hashes to `hash` (the hash never changes
    /// for a credential, so filtering on it is safe under `FINAL`).
    pub async fn credential_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let rows: Vec<CredentialRow> = self
            .client
            .query("SELECT ?fields FROM credentials FINAL WHERE secret_hash = ?")
            .bind(hash)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().next())
    }

    pub async fn put_credential(&self, row: &CredentialRow) -> Result<(), StoreError> {
        self.insert_one("credentials", row).await
    }

    pub async fn record_security_event(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        self.insert_one("security_events", event).await
    }

    /// Failed logins since `since_ns`, for one username and for one client
    /// address, across every collector.
    pub async fn login_failures(
        &self,
        username: &str,
        client_ip: &str,
        since_ns: u64,
    ) -> Result<(u64, u64), StoreError> {
        Ok(self
            .client
            .query(
                "SELECT countIf(username = ?), countIf(client_ip = ?) FROM security_events \
                 WHERE kind = 'login_failed' AND time >= toDateTime(?) AND time_unix_nano >= ?",
            )
            .bind(username)
            .bind(client_ip)
            .bind(since_ns / 1_000_000_000)
            .bind(since_ns)
            .fetch_one()
            .await?)
    }

    /// The key that signs session tokens. The first collector to start
    /// stores its `candidate`; if several race, all settle on the oldest.
    pub async fn signing_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let query = "SELECT key FROM signing_keys ORDER BY created_unix_nano, key LIMIT 1";
        let existing: Option<String> = self.client.query(query).fetch_optional().await?;
        if let Some(key) = existing {
            return hex::decode(key).map_err(|_| StoreError::CorruptKey);
        }
        let key = hex::encode(candidate);
        self.client
            .query("INSERT INTO signing_keys (created_unix_nano, key) VALUES (?, ?)")
            .bind(crate::clock::now_ns())
            .bind(&key)
            .execute()
            .await?;
        let key: String = self.client.query(query).fetch_one().await?;
        hex::decode(key).map_err(|_| StoreError::CorruptKey)
    }

    pub(super) async fn insert_one<T>(&self, table: &str, row: &T) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let mut insert = self.client.insert::<T>(table).await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }
}
