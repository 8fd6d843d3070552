//! Operator actions fleet-wide: `drain`, `disable`, `enable` sent to any instance are written
//! to `PREFIX/admin/CLUSTER/BACKEND` and applied by every instance, which shows who set them
//! and when (`/status` `backends[].admin_by`, `.admin_at_ms`). The key has no lease: the
//! operator's word outlives the instance that took it; the latest write wins.

use etcd_client::Client;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::applied::{parse, Applied, Refused, Verdict};
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
    applied: Applied,
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

    /// The record under `key` (an action on `target`), unless the one applied is as new.
    /// The records arrive on the one watch of the prefix (`follower.rs`).
    pub async fn apply(
        &mut self,
        key: &str,
        target: BackendKey,
        value: &[u8],
        revision: i64,
        instance: &str,
        sup: &SupervisorHandle,
    ) -> Result<Verdict, FleetError> {
        const IGNORED: &str = "Ignored a fleet admin record.";
        if !self.applied.newer(key, revision) {
            return Ok(Ok(()));
        }
        let record = match parse::<AdminRecord>(value, IGNORED) {
            Ok(r) => r,
            Err(refused) => return Ok(Err(refused)),
        };
        let Some(action) = parse_action(&record.action) else {
            let reason = format!("unknown action {:?}", record.action);
            return Ok(Err(Refused::new(IGNORED, reason)));
        };
        if record.by == instance {
            return Ok(Ok(())); // applied when the operator asked
        }
        info!(
            message = "Applying an operator action taken elsewhere in the fleet.",
            cluster = %target.cluster,
            backend = %target.backend,
            action = record.action,
            by = record.by
        );
        sup.fleet_admin(target, action, record.by, record.at_ms)
            .await
            .map_err(|_| FleetError::Stopped)?;
        Ok(Ok(()))
    }
}
