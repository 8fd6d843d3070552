//! Applying a configuration to the supervisor's state. Start-up is the same operation from an
//! empty state, so the reload path is exercised on every start.
//!
//! Order of operations:
//! 1. listeners: take the new list (the app opens and closes sockets; routes follow here);
//! 2. clusters removed: fire their guards per `on_demote`, stop their probes, drop metrics;
//! 3. clusters kept: backends removed as in 2; backends whose address changed are a new
//!    server (removed + added); changed check settings go to the running probe (no gap);
//! 4. clusters and backends added: new state (Unknown), new probe;
//! 5. authorities: start, restart or stop their source tasks (`authority_input.rs`);
//! 6. decide every cluster and store the table once.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tracing::info;

use super::{BackendSlot, ClusterState, Guards, Supervisor};
use crate::config::{BackendConfig, ClusterConfig, Config, OnDemote};
use crate::control_plane::checks::{spawn_probe_with, ProbeCommand, ProbeSettings};
use crate::control_plane::decision::{AdminMode, ClusterMemory};
use crate::control_plane::role::BackendMachine;
use crate::routing::BackendKey;

impl Supervisor {
    pub(super) fn apply_config(&mut self, config: &Config) {
        self.listeners = config.listeners.clone();
        self.session_level = config.log.session_level;
        self.cursors
            .retain(|name, _| config.listeners.iter().any(|l| &l.name == name));
        self.session_metrics
            .retain(|(l, _), _| config.listeners.iter().any(|x| &x.name == l));

        let mut old: Vec<ClusterState> = std::mem::take(&mut self.clusters);
        for new in &config.clusters {
            let state = match old.iter().position(|c| c.config.name == new.name) {
                Some(i) => {
                    let mut state = old.swap_remove(i);
                    self.update_cluster(&mut state, new);
                    state
                }
                None => {
                    info!(message = "Cluster added.", cluster = %new.name, protocol = new.protocol.as_str());
                    ClusterState {
                        backends: new.backends.iter().map(|b| self.new_slot(new, b)).collect(),
                        config: new.clone(),
                        memory: ClusterMemory::default(),
                        decision: None,
                        fast: false,
                        no_primary_since: None,
                        hold: None,
                        fleet: None,
                        timing: Default::default(),
                    }
                }
            };
            self.clusters.push(state);
        }
        for removed in old {
            info!(message = "Cluster removed.", cluster = %removed.config.name);
            for slot in removed.backends {
                self.retire(slot, removed.config.on_demote);
            }
        }
        self.sync_authorities(config);
        for ci in 0..self.clusters.len() {
            self.reconcile(ci);
        }
    }

    fn update_cluster(&mut self, state: &mut ClusterState, new: &ClusterConfig) {
        let mut kept = Vec::with_capacity(new.backends.len());
        let mut old_slots = std::mem::take(&mut state.backends);
        for b in &new.backends {
            let same = old_slots
                .iter()
                .position(|s| s.config.name == b.name && s.config.address == b.address);
            match same {
                Some(i) => {
                    let slot = old_slots.swap_remove(i);
                    let settings = probe_settings(new, b);
                    if new.check != state.config.check || new.protocol != state.config.protocol {
                        slot.probe.send(ProbeCommand::Update(settings));
                    }
                    kept.push(slot);
                }
                None => {
                    info!(message = "Backend added.", cluster = %new.name, backend = %b.name, address = %b.address);
                    kept.push(self.new_slot(new, b));
                }
            }
        }
        for slot in old_slots {
            state.memory.forget(&slot.key.backend);
            self.retire(slot, state.config.on_demote);
        }
        state.backends = kept;
        if new.protocol != state.config.protocol {
            // What the authority said still holds: its task keeps running.
            let authority = std::mem::take(&mut state.memory.authority);
            state.memory = ClusterMemory::default();
            state.memory.authority = authority;
            state.hold = None;
            for slot in &mut state.backends {
                slot.machine = BackendMachine::default();
            }
        }
        state.config = new.clone();
        // Probes follow the cluster's fast mode again from the next decision.
        state.fast = false;
        for slot in &state.backends {
            slot.probe.send(ProbeCommand::Fast(false));
        }
    }

    fn new_slot(&self, cluster: &ClusterConfig, b: &BackendConfig) -> BackendSlot {
        let key = BackendKey {
            cluster: cluster.name.clone(),
            backend: b.name.clone(),
        };
        let probe = spawn_probe_with(
            key.clone(),
            probe_settings(cluster, b),
            self.observations.clone(),
            &self.probes,
            !self.observing,
        );
        BackendSlot {
            key,
            config: b.clone(),
            machine: BackendMachine::default(),
            admin: AdminMode::Enabled,
            admin_by: None,
            resolved: None,
            entry: None,
            active: Arc::new(AtomicUsize::new(0)),
            guards: Guards::new(&self.sessions),
            probe,
            last_check: None,
        }
    }

    /// A backend leaves the config: its probe stops; its sessions close unless `on_demote:
    /// keep`, in which case they finish on their own.
    fn retire(&mut self, mut slot: BackendSlot, on_demote: OnDemote) {
        info!(message = "Backend removed.", cluster = %slot.key.cluster, backend = %slot.key.backend, closing_sessions = on_demote == OnDemote::Close);
        slot.probe.stop();
        if on_demote == OnDemote::Close {
            slot.guards.fire_all();
        }
        let labels = [slot.key.cluster.as_str(), slot.key.backend.as_str()];
        let m = &self.metrics;
        let _ = m.backend_up.remove_label_values(&labels);
        let _ = m.backend_replication_lag.remove_label_values(&labels);
        for role in ["unknown", "primary", "replica"] {
            let _ = m
                .backend_role
                .remove_label_values(&[labels[0], labels[1], role]);
        }
        self.session_metrics.retain(|(_, k), _| k != &slot.key);
    }
}

fn probe_settings(cluster: &ClusterConfig, b: &BackendConfig) -> ProbeSettings {
    ProbeSettings {
        address: b.address.clone(),
        protocol: cluster.protocol,
        check: cluster.check.clone(),
    }
}
