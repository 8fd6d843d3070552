//! Operator actions on one backend (`drain`, `disable`, `enable`), from the admin API or, in
//! fleet mode, from another instance: the backend's admin mode, its sessions, a re-decision.

use tracing::info;

use super::{AdminAction, AdminError, Supervisor};
use crate::control_plane::checks::ProbeCommand;
use crate::control_plane::decision::AdminMode;
use crate::routing::BackendKey;

impl Supervisor {
    pub(super) fn admin_action(
        &mut self,
        key: &BackendKey,
        action: AdminAction,
    ) -> Result<(), AdminError> {
        let ci = self
            .cluster_index(&key.cluster)
            .ok_or_else(|| AdminError::UnknownBackend(key.clone()))?;
        let cluster = &mut self.clusters[ci];
        let slot = cluster
            .backends
            .iter_mut()
            .find(|b| b.key.backend == key.backend)
            .ok_or_else(|| AdminError::UnknownBackend(key.clone()))?;
        let before = slot.admin;
        match action {
            AdminAction::Drain => slot.admin = AdminMode::Drain,
            AdminAction::Disable => {
                slot.admin = AdminMode::Disabled;
                slot.guards.fire_all();
            }
            AdminAction::Enable => {
                slot.admin = AdminMode::Enabled;
                // An operator vouches for the node: forget that it was stale, and let its
                // checks establish its role again from scratch.
                cluster.memory.forget(&key.backend);
                slot.machine.forget_role();
                slot.probe.send(ProbeCommand::CheckNow);
            }
        }
        info!(
            message = "Operator changed backend state.",
            cluster = %key.cluster,
            backend = %key.backend,
            from = before.as_str(),
            to = slot.admin.as_str(),
        );
        self.reconcile(ci);
        Ok(())
    }
}
