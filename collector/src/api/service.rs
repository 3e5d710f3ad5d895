//! The context both APIs share: the store, authentication, the API's
//! limits, analytics and the alert catalogue. The operations over it are
//! split by concern, each file an `impl Service`: `search` (search, tail,
//! fields), `accounts` (logins, users, tenants, tokens, agent
//! credentials), `analytics` (the views) and `alerts` (rules, silences,
//! history). Every operation authorizes its caller, validates its input
//! and talks to the store there, so HTTP and gRPC answer the same question
//! the same way.

use std::sync::Arc;

use tokio::sync::watch;

use super::ApiError;
use crate::alerts::Catalog;
use crate::analytics::Analytics;
use crate::auth::{Auth, AuthError, Principal};
use crate::config::ApiConfig;
use crate::store::search::ReadLimits;
use crate::store::Store;

#[derive(Debug)]
pub struct Service {
    store: watch::Receiver<Option<Store>>,
    pub(super) auth: Arc<Auth>,
    pub(super) config: ApiConfig,
    /// Live tails open now (`api.max_tails`).
    pub(super) tails: Arc<tokio::sync::Semaphore>,
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
}
