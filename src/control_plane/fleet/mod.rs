//! Fleet mode (`coordination:`): many rolegate instances agree through etcd, and only a few
//! of them check the databases.
//!
//! One task per instance ([`run`]) holds an etcd session: a lease kept alive every third of
//! `lease_ttl`, the instance key, and — unless it is a follower — one of the `observers`
//! slots. Observers run the local checks; the one holding the leader key publishes each
//! cluster's decision ([`publisher`], fenced on its term). Everyone keeps one watch on the
//! whole prefix ([`follower`]): decisions, holds, operator actions and reports arrive on it in
//! etcd's revision order. The supervisor applies a fleet decision only while it does not
//! observe, through the same decision step as local checks.
//!
//! An observer stops publishing as soon as its lease could have expired on the server
//! (last keep-alive answer + TTL), before etcd could have handed its leadership on.

pub mod admin;
pub mod applied;
pub mod election;
pub mod follower;
pub mod hold;
pub mod keys;
pub mod publisher;
pub mod record;

use etcd_client::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{CoordinationConfig, FleetMode, OnLost};
use crate::control_plane::supervisor::SupervisorHandle;
use crate::metrics::Metrics;
use keys::Keys;

/// Why the session with etcd ended (it is then started again).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the lease expired (no keep-alive answer within lease_ttl)")]
    LeaseExpired,
    #[error("the supervisor stopped")]
    Stopped,
}

/// Connects to etcd (`control_plane/etcd.rs`) with `lease_ttl` as the bound of every wait: a
/// tighter bound cuts healthy sessions on a loaded host, and the lease's own keep-alive already
/// ends a session whose answers stop.
pub async fn connect(c: &CoordinationConfig) -> Result<Client, FleetError> {
    Ok(crate::control_plane::etcd::connect(&c.etcd, c.lease_ttl).await?)
}

impl From<crate::control_plane::etcd::ConnectError> for FleetError {
    fn from(e: crate::control_plane::etcd::ConnectError) -> Self {
        use crate::control_plane::etcd::ConnectError;
        match e {
            ConnectError::Etcd(e) => FleetError::Etcd(e),
            ConnectError::File { path, source } => FleetError::File { path, source },
        }
    }
}

/// Runs the instance's fleet membership until `shutdown`; every lost session (etcd down,
/// lease expired, leadership fenced) starts a new one after a pause.
pub async fn run(
    config: CoordinationConfig,
    sup: SupervisorHandle,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let keys = Keys::new(&config.prefix);
    let mut carry = Carried {
        follow: follower::Follower::new(metrics.clone()),
        lost: Lost::default(),
    };
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&config, &keys, &sup, &mut carry, &metrics, &shutdown) => r,
        };
        match result {
            Ok(()) => return,
            Err(FleetError::Stopped) => return,
            Err(e) => warn!(message = "Fleet session ended; starting a new one.", error = %e),
        }
        let _ = sup.fleet_link(false, false).await;
        let lost = &mut carry.lost;
        let since = *lost.since.get_or_insert_with(Instant::now);
        if config.mode != FleetMode::Observer
            && !lost.applied
            && since.elapsed() >= config.lease_ttl
        {
            lost.apply(&config, &sup).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.lease_ttl / 3) => {}
        }
    }
}

/// One etcd session: lease, instance key, slot, leadership, publications and the watch.
async fn session(
    c: &CoordinationConfig,
    keys: &Keys,
    sup: &SupervisorHandle,
    carry: &mut Carried,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), FleetError> {
    let Carried { follow, lost } = carry;
    let mut client = connect(c).await?;
    let ttl = c.lease_ttl.as_secs() as i64;
    let lease = client.lease_grant(ttl, None).await?.id();
    let granted = Instant::now();
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let mut lease_until = granted + c.lease_ttl;
    let instance_value = serde_json::json!({ "mode": c.mode.as_str() }).to_string();
    client
        .put(
            keys.instance(&c.instance),
            instance_value,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await?;
    let mut watch = follow.start(&mut client, keys, &c.instance, sup).await?;
    lost.recovered(c, sup).await;
    let _ = sup.fleet_link(true, false).await;

    let mut unreachable = sup.unreachable.subscribe();
    let mut admin_out = sup.admin_out.subscribe();
    let mut hold_out = sup.hold_out.subscribe();
    let mut observing = c.mode == FleetMode::Observer;
    // A fresh observer's checks have not confirmed any role yet: it campaigns only after a
    // lease_ttl of checking, so a warm standby wins a takeover and no cold leader publishes
    // "no primary". (A fixed observer campaigns at once: its probes run from its start.)
    let mut campaign_from = Instant::now();
    let mut term: Option<i64> = None;
    let mut published = sup.published.clone();
    published.mark_changed();
    // What this term wrote, per cluster: only a changed decision is written again (each write
    // wakes every follower).
    let mut written = std::collections::BTreeMap::new();
    let mut tick = tokio::time::interval(c.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keepalive_sent = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
            _ = tick.tick() => {
                if Instant::now() >= lease_until {
                    if let Some(t) = term {
                        lapsed(c, t);
                    }
                    return Err(FleetError::LeaseExpired);
                }
                keepalive_sent = Instant::now();
                keeper.keep_alive().await?;
                if !observing && c.mode == FleetMode::Auto {
                    if let Some(slot) = election::take_slot(&mut client, keys, c.observers, &c.instance, lease).await? {
                        info!(message = "Took an observer slot.", slot, instance = %c.instance);
                        observing = true;
                        campaign_from = Instant::now() + c.lease_ttl;
                        sup.set_observing(true).await.map_err(|_| FleetError::Stopped)?;
                    }
                }
                if observing && term.is_none() && Instant::now() >= campaign_from {
                    term = election::campaign(&mut client, keys, &c.instance, lease).await?;
                    if let Some(t) = term {
                        info!(message = "Leading the fleet: publishing decisions.", term = t, instance = %c.instance);
                        let _ = sup.fleet_link(true, true).await;
                        published.mark_changed();
                    }
                }
            }
            answer = answers.message() => {
                match answer? {
                    Some(a) if a.ttl() > 0 => lease_until = keepalive_sent + c.lease_ttl,
                    _ => {
                        if let Some(t) = term {
                            lapsed(c, t);
                        }
                        return Err(FleetError::LeaseExpired);
                    }
                }
            }
            changed = published.changed(), if term.is_some() => {
                if changed.is_err() {
                    return Err(FleetError::Stopped);
                }
                let set = published.borrow_and_update().clone();
                publish_changed(c, keys, &mut client, metrics, &mut written, term.unwrap_or_default(), &set, lease_until).await?;
            }
            key = unreachable.recv() => {
                let Ok(key) = key else { continue }; // lagged: later reports follow
                let report = keys.report(&c.instance, key.cluster.as_str(), key.backend.as_str());
                let opts = etcd_client::PutOptions::new().with_lease(lease);
                client.put(report, now_ms().to_string(), Some(opts)).await?;
                info!(message = "Reported a failed connect to the observers.", cluster = %key.cluster, backend = %key.backend);
            }
            taken = admin_out.recv() => {
                let Ok((backend, action)) = taken else { continue };
                admin::AdminSync::write(&mut client, keys, &c.instance, &backend, action, now_ms()).await?;
            }
            change = hold_out.recv() => {
                let Ok(change) = change else { continue };
                if let (Some(t), crate::control_plane::supervisor::HoldChange::NewPrimary(_)) = (term, &change) {
                    // The decision that ended the hold goes out first (the supervisor offers
                    // it before it says the hold ended): a follower's one watch delivers it
                    // before the key's removal, so it ends its hold on the new primary.
                    if published.has_changed().unwrap_or(false) {
                        let set = published.borrow_and_update().clone();
                        publish_changed(c, keys, &mut client, metrics, &mut written, t, &set, lease_until).await?;
                    }
                }
                follow.holds.write(&mut client, keys, change, term.is_some()).await?;
            }
            message = watch.message() => {
                let Some(resp) = message? else {
                    return Err(FleetError::Etcd(etcd_client::Error::WatchError("watch stream ended".into())));
                };
                let reports = follow.on_watch(resp, &mut client, keys, &c.instance, sup, &mut watch).await?;
                if observing {
                    for r in reports {
                        info!(message = "A follower could not connect; re-checking now.", cluster = %r.backend.cluster, backend = %r.backend.backend, key = %r.key);
                        let _ = sup.recheck.try_send(r.backend);
                    }
                }
            }
        }
    }
}

/// What outlives one etcd session: the revisions applied, and how long etcd has been away.
struct Carried {
    follow: follower::Follower,
    lost: Lost,
}

/// How long etcd has been out of reach, and whether `on_lost` is in force.
#[derive(Debug, Default)]
struct Lost {
    since: Option<Instant>,
    applied: bool,
}

impl Lost {
    /// etcd has been out of reach for longer than `lease_ttl`: do what `on_lost` says.
    async fn apply(&mut self, c: &CoordinationConfig, sup: &SupervisorHandle) {
        self.applied = true;
        warn!(
            message = "etcd out of reach for longer than lease_ttl; applying on_lost.",
            on_lost = c.on_lost.as_str(),
            instance = %c.instance,
        );
        let result = match c.on_lost {
            OnLost::Local => sup.set_observing(true).await,
            OnLost::LastKnown => sup.set_observing(false).await,
            OnLost::FailClosed => match sup.set_observing(false).await {
                Ok(()) => sup.fleet_closed(true).await,
                e => e,
            },
        };
        let _ = result; // only fails when the supervisor stopped, i.e. at shutdown
    }

    /// A session is up again: back to the fleet's decisions.
    async fn recovered(&mut self, c: &CoordinationConfig, sup: &SupervisorHandle) {
        let was = std::mem::take(self);
        if !was.applied {
            return;
        }
        info!(message = "etcd reachable again; routing by the fleet's decisions.", instance = %c.instance);
        if c.mode != FleetMode::Observer {
            let _ = sup.set_observing(false).await;
        }
        if c.on_lost == OnLost::FailClosed {
            let _ = sup.fleet_closed(false).await;
        }
    }
}

/// Writes each cluster's decision of `set` that differs from what this term last wrote, fenced
/// on `term`; stops (the session ends) once the lease could have expired on the server.
#[allow(clippy::too_many_arguments)]
async fn publish_changed(
    c: &CoordinationConfig,
    keys: &Keys,
    client: &mut Client,
    metrics: &Metrics,
    written: &mut std::collections::BTreeMap<
        crate::config::ClusterName,
        crate::control_plane::supervisor::Published,
    >,
    t: i64,
    set: &crate::control_plane::supervisor::PublishedSet,
    lease_until: Instant,
) -> Result<(), FleetError> {
    for (cluster, p) in set.iter() {
        if written.get(cluster) == Some(p) {
            continue;
        }
        // Stop before the lease could have expired on the server: after that a successor
        // may lead, and this write would race it.
        if Instant::now() + c.lease_ttl / 10 >= lease_until {
            metrics.fleet_publications_refused_total.inc();
            lapsed(c, t);
            return Err(FleetError::LeaseExpired);
        }
        let record = record::DecisionRecord::new(cluster.as_str(), &c.instance, t, p, now_ms());
        match publisher::publish(client, keys, t, &record).await? {
            publisher::Published::Written(rev) => {
                info!(message = "Published a decision.", cluster = %cluster, revision = rev, primary = ?record.primary, term = t, decided_at_ms = record.decided_at_ms);
                written.insert(cluster.clone(), p.clone());
            }
            publisher::Published::Fenced => {
                metrics.fleet_publications_refused_total.inc();
                error!(message = "Publication refused: this instance no longer leads (its term is over).", cluster = %cluster, term = t, instance = %c.instance);
                return Err(FleetError::LeaseExpired);
            }
        }
    }
    Ok(())
}

/// The lease may have expired on the server, so a successor may lead: publish nothing more.
fn lapsed(c: &CoordinationConfig, term: i64) {
    error!(
        message = "Leadership lapsed: the lease was not renewed within lease_ttl; not publishing.",
        term,
        instance = %c.instance,
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
