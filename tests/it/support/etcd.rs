//! A private 3-member etcd cluster (Debian's `etcd-server`) on free loopback ports, with its
//! data in a tempdir, for tests that must stop every member: the lab's etcd serves other
//! tests and is never stopped. Members are started and stopped by pid; `Drop` stops them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster answers; None (the test is skipped,
    /// or failed in the full run) when etcd is not installed.
    pub async fn start() -> Option<EtcdCluster> {
        let bin = super::require::tool("etcd", &["/usr/bin/etcd"], "etcd-server")?;
        let members = (1..=3)
            .map(|n| Member {
                name: format!("p{n}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            bin,
            dir: tempfile::tempdir().expect("tempdir"),
            members,
        };
        cluster.start_all();
        cluster.wait_ready().await;
        Some(cluster)
    }

    /// `http://127.0.0.1:PORT` of each member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .map(|m| SocketAddr::from(([127, 0, 0, 1], m.client)))
            .collect()
    }

    /// Starts every member that is not running (a restart keeps its data directory, so the
    /// members rejoin as the same cluster).
    pub fn start_all(&mut self) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let initial = initial.join(",");
        for m in &mut self.members {
            if m.child.is_some() {
                continue;
            }
            let data = self.dir.path().join(&m.name);
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(self.dir.path().join(format!("{}.log", m.name)))
                .expect("etcd log");
            let child = Command::new(&self.bin)
                .arg(format!("--name={}", m.name))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{}",
                    m.client
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{}",
                    m.client
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", m.peer))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                    m.peer
                ))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg(format!(
                    "--initial-cluster-token=rolegate-test-{}",
                    std::process::id()
                ))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start etcd member {}: {e}", m.name));
            m.child = Some(child);
        }
    }

    /// Stops every member by its pid (SIGKILL: no member can hand anything over).
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Waits until a write through the cluster succeeds (a leader is elected).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            let attempt = async {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(2));
                let mut c = etcd_client::Client::connect(self.endpoints(), Some(opts)).await?;
                c.put("/rolegate-tests/ready", "1", None).await.map(|_| ())
            };
            match attempt.await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "the private etcd cluster did not answer within 60 s: {last}; logs in {}",
            self.dir.path().display()
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
