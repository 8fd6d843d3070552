//! The app as the admin API sees it: [`Proxy`] for [`App`], the one place where the two meet.
//! `admin` never names the app; it gets an [`crate::admin::AdminHandle`] built from this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{App, ReloadError};
use crate::admin::{HoldReply, Proxy, ReloadRefused};
use crate::config::{ClusterName, Config};
use crate::control_plane::supervisor::{AdminAction, AdminError, StatusSnapshot};
use crate::data_plane::steer::SteerStatus;
use crate::metrics::Metrics;
use crate::routing::BackendKey;
use crate::routing::Router;

impl Proxy for App {
    fn router(&self) -> &Router {
        &self.router
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn status(&self) -> Arc<StatusSnapshot> {
        self.supervisor.status.load_full()
    }

    fn config(&self) -> BoxFuture<'_, Arc<Config>> {
        Box::pin(App::config(self))
    }

    fn listener_addr<'a>(&'a self, listener: &'a str) -> BoxFuture<'a, Option<SocketAddr>> {
        Box::pin(App::listener_addr(self, listener))
    }

    fn reload(&self) -> BoxFuture<'_, Result<(), ReloadRefused>> {
        Box::pin(async move { self.reload_from_source().await.map_err(ReloadRefused::from) })
    }

    fn backend_action(
        &self,
        backend: BackendKey,
        action: AdminAction,
    ) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(self.supervisor.admin(backend, action))
    }

    fn cluster_hold(
        &self,
        cluster: ClusterName,
        timeout: Option<std::time::Duration>,
    ) -> BoxFuture<'_, Result<HoldReply, AdminError>> {
        Box::pin(async move {
            match timeout {
                Some(t) => self.supervisor.hold(cluster, t).await.map(HoldReply::Held),
                None => self
                    .supervisor
                    .release(cluster)
                    .await
                    .map(HoldReply::Released),
            }
        })
    }

    fn steer_status(&self) -> HashMap<String, SteerStatus> {
        self.steer.status()
    }

    fn refresh_steer(&self) {
        self.steer.refresh();
    }
}

impl From<ReloadError> for ReloadRefused {
    fn from(error: ReloadError) -> ReloadRefused {
        match error {
            ReloadError::Invalid(errors) => ReloadRefused::Invalid(errors),
            ReloadError::NoSource => ReloadRefused::NoSource(error.to_string()),
            ReloadError::Apply(_) => ReloadRefused::NotApplied(error.to_string()),
        }
    }
}
