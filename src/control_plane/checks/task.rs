//! The probe loop of one backend: resolve, check under a timeout, report, wait.
//!
//! The loop runs at a fixed rate (`interval`, measured from the start of each check) and at
//! `down_interval` while the backend fails or while the supervisor asks for speed (its cluster
//! has no primary, so the next primary should be confirmed as early as possible). A
//! `CheckNow` command — sent when a data-plane connect to the backend failed — starts a check at
//! once, at most one per `MIN_GAP`, so a burst of failing clients cannot turn into a check storm.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::{CheckFailure, FailureReason, Observation, Probe};
use crate::config::{BackendAddress, CheckConfig, Protocol};
use crate::routing::BackendKey;

/// Smallest gap between two checks of one backend, whatever asks for them.
const MIN_GAP: Duration = Duration::from_millis(20);

/// Everything a probe needs to know; replaced as a whole on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub address: BackendAddress,
    pub protocol: Protocol,
    pub check: CheckConfig,
}

/// Messages from the supervisor (and, via it, the data plane) to one probe task.
#[derive(Debug)]
pub enum ProbeCommand {
    /// Check at once (a client could not connect to this backend).
    CheckNow,
    /// Use `down_interval` even while the backend is healthy.
    Fast(bool),
    /// New settings from a reload; applied before the next check, without a gap.
    Update(ProbeSettings),
}

/// The supervisor's handle on a running probe task. Dropping it does not stop the task;
/// cancelling does (and so does dropping the observation receiver).
#[derive(Debug)]
pub struct ProbeHandle {
    commands: mpsc::UnboundedSender<ProbeCommand>,
    cancel: CancellationToken,
}

impl ProbeHandle {
    pub fn send(&self, command: ProbeCommand) {
        // The task only ends when cancelled; a send error then is harmless.
        let _ = self.commands.send(command);
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the probe task of one backend, reporting to `observations`.
pub fn spawn_probe(
    key: BackendKey,
    settings: ProbeSettings,
    observations: mpsc::Sender<Observation>,
    parent: &CancellationToken,
) -> ProbeHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let cancel = parent.child_token();
    let span = tracing::info_span!("probe", cluster = %key.cluster, backend = %key.backend);
    let task = ProbeTask {
        probe: Probe::for_backend(settings.protocol, &settings.check, &settings.address),
        key,
        settings,
        last_addr: None,
        fast: false,
    };
    tokio::spawn(task.run(rx, observations, cancel.clone()).instrument(span));
    ProbeHandle { commands, cancel }
}

struct ProbeTask {
    key: BackendKey,
    settings: ProbeSettings,
    probe: Probe,
    /// Address of the previous check; a change means a new host, so the session is dropped.
    last_addr: Option<SocketAddr>,
    fast: bool,
}

impl ProbeTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<ProbeCommand>,
        observations: mpsc::Sender<Observation>,
        cancel: CancellationToken,
    ) {
        loop {
            let started = Instant::now();
            let observation = tokio::select! {
                _ = cancel.cancelled() => return,
                o = self.check_once() => o,
            };
            let failed = observation.result.is_err();
            if observations.send(observation).await.is_err() {
                return;
            }
            let period = if failed || self.fast {
                self.settings.check.down_interval
            } else {
                self.settings.check.interval
            };
            let mut next = started + period;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = sleep_until(next) => break,
                    command = commands.recv() => match command {
                        None => return,
                        Some(ProbeCommand::CheckNow) => {
                            next = next.min(started + MIN_GAP);
                        }
                        Some(ProbeCommand::Fast(fast)) => {
                            self.fast = fast;
                            if fast {
                                next = next.min(started + self.settings.check.down_interval);
                            }
                        }
                        Some(ProbeCommand::Update(settings)) => {
                            // A shorter interval applies to the check already scheduled.
                            self.update(settings);
                            let period = if failed || self.fast {
                                self.settings.check.down_interval
                            } else {
                                self.settings.check.interval
                            };
                            next = next.min(started + period);
                        }
                    },
                }
            }
        }
    }

    fn update(&mut self, settings: ProbeSettings) {
        if settings == self.settings {
            return;
        }
        let reconnect = settings.protocol != self.settings.protocol
            || settings.address != self.settings.address
            || settings.check.user != self.settings.check.user
            || settings.check.password != self.settings.check.password
            || settings.check.database != self.settings.check.database
            || settings.check.tls != self.settings.check.tls;
        if reconnect {
            self.probe = Probe::for_backend(settings.protocol, &settings.check, &settings.address);
            self.last_addr = None;
        }
        debug!(message = "Probe settings updated.", reconnect);
        self.settings = settings;
    }

    async fn check_once(&mut self) -> Observation {
        let start = Instant::now();
        let budget = self.settings.check.timeout;
        let outcome = timeout(budget, self.resolve_and_check(budget)).await;
        let (resolved, result) = match outcome {
            Ok(r) => r,
            Err(_) => {
                self.probe.reset();
                let failure = CheckFailure::new(
                    FailureReason::Timeout,
                    format!("no answer within {}", humantime::format_duration(budget)),
                );
                (self.last_addr, Err(failure))
            }
        };
        Observation {
            backend: self.key.clone(),
            at: Instant::now(),
            latency: start.elapsed(),
            resolved,
            result,
        }
    }

    async fn resolve_and_check(
        &mut self,
        budget: Duration,
    ) -> (Option<SocketAddr>, Result<super::Facts, CheckFailure>) {
        let addr = match resolve(&self.settings.address, self.last_addr).await {
            Ok(a) => a,
            Err(f) => return (None, Err(f)),
        };
        if self.last_addr.is_some_and(|old| old != addr) {
            debug!(message = "Backend address changed; reconnecting.", %addr);
            self.probe.reset();
        }
        self.last_addr = Some(addr);
        let result = self.probe.check(addr, budget).await;
        if result.is_err() {
            self.probe.reset();
        }
        (Some(addr), result)
    }
}

/// Resolves a backend address without blocking the runtime. When a name has several
/// addresses, the previous one is kept while it is still among them (no flapping between
/// equivalent answers).
async fn resolve(
    address: &BackendAddress,
    previous: Option<SocketAddr>,
) -> Result<SocketAddr, CheckFailure> {
    match address {
        BackendAddress::Ip(a) => Ok(*a),
        BackendAddress::Dns { host, port } => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| {
                    CheckFailure::new(FailureReason::Resolve, format!("resolve {host}: {e}"))
                })?
                .collect();
            match previous {
                Some(p) if addrs.contains(&p) => Ok(p),
                _ => addrs.first().copied().ok_or_else(|| {
                    CheckFailure::new(
                        FailureReason::Resolve,
                        format!("resolve {host}: no addresses"),
                    )
                }),
            }
        }
    }
}
