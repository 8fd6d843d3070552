//! The followers' side: one watch on the decision prefix. It starts with a read of every
//! record at one revision and watches from the next, resumes from the last revision seen
//! after a reconnect, never applies a record older than the one in force, and re-reads the
//! whole prefix when the watch hits a compaction or is cancelled.

use std::collections::HashMap;

use etcd_client::{
    Client, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse, WatchStream,
};
use tracing::{debug, error, info};

use super::keys::Keys;
use super::record::DecisionRecord;
use super::FleetError;
use crate::config::ClusterName;
use crate::control_plane::supervisor::SupervisorHandle;

#[derive(Default)]
pub struct Follower {
    /// Highest revision seen on the prefix (the watch resumes after it).
    revision: i64,
    /// mod_revision of the record in force, per cluster.
    applied: HashMap<String, i64>,
    /// Records refused (bad JSON, unknown cluster or backend).
    pub refused: u64,
    pub metrics: Option<crate::metrics::Metrics>,
}

impl Follower {
    /// A follower that counts refused records on `metrics`.
    pub fn new(metrics: crate::metrics::Metrics) -> Follower {
        Follower {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    /// Reads the prefix if nothing was seen yet (or after a compaction), then watches from
    /// the next revision.
    pub async fn start(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        sup: &SupervisorHandle,
    ) -> Result<WatchStream, FleetError> {
        if self.revision == 0 {
            self.read_all(client, keys, sup).await?;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1);
        Ok(client.watch(keys.decisions(), Some(options)).await?)
    }

    async fn read_all(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        sup: &SupervisorHandle,
    ) -> Result<(), FleetError> {
        let resp = client
            .get(keys.decisions(), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in resp.kvs() {
            self.apply(kv, keys, sup).await?;
        }
        self.revision = resp.header().map_or(self.revision, |h| h.revision());
        Ok(())
    }

    pub async fn on_watch(
        &mut self,
        resp: WatchResponse,
        client: &mut Client,
        keys: &Keys,
        sup: &SupervisorHandle,
        watch: &mut WatchStream,
    ) -> Result<(), FleetError> {
        if resp.compact_revision() > 0 || resp.canceled() {
            info!(
                message = "Decision watch compacted or cancelled; reading every decision again.",
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
            );
            if resp.compact_revision() > 0 {
                self.revision = 0;
            }
            if !resp.canceled() || resp.compact_revision() > 0 {
                self.read_all(client, keys, sup).await?;
            }
            *watch = self.start(client, keys, sup).await?;
            return Ok(());
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.revision = self.revision.max(kv.mod_revision());
            if event.event_type() == EventType::Put {
                self.apply(kv, keys, sup).await?;
            } else {
                debug!(message = "A decision key was deleted; keeping the decision in force.", key = %String::from_utf8_lossy(kv.key()));
            }
        }
        if let Some(h) = resp.header() {
            self.revision = self.revision.max(h.revision());
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        kv: &KeyValue,
        keys: &Keys,
        sup: &SupervisorHandle,
    ) -> Result<(), FleetError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(cluster) = keys.cluster_of(&key) else {
            return Ok(());
        };
        let revision = kv.mod_revision();
        if self.applied.get(cluster).is_some_and(|&r| r >= revision) {
            return Ok(());
        }
        let parsed = DecisionRecord::parse(cluster, kv.value())
            .and_then(|r| r.into_fleet(revision))
            .map_err(|e| e.to_string());
        let result = match parsed {
            Ok(decision) => sup
                .fleet_decision(ClusterName::from(cluster), decision)
                .await
                .map_err(|_| FleetError::Stopped)?,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.applied.insert(cluster.to_string(), revision);
                debug!(message = "Applied a fleet decision.", cluster, revision);
            }
            Err(reason) => {
                self.refused += 1;
                if let Some(m) = &self.metrics {
                    m.fleet_records_refused_total.inc();
                }
                error!(
                    message = "Ignored a fleet decision record; keeping the routing table.",
                    key = %key,
                    revision,
                    %reason,
                );
            }
        }
        Ok(())
    }
}
