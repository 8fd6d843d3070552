//! In-process fake backends built the linkerd way: `fake::echo().spawn().await`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a fake backend does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Writes back everything it reads; shuts down its write side at EOF.
    Echo,
    /// Writes its own name as the first bytes, then echoes.
    Named,
    /// Reads until the client half-closes, then answers `got N bytes` and closes.
    ReplyAtEof,
}

pub struct Builder {
    behaviour: Behaviour,
    name: String,
}

pub fn echo() -> Builder {
    Builder {
        behaviour: Behaviour::Echo,
        name: String::new(),
    }
}

/// A backend that greets with `name\n` and then echoes: tells tests where they landed.
pub fn named(name: &str) -> Builder {
    Builder {
        behaviour: Behaviour::Named,
        name: name.to_string(),
    }
}

/// A backend that answers only after the client's EOF (half-close check).
pub fn reply_at_eof() -> Builder {
    Builder {
        behaviour: Behaviour::ReplyAtEof,
        name: String::new(),
    }
}

/// A running fake backend. Dropping it stops accepting (open connections keep running).
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections that sent at least one byte (health checks connect and close silently).
    pub sessions: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Backend {
    /// Stops accepting and returns once the listening socket is closed. A plain drop closes it
    /// only when this runtime next runs the aborted task, while the proxy (on its own worker
    /// threads) may still connect and have that connection reset.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Builder {
    pub async fn spawn(self) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake backend");
        self.spawn_on(listener)
    }

    pub fn spawn_on(self, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().expect("local addr");
        let sessions = Arc::new(AtomicUsize::new(0));
        let counter = sessions.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = self.name.clone();
                let counter = counter.clone();
                let behaviour = self.behaviour;
                tokio::spawn(async move {
                    let _ = serve(stream, behaviour, &name, &counter).await;
                });
            }
        });
        Backend {
            addr,
            sessions,
            task: Some(task),
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    name: &str,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    if let Behaviour::Named = behaviour {
        stream.write_all(format!("{name}\n").as_bytes()).await?;
    }
    if let Behaviour::ReplyAtEof = behaviour {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await?;
        if !all.is_empty() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stream
            .write_all(format!("got {} bytes", all.len()).as_bytes())
            .await?;
        stream.shutdown().await?;
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut counted = false;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown().await?;
            return Ok(());
        }
        if !counted {
            counted = true;
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stream.write_all(&buf[..n]).await?;
    }
}
