//! The new-connection write loop of the failover tests: every tick a new connection through
//! rolegate and one write ([`db::connect_and_write`]), each attempt kept with its wall-clock
//! start and end and the port that acknowledged it, so a test can say that no new connection
//! failed across a role change and none was acknowledged by the old primary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::db;
use super::lab::{wall, Engine};

/// One new connection and its write.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `{run}-{phase}-{i}`: what the server stores, shown in failure messages.
    pub tag: String,
    /// The [`Writer::enter_phase`] phase current when the attempt started.
    pub phase: usize,
    /// Wall clock ([`wall`]) before connecting and after the write's answer.
    pub started: f64,
    pub finished: f64,
    /// The acknowledging server's port, or why the attempt failed.
    pub result: Result<u16, String>,
}

/// How a [`Writer`] writes; [`Writer::options`] gives the defaults: a write every 20 ms, at
/// most 3,000, no cap on connections in flight, waits of 30 s.
pub struct WriterOptions {
    engine: Engine,
    addr: SocketAddr,
    prefix: &'static str,
    interval: Duration,
    max: usize,
    in_flight: Option<usize>,
    wait: Duration,
}

impl WriterOptions {
    /// The tag's prefix (a run id is appended, so runs never share tags).
    pub fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Bounds the loop in count (its time is `max × interval`).
    pub fn max_attempts(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// At most `n` connections open at once, a tick waiting for a free slot: a hold queues
    /// every new connection, and released at once they could exceed the server's
    /// `max_connections`, which is the server's limit, not rolegate's.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(n);
        self
    }

    /// How long [`Writer::wait_for_writes`] and [`Writer::wait_for_phase`] wait.
    pub fn wait(mut self, limit: Duration) -> Self {
        self.wait = limit;
        self
    }

    pub fn spawn(self) -> Writer {
        let run = format!("{}{}", self.prefix, (wall() * 1e3) as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (halt, ph, log, prefix) = (stop.clone(), phase.clone(), attempts.clone(), run.clone());
        let (engine, addr) = (self.engine, self.addr);
        let (interval, max, in_flight) = (self.interval, self.max, self.in_flight);
        let task = tokio::spawn(async move {
            let mut handles = Vec::new();
            let slots = in_flight.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
            let mut tick = tokio::time::interval(interval);
            if slots.is_some() {
                // Waiting for a slot must not turn into a burst of ticks afterwards.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            for i in 0..max {
                tick.tick().await;
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let slot = match &slots {
                    Some(s) => Some(s.clone().acquire_owned().await.unwrap()),
                    None => None,
                };
                let phase = ph.load(Ordering::Relaxed);
                let tag = format!("{prefix}-{phase}-{i}");
                let log = log.clone();
                handles.push(tokio::spawn(async move {
                    let started = wall();
                    let result = db::connect_and_write(engine, addr, &tag).await;
                    log.lock().unwrap().push(Attempt {
                        tag,
                        phase,
                        started,
                        finished: wall(),
                        result,
                    });
                    drop(slot);
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        });
        Writer {
            run,
            wait: self.wait,
            stop,
            phase,
            attempts,
            task,
        }
    }
}

/// The running loop; [`Writer::finish`] stops it and returns every attempt in start order.
pub struct Writer {
    run: String,
    wait: Duration,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// The defaults, to change before [`WriterOptions::spawn`].
    pub fn options(engine: Engine, addr: SocketAddr) -> WriterOptions {
        WriterOptions {
            engine,
            addr,
            prefix: "w",
            interval: Duration::from_millis(20),
            max: 3000,
            in_flight: None,
            wait: Duration::from_secs(30),
        }
    }

    /// The run id every tag starts with (`{run}-{phase}-`), to ask the servers which writes
    /// they hold.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Writes started from now on carry phase `p`; returns the wall clock.
    pub fn enter_phase(&self, p: usize) -> f64 {
        self.phase.store(p, Ordering::Relaxed);
        wall()
    }

    /// Waits until `n` writes started at or after `since` were acknowledged by the server on
    /// `port`: traffic is awaited by what it did, not by a fixed time.
    pub async fn wait_for_writes(&self, n: usize, port: u16, since: f64, what: &str) {
        self.wait_until(n, what, |a| a.started >= since && a.result == Ok(port))
            .await
    }

    /// Waits until `n` writes of phase `phase` were acknowledged by the server on `port`.
    pub async fn wait_for_phase(&self, n: usize, port: u16, phase: usize, what: &str) {
        self.wait_until(n, what, |a| a.phase == phase && a.result == Ok(port))
            .await
    }

    async fn wait_until(&self, n: usize, what: &str, pick: impl Fn(&Attempt) -> bool) {
        super::eventually(self.wait, what, || {
            let done = self
                .attempts
                .lock()
                .unwrap()
                .iter()
                .filter(|a| pick(a))
                .count();
            async move { done >= n }
        })
        .await;
    }

    /// Stops writing, waits for the attempts in flight, and returns all, in start order.
    pub async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        let mut v = self.attempts.lock().unwrap().clone();
        v.sort_by(|a, b| a.started.total_cmp(&b.started));
        v
    }
}

/// The attempts that failed.
pub fn failed(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| a.result.is_err()).collect()
}
