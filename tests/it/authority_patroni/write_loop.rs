//! A write loop through rolegate: a new connection and a write every 20 ms, each attempt
//! kept with its start time and the port that acknowledged it, so a test can say that no
//! new connection failed across a role change and none was acknowledged by the old primary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;
use support::db;
use support::lab::{wall, Engine};

/// One new connection and write: when it started (wall clock) and the acknowledging port.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) started: f64,
    pub(super) result: Result<u16, String>,
}

/// The running loop; [`Writer::finish`] stops it and returns every attempt in start order.
pub(super) struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub(super) fn spawn(addr: SocketAddr) -> Writer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (halt, log) = (stop.clone(), attempts.clone());
        let run = format!("ap{}", (wall() * 1e3) as u64);
        let task = tokio::spawn(async move {
            let mut handles = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // At most 6,000 attempts (two minutes).
            for i in 0..6000 {
                tick.tick().await;
                if halt.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (log, tag) = (log.clone(), format!("{run}-{i}"));
                handles.push(tokio::spawn(async move {
                    let started = wall();
                    let result = db::connect_and_write(Engine::Pg, addr, &tag).await;
                    log.lock().unwrap().push(Attempt { started, result });
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        });
        Writer {
            stop,
            attempts,
            task,
        }
    }

    pub(super) fn acknowledged_by(&self, port: u16) -> usize {
        let log = self.attempts.lock().unwrap();
        log.iter().filter(|a| a.result == Ok(port)).count()
    }

    pub(super) async fn wait_for_writes(&self, n: usize, port: u16, what: &str) {
        support::eventually(Duration::from_secs(60), what, || {
            let ok = self.acknowledged_by(port) >= n;
            async move { ok }
        })
        .await;
    }

    pub(super) async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("writer task");
        let mut v = self.attempts.lock().unwrap().clone();
        v.sort_by(|a, b| a.started.total_cmp(&b.started));
        v
    }
}

pub(super) fn failed(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| a.result.is_err()).collect()
}
