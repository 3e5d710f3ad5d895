//! Who is calling, and what they may do.
//!
//! Three kinds of callers present a bearer token:
//! - users, with a session token from `login` (role and tenants are read
//!   from the user's record on each request, through a short cache, so a
//!   change or a deletion applies within `CACHE_TTL`);
//! - automation, with an API token an admin minted (`lft_…`);
//! - agents, with an agent credential (`lfa_…`), which can only ship, into
//!   the one tenant the credential belongs to.
//!
//! Roles: `admin` does everything; `analyst` reads logs; `agent` ships.
//! A caller with `all_tenants` is global; otherwise it sees its tenants only.
//!
//! Logins are limited per client address and per username in memory (each
//! collector), and locked out after repeated failures counted across every
//! collector from `security_events`, where each failure and lockout is
//! stored for the security analytics.

pub mod agents;
pub mod secrets;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::clock::{now_ns, now_s};
use crate::config::AuthConfig;
use crate::query::sql::{Sql, Value};
use crate::store::accounts::{CredentialRow, SecurityEvent, UserRow};
use crate::store::{Store, StoreError};

/// How long a credential or user lookup is trusted. Revoking on one
/// collector applies there at once and on the others within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Analyst,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenants(Vec<String>),
}

impl Scope {
    pub fn of(all_tenants: u8, tenants: &[String]) -> Scope {
        if all_tenants != 0 {
            Scope::All
        } else {
            Scope::Tenants(tenants.to_vec())
        }
    }

    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenants(t) => t.iter().any(|x| x == tenant),
        }
    }

    /// The SQL restricting reads to this scope, narrowed to `only` if given
    /// (which must be within the scope).
    pub fn sql(&self, only: Option<&str>) -> Result<Sql, AuthError> {
        if let Some(t) = only {
            if !self.contains(t) {
                return Err(AuthError::Forbidden(format!(
                    "tenant `{t}` is not one of yours"
                )));
            }
            return Ok(Sql::new("tenant = ?", vec![Value::Str(t.into())]));
        }
        Ok(match self {
            Scope::All => Sql::default(),
            Scope::Tenants(t) if t.is_empty() => Sql::new("0", vec![]),
            Scope::Tenants(t) => Sql::new(
                format!("tenant IN ({})", vec!["?"; t.len()].join(", ")),
                t.iter().map(|x| Value::Str(x.clone())).collect(),
            ),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Username, or the credential's name.
    pub name: String,
    /// The credential's id, for API tokens and agent credentials.
    pub credential_id: Option<String>,
    pub role: Role,
    pub scope: Scope,
}

/// Who ships a batch: an agent credential and its one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipper {
    pub tenant: String,
    pub credential_id: String,
}

impl Principal {
    pub fn require_reader(&self) -> Result<(), AuthError> {
        match self.role {
            Role::Admin | Role::Analyst => Ok(()),
            Role::Agent => Err(AuthError::Forbidden(
                "agent credentials can ship logs, not read them".into(),
            )),
        }
    }

    pub fn require_admin(&self) -> Result<(), AuthError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(AuthError::Forbidden("this needs the admin role".into())),
        }
    }

    /// Managing users, tenants and agents needs an admin of all tenants.
    pub fn require_global_admin(&self) -> Result<(), AuthError> {
        self.require_admin()?;
        match self.scope {
            Scope::All => Ok(()),
            Scope::Tenants(_) => Err(AuthError::Forbidden(
                "this needs an admin of all tenants".into(),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many login attempts; try again in {retry_after_s} s")]
    TooManyAttempts { retry_after_s: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unauthenticated(msg: &str) -> AuthError {
    AuthError::Unauthenticated(msg.into())
}

/// A successful login.
#[derive(Clone)]
pub struct Session {
    pub token: String,
    pub expires_at_s: u64,
    pub role: Role,
}

type Cached<T> = Mutex<HashMap<String, (Instant, Option<T>)>>;

#[derive(Debug)]
pub struct Auth {
    config: AuthConfig,
    collector_id: String,
    key: OnceCell<Vec<u8>>,
    users: Cached<UserRow>,
    credentials: Cached<CredentialRow>,
    attempts: Mutex<Attempts>,
    login_turns: Turns,
    /// Verified against when a username is unknown, so that a failed
    /// login takes as long whether or not the user exists.
    decoy_hash: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    pub fn new(config: AuthConfig, collector_id: String) -> Auth {
        Auth {
            config,
            collector_id,
            key: OnceCell::new(),
            users: Mutex::default(),
            credentials: Mutex::default(),
            attempts: Mutex::default(),
            login_turns: Turns::default(),
            decoy_hash: secrets::hash_password("decoy password, never valid"),
        }
    }

    async fn key(&self, store: &Store) -> Result<&[u8], StoreError> {
        Ok(self
            .key
            .get_or_try_init(
                || async move { store.signing_key(&secrets::random_bytes::<32>()).await },
            )
            .await?
            .as_slice())
    }

    /// The caller behind a bearer token (without the `Bearer ` prefix).
    pub async fn authenticate(&self, store: &Store, token: &str) -> Result<Principal, AuthError> {
        if secrets::is_session_token(token) {
            let claims = secrets::verify_session(token, self.key(store).await?, now_s())
                .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
            let user = self
                .user(store, &claims.sub)
                .await?
                .ok_or_else(|| unauthenticated("this user no longer exists"))?;
            if secrets::password_tag(&user.password_hash) != claims.pwd {
                return Err(unauthenticated("the password changed; log in again"));
            }
            let role =
                Role::parse(&user.role).ok_or_else(|| unauthenticated("user has no valid role"))?;
            return Ok(Principal {
                name: user.username.clone(),
                credential_id: None,
                role,
                scope: Scope::of(user.all_tenants, &user.tenants),
            });
        }
        if !(token.starts_with(secrets::API_TOKEN_PREFIX)
            || token.starts_with(secrets::AGENT_TOKEN_PREFIX))
        {
            return Err(unauthenticated(
                "not a logferry token (session lfs., API lft_, agent lfa_)",
            ));
        }
        let cred = self
            .credential(store, token)
            .await?
            .ok_or_else(|| unauthenticated("unknown token"))?;
        if cred.revoked != 0 {
            return Err(unauthenticated("this token was revoked"));
        }
        if cred.expires_at != 0 && u64::from(cred.expires_at) <= now_s() {
            return Err(unauthenticated("this token expired"));
        }
        let role =
            Role::parse(&cred.role).ok_or_else(|| unauthenticated("token has no valid role"))?;
        Ok(Principal {
            name: cred.name.clone(),
            credential_id: Some(cred.id.clone()),
            role,
            scope: Scope::of(cred.all_tenants, &cred.tenants),
        })
    }

    /// The tenant and credential an agent ships with.
    pub async fn authenticate_agent(
        &self,
        store: &Store,
        token: &str,
    ) -> Result<Shipper, AuthError> {
        let p = self.authenticate(store, token).await?;
        match (p.role, p.scope, p.credential_id) {
            (Role::Agent, Scope::Tenants(t), Some(credential_id)) if t.len() == 1 => Ok(Shipper {
                tenant: t.into_iter().next().expect("one tenant"),
                credential_id,
            }),
            _ => Err(AuthError::Forbidden(
                "only agent credentials may ship logs".into(),
            )),
        }
    }

    async fn user(&self, store: &Store, username: &str) -> Result<Option<UserRow>, StoreError> {
        if let Some((at, u)) = lock(&self.users).get(username) {
            if at.elapsed() < CACHE_TTL {
                return Ok(u.clone());
            }
        }
        let u = store.user(username).await?;
        let mut cache = lock(&self.users);
        if cache.len() > 100_000 {
            // Unknown usernames are cached too: bounded like credentials.
            cache.clear();
        }
        cache.insert(username.into(), (Instant::now(), u.clone()));
        Ok(u)
    }

    async fn credential(
        &self,
        store: &Store,
        secret: &str,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let hash = secrets::secret_hash(secret);
        if let Some((at, c)) = lock(&self.credentials).get(&hash) {
            if at.elapsed() < CACHE_TTL {
                return Ok(c.clone());
            }
        }
        let c = store.credential_by_hash(&hash).await?;
        let mut cache = lock(&self.credentials);
        if cache.len() > 100_000 {
            // Unknown tokens are cached too; a flood of them must not grow
            // the cache without bound.
            cache.clear();
        }
        cache.insert(hash, (Instant::now(), c.clone()));
        Ok(c)
    }

    /// Forgets cached lookups after a change made through this collector.
    pub fn invalidate(&self) {
        lock(&self.users).clear();
        lock(&self.credentials).clear();
    }

    pub async fn login(
        &self,
        store: &Store,
        username: &str,
        password: &str,
        client_ip: &str,
    ) -> Result<Session, AuthError> {
        // No valid username is this long (the API refuses to create one):
        // refused before it costs memory or a lookup.
        if username.len() > MAX_USERNAME_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return Err(unauthenticated("invalid username or password"));
        }
        let limit = self.config.login_attempts_per_minute;
        if let Some(retry_after_s) = lock(&self.attempts).admit(&[
            (format!("ip:{client_ip}"), limit * 4),
            (format!("user:{username}"), limit),
        ]) {
            return Err(AuthError::TooManyAttempts { retry_after_s });
        }
        // Attempts for one username are checked one at a time on this
        // collector, so concurrent guesses cannot all pass the lockout
        // before the first failure is counted.
        let turn = self.login_turns.turn(username);
        let _turn = turn.lock().await;
        let window = self.config.lockout_window_s;
        let since = now_ns().saturating_sub(window * 1_000_000_000);
        let (user_failures, ip_failures) = store.login_failures(username, client_ip, since).await?;
        let user = self.user(store, username).await?;
        let tenant = user
            .as_ref()
            .filter(|u| u.all_tenants == 0 && u.tenants.len() == 1)
            .map(|u| u.tenants[0].clone())
            .unwrap_or_default();
        let event = |kind: &str, detail: String| SecurityEvent {
            tenant: tenant.clone(),
            time: now_s() as u32,
            time_unix_nano: now_ns(),
            kind: kind.into(),
            username: username.into(),
            client_ip: client_ip.into(),
            detail,
            collector_id: self.collector_id.clone(),
        };
        if user_failures >= self.config.lockout_failures
            || ip_failures >= self.config.lockout_failures * 4
        {
            warn!(
                username,
                client_ip, user_failures, ip_failures, "login refused: locked out"
            );
            store
                .record_security_event(&event(
                    "login_locked",
                    format!("{user_failures} failures for the user, {ip_failures} from the address in {window} s"),
                ))
                .await?;
            return Err(AuthError::TooManyAttempts {
                retry_after_s: window,
            });
        }
        let stored = user
            .as_ref()
            .map_or(self.decoy_hash.clone(), |u| u.password_hash.clone());
        let candidate = password.to_string();
        let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&candidate, &stored))
            .await
            .unwrap_or(false);
        let Some(user) = user.filter(|_| ok) else {
            info!(username, client_ip, "login failed");
            store
                .record_security_event(&event(
                    "login_failed",
                    "invalid username or password".into(),
                ))
                .await?;
            return Err(unauthenticated("invalid username or password"));
        };
        let role =
            Role::parse(&user.role).ok_or_else(|| unauthenticated("user has no valid role"))?;
        store
            .record_security_event(&event("login_succeeded", String::new()))
            .await?;
        let iat = now_s();
        let exp = iat + self.config.session_ttl_s;
        let token = secrets::sign_session(
            &secrets::Claims {
                sub: user.username.clone(),
                iat,
                exp,
                pwd: secrets::password_tag(&user.password_hash),
            },
            self.key(store).await?,
        );
        Ok(Session {
            token,
            expires_at_s: exp,
            role,
        })
    }
}

/// The longest username and password a login considers.
pub const MAX_USERNAME_BYTES: usize = 128;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// One lock per key in use; a key's entry goes when its last holder does.
#[derive(Debug, Default)]
struct Turns {
    locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    fn turn(&self, key: &str) -> Turn<'_> {
        let lock = lock(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone();
        Turn {
            turns: self,
            key: key.to_string(),
            lock,
        }
    }
}

struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Turn<'_> {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut locks = lock(&self.turns.locks);
        // Ours and the map's: nobody else waits for this key.
        if std::sync::Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// Login attempts in the last minute, per key.
#[derive(Debug, Default)]
struct Attempts {
    seen: HashMap<String, VecDeque<Instant>>,
}

impl Attempts {
    /// Counts an attempt under each key unless one is over its limit; then
    /// returns the seconds until it is not.
    fn admit(&mut self, keys: &[(String, u64)]) -> Option<u64> {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        if self.seen.len() > 100_000 {
            self.seen
                .retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < minute));
        }
        for (key, limit) in keys {
            let q = self.seen.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= minute) {
                q.pop_front();
            }
            if q.len() as u64 >= *limit {
                let oldest = q.front().copied().unwrap_or(now);
                return Some((minute - now.duration_since(oldest)).as_secs() + 1);
            }
        }
        for (key, _) in keys {
            self.seen.entry(key.clone()).or_default().push_back(now);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_limited_per_key() {
        let mut a = Attempts::default();
        let keys = |u: &str| vec![("ip:1".to_string(), 4), (format!("user:{u}"), 2)];
        assert_eq!(a.admit(&keys("x")), None);
        assert_eq!(a.admit(&keys("x")), None);
        assert!(a.admit(&keys("x")).is_some(), "user limit");
        assert_eq!(a.admit(&keys("y")), None);
        assert_eq!(a.admit(&keys("y")), None);
        assert!(a.admit(&keys("z")).is_some(), "address limit");
    }

    #[test]
    fn scopes_restrict_reads() {
        let s = Scope::Tenants(vec!["a".into(), "b".into()]);
        assert_eq!(s.sql(None).expect("ok").text, "tenant IN (?, ?)");
        assert_eq!(s.sql(Some("a")).expect("ok").text, "tenant = ?");
        assert!(matches!(s.sql(Some("c")), Err(AuthError::Forbidden(_))));
        assert_eq!(Scope::Tenants(vec![]).sql(None).expect("ok").text, "0");
        assert_eq!(Scope::All.sql(None).expect("ok"), Sql::default());
    }
}
