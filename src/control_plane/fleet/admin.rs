//! Operator actions fleet-wide: `drain`, `disable`, `enable` sent to any instance are written
//! to `PREFIX/admin/CLUSTER/BACKEND` and applied by every instance, which shows who set them
//! and when (`/status` `backends[].admin_by`, `.admin_at_ms`). The key has no lease: the
//! operator's word outlives the instance that took it; the latest write wins.

use std::collections::HashMap;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions, WatchStream};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::keys::Keys;
use super::FleetError;
use crate::control_plane::supervisor::{AdminAction, SupervisorHandle};
use crate::routing::BackendKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRecord {
    /// `drain` | `disable` | `enable`.
    pub action: String,
    /// Instance the operator sent it to.
    pub by: String,
    /// Wall clock, ms since the Unix epoch.
    pub at_ms: u64,
}

pub fn action_str(a: AdminAction) -> &'static str {
    match a {
        AdminAction::Drain => "drain",
        AdminAction::Disable => "disable",
        AdminAction::Enable => "enable",
    }
}

fn parse_action(s: &str) -> Option<AdminAction> {
    Some(match s {
        "drain" => AdminAction::Drain,
        "disable" => AdminAction::Disable,
        "enable" => AdminAction::Enable,
        _ => return None,
    })
}

/// Applies the fleet's operator actions to this instance.
#[derive(Debug, Default)]
pub struct AdminSync {
    applied: HashMap<String, i64>,
}

impl AdminSync {
    /// Writes an action taken on this instance.
    pub async fn write(
        client: &mut Client,
        keys: &Keys,
        instance: &str,
        backend: &BackendKey,
        action: AdminAction,
        at_ms: u64,
    ) -> Result<(), FleetError> {
        let record = AdminRecord {
            action: action_str(action).to_string(),
            by: instance.to_string(),
            at_ms,
        };
        let json = serde_json::to_string(&record).expect("an admin record always serialises");
        let key = keys.admin(backend.cluster.as_str(), backend.backend.as_str());
        client.put(key, json, None).await?;
        info!(message = "Operator action written for the whole fleet.", cluster = %backend.cluster, backend = %backend.backend, action = record.action);
        Ok(())
    }

    /// Reads every action in force, then watches for new ones from the next revision.
    pub async fn start(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<WatchStream, FleetError> {
        let resp = client
            .get(keys.admins(), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in resp.kvs() {
            self.apply(kv, keys, instance, sup).await?;
        }
        let from = resp.header().map_or(0, |h| h.revision()) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        Ok(client.watch(keys.admins(), Some(options)).await?)
    }

    pub async fn on_watch(
        &mut self,
        resp: etcd_client::WatchResponse,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<(), FleetError> {
        if resp.compact_revision() > 0 || resp.canceled() {
            // The session starts again and reads every action afresh.
            return Err(FleetError::Etcd(etcd_client::Error::WatchError(
                "admin watch compacted or cancelled".into(),
            )));
        }
        for event in resp.events() {
            if event.event_type() == EventType::Put {
                if let Some(kv) = event.kv() {
                    self.apply(kv, keys, instance, sup).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        kv: &KeyValue,
        keys: &Keys,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<(), FleetError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some((cluster, backend)) = keys.admin_target(&key) else {
            return Ok(());
        };
        if self
            .applied
            .get(&key)
            .is_some_and(|&r| r >= kv.mod_revision())
        {
            return Ok(());
        }
        self.applied.insert(key.clone(), kv.mod_revision());
        let record: AdminRecord = match serde_json::from_slice(kv.value()) {
            Ok(r) => r,
            Err(e) => {
                error!(message = "Ignored a fleet admin record.", key = %key, reason = %e);
                return Ok(());
            }
        };
        let Some(action) = parse_action(&record.action) else {
            error!(message = "Ignored a fleet admin record.", key = %key, reason = %format!("unknown action {:?}", record.action));
            return Ok(());
        };
        if record.by == instance {
            return Ok(()); // applied when the operator asked
        }
        let target = BackendKey {
            cluster: cluster.into(),
            backend: backend.into(),
        };
        info!(
            message = "Applying an operator action taken elsewhere in the fleet.",
            cluster,
            backend,
            action = record.action,
            by = record.by
        );
        sup.fleet_admin(target, action, record.by, record.at_ms)
            .await
            .map_err(|_| FleetError::Stopped)
    }
}
