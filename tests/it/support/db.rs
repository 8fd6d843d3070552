//! Real database clients for lab tests: one write (or identity query) per new connection,
//! answering which server port it landed on.

use std::net::SocketAddr;
use std::time::Duration;

use super::lab::{app_password, Engine};

/// A live session kept open across a scenario (to see whether rolegate closes it).
pub enum Session {
    Pg(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
    Redis(redis::aio::MultiplexedConnection),
}

const CONNECT: Duration = Duration::from_secs(10);

/// The server's own words for a PostgreSQL error: tokio-postgres prints only "db error" and
/// keeps the SQLSTATE and message in the error's source, which a failed attempt must show.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Opens an app session to `addr` (through the proxy or direct).
pub async fn open(engine: Engine, addr: SocketAddr) -> Result<Session, String> {
    let fut = async {
        match engine {
            Engine::Pg => {
                let conn = format!(
                    "host={} port={} user=app password={} dbname=app connect_timeout=10",
                    addr.ip(),
                    addr.port(),
                    app_password()
                );
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("pg connect: {}", pg_error(&e)))?;
                tokio::spawn(connection);
                Ok(Session::Pg(client))
            }
            Engine::Mysql => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(addr.ip().to_string())
                    .tcp_port(addr.port())
                    .user(Some("app"))
                    .pass(Some(app_password()))
                    .db_name(Some("app"))
                    .prefer_socket(false);
                mysql_async::Conn::new(opts)
                    .await
                    .map(Session::Mysql)
                    .map_err(|e| format!("mysql connect: {e}"))
            }
            Engine::Redis => {
                let url = format!("redis://app:{}@{}/", app_password(), addr);
                let client = redis::Client::open(url).map_err(|e| e.to_string())?;
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map(Session::Redis)
                    .map_err(|e| format!("redis connect: {e}"))
            }
        }
    };
    tokio::time::timeout(CONNECT, fut)
        .await
        .map_err(|_| "connect timed out".to_string())?
}

impl Session {
    /// The port of the server this session is on.
    pub async fn server_port(&mut self) -> Result<u16, String> {
        match self {
            Session::Pg(c) => {
                let row = c
                    .query_one("SELECT inet_server_port()", &[])
                    .await
                    .map_err(|e| format!("pg: {}", pg_error(&e)))?;
                let p: i32 = row.get(0);
                Ok(p as u16)
            }
            Session::Mysql(c) => {
                use mysql_async::prelude::Queryable;
                let p: Option<u16> = c
                    .query_first("SELECT @@port")
                    .await
                    .map_err(|e| format!("mysql: {e}"))?;
                p.ok_or_else(|| "mysql: no port".to_string())
            }
            Session::Redis(c) => {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(c)
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                info.lines()
                    .find_map(|l| l.strip_prefix("tcp_port:"))
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| "redis: no tcp_port".to_string())
            }
        }
    }

    /// Writes one row/key; returns the port of the server that accepted it.
    pub async fn write(&mut self, tag: &str) -> Result<u16, String> {
        match self {
            Session::Pg(c) => {
                let row = c
                    .query_one(
                        "INSERT INTO writes(node) VALUES ($1) RETURNING inet_server_port()",
                        &[&tag],
                    )
                    .await
                    .map_err(|e| format!("pg: {}", pg_error(&e)))?;
                let p: i32 = row.get(0);
                Ok(p as u16)
            }
            Session::Mysql(c) => {
                use mysql_async::prelude::Queryable;
                c.exec_drop("INSERT INTO writes(node) VALUES (?)", (tag,))
                    .await
                    .map_err(|e| format!("mysql: {e}"))?;
                let p: Option<u16> = c
                    .query_first("SELECT @@port")
                    .await
                    .map_err(|e| format!("mysql: {e}"))?;
                p.ok_or_else(|| "mysql: no port".to_string())
            }
            Session::Redis(c) => {
                let _: i64 = redis::cmd("INCR")
                    .arg(format!("writes:{tag}"))
                    .query_async(c)
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                self.server_port().await
            }
        }
    }
}

/// One new connection, one write: the unit of the "new connection every 20 ms" clients.
pub async fn connect_and_write(engine: Engine, addr: SocketAddr, tag: &str) -> Result<u16, String> {
    let mut s = open(engine, addr).await?;
    let r = tokio::time::timeout(CONNECT, s.write(tag))
        .await
        .map_err(|_| "write timed out".to_string())?;
    if let Session::Mysql(c) = s {
        let _ = c.disconnect().await;
    }
    r
}
