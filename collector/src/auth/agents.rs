//! Which credential an agent id belongs to.
//!
//! A batch's identity is (tenant, agent id, first sequence number), so a
//! credential of one tenant can never claim or pre-empt another tenant's
//! batches in the ledger. On top of that, an agent id belongs to the
//! credential that first shipped under it (`agent_ids`): another
//! credential presenting it is refused and a security event is stored for
//! both tenants. The id changes hands only when its credential is no longer
//! valid (revoked, expired or deleted) and the new credential is of the
//! same tenant: that is how an agent's credential is rotated without
//! losing its queue.
//!
//! ClickHouse has no compare-and-set: two credentials registering one id
//! at the same moment both write a row, and every collector then reads the
//! same owner, the earliest registration that is still valid.

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::{info, warn};

use super::{now_s, AuthError, Shipper};
use crate::clock::now_ns;
use crate::store::accounts::{CredentialRow, SecurityEvent};
use crate::store::{AgentId, Store, StoreError};

/// Agent ids whose owner this collector has seen; cleared when full (a
/// miss only costs a lookup).
const MAX_KNOWN: usize = 100_000;

#[derive(Debug, Default)]
pub struct AgentIds {
    /// agent id → the credential that owns it.
    known: Mutex<HashMap<String, String>>,
}

fn live(c: &Option<CredentialRow>) -> bool {
    c.as_ref()
        .is_some_and(|c| c.revoked == 0 && (c.expires_at == 0 || u64::from(c.expires_at) > now_s()))
}

impl AgentIds {
    /// Admits `shipper` to ship under `agent_id`, registering the id on its
    /// first use.
    pub async fn bind(
        &self,
        store: &Store,
        shipper: &Shipper,
        agent_id: &str,
        collector_id: &str,
    ) -> Result<(), AuthError> {
        if self.lock().get(agent_id) == Some(&shipper.credential_id) {
            return Ok(());
        }
        let mut owner = owner(store, agent_id).await?;
        let transfer = match &owner {
            None => true,
            Some((o, _)) if o.credential_id == shipper.credential_id => false,
            Some((o, valid)) => !valid && o.tenant == shipper.tenant,
        };
        if transfer {
            store
                .register_agent(&AgentId {
                    agent_id: agent_id.into(),
                    credential_id: shipper.credential_id.clone(),
                    tenant: shipper.tenant.clone(),
                    first_seen_ns: now_ns(),
                })
                .await?;
            if let Some((previous, _)) = &owner {
                info!(agent_id, from = %previous.credential_id, to = %shipper.credential_id,
                    "agent id moved to a new credential of its tenant");
            }
            // Read back: a registration that raced this one may own it.
            owner = self::owner(store, agent_id).await?;
        }
        match owner {
            Some((o, _)) if o.credential_id == shipper.credential_id => {
                let mut known = self.lock();
                if known.len() >= MAX_KNOWN {
                    known.clear();
                }
                known.insert(agent_id.into(), o.credential_id);
                Ok(())
            }
            other => {
                let (owner_tenant, owner_credential) = other
                    .map(|(o, _)| (o.tenant, o.credential_id))
                    .unwrap_or_default();
                warn!(agent_id, credential = %shipper.credential_id, tenant = %shipper.tenant,
                    owner = %owner_credential, "batch refused: the agent id belongs to another credential");
                let detail = format!(
                    "agent id {agent_id} presented by credential {} of tenant {}; it belongs to credential {owner_credential}",
                    shipper.credential_id, shipper.tenant
                );
                let mut tenants = vec![shipper.tenant.clone()];
                if owner_tenant != shipper.tenant && !owner_tenant.is_empty() {
                    tenants.push(owner_tenant);
                }
                for tenant in tenants {
                    store
                        .record_security_event(&SecurityEvent {
                            tenant,
                            time: now_s() as u32,
                            time_unix_nano: now_ns(),
                            kind: "agent_id_conflict".into(),
                            username: shipper.credential_id.clone(),
                            client_ip: String::new(),
                            detail: detail.clone(),
                            collector_id: collector_id.into(),
                        })
                        .await?;
                }
                Err(AuthError::Forbidden(format!(
                    "agent id `{agent_id}` belongs to another credential; an agent id changes hands only \
                     after its credential is revoked, and only within its tenant. Give this agent its own \
                     data directory, or revoke the old credential"
                )))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The owner of `agent_id`: the earliest registration whose credential is
/// still valid, else the earliest; and whether it is valid.
async fn owner(store: &Store, agent_id: &str) -> Result<Option<(AgentId, bool)>, StoreError> {
    let registrations = store.agent_ids(agent_id).await?;
    let mut seen = HashMap::new();
    for r in &registrations {
        if !seen.contains_key(&r.credential_id) {
            let valid = live(&store.credential(&r.credential_id).await?);
            seen.insert(r.credential_id.clone(), valid);
        }
        if seen[&r.credential_id] {
            return Ok(Some((r.clone(), true)));
        }
    }
    Ok(registrations.into_iter().next().map(|r| (r, false)))
}
